"""Multi-head latent attention (DeepSeek-V2/V3, Kimi-K2, GLM-4.7-Flash): extend and bake against transformers' own
MLA classes. Each q head is [16 no-RoPE | 8 rotary] dims, and all heads share one rotary key after a 16-wide latent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_cli_inspect import run
from test_verify import word_tokenizer
from tiny_models import build_model

from yarn_cli.core.rope import scalars as rope_scalars

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

MLA_TYPES = ["deepseek_v3", "deepseek_v2", "glm4_moe_lite"]
SCALE = 4.0
ORIGINAL = 256


def logits(folder: Path, rope_parameters: dict | None = None, length: int = 600) -> torch.Tensor:
    """transformers' forward pass of ``folder``, optionally with its rope parameters replaced through the config API."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    if rope_parameters is not None:
        config.rope_parameters = rope_parameters
        config.max_position_embeddings = int(ORIGINAL * SCALE)
    model = AutoModelForCausalLM.from_pretrained(folder, config=config, dtype=torch.float32).eval()
    ids = torch.randint(0, 128, (1, length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(ids).logits[0]


def yarn(**extra) -> dict:
    return {"rope_type": "yarn", "rope_theta": 10000.0, "factor": SCALE, "original_max_position_embeddings": ORIGINAL, **extra}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("mla")
    folders = {}
    for model_type in MLA_TYPES:
        folders[model_type] = root / model_type
        build_model(model_type, seed=1, qk_scale=6.0).save_pretrained(folders[model_type])
        word_tokenizer(folders[model_type])
    return folders


def extend(source: Path, out: Path, capsys, *flags: str) -> dict:
    code, stdout, err = run(["extend", str(source), "-s", str(SCALE), "-o", str(out), "--json", *flags], capsys)
    assert code == 0, err
    return json.loads(stdout)


@pytest.mark.parametrize("model_type", MLA_TYPES)
def test_extend_writes_deepseeks_pair_and_the_bake_gives_the_same_logits(model_type, sources, tmp_path, capsys):
    """extend writes mscale = mscale_all_dim = 1 (DeepSeek-V3's own form): transformers then puts m² on every dim of
    q·k, which is what llama.cpp's deepseek2 does. A bare yarn block would put it on the rotary dims only, a different
    model. The bake (all q rows x m², the shared key untouched) gives the config-only logits."""
    from safetensors.numpy import load_file

    source = sources[model_type]
    report = extend(source, tmp_path / "plain", capsys)
    m = rope_scalars.get_mscale(SCALE)
    assert report["attention_factor"] == pytest.approx(m) and report["softmax_mscale"] == pytest.approx(m)
    written = json.loads((tmp_path / "plain" / "config.json").read_text())["rope_parameters"]
    assert (written["mscale"], written["mscale_all_dim"]) == (1.0, 1.0)
    extended = logits(tmp_path / "plain")
    reference = logits(source, yarn(mscale=1.0, mscale_all_dim=1.0))
    assert (extended - reference).abs().max().item() <= 1e-5
    bare = logits(source, yarn())
    assert (extended - bare).abs().max().item() > 1e-3  # the choice of form shows in the logits

    baked = extend(source, tmp_path / "baked", capsys, "--bake-temperature")
    assert (logits(tmp_path / "baked") - extended).abs().max().item() <= 1e-4
    before, after = load_file(source / "model.safetensors"), load_file(tmp_path / "baked" / "model.safetensors")
    q = next(n for n in ("self_attn.q_b_proj.weight", "self_attn.q_proj.weight") if f"model.layers.0.{n}" in before)
    assert sorted(baked["baked_tensors"]) == sorted(f"model.layers.{i}.{q}" for i in range(2))
    name = f"model.layers.0.{q}"
    np.testing.assert_allclose(after[name], before[name].astype("float64") * m**2, rtol=1e-6)
    for name in before:  # q_a_proj (its norm would cancel a scale), the latent and the shared key keep their bytes
        if not name.endswith(q):
            assert (before[name] == after[name]).all(), name


@pytest.mark.parametrize("model_type", ["deepseek_v3", "deepseek_v2"])
def test_a_chosen_m_reaches_every_dim_config_only_and_baked(model_type, sources, tmp_path, capsys):
    """--attention-factor on MLA writes the pair (x, x) with get_mscale(s, x) = m. The paper's m that way equals the
    default; m = 1 equals transformers' YaRN with no temperature at all; m = 1.05 config-only equals its bake."""
    source = sources[model_type]
    extend(source, tmp_path / "default", capsys)
    extend(source, tmp_path / "paper", capsys, "--attention-factor", repr(rope_scalars.get_mscale(SCALE)))
    assert (logits(tmp_path / "paper") - logits(tmp_path / "default")).abs().max().item() <= 1e-5

    extend(source, tmp_path / "one", capsys, "--attention-factor", "1")
    no_temperature = logits(source, yarn(attention_factor=1.0))
    assert (logits(tmp_path / "one") - no_temperature).abs().max().item() <= 1e-5

    chosen = extend(source, tmp_path / "chosen", capsys, "--attention-factor", "1.05")
    assert chosen["attention_factor"] == pytest.approx(1.05)
    extend(source, tmp_path / "chosen-baked", capsys, "--attention-factor", "1.05", "--bake-temperature")
    config_only = logits(tmp_path / "chosen")
    assert (logits(tmp_path / "chosen-baked") - config_only).abs().max().item() <= 1e-4
    assert (config_only - no_temperature).abs().max().item() > 1e-3


def test_a_pair_with_a_ratio_bakes_the_shared_rotary_key(sources, tmp_path, capsys):
    """A model's own pair survives --replace. With mscale != mscale_all_dim, cos/sin carry the ratio r as well: the bake
    puts r² on the shared rotary key's rows (and its bias) and nothing on the latent rows before them."""
    from safetensors.numpy import load_file

    source = tmp_path / "scaled"
    build_model("deepseek_v3", seed=2, qk_scale=6.0, rope_parameters=yarn(factor=2.0, mscale=1.0, mscale_all_dim=0.5)).save_pretrained(source)
    config = json.loads((source / "config.json").read_text())
    config["max_position_embeddings"] = 2 * ORIGINAL
    (source / "config.json").write_text(json.dumps(config))
    plain = extend(source, tmp_path / "plain", capsys, "--replace")
    ratio = rope_scalars.get_mscale(SCALE, 1.0) / rope_scalars.get_mscale(SCALE, 0.5)
    assert plain["attention_factor"] == pytest.approx(ratio * rope_scalars.get_mscale(SCALE, 0.5))
    extend(source, tmp_path / "baked", capsys, "--replace", "--bake-temperature")
    assert (logits(tmp_path / "baked") - logits(tmp_path / "plain")).abs().max().item() <= 1e-4
    before, after = load_file(source / "model.safetensors"), load_file(tmp_path / "baked" / "model.safetensors")
    key = "model.layers.1.self_attn.kv_a_proj_with_mqa.weight"
    assert (after[key][:16] == before[key][:16]).all()
    np.testing.assert_allclose(after[key][16:], before[key][16:].astype("float64") * ratio**2, rtol=1e-6)
    bias = key.replace("weight", "bias")
    np.testing.assert_allclose(after[bias][16:], before[bias][16:].astype("float64") * ratio**2, rtol=1e-6)
    assert abs(ratio**2 - 1) > 0.1  # the check above can fail


def test_inspect_equals_transformers_rope_init(sources, tmp_path, capsys):
    """inspect's scaled θ and cos/sin factor for an extended MLA config equal ROPE_INIT_FUNCTIONS['yarn']; the softmax
    factor is shown beside it."""
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    extend(sources["deepseek_v3"], tmp_path / "plain", capsys)
    code, out, err = run(["inspect", str(tmp_path / "plain"), "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    config = AutoConfig.from_pretrained(tmp_path / "plain")
    inv_freq, factor = ROPE_INIT_FUNCTIONS["yarn"](config, "cpu")
    ours = [row["scaled_inv_freq"] for row in report["dimensions"]]
    assert torch.allclose(torch.tensor(ours, dtype=torch.float64), inv_freq.double(), rtol=1e-6, atol=0)
    assert report["attention_factor"] == pytest.approx(factor)
    assert report["softmax_mscale"] == pytest.approx(rope_scalars.get_mscale(SCALE))
    code, out, err = run(["inspect", str(sources["deepseek_v3"]), "--scale", "4", "--json"], capsys)
    assert (json.loads(out)["attention_factor"], json.loads(out)["softmax_mscale"]) == (1.0, pytest.approx(rope_scalars.get_mscale(SCALE)))


def test_kimi_k2_is_the_deepseek_family(tmp_path, capsys):
    """Kimi-K2 ships model_type kimi_k2 with DeepSeek-V3's tensors: the same entry serves it (data, not a branch)."""
    from yarn_cli.core.checkpoint import architectures

    assert architectures.for_model_type("kimi_k2") is architectures.for_model_type("deepseek_v3")
    source = tmp_path / "kimi"
    build_model("deepseek_v3", seed=1).save_pretrained(source)
    config = json.loads((source / "config.json").read_text())
    config["model_type"] = "kimi_k2"
    (source / "config.json").write_text(json.dumps(config))
    report = extend(source, tmp_path / "out", capsys, "--bake-temperature")
    assert len(report["baked_tensors"]) == 2


def test_bake_without_the_latent_width_is_one_line(sources, tmp_path, capsys):
    source = tmp_path / "broken"
    build_model("deepseek_v3", seed=1).save_pretrained(source)
    config = json.loads((source / "config.json").read_text())
    config["kv_lora_rank"] = "wide"
    (source / "config.json").write_text(json.dumps(config))
    capsys.readouterr()  # the save's progress bar
    code, _, err = run(["extend", str(source), "-s", "4", "-o", str(tmp_path / "o"), "--bake-temperature"], capsys)
    assert code != 0 and "kv_lora_rank" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def converted(tmp_path_factory, smollm2_gguf) -> dict[str, Path]:
    """A tiny DeepSeek-V3 with SmolLM2's vocabulary, as an HF folder and as llama.cpp's own converter writes it
    (architecture deepseek2). Trained length 128; q and the shared key x6, so every RoPE difference shows."""
    from llama_cpp_converter import convert
    from tiny_models import MLA
    from transformers import AutoTokenizer, DeepseekV3Config, DeepseekV3ForCausalLM

    pytest.importorskip("llama_cpp")
    folder = tmp_path_factory.mktemp("deepseek") / "hf"
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    tokenizer.save_pretrained(folder)
    settings = {**MLA, "attention_bias": False, "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    config = DeepseekV3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        q_lora_rank=32,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        **settings,
    )
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("q_b_proj.weight", "kv_a_proj_with_mqa.weight")):
                param.mul_(6.0)
    model.save_pretrained(folder)
    return {"hf": folder, "gguf": convert(folder, folder.parent / "tiny.gguf")}


def test_llama_cpp_runs_the_extended_gguf_as_transformers_runs_the_extended_folder(converted, tmp_path, capsys):
    """The same model extended x4 both ways: llama.cpp's deepseek2 on the GGUF (yarn_log_multiplier 0.1) and
    transformers on the folder (mscale pair 1, 1) agree past the trained length. A bare yarn block, or a GGUF
    without the multiplier (llama.cpp then applies m twice on the rotary dims), is far off."""
    from llama_cpp_converter import llama_cpp_logprobs

    gguf_out, hf_out = tmp_path / "x4.gguf", tmp_path / "x4"
    for source, out in ((converted["gguf"], gguf_out), (converted["hf"], hf_out)):
        assert run(["extend", str(source), "--scale", "4", "-o", str(out)], capsys)[0] == 0
    ids = [1] + [(7 * i + 3) % 4000 + 20 for i in range(400)]
    picked = torch.arange(len(ids) - 1), torch.tensor(ids[1:])

    def transformers_logprobs(folder: Path, rope_parameters: dict | None = None) -> torch.Tensor:
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(folder)
        if rope_parameters is not None:
            config.rope_parameters, config.max_position_embeddings = rope_parameters, 512
        model = AutoModelForCausalLM.from_pretrained(folder, config=config, dtype=torch.float32).eval()
        with torch.no_grad():
            return torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)[:-1][picked]

    for path in (gguf_out, hf_out):  # inspect reads both forms as the same temperature: M in the softmax, cos/sin 1
        code, out, err = run(["inspect", str(path), "--json"], capsys)
        report = json.loads(out)
        assert (report["attention_factor"], report["softmax_mscale"]) == (pytest.approx(1.0), pytest.approx(rope_scalars.get_mscale(4)))
    theirs = transformers_logprobs(hf_out)
    ours = llama_cpp_logprobs(gguf_out, ids)
    assert float((ours - theirs).abs().max()) < 1e-3
    bare = transformers_logprobs(converted["hf"], yarn(factor=4.0, original_max_position_embeddings=128))
    twice = llama_cpp_logprobs(gguf_out, ids, **{"deepseek2.rope.scaling.yarn_log_multiplier": 0.0})
    for other in (bare, twice):
        assert float((ours - other).abs().max()) > 2e-2


def test_verify_variants_on_transformers_apply_the_softmax_factor(sources, tmp_path, capsys):
    """verify swaps RoPE variants into the loaded model. For MLA the factor sits in each attention module's softmax
    scale, so the baseline of an extended (or baked) checkpoint must take it out there: it then scores exactly as the
    unextended model, and the paper's YaRN variant on the unextended model scores as the extended checkpoint. Parity
    on the extended folder is exact and tells the faults apart."""
    from yarn_cli.core.rope import variants
    from yarn_cli.runtimes.transformers import TransformersEngine

    source = sources["deepseek_v3"]
    extend(source, tmp_path / "plain", capsys)
    extend(source, tmp_path / "baked", capsys, "--bake-temperature")
    ids = [int(i) for i in torch.randint(3, 128, (500,), generator=torch.Generator().manual_seed(1))]

    def losses(folder: Path, pick) -> list[float]:
        engine = TransformersEngine(folder, "cpu")
        try:
            return engine.score(pick(engine), ids, 0).losses
        finally:
            engine.close()

    def far(a: list[float], b: list[float]) -> float:
        return max(abs(x - y) for x, y in zip(a, b))

    unextended = losses(source, lambda e: variants.declared(e.facts.rope))
    extended = losses(tmp_path / "plain", lambda e: variants.declared(e.facts.rope))
    assert far(extended, unextended) > 1e-3
    for folder in ("plain", "baked"):
        assert far(losses(tmp_path / folder, lambda e: variants.baseline(e.facts.rope, e.facts.baked_attention_factor)), unextended) < 1e-5, folder
    assert far(losses(source, lambda e: variants.yarn(e.facts.rope, SCALE, original_context=ORIGINAL)), extended) < 1e-5
    text = tmp_path / "words.txt"  # words the tiny vocabulary knows, so that positions differ
    text.write_text(" ".join(f"w{i}" for i in torch.randint(3, 128, (4000,), generator=torch.Generator().manual_seed(2)).tolist()))
    code, out, err = run(["verify", str(tmp_path / "plain"), "--engine", "transformers", "--parity-only", "--text", str(text), "--json"], capsys)
    parity = json.loads(out)["parity"]
    assert code == 0 and parity["diagnosis"] == "exact", (parity["hypotheses"], parity["line"])
    assert min(v for k, v in parity["hypotheses"].items() if k != "exact") > 1e-3


def test_baked_baseline_is_the_unextended_model_when_the_pair_has_a_ratio(sources, tmp_path, capsys):
    """With mscale != mscale_all_dim the bake puts M² on every q row and r² on the rotary key: the baseline must take
    M out of the softmax and r out of cos/sin, so the baked checkpoint's baseline scores as the model without YaRN
    (transformers' plain RoPE on the original weights). Taking the whole m out of the softmax, as for a pair without
    a ratio, leaves (M/m)² on the no-RoPE dims and shows here."""
    from dataclasses import replace

    from transformers import AutoConfig, AutoModelForCausalLM

    from yarn_cli.core.rope import variants
    from yarn_cli.runtimes.transformers import TransformersEngine

    source = tmp_path / "scaled"
    build_model("deepseek_v3", seed=2, qk_scale=6.0, rope_parameters=yarn(factor=2.0, mscale=1.0, mscale_all_dim=0.5)).save_pretrained(source)
    word_tokenizer(source)
    config = json.loads((source / "config.json").read_text())
    config["max_position_embeddings"] = 2 * ORIGINAL
    (source / "config.json").write_text(json.dumps(config))
    extend(source, tmp_path / "baked", capsys, "--replace", "--bake-temperature")
    plain_rope = {"rope_type": "default", "rope_theta": 10000.0}
    ids = torch.randint(3, 128, (1, 500), generator=torch.Generator().manual_seed(1))
    reference_config = AutoConfig.from_pretrained(source)
    reference_config.rope_parameters = plain_rope
    reference = AutoModelForCausalLM.from_pretrained(source, config=reference_config, dtype=torch.float32).eval()
    with torch.no_grad():
        scores = torch.log_softmax(reference(ids).logits[0].double(), -1)
    expected = [-float(s) for s in scores[:-1][torch.arange(499), ids[0, 1:]]]
    engine = TransformersEngine(tmp_path / "baked", "cpu")
    try:
        spec, baked = engine.facts.rope, engine.facts.baked_attention_factor
        assert spec.baked_softmax_mscale is not None and abs(spec.baked_softmax_mscale - baked) > 0.01
        ours = engine.score(variants.baseline(spec, baked), ids[0].tolist(), 0).losses
        whole_m = engine.score(variants.baseline(replace(spec, baked_softmax_mscale=None), baked), ids[0].tolist(), 0).losses
    finally:
        engine.close()
    exact, wrong = (max(abs(a - b) for a, b in zip(losses, expected)) for losses in (ours, whole_m))
    assert exact < 1e-5 and wrong > 50 * exact, (exact, wrong)
