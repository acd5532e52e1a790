"""GGUFs made by llama.cpp's own converter from tiny models of the newer families, extended by yarn_cli, run in
llama.cpp: each gives the log-probabilities transformers gives for the HF folder extended the same way.

The tiny models are trained at 128 tokens (Falcon at 2,048, the length llama.cpp's converter always writes for it)
and q/k are scaled so that attention is peaked; 400 tokens then reach well past the trained length.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from llama_cpp_converter import convert, llama_cpp_logprobs
from test_cli_inspect import run
from tiny_models import TINY

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("llama_cpp")

# model type -> (config overrides the converter needs, converter flags)
FAMILIES = {
    # llama.cpp's smollm3 skips RoPE on every 4th layer by its own rule, so the tiny model has 4 layers
    "smollm3": ({"num_hidden_layers": 4, "no_rope_layers": [1, 1, 1, 0]}, []),
    "glm4_moe": ({}, ["--no-mtp"]),
    "qwen3_next": ({}, ["--no-mtp"]),
    "falcon": ({"bias": False, "max_position_embeddings": 2048}, []),
    "lfm2": ({}, []),
    "falcon_h1": ({}, []),
}
IDS = [1] + [(7 * i + 3) % 4000 + 20 for i in range(400)]


@pytest.fixture(scope="module")
def tokenizer(smollm2_gguf):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    tokenizer.add_tokens(["[gMASK]", "<|user|>", "<|observation|>"], special_tokens=True)  # GLM's converter reads them
    return tokenizer


def converted(model_type: str, tokenizer, root: Path, overrides: dict | None = None, flags: list | None = None) -> tuple[Path, Path]:
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    if overrides is None:
        overrides, flags = FAMILIES[model_type]
    folder = root / model_type
    tokenizer.save_pretrained(folder)
    settings = {
        **TINY[model_type],
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.eos_token_id,
        "max_position_embeddings": 128,
        **overrides,
    }
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(CONFIG_MAPPING[model_type](**settings), dtype=torch.float32).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(part in name for part in ("q_proj", "k_proj", "query_key_value")):
                param.mul_(4.0)
    model.save_pretrained(folder)
    return folder, convert(folder, root / f"{model_type}.gguf", "f32", *(flags or []))


def transformers_logprobs(folder: Path, attention_factor: float | None = None) -> torch.Tensor:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    if attention_factor is not None:
        config.rope_parameters = {**config.rope_parameters, "attention_factor": attention_factor}
    model = AutoModelForCausalLM.from_pretrained(folder, config=config, dtype=torch.float32).eval()
    with torch.no_grad():
        scores = torch.log_softmax(model(torch.tensor([IDS])).logits[0].double(), -1)
    return scores[:-1][torch.arange(len(IDS) - 1), torch.tensor(IDS[1:])]


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_llama_cpp_runs_the_extended_gguf_as_transformers_runs_the_extended_folder(model_type, tokenizer, tmp_path, capsys):
    folder, gguf = converted(model_type, tokenizer, tmp_path)
    hf_out, gguf_out = tmp_path / "x4", tmp_path / "x4.gguf"
    for source, out in ((folder, hf_out), (gguf, gguf_out)):
        code, _, err = run(["extend", str(source), "-s", "4", "-o", str(out)], capsys)
        assert code == 0, err
    reports = [json.loads(run(["inspect", str(path), "--json"], capsys)[1]) for path in (hf_out, gguf_out)]
    assert reports[0]["attention_factor"] == pytest.approx(reports[1]["attention_factor"])
    theirs, ours = transformers_logprobs(hf_out), llama_cpp_logprobs(gguf_out, IDS)
    assert float((ours - theirs).abs().max()) < 1e-3
    # what a runtime that missed the extension, or its attention factor, would have given
    for other in (transformers_logprobs(folder), transformers_logprobs(hf_out, attention_factor=1.0)):
        assert float((ours - other).abs().max()) > 1e-2


def test_llama4_step_factors_are_read_and_replaced_as_transformers_runs_them(tokenizer, tmp_path, capsys):
    """Llama 4's llama3 scaling is a plain step (low = high = 1), which the converter writes into rope_freqs. inspect
    recovers it (the length is assumed, since any length between two pairs' wavelengths gives the same step); the
    original GGUF runs as transformers runs the folder, and so does each after `--replace` with YaRN x4. llama.cpp
    applies Scout's L2 q/k norm to every Llama 4, so the tiny model has it too."""
    step = {
        "rope_type": "llama3",
        "rope_theta": 10000.0,
        "factor": 16.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 1.0,
        "original_max_position_embeddings": 64,
    }
    folder, gguf = converted(
        "llama4_text",
        tokenizer,
        tmp_path,
        {
            "num_hidden_layers": 4,
            "no_rope_layers": [1, 1, 1, 0],
            "attention_chunk_size": 8192,
            "use_qk_norm": True,
            "max_position_embeddings": 1024,
            "rope_parameters": step,
        },
    )
    code, out, err = run(["inspect", str(gguf), "--json"], capsys)
    assert code == 0, err
    found = json.loads(out)["rope"]["freq_factors"]["llama3"]
    assert (found["factor"], found["original_context"], found["high_freq_factor"], found["length_assumed"]) == (16.0, 64, 1.0, True)
    assert float((llama_cpp_logprobs(gguf, IDS) - transformers_logprobs(folder)).abs().max()) < 1e-3
    hf_out, gguf_out = tmp_path / "r", tmp_path / "r.gguf"
    for source, out_path in ((folder, hf_out), (gguf, gguf_out)):
        code, _, err = run(["extend", str(source), "-s", "4", "--replace", "-o", str(out_path)], capsys)
        assert code == 0, err
    ours = llama_cpp_logprobs(gguf_out, IDS)
    assert float((ours - transformers_logprobs(hf_out)).abs().max()) < 1e-3
    assert float((ours - transformers_logprobs(folder)).abs().max()) > 2e-2


def test_qwen2_5_vl_gguf_keeps_its_sections_and_runs_as_transformers(tokenizer, tmp_path, capsys):
    """Qwen2.5-VL's text model through the converter (architecture qwen2vl, M-RoPE sections in the metadata): the
    extended GGUF keeps `rope.dimension_sections` and llama.cpp runs text as transformers runs the extended folder.
    (Unextended, the two already differ by up to 9e-4 here, so the bound is looser than for the families above.)"""
    from gguf import GGUFReader
    from transformers import CONFIG_MAPPING, AutoModelForImageTextToText

    text = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        head_dim=16,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
    )
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, fullatt_block_indexes=[0])
    config = CONFIG_MAPPING["qwen2_5_vl"](text_config=text, vision_config=vision, image_token_id=100, video_token_id=101, vision_start_token_id=102)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(4.0)
    folder = tmp_path / "vl"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    gguf = convert(folder, tmp_path / "vl.gguf")
    for source, out in ((folder, tmp_path / "x4"), (gguf, tmp_path / "x4.gguf")):
        code, _, err = run(["extend", str(source), "-s", "4", "-o", str(out)], capsys)
        assert code == 0, err
    sections = GGUFReader(str(tmp_path / "x4.gguf")).fields["qwen2vl.rope.dimension_sections"]
    assert [int(sections.parts[i][0]) for i in sections.data][:3] == [2, 3, 3]

    def transformers_scores(path: Path) -> torch.Tensor:
        loaded = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
        with torch.no_grad():
            scores = torch.log_softmax(loaded(input_ids=torch.tensor([IDS])).logits[0].double(), -1)
        return scores[:-1][torch.arange(len(IDS) - 1), torch.tensor(IDS[1:])]

    ours, theirs = llama_cpp_logprobs(tmp_path / "x4.gguf", IDS), transformers_scores(tmp_path / "x4")
    assert float((ours - theirs).abs().max()) < 2e-3
    assert float((ours - transformers_scores(folder)).abs().max()) > 2e-2


