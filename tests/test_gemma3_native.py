"""Gemma 3 on the native engine: a tiny Gemma 3 made by transformers' own class, turned into a GGUF by llama.cpp's
own converter, extended by yarn_cli. The native pass over the GGUF (norms with llama.cpp's folded 1, GeGLU, the
embedding scale, sliding-window layers with their own RoPE) gives transformers' log-probabilities for the HF folder,
extended and not; and verify runs the GGUF past its trained length on native and on llama.cpp, parity exact.

The tiny model follows llama.cpp's Gemma 3 rules, which its GGUF does not store: every 6th layer is global and the
sliding layers rotate with base 10,000. Its window (64) is shorter than the 401-token test sequence."""

from __future__ import annotations

import json

import pytest
from llama_cpp_converter import llama_cpp_logprobs
from test_cli_inspect import run
from test_converted_families import IDS, converted, tokenizer, transformers_logprobs  # noqa: F401 - tokenizer is a fixture

torch = pytest.importorskip("torch")
pytest.importorskip("llama_cpp")

GEMMA3 = {
    "num_hidden_layers": 6,
    "layer_types": ["sliding_attention"] * 5 + ["full_attention"],
    "rope_local_base_freq": 10000.0,
    "sliding_window": 64,
}


@pytest.fixture(scope="module")
def gemma3(tokenizer, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("gemma3")
    folder, gguf = converted("gemma3_text", tokenizer, root, GEMMA3, [])
    for source, out in ((folder, root / "x4"), (gguf, root / "x4.gguf")):
        code = run_quiet(["extend", str(source), "-s", "4", "-o", str(out)])
        assert code == 0
    return {"folder": folder, "gguf": gguf, "hf_x4": root / "x4", "gguf_x4": root / "x4.gguf"}


def run_quiet(args: list[str]) -> int:
    from yarn_cli.cli.app import main

    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def native_logprobs(path) -> torch.Tensor:
    from yarn_cli.core.rope import variants
    from yarn_cli.native.engine import NativeEngine

    engine = NativeEngine(path, "cpu", dtype=torch.float32, chunk=128)  # 401 tokens in 4 chunks: the cached path runs too
    try:
        assert engine.spec.attention.sliding_layers == (0, 1, 2, 3, 4) and engine.spec.attention.sliding_window == 64
        return -torch.tensor(engine.score(variants.declared(engine.facts.rope), IDS, 0).losses, dtype=torch.float64)
    finally:
        engine.close()


def test_native_runs_the_gemma3_gguf_as_transformers_runs_the_folder(gemma3):
    for gguf, folder in ((gemma3["gguf"], gemma3["folder"]), (gemma3["gguf_x4"], gemma3["hf_x4"])):
        ours, theirs = native_logprobs(gguf), transformers_logprobs(folder)
        assert float((ours - theirs).abs().max()) < 1e-4
    # the extension is visible at this length: the unextended folder gives other numbers
    assert float((native_logprobs(gemma3["gguf_x4"]) - transformers_logprobs(gemma3["folder"])).abs().max()) > 1e-2


def test_llama_cpp_runs_the_extended_gemma3_gguf_as_transformers(gemma3):
    ours, theirs = llama_cpp_logprobs(gemma3["gguf_x4"], IDS), transformers_logprobs(gemma3["hf_x4"])
    assert float((ours - theirs).abs().max()) < 1e-3


@pytest.mark.parametrize("engine", ["native", "llama.cpp"])
def test_verify_runs_the_gemma3_gguf_past_its_trained_length_with_parity_exact(gemma3, engine, capsys):
    args = ["verify", str(gemma3["gguf_x4"]), "--engine", engine, "--lengths", "384", "--tasks", "perplexity", "--ppl-windows", "1", "--json"]
    code, out, err = run(args, capsys)
    report = json.loads(out)
    assert report["lengths"] == [384] and report["original_context"] == 128, err
    parity = report["parity"]
    assert parity is not None and parity["diagnosis"] == "exact", (parity, report["notes"])
    assert parity["reference"] == ("transformers" if engine == "native" else "native")
    assert "engine_crash" not in report and code in (0, 1)  # a random tiny model's verdict may not pass; the run completes
