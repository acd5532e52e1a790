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


@pytest.fixture(scope="module")
def gemma3_sentencepiece(tmp_path_factory):
    """A tiny Gemma 3 whose GGUF carries a SentencePiece vocabulary ('llama'), as Google's Gemma GGUFs do: a 500-piece
    BPE model with byte fallback, trained here by sentencepiece on Python's own documentation, then converted."""
    spm = pytest.importorskip("sentencepiece")
    from pydoc_data.topics import topics

    from llama_cpp_converter import convert
    from tiny_models import TINY
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    root = tmp_path_factory.mktemp("gemma3-spm")
    (root / "train.txt").write_text("\n".join(list(topics.values())[:40]), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(root / "train.txt"), model_prefix=str(root / "sp"), vocab_size=500, model_type="bpe", byte_fallback=True,
        bos_id=2, eos_id=1, pad_id=0, unk_id=3, character_coverage=1.0, minloglevel=2,
    )  # fmt: skip
    folder = root / "gemma3"
    settings = {**TINY["gemma3_text"], **GEMMA3, "vocab_size": 500, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0}
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(CONFIG_MAPPING["gemma3_text"](**{**settings, "max_position_embeddings": 128})).save_pretrained(folder)
    (folder / "tokenizer.model").write_bytes((root / "sp.model").read_bytes())
    gguf = convert(folder, root / "g.gguf")
    out = root / "g-x4.gguf"
    assert run_quiet(["extend", str(gguf), "-s", "4", "-o", str(out)]) == 0
    return out


def test_a_sentencepiece_gemma3_gguf_tokenizes_as_llama_cpp_and_verifies_natively(gemma3_sentencepiece, capsys):
    """The native engine rebuilds a SentencePiece GGUF vocabulary through transformers' converter: the same ids as
    llama.cpp's own tokenizer, a lossless round trip, and a parity check held to transformers that comes out exact."""
    import llama_cpp

    from yarn_cli.native.engine import NativeEngine

    text = "The pass key is 12345. Remember it: 12345 is the pass key.\nclass Foo(object):  pass  # émoji ☃"
    engine = NativeEngine(gemma3_sentencepiece, "cpu")
    try:
        ours = engine.tokenizer.encode(text)
        assert engine.tokenizer.decode(ours) == text
    finally:
        engine.close()
    vocab = llama_cpp.Llama(str(gemma3_sentencepiece), vocab_only=True, verbose=False)
    try:
        assert ours == vocab.tokenize(text.encode(), add_bos=False, special=True)
    finally:
        vocab.close()
    code, out, err = run(["verify", str(gemma3_sentencepiece), "--parity-only", "--json"], capsys)
    parity = json.loads(out)["parity"]
    assert code == 0 and parity["diagnosis"] == "exact" and parity["reference"] == "transformers", (err, parity)
