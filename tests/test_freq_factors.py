"""Llama 3.x GGUFs: llama.cpp's converter writes their llama3 scaling as a ``rope_freqs`` tensor, not as keys.

The GGUFs here are written by llama.cpp's own ``convert_hf_to_gguf.py`` from a tiny transformers llama with a llama3
scaling, and run in llama.cpp; the recovered scaling is held against transformers' ROPE_INIT_FUNCTIONS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli_inspect import run
from test_extend_gguf import sha

from yarn_cli.core.rope import freq_factors
from yarn_cli.io.gguf_reader import read_gguf, read_small_tensor

torch = pytest.importorskip("torch")
from transformers import CONFIG_MAPPING  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402

LLAMA3 = {
    "rope_type": "llama3",
    "rope_theta": 10000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


def transformers_llama3(theta: float, head_dim: int, factor: float, original: int, low: float, high: float) -> list[float]:
    config = CONFIG_MAPPING["llama"](
        hidden_size=head_dim * 2,
        num_attention_heads=2,
        head_dim=head_dim,
        max_position_embeddings=int(factor * original),
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": theta,
            "factor": factor,
            "low_freq_factor": low,
            "high_freq_factor": high,
            "original_max_position_embeddings": original,
        },
    )
    inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](config, device="cpu")
    return inv_freq.double().tolist()


@pytest.mark.parametrize(
    "theta, head_dim, factor, original, high",
    [
        (500000.0, 128, 8.0, 8192, 4.0),  # Llama 3.1 8B/70B/405B, 3.3 70B
        (500000.0, 64, 32.0, 8192, 4.0),  # Llama 3.2 1B
        (500000.0, 128, 32.0, 8192, 4.0),  # Llama 3.2 3B
        (500000.0, 128, 16.0, 8192, 1.0),  # Llama 4 Scout: high = low, a plain step
        (10000.0, 16, 8.0, 64, 4.0),  # the tiny model below
    ],
)
def test_llama3_recovered_from_the_factors(theta, head_dim, factor, original, high):
    """The factors the converter writes, divided into θ, are transformers' llama3 frequencies; and the
    parameters read back from the factors alone are the ones that made them."""
    table = freq_factors.llama3_table(theta, head_dim, factor, original, 1.0, high)
    divided = [t / f for t, f in zip((theta ** (-i / head_dim) for i in range(0, head_dim, 2)), table)]
    expected = transformers_llama3(theta, head_dim, factor, original, 1.0, high)
    assert divided == pytest.approx(expected, rel=2e-6)
    found = freq_factors.read([float(torch.tensor(v, dtype=torch.float32)) for v in table], theta, head_dim)
    assert (found.factor, found.original_context, found.low_freq_factor, found.high_freq_factor) == (factor, original, 1.0, high)
    assert found.assumed_length == (high == 1.0)  # a step table names no length of its own


def test_factors_that_are_no_llama3_are_shown_as_they_are():
    assert freq_factors.read([1.0] * 8, 10000.0, 16) is None  # all ones change nothing
    odd = freq_factors.read([1.0, 3.0, 1.5, 7.0, 2.0, 8.0, 8.0, 8.0], 10000.0, 16)
    assert not odd.recognized and odd.label == "per-pair factors 1..8"


def _converted_llama(folder: Path, smollm2_gguf: Path, rope_parameters: dict) -> dict[str, Path]:
    """A tiny llama with these RoPE parameters, as an HF folder and as llama.cpp's converter writes it. q/k are scaled
    up so attention is peaked and every RoPE difference shows in the log-probabilities."""
    from llama_cpp_converter import convert
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    pytest.importorskip("llama_cpp")
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        rope_parameters=dict(rope_parameters),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(10.0)
    model.save_pretrained(folder)
    return {"hf": folder, "gguf": convert(folder, folder.parent / "tiny.gguf")}


@pytest.fixture(scope="module")
def llama3_gguf(tmp_path_factory, smollm2_gguf) -> dict[str, Path]:
    """llama3 x8 from 64."""
    return _converted_llama(tmp_path_factory.mktemp("llama3") / "hf", smollm2_gguf, LLAMA3)


def test_llama_cpp_reads_no_beta_key_and_inspect_says_so(tmp_path, smollm2_gguf, capsys):
    """Kimi-K2 ships β_fast = β_slow = 1. The converter writes them into the GGUF; llama.cpp's loader reads neither and
    runs 32 and 1: its parity is exact against YaRN with β_fast 32, which differs clearly from β_fast 1."""
    yarn = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0, "original_max_position_embeddings": 64, "beta_fast": 1.0, "beta_slow": 1.0}
    made = _converted_llama(tmp_path / "hf", smollm2_gguf, yarn)
    assert read_gguf(made["gguf"]).get("llama.rope.scaling.yarn_beta_fast") == 1.0  # the converter wrote it
    warnings = _json(["inspect", str(made["gguf"])], capsys)["warnings"]
    assert any("yarn_beta_fast = 1 is not read by llama.cpp" in w and "--yarn-beta-fast 1" in w for w in warnings)
    assert _parity(made["gguf"], "llama.cpp", capsys)["diagnosis"] == "exact"
    from yarn_cli.core.rope import variants
    from yarn_cli.native.engine import NativeEngine
    from yarn_cli.runtimes.llamacpp import LlamaCppEngine

    engine, reference = LlamaCppEngine(made["gguf"], "cpu"), NativeEngine(made["gguf"], "cpu")
    try:
        ids = [1] + [(7 * i + 3) % 4000 + 20 for i in range(300)]
        engine.reserve(len(ids))
        spec = engine.facts.rope
        ran = engine.score(variants.declared(spec), ids, 0).losses
        distance = {}
        for beta_fast, beta_slow in ((32.0, 1.0), (1.0, 1.0)):
            expected = reference.score(variants.yarn(spec, 8.0, beta_fast=beta_fast, beta_slow=beta_slow), ids, 0).losses
            distance[beta_fast] = sum(abs(a - b) for a, b in zip(ran, expected)) / len(ran)
    finally:
        engine.close()
    assert distance[32.0] * 100 < distance[1.0], distance  # llama.cpp ran β_fast 32, not the file's 1


def _json(args, capsys) -> dict:
    code, out, err = run([*args, "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


def test_inspect_reads_the_tensor_as_the_hf_config_declares_it(llama3_gguf, capsys):
    values = read_small_tensor(read_gguf(llama3_gguf["gguf"]), freq_factors.TENSOR)
    assert values is not None and max(values) == 8.0  # the converter did write the tensor, and no scaling keys
    gguf_report = _json(["inspect", str(llama3_gguf["gguf"])], capsys)
    hf_report = _json(["inspect", str(llama3_gguf["hf"])], capsys)
    ours, theirs = gguf_report["rope"]["scaling"], hf_report["rope"]["scaling"]
    assert (
        (ours["type"], ours["factor"], ours["original_context"])
        == ("llama3", 8.0, 64)
        == (theirs["type"], theirs["factor"], theirs["original_context"])
    )
    assert (ours["params"]["low_freq_factor"], ours["params"]["high_freq_factor"]) == (1.0, 4.0)
    expected = transformers_llama3(10000.0, 16, 8.0, 64, 1.0, 4.0)
    assert [row["scaled_inv_freq"] for row in gguf_report["dimensions"]] == pytest.approx(expected, rel=1e-6)
    assert gguf_report["rope"]["original_context"] == 64 and gguf_report["rope"]["max_context"] == 512


def test_extend_refuses_to_stack_silently(llama3_gguf, tmp_path, capsys):
    before = sha(llama3_gguf["gguf"])
    code, out, err = run(["extend", str(llama3_gguf["gguf"]), "--scale", "2", "-o", str(tmp_path / "x.gguf")], capsys)
    assert code != 0 and "rope_freqs" in err and "--replace" in err and "--stack" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir()) and sha(llama3_gguf["gguf"]) == before
    code, _, err = run(["extend", str(llama3_gguf["gguf"]), "--scale", "2", "-o", str(tmp_path / "y.gguf"), "--replace", "--stack"], capsys)
    assert code != 0 and "exclude each other" in err and not list(tmp_path.iterdir())
    code, _, err = run(["extend", str(llama3_gguf["hf"]), "--scale", "2", "--stack", "-o", str(tmp_path / "z")], capsys)
    assert code != 0 and "--stack is for GGUF" in err and not list(tmp_path.iterdir())


def _parity(path: Path, engine: str, capsys) -> dict:
    return _json(["verify", str(path), "--engine", engine, "--parity-only"], capsys)["parity"]


def _assert_exact_and_told_apart(parity: dict, *faults: str) -> None:
    assert parity["diagnosis"] == "exact", parity
    means = parity["hypotheses_mean"]
    for fault in faults:  # the check could have failed: each fault sits far from what the engine computes
        assert means[fault] > 50 * max(means["exact"], 1e-6), parity


def test_llama_cpp_runs_the_original_as_read(llama3_gguf, capsys):
    """The unextended GGUF: llama.cpp and the native engine both apply the factors, as inspect reads them."""
    _assert_exact_and_told_apart(_parity(llama3_gguf["gguf"], "llama.cpp", capsys), "no-freq-factors", "linear")
    _assert_exact_and_told_apart(_parity(llama3_gguf["gguf"], "native", capsys), "no-freq-factors")


def test_replace_rewrites_the_tensor_and_runs_yarn_alone(llama3_gguf, tmp_path, capsys):
    out = tmp_path / "replaced.gguf"
    report = _json(["extend", str(llama3_gguf["gguf"]), "--scale", "2", "--replace", "-o", str(out)], capsys)
    assert report["original_context"] == 64 and report["target_context"] == 128
    assert report["tensor_changes"][0]["tensor"] == freq_factors.TENSOR
    source, written = read_gguf(llama3_gguf["gguf"]), read_gguf(out)
    assert read_small_tensor(written, freq_factors.TENSOR) == (1.0,) * 8
    info = next(t for t in written.tensors if t.name == freq_factors.TENSOR)
    old, new = llama3_gguf["gguf"].read_bytes()[source.data_start :], out.read_bytes()[written.data_start :]
    assert len(old) == len(new) and old[: info.offset] == new[: info.offset]
    assert old[info.offset + info.nbytes :] == new[info.offset + info.nbytes :]  # every other tensor byte as it was
    scaling = _json(["inspect", str(out)], capsys)["rope"]
    assert scaling["scaling"]["type"] == "yarn" and scaling["freq_factors"] is None
    _assert_exact_and_told_apart(_parity(out, "llama.cpp", capsys), "no-scaling", "truncate-flipped")


def test_replace_gives_the_model_the_hf_side_replaces_to(llama3_gguf, tmp_path, capsys):
    """Re-extending the GGUF and the HF folder of the same model with --replace gives the same log-probabilities:
    llama.cpp on the GGUF against transformers on the folder."""
    from llama_cpp_converter import llama_cpp_logprobs
    from transformers import AutoModelForCausalLM

    gguf_out, hf_out = tmp_path / "r.gguf", tmp_path / "r-hf"
    for source, out in ((llama3_gguf["gguf"], gguf_out), (llama3_gguf["hf"], hf_out)):
        code, _, err = run(["extend", str(source), "--scale", "2", "--replace", "-o", str(out)], capsys)
        assert code == 0, err
    ids = [1] + [(7 * i + 3) % 4000 + 20 for i in range(110)]
    model = AutoModelForCausalLM.from_pretrained(hf_out, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    picked = torch.arange(len(ids) - 1), torch.tensor(ids[1:])
    assert float((llama_cpp_logprobs(gguf_out, ids, n_ctx=128) - theirs[:-1][picked]).abs().max()) < 2e-3


def test_stack_keeps_the_factors_under_yarn_as_llama_cpp_computes(llama3_gguf, tmp_path, capsys):
    out = tmp_path / "stacked.gguf"
    report = _json(["extend", str(llama3_gguf["gguf"]), "--scale", "2", "--stack", "-o", str(out)], capsys)
    assert report["original_context"] == 512 and report["target_context"] == 1024 and report["stacked_on"] == "llama3 x8"
    assert read_small_tensor(read_gguf(out), freq_factors.TENSOR) == read_small_tensor(read_gguf(llama3_gguf["gguf"]), freq_factors.TENSOR)
    shown = _json(["inspect", str(out)], capsys)
    assert shown["rope"]["freq_factors"]["llama3"]["factor"] == 8.0
    assert any("sits under the declared yarn x2" in w for w in shown["warnings"])
    _assert_exact_and_told_apart(_parity(out, "llama.cpp", capsys), "no-freq-factors", "no-scaling")
    code, _, err = run(["extend", str(out), "--scale", "2", "--stack", "-o", str(tmp_path / "again.gguf")], capsys)
    assert code != 0 and "no scaling keys" in err


def test_stack_needs_factors(tmp_path, capsys):
    from gguf_factory import write_tiny_gguf

    source = write_tiny_gguf(tmp_path / "plain.gguf")
    code, _, err = run(["extend", str(source), "--scale", "2", "--stack", "-o", str(tmp_path / "o.gguf")], capsys)
    assert code != 0 and "has none" in err and not (tmp_path / "o.gguf").exists()