def _phi3_longrope_gguf(tokenizer, root: Path, short: list[float]) -> tuple[Path, Path]:
    """A tiny Phi-3 with longrope (trained 128, 512 positions) through llama.cpp's converter, which writes the factors
    as rope_factors_long/short tensors and rope.scaling.attn_factor, with no rope.scaling.type."""
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    folder = root / "phi3"
    tokenizer.save_pretrained(folder)
    settings = {
        **TINY["phi3"],
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "max_position_embeddings": 512,
        "original_max_position_embeddings": 128,
        "rope_scaling": {"type": "longrope", "long_factor": [1.0 + 0.5 * i for i in range(8)], "short_factor": short},
    }
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(CONFIG_MAPPING["phi3"](**settings), dtype=torch.float32).save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "GPT2Tokenizer"}))  # the converter's BPE path
    return folder, convert(folder, root / "phi3.gguf")


def _inv_freq(kind: str, folder: Path, seq_len: int, **rope) -> tuple[torch.Tensor, float]:
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = AutoConfig.from_pretrained(folder)
    config.rope_parameters = {**config.rope_parameters, **rope}
    inv_freq, factor = ROPE_INIT_FUNCTIONS[kind](config, "cpu", seq_len=seq_len)
    return inv_freq.double(), float(factor)


