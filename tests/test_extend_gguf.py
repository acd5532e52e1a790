"""`yarn extend` on GGUF: exact keys and types, byte-identical data, atomic writes, llama.cpp's own verdict."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gguf_factory import write_tiny_gguf
from test_cli_inspect import run, subprocess_env

from yarn_cli.io import fastcopy
from yarn_cli.io.gguf_reader import read_gguf


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_region(path: Path) -> bytes:
    parsed = read_gguf(path)
    with open(path, "rb") as handle:
        handle.seek(parsed.data_start)
        return handle.read()


def tensor_info_bytes(path: Path) -> bytes:
    parsed = read_gguf(path)
    with open(path, "rb") as handle:
        handle.seek(parsed.tensor_info_start)
        return handle.read(parsed.tensor_info_end - parsed.tensor_info_start)


def raw_records(path: Path) -> dict[str, bytes]:
    parsed = read_gguf(path)
    blob = path.read_bytes()
    return {key: blob[f.start : f.end] for key, f in parsed.fields.items()}


YARN_KEYS = {
    "context_length": ("UINT32", None),
    "rope.scaling.type": ("STRING", "yarn"),
    "rope.scaling.factor": ("FLOAT32", None),
    "rope.scaling.original_context_length": ("UINT32", None),
}


def assert_extended(source: Path, out: Path, arch: str, scale: float, original: int) -> None:
    import gguf

    result = read_gguf(out)
    expected = {
        f"{arch}.context_length": ("UINT32", int(original * scale)),
        f"{arch}.rope.scaling.type": ("STRING", "yarn"),
        f"{arch}.rope.scaling.factor": ("FLOAT32", scale),
        f"{arch}.rope.scaling.original_context_length": ("UINT32", original),
    }
    for key, (type_name, value) in expected.items():
        assert result.fields[key].type_name == type_name, key
        assert result.fields[key].value == pytest.approx(value), key
    # every other record byte for byte, in the same order; tensor infos and data unchanged
    before, after = raw_records(source), raw_records(out)
    untouched = [k for k in before if k not in expected]
    assert [k for k in after if k in untouched] == untouched
    assert all(before[k] == after[k] for k in untouched)
    assert tensor_info_bytes(source) == tensor_info_bytes(out)
    assert data_region(source) == data_region(out)
    assert result.data_start % result.alignment == 0
    # the reference reader agrees
    reference = gguf.GGUFReader(out)
    assert reference.fields[f"{arch}.rope.scaling.type"].contents() == "yarn"
    assert len(reference.tensors) == len(read_gguf(source).tensors)


def test_tiny_gguf_extend(tmp_path, capsys):
    source = write_tiny_gguf(tmp_path / "tiny.gguf", context=4096)
    digest = sha(source)
    out = tmp_path / "out.gguf"
    code, _, err = run(["extend", str(source), "--scale", "4", "-o", str(out)], capsys)
    assert code == 0, err
    assert_extended(source, out, "llama", 4.0, 4096)
    assert sha(source) == digest
    assert [p.name for p in tmp_path.iterdir() if ".yarn-tmp-" in p.name] == []


def test_smollm2_extend(tmp_path, smollm2_gguf, capsys):
    digest = sha(smollm2_gguf)
    out = tmp_path / "smol-32k.gguf"
    code, stdout, err = run(["extend", str(smollm2_gguf), "--to", "32k", "-o", str(out), "--json"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["scale"] == 4.0 and summary["target_context"] == 32768 and summary["original_context"] == 8192
    assert summary["files"] == [{"path": str(out), "action": "rewritten", "bytes": out.stat().st_size}]
    assert_extended(smollm2_gguf, out, "llama", 4.0, 8192)
    assert sha(smollm2_gguf) == digest


LLAMA_CPP_PROBE = """
import sys
from llama_cpp import Llama
model = Llama(sys.argv[1], n_ctx=int(sys.argv[2]), verbose=True, n_threads=2, logits_all=True)
print("N_CTX_TRAIN", model._model.n_ctx_train(), "N_CTX", model.n_ctx(), flush=True)
tokens = model.tokenize(b"The capital of France is")
model.eval(tokens)
print("NEXT", int(model.scores[len(tokens) - 1].argmax()), flush=True)
print("TOP", float(model.scores[len(tokens) - 1].max()), flush=True)
"""


def llama_cpp_load(path: Path, n_ctx: int) -> str:
    pytest.importorskip("llama_cpp")
    result = subprocess.run(
        [sys.executable, "-c", LLAMA_CPP_PROBE, str(path), str(n_ctx)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def log_value(log: str, name: str) -> str:
    for line in log.splitlines():
        if line.startswith(("print_info:", "llama_context:")) and line.split(":", 1)[1].strip().startswith(name + " "):
            return line.split("=", 1)[1].strip()
    raise AssertionError(f"llama.cpp did not log {name}")


def test_llama_cpp_honours_the_metadata(tmp_path, smollm2_gguf, capsys):
    out = tmp_path / "smol-x4.gguf"
    assert run(["extend", str(smollm2_gguf), "-s", "4", "-o", str(out)], capsys)[0] == 0
    # n_ctx=0 asks llama.cpp for the model's own default: the new trained context
    log = llama_cpp_load(out, 0)
    assert log_value(log, "rope scaling") == "yarn"
    assert float(log_value(log, "freq_scale_train")) == 0.25
    assert int(log_value(log, "n_ctx_orig_yarn")) == 8192
    assert int(log_value(log, "n_ctx_train")) == 32768
    assert int(log_value(log, "n_ctx")) == 32768
    assert "N_CTX_TRAIN 32768 N_CTX 32768" in log
    # llama-cpp-python's own default context parameters load it too
    baseline = llama_cpp_load(smollm2_gguf, 512)
    extended = llama_cpp_load(out, 512)
    assert log_value(baseline, "rope scaling") == "linear"  # llama.cpp's name for "no scaling" at factor 1

    def printed(log: str, name: str) -> str:
        return [line for line in log.splitlines() if line.startswith(name + " ")][0].split(" ", 1)[1]

    # a short prompt sits in the high-frequency pairs YaRN keeps: the greedy token survives
    assert printed(baseline, "NEXT") == printed(extended, "NEXT")
    assert float(printed(extended, "TOP")) > 1.0  # real logits, not an empty buffer


def test_already_extended_is_refused_then_replaced(tmp_path, capsys):
    source = write_tiny_gguf(tmp_path / "t.gguf", context=4096)
    first, second = tmp_path / "x4.gguf", tmp_path / "x8.gguf"
    assert run(["extend", str(source), "-s", "4", "-o", str(first)], capsys)[0] == 0
    code, _, err = run(["extend", str(first), "-s", "8", "-o", str(second)], capsys)
    assert code == 5 and "already carries a RoPE scaling" in err and "--replace" in err and not second.exists()
    code, _, err = run(["extend", str(first), "-s", "8", "-o", str(second), "--replace"], capsys)
    assert code == 0, err
    assert_extended(first, second, "llama", 8.0, 4096)


def test_legacy_linear_scaling_replaced(tmp_path, capsys):
    source = write_tiny_gguf(tmp_path / "t.gguf", context=8192, extra={"llama.rope.scale_linear": 2.0})
    out = tmp_path / "o.gguf"
    assert run(["extend", str(source), "-s", "4", "-o", str(out)], capsys)[0] == 5
    code, _, err = run(["extend", str(source), "-s", "4", "-o", str(out), "--replace"], capsys)
    assert code == 2 and "--original-context" in err
    code, _, err = run(["extend", str(source), "-s", "4", "-o", str(out), "--replace", "--original-context", "4096"], capsys)
    assert code == 0, err
    parsed = read_gguf(out)
    assert "llama.rope.scale_linear" not in parsed.fields
    assert parsed.get("llama.context_length") == 16384 and parsed.get("llama.rope.scaling.original_context_length") == 4096


def test_unknown_architecture_and_deepseek2(tmp_path, capsys):
    source = write_tiny_gguf(tmp_path / "m.gguf", arch="myarch", context=2048)
    out = tmp_path / "m2.gguf"
    assert run(["extend", str(source), "-s", "2", "-o", str(out)], capsys)[0] == 0
    assert_extended(source, out, "myarch", 2.0, 2048)
    deep = write_tiny_gguf(tmp_path / "d.gguf", arch="deepseek2", context=4096)
    out = tmp_path / "d2.gguf"
    assert run(["extend", str(deep), "-s", "4", "-o", str(out)], capsys)[0] == 0
    field = read_gguf(out).fields["deepseek2.rope.scaling.yarn_log_multiplier"]
    assert field.type_name == "FLOAT32" and field.value == pytest.approx(0.1)


def test_custom_alignment_kept(tmp_path, capsys):
    source = write_tiny_gguf(tmp_path / "a.gguf", alignment=64)
    out = tmp_path / "b.gguf"
    assert run(["extend", str(source), "-s", "2", "-o", str(out)], capsys)[0] == 0
    assert read_gguf(out).alignment == 64
    assert_extended(source, out, "llama", 2.0, 4096)


def test_split_gguf(tmp_path, capsys):
    write_tiny_gguf(tmp_path / "in" / "m.gguf" if (tmp_path / "in").mkdir() is None else None, split_max_tensors=2)
    first = tmp_path / "in" / "m-00001-of-00003.gguf"
    digests = {p.name: sha(p) for p in (tmp_path / "in").iterdir()}
    out = tmp_path / "out" / "m-yarn.gguf"
    code, stdout, err = run(["extend", str(first), "-s", "2", "-o", str(out), "--json"], capsys)
    assert code == 0, err
    files = json.loads(stdout)["files"]
    names = [Path(f["path"]).name for f in files]
    assert names == [f"m-yarn-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert [f["action"] for f in files] == ["rewritten", "linked", "linked"]
    assert_extended(first, Path(files[0]["path"]), "llama", 2.0, 4096)
    for i in (2, 3):
        assert sha(Path(files[i - 1]["path"])) == digests[f"m-0000{i}-of-00003.gguf"]
    assert read_gguf(Path(files[0]["path"])).get("split.count") == 3
    assert {p.name: sha(p) for p in (tmp_path / "in").iterdir()} == digests


def test_interrupt_leaves_nothing(tmp_path, capsys, monkeypatch):
    source = write_tiny_gguf(tmp_path / "t.gguf")
    digest = sha(source)
    out = tmp_path / "o.gguf"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fastcopy, "copy_bytes", interrupted)
    code, _, err = run(["extend", str(source), "-s", "2", "-o", str(out)], capsys)
    assert code == 130 and "interrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.gguf"] and sha(source) == digest


def test_disk_full_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    source = write_tiny_gguf(tmp_path / "t.gguf")
    out = tmp_path / "o.gguf"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fastcopy, "copy_bytes", full)
    code, _, err = run(["extend", str(source), "-s", "2", "-o", str(out)], capsys)
    assert code == 6 and "no space left" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.gguf"]


def test_output_rules(tmp_path, capsys):
    source = write_tiny_gguf(tmp_path / "t.gguf")
    out = tmp_path / "o.gguf"
    out.write_bytes(b"keep me")
    code, _, err = run(["extend", str(source), "-s", "2", "-o", str(out)], capsys)
    assert code == 6 and "--force" in err and out.read_bytes() == b"keep me"
    assert run(["extend", str(source), "-s", "2", "-o", str(out), "--force"], capsys)[0] == 0
    assert read_gguf(out).get("llama.context_length") == 8192
    digest = sha(source)
    code, _, err = run(["extend", str(source), "-s", "2", "-o", str(source), "--force"], capsys)
    assert code == 6 and "must not be the input" in err and sha(source) == digest
    # default name beside the input, and a folder as -o
    assert run(["extend", str(source), "-s", "2"], capsys)[0] == 0
    assert (tmp_path / "t-yarn2x.gguf").exists()
    (tmp_path / "dir").mkdir()
    assert run(["extend", str(source), "-s", "2", "-o", str(tmp_path / "dir")], capsys)[0] == 0
    assert (tmp_path / "dir" / "t-yarn2x.gguf").exists()


def test_dry_run_writes_nothing(tmp_path, capsys):
    source = write_tiny_gguf(tmp_path / "t.gguf")
    code, stdout, _ = run(["extend", str(source), "-s", "3", "-o", str(tmp_path / "o.gguf"), "--dry-run", "--json"], capsys)
    assert code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["t.gguf"]
    plan = json.loads(stdout)
    assert plan["dry_run"] and plan["files"] == []
    assert [c["key"] for c in plan["changes"]] == [
        "llama.context_length",
        "llama.rope.scaling.type",
        "llama.rope.scaling.factor",
        "llama.rope.scaling.original_context_length",
    ]
    code, stdout, _ = run(["extend", str(source), "-s", "3", "-o", str(tmp_path / "o.gguf"), "--dry-run"], capsys)
    flat = " ".join(stdout.split())
    assert "nothing written" in flat and "llama.rope.scaling.factor" in flat


@pytest.mark.parametrize(
    "args, message",
    [
        (["-s", "1"], "--scale must be"),
        (["--to", "2k"], "not longer than the trained length"),
        (["-s", "2", "--to", "8k"], "exactly one of"),
        ([], "exactly one of"),
        (["--to", "lots"], "not a length"),
        (["-s", "2", "--bake-temperature"], "applies the YaRN attention factor itself"),
    ],
)
def test_bad_arguments(tmp_path, capsys, args, message):
    source = write_tiny_gguf(tmp_path / "t.gguf")
    code, _, err = run(["extend", str(source), *args, "-o", str(tmp_path / "o.gguf")], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o.gguf").exists()


def test_hostile_input_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (2**60).to_bytes(8, "little") * 2 + b"\0" * 32)
    code, _, err = run(["extend", str(bad), "-s", "2", "-o", str(tmp_path / "o.gguf")], capsys)
    assert code == 3 and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf"]


def test_wrongly_typed_context_length_is_rewritten_as_uint32(tmp_path):
    import gguf

    path = tmp_path / "u64.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_uint64("llama.context_length", 4096)
    writer.add_uint32("llama.embedding_length", 64)
    writer.add_uint32("llama.attention.head_count", 2)
    import numpy as np

    writer.add_tensor("x", np.zeros(32, np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    from yarn_cli.api import apply_extend, plan_extend

    out = tmp_path / "o.gguf"
    plan = plan_extend(path, out, scale=2.0)
    assert any("was UINT64" in n for n in plan.rope.notes)
    apply_extend(plan)
    assert read_gguf(out).fields["llama.context_length"].type_name == "UINT32"
    assert os.path.getsize(out) > 0


def test_gemma3_gguf_local_rope_and_sliding_window_cache(tmp_path, capsys):
    """llama.cpp runs Gemma 3's sliding layers (5 of every 6) at base 10000 when the file records none, and
    caches only the window there; extend scales the global RoPE only."""
    path = write_tiny_gguf(tmp_path / "g3.gguf", arch="gemma3", context=8192, base=1e6, blocks=12, extra={"gemma3.attention.sliding_window": 512})
    code, out, _ = run(["inspect", str(path), "-s", "4", "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and [(r["name"], r["theta"]) for r in report["ropes"]] == [("global", 1e6), ("local (sliding window)", 1e4)]
    kv = report["kv_cache"]
    assert (kv["full_attention_layers"], kv["sliding_window_layers"], kv["sliding_window"]) == (2, 10, 512)
    assert kv["bytes_at_target_16bit"] == _gemma3_static_cache_bytes(32768) // 2  # float32 there, 16-bit here

    out_path = tmp_path / "g3-x4.gguf"
    code, _, _ = run(["extend", str(path), "-s", "4", "-o", str(out_path)], capsys)
    code, out, _ = run(["inspect", str(out_path), "--json"], capsys)
    ropes = json.loads(out)["ropes"]
    assert ropes[0]["scaling"]["type"] == "yarn" and ropes[0]["scaling"]["factor"] == 4.0
    assert ropes[1]["scaling"] is None and ropes[1]["theta"] == 1e4


def test_modelfile_and_run_hints(smollm2_gguf, tmp_path, capsys):
    """--modelfile writes what Ollama needs to serve the new length; the run lines are in --json."""
    out = tmp_path / "s.gguf"
    code, stdout, _ = run(["extend", str(smollm2_gguf), "-s", "4", "-o", str(out), "--modelfile", "--dry-run", "--json"], capsys)
    assert code == 0 and not (tmp_path / "s.Modelfile").exists()
    code, stdout, _ = run(["extend", str(smollm2_gguf), "-s", "4", "-o", str(out), "--modelfile", "--json"], capsys)
    report = json.loads(stdout)
    assert (tmp_path / "s.Modelfile").read_text() == "FROM ./s.gguf\nPARAMETER num_ctx 32768\n"
    assert {"path": str(tmp_path / "s.Modelfile"), "action": "written", "bytes": 38} in report["files"]
    commands = {hint["engine"]: hint["command"] for hint in report["run"]}
    assert commands["llama.cpp"] == "llama-cli -m s.gguf -c 32768" and commands["ollama"] == "ollama create s -f s.Modelfile"
    code, _, _ = run(["extend", str(smollm2_gguf), "-s", "4", "-o", str(out), "--modelfile"], capsys)
    assert code == 6  # an existing Modelfile is an existing output like any other


def _gemma3_static_cache_bytes(tokens: int) -> int:
    """What transformers' StaticCache allocates for the same Gemma 3 shape (12 layers, 5 of 6 sliding over 512)."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, StaticCache

    config = Gemma3TextConfig(
        vocab_size=300,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=12,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        sliding_window=512,
        max_position_embeddings=tokens,
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    cache = StaticCache(config=config, max_cache_len=tokens)
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]), past_key_values=cache, use_cache=True)
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