def test_phi3_longrope_gguf_is_read_as_longrope_and_never_stacked(tokenizer, tmp_path, capsys):
    """inspect reads the converter's tensors as the longrope transformers computes from the config (long factors past
    128, with its attention factor); extend refuses to stack YaRN on them, and --replace refuses short factors that are
    part of the model within 128."""
    short = [1.0 + 0.05 * i for i in range(8)]
    folder, gguf = _phi3_longrope_gguf(tokenizer, tmp_path, short)
    code, out, err = run(["inspect", str(gguf), "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    scaling = report["rope"]["scaling"]
    assert (scaling["type"], scaling["factor"], scaling["original_context"]) == ("longrope", 4.0, 128)
    assert scaling["params"]["short_factor"] == pytest.approx(short) and len(scaling["params"]["long_factor"]) == 8
    inv_freq, factor = _inv_freq("longrope", folder, 512)
    ours = torch.tensor([row["scaled_inv_freq"] for row in report["dimensions"]], dtype=torch.float64)
    assert torch.allclose(ours, inv_freq, rtol=1e-6, atol=0)
    assert report["attention_factor"] == pytest.approx(factor, rel=1e-6)
    for extra, code_wanted, words in (([], 5, "--replace"), (["--replace"], 4, "rope_factors_short is not all 1")):
        code, _, err = run(["extend", str(gguf), "-s", "4", "-o", str(tmp_path / "x.gguf"), *extra], capsys)
        assert code == code_wanted and words in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "x.gguf").exists()


def test_phi3_longrope_gguf_with_plain_short_factors_is_replaced_by_yarn(tokenizer, tmp_path, capsys):
    """Short factors of 1 leave the model within 128 plain RoPE, so --replace is exact: both tensors become ones, the
    attention factor key goes, and the file declares YaRN x4 from 128, whose frequencies and m are transformers'."""
    from gguf import GGUFReader

    folder, gguf = _phi3_longrope_gguf(tokenizer, tmp_path, [1.0] * 8)
    out = tmp_path / "x.gguf"
    code, _, err = run(["extend", str(gguf), "-s", "4", "--replace", "-o", str(out)], capsys)
    assert code == 0, err
    reader = GGUFReader(str(out))
    assert all((t.data == 1.0).all() for t in reader.tensors if t.name.startswith("rope_factors_"))
    assert "phi3.rope.scaling.attn_factor" not in reader.fields
    report = json.loads(run(["inspect", str(out), "--json"], capsys)[1])
    assert report["rope"]["scaling"]["type"] == "yarn" and not report["warnings"]
    inv_freq, factor = _inv_freq("yarn", folder, 512, rope_type="yarn", factor=4.0, original_max_position_embeddings=128)
    ours = torch.tensor([row["scaled_inv_freq"] for row in report["dimensions"]], dtype=torch.float64)
    assert torch.allclose(ours, inv_freq, rtol=1e-6, atol=0)
    assert report["attention_factor"] == pytest.approx(factor, rel=1e-6)


def test_llama_cpp_gives_olmo3_yarn_on_its_full_attention_layers_only(tokenizer, tmp_path, capsys):
    """OLMo 3 converts to llama.cpp's olmo2 architecture. The extended GGUF runs as transformers runs the extended
    folder, whose YaRN is on the full-attention layers only, and far from YaRN on every layer. (llama.cpp 0.3.36 runs
    the sliding layers at the global base, so the tiny model gives both layer types one base.)"""
    same_base = {"rope_type": "default", "rope_theta": 10000.0}
    folder, gguf = converted("olmo3", tokenizer, tmp_path, {"rope_parameters": {"full_attention": same_base, "sliding_attention": same_base}}, [])
    hf_out, gguf_out, every_layer = tmp_path / "x4", tmp_path / "x4.gguf", tmp_path / "x4-all"
    for source, out in ((folder, hf_out), (gguf, gguf_out)):
        code, _, err = run(["extend", str(source), "-s", "4", "-o", str(out)], capsys)
        assert code == 0, err
    every_layer.mkdir()
    for item in hf_out.iterdir():
        (every_layer / item.name).write_bytes(item.read_bytes())
    config = json.loads((hf_out / "config.json").read_text())
    config["rope_parameters"]["sliding_attention"] = dict(config["rope_parameters"]["full_attention"])
    (every_layer / "config.json").write_text(json.dumps(config))
    ours = llama_cpp_logprobs(gguf_out, IDS)
    assert float((ours - transformers_logprobs(hf_out)).abs().max()) < 1e-3
    assert float((ours - transformers_logprobs(every_layer)).abs().max()) > 1e-1
