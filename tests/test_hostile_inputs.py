"""Hostile and malformed input, end to end through the CLI: every case exits non-zero with one line that
says what and where (never "internal error", never a traceback), writes nothing, and leaves the input
as it was. Cases are grouped by where the bad value lives: the command line, a GGUF, an HF folder."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import write_config
from gguf_factory import write_tiny_gguf
from test_cli_inspect import run

LLAMA = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 1,
    "max_position_embeddings": 256,
    "rope_theta": 10000.0,
    "vocab_size": 16,
}


# --- inputs -------------------------------------------------------------------------------------------


def gguf(root: Path, **extra) -> Path:
    return write_tiny_gguf(root / "m.gguf", extra=extra or None)


def gguf_rope_freqs(root: Path, values: list[float]) -> Path:
    """A GGUF with a rope_freqs tensor (llama.cpp's per-pair divisors; this file rotates 32 pairs)."""
    return write_tiny_gguf(root / "m.gguf", tensors={"rope_freqs.weight": values})


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _record(key: str, type_id: int, payload: bytes) -> bytes:
    return _string(key) + struct.pack("<I", type_id) + payload


def raw_gguf(root: Path, context: bytes | None = None, duplicate: bool = False) -> Path:
    """A hand-built llama GGUF: context_length's record can be replaced, a key repeated."""
    records = [
        _record("general.architecture", 8, _string("llama")),
        context if context is not None else _record("llama.context_length", 4, struct.pack("<I", 4096)),
        _record("llama.embedding_length", 4, struct.pack("<I", 256)),
        _record("llama.attention.head_count", 4, struct.pack("<I", 4)),
        _record("llama.rope.dimension_count", 4, struct.pack("<I", 64)),
    ]
    if duplicate:
        records.append(records[2])
    info = _string("blk.0.ffn_up.weight") + struct.pack("<IQQIQ", 2, 32, 2, 0, 0)
    head = b"GGUF" + struct.pack("<IQQ", 3, 1, len(records)) + b"".join(records) + info
    head += b"\0" * (-len(head) % 32)
    path = root / "m.gguf"
    path.write_bytes(head + b"\0" * 256)
    return path


def truncated_gguf(root: Path) -> Path:
    path = gguf(root)
    path.write_bytes(path.read_bytes()[:-100])  # the last tensor's data runs past the end
    return path


def fifo(root: Path, name: str = "m.gguf") -> Path:
    os.mkfifo(root / name)
    return root / name


def symlink(root: Path, target: str, name: str = "m.gguf") -> Path:
    (root / name).symlink_to(target)
    return root / name


def folder_named(root: Path, name: str) -> Path:
    (root / name).mkdir()
    return root / name


def split_missing(root: Path) -> Path:
    write_tiny_gguf(root / "s.gguf", split_max_tensors=2)
    (root / "s-00002-of-00003.gguf").unlink()
    return root / "s-00001-of-00003.gguf"


def hf(root: Path, tensors: dict | None = None, **changes) -> Path:
    """A tiny llama folder; a change of None removes the key."""
    from safetensors.numpy import save_file

    config = {**LLAMA, **changes}
    config = {k: v for k, v in config.items() if v is not None}
    folder = root / "model"
    write_config(folder, config)
    save_file(tensors or {"model.layers.0.self_attn.q_proj.weight": np.ones((64, 64), np.float32)}, str(folder / "model.safetensors"))
    return folder


def hf_raw_config(root: Path, text: str) -> Path:
    folder = hf(root)
    (folder / "config.json").write_text(text)
    return folder


def hf_raw_weights(root: Path, header: dict, data: bytes, declared: int | None = None) -> Path:
    folder = hf(root)
    raw = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", declared or len(raw)) + raw + data)
    return folder


def hf_index(root: Path, shard: str) -> Path:
    folder = hf(root)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": shard}}))
    return folder


def hf_fifo_config(root: Path) -> Path:
    folder = hf(root)
    (folder / "config.json").unlink()
    os.mkfifo(folder / "config.json")
    return folder


def hf_pickled_only(root: Path) -> Path:
    folder = hf(root)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not unpickled")
    return folder


Q = "model.layers.0.self_attn.q_proj.weight"
K = "model.layers.0.self_attn.k_proj.weight"
F32_16 = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}

# id: (make input under root, args with {in} and {out}, exit code, what the one line must say)
CASES = {
    # frequency factors (rope_freqs) and --stack
    "stack-without-factors": (gguf, ["extend", "{in}", "-s", "2", "--stack", "-o", "{out}"], 2, "this file has none"),
    "stack-on-hf": (hf, ["extend", "{in}", "-s", "2", "--stack", "-o", "{out}"], 2, "--stack is for GGUF"),
    "rope-freqs-too-few": (
        lambda root: gguf_rope_freqs(root, [1.0, 2.0, 4.0]),
        ["inspect", "{in}"],
        3,
        "rope_freqs.weight has 3 factors for 32 rotary pairs",
    ),
    "rope-freqs-zero": (
        lambda root: gguf_rope_freqs(root, [0.0] + [1.0] * 31),
        ["extend", "{in}", "-s", "2", "-o", "{out}"],
        3,
        "not a positive number",
    ),
    "rope-freqs-stacked-silently": (
        lambda root: gguf_rope_freqs(root, [1.0] * 16 + [8.0] * 16),
        ["extend", "{in}", "-s", "2", "-o", "{out}"],
        5,
        "--replace",
    ),
    # the command line
    "unknown-option-inspect": (gguf, ["inspect", "{in}", "--bogus"], 2, "No such option"),
    "unknown-option-extend": (gguf, ["extend", "{in}", "-s", "2", "-o", "{out}", "--bogus"], 2, "No such option"),
    "scale-nan": (gguf, ["extend", "{in}", "-s", "nan", "-o", "{out}"], 2, "finite number > 1"),
    "scale-inf": (gguf, ["extend", "{in}", "-s", "inf", "-o", "{out}"], 2, "finite number > 1"),
    "scale-minus-inf": (gguf, ["extend", "{in}", "--scale=-inf", "-o", "{out}"], 2, "finite number > 1"),
    "scale-1e9": (gguf, ["extend", "{in}", "-s", "1e9", "-o", "{out}"], 2, "beyond the 4,294,967,295"),
    "scale-abc": (gguf, ["extend", "{in}", "-s", "abc", "-o", "{out}"], 2, "Invalid value for '--scale'"),
    "scale-1": (gguf, ["extend", "{in}", "-s", "1", "-o", "{out}"], 2, "finite number > 1"),
    "scale-0": (gguf, ["extend", "{in}", "-s", "0", "-o", "{out}"], 2, "finite number > 1"),
    "scale-negative": (gguf, ["extend", "{in}", "--scale=-2", "-o", "{out}"], 2, "finite number > 1"),
    "scale-missing-value": (gguf, ["extend", "{in}", "-o", "{out}", "-s"], 2, "requires an argument"),
    "scale-and-to": (gguf, ["extend", "{in}", "-s", "2", "--to", "16k", "-o", "{out}"], 2, "exactly one of"),
    "to-zero": (gguf, ["extend", "{in}", "--to", "0", "-o", "{out}"], 2, "whole, positive"),
    "to-negative": (gguf, ["extend", "{in}", "--to=-5", "-o", "{out}"], 2, "not a length"),
    "to-beyond-u32": (gguf, ["extend", "{in}", "--to", "5000000000", "-o", "{out}"], 2, "beyond the 4,294,967,295"),
    "to-4096m": (gguf, ["extend", "{in}", "--to", "4096m", "-o", "{out}"], 2, "beyond the 4,294,967,295"),
    "to-shorter": (gguf, ["extend", "{in}", "--to", "1k", "-o", "{out}"], 2, "not longer than the trained length"),
    "to-fraction": (gguf, ["extend", "{in}", "--to", "10000.5", "-o", "{out}"], 2, "whole, positive"),
    "original-context-zero": (
        gguf,
        ["extend", "{in}", "-s", "2", "--original-context", "0", "-o", "{out}"],
        2,
        "--original-context must be a positive",
    ),
    "original-context-negative": (
        gguf,
        ["extend", "{in}", "-s", "2", "--original-context=-1", "-o", "{out}"],
        2,
        "--original-context must be a positive",
    ),
    "original-context-text": (
        gguf,
        ["extend", "{in}", "-s", "2", "--original-context", "lots", "-o", "{out}"],
        2,
        "Invalid value for '--original-context'",
    ),
    "inspect-scale-nan": (gguf, ["inspect", "{in}", "-s", "nan"], 2, "finite number > 1"),
    "inspect-scale-1": (gguf, ["inspect", "{in}", "-s", "1"], 2, "finite number > 1"),
    "inspect-scale-huge": (gguf, ["inspect", "{in}", "-s", "1e12"], 2, "beyond the 4,294,967,295"),
    "inspect-method": (gguf, ["inspect", "{in}", "--method", "magic"], 2, "--method 'magic'"),
    "bake-gguf": (gguf, ["extend", "{in}", "-s", "2", "--bake-temperature", "-o", "{out}"], 2, "applies the YaRN attention"),
    "out-is-input": (gguf, ["extend", "{in}", "-s", "2", "-o", "{in}", "--force"], 6, "must not be the input"),
    "out-inside-input": (lambda r: hf(r), ["extend", "{in}", "-s", "2", "-o", "{in}/sub"], 6, "must not be the input"),
    # GGUF files
    "gguf-data-past-end": (truncated_gguf, ["extend", "{in}", "-s", "2", "-o", "{out}"], 3, "lies outside"),
    "gguf-duplicate-key": (lambda r: raw_gguf(r, duplicate=True), ["extend", "{in}", "-s", "2", "-o", "{out}"], 3, "duplicate key"),
    "gguf-context-string": (
        lambda r: raw_gguf(r, _record("llama.context_length", 8, _string("4096"))),
        ["extend", "{in}", "-s", "2", "-o", "{out}"],
        3,
        "llama.context_length",
    ),
    "gguf-context-zero": (
        lambda r: raw_gguf(r, _record("llama.context_length", 4, struct.pack("<I", 0))),
        ["inspect", "{in}"],
        3,
        "context_length is 0",
    ),
    "gguf-context-float": (
        lambda r: raw_gguf(r, _record("llama.context_length", 6, struct.pack("<f", 4096.0))),
        ["inspect", "{in}"],
        3,
        "llama.context_length",
    ),
    "gguf-factor-string": (
        lambda r: gguf(r, **{"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": "four"}),
        ["inspect", "{in}"],
        3,
        "rope.scaling.factor must be a positive number",
    ),
    "gguf-base-string": (lambda r: gguf(r, **{"llama.rope.freq_base": "big"}), ["inspect", "{in}"], 3, "freq_base"),
    "gguf-bad-magic": (lambda r: _put(r / "m.gguf", b"NOPE" + b"\0" * 40), ["extend", "{in}", "-s", "2", "-o", "{out}"], 3, "not a GGUF file"),
    "gguf-empty": (lambda r: _put(r / "m.gguf", b""), ["inspect", "{in}"], 3, "too short"),
    "gguf-header-only": (
        lambda r: _put(r / "m.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 5) + b"\0" * 8),
        ["inspect", "{in}"],
        3,
        "more than 32 bytes can hold",
    ),
    "gguf-fifo": (fifo, ["extend", "{in}", "-s", "2", "-o", "{out}"], 2, "is a FIFO (named pipe)"),
    "gguf-fifo-inspect": (fifo, ["inspect", "{in}"], 2, "is a FIFO (named pipe)"),
    "gguf-dev-zero": (lambda r: symlink(r, "/dev/zero"), ["extend", "{in}", "-s", "2", "-o", "{out}"], 2, "is a character device"),
    "gguf-dev-zero-inspect": (lambda r: symlink(r, "/dev/zero"), ["inspect", "{in}"], 2, "is a character device"),
    "gguf-folder": (lambda r: folder_named(r, "m.gguf"), ["extend", "{in}", "-s", "2", "-o", "{out}"], 2, "is a folder"),
    "gguf-folder-inspect": (lambda r: folder_named(r, "m.gguf"), ["inspect", "{in}"], 2, "is a folder"),
    "gguf-dangling-symlink": (lambda r: symlink(r, "gone.gguf"), ["extend", "{in}", "-s", "2", "-o", "{out}"], 2, "does not exist"),
    "gguf-split-missing-shard": (split_missing, ["extend", "{in}", "-s", "2", "-o", "{out}"], 3, "missing shard"),
    # HF folders
    "hf-config-not-json": (lambda r: hf_raw_config(r, "{oops"), ["extend", "{in}", "-s", "2", "-o", "{out}"], 3, "not valid JSON"),
    "hf-config-list": (lambda r: hf_raw_config(r, "[1, 2]"), ["inspect", "{in}"], 3, "JSON object"),
    "hf-config-fifo": (hf_fifo_config, ["extend", "{in}", "-s", "2", "-o", "{out}"], 2, "is a FIFO (named pipe)"),
    "hf-no-config": (lambda r: folder_named(r, "empty"), ["extend", "{in}", "-s", "2", "-o", "{out}"], 2, "no config.json"),
    "hf-factor-string": (
        lambda r: hf(r, rope_scaling={"rope_type": "yarn", "factor": "4", "original_max_position_embeddings": 64}),
        ["extend", "{in}", "-s", "2", "--replace", "-o", "{out}"],
        3,
        "rope_scaling.factor must be a finite",
    ),
    "hf-factor-string-inspect": (
        lambda r: hf(r, rope_scaling={"rope_type": "yarn", "factor": "4"}),
        ["inspect", "{in}"],
        3,
        "rope_scaling.factor must be a finite",
    ),
    "hf-beta-string": (
        lambda r: hf(r, rope_scaling={"rope_type": "yarn", "factor": 4.0, "beta_fast": "32"}),
        ["inspect", "{in}"],
        3,
        "beta_fast must be a finite",
    ),
    "hf-truncate-string": (
        lambda r: hf(r, rope_scaling={"rope_type": "yarn", "factor": 4.0, "truncate": "no"}),
        ["inspect", "{in}"],
        3,
        "truncate must be true or false",
    ),
    "hf-original-negative": (
        lambda r: hf(r, rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": -1}),
        ["inspect", "{in}"],
        3,
        "original_max_position_embeddings must be a positive",
    ),
    "hf-long-factor-strings": (
        lambda r: hf(r, rope_scaling={"rope_type": "longrope", "factor": 4.0, "long_factor": ["a"], "short_factor": [1.0]}),
        ["inspect", "{in}"],
        3,
        "long_factor must be a list of numbers",
    ),
    "hf-ntk-alpha-string": (
        lambda r: hf(r, rope_scaling={"type": "dynamic", "alpha": "1000", "factor": 1.0}),
        ["extend", "{in}", "-s", "2", "-o", "{out}"],
        3,
        "alpha must be a positive number",
    ),
    "hf-no-rope-interval-zero": (
        lambda r: hf(r, model_type="llama4_text", no_rope_layers=[], no_rope_layer_interval=0),
        ["extend", "{in}", "-s", "2", "--bake-temperature", "-o", "{out}"],
        3,
        "no_rope_layer_interval must be a whole number",
    ),
    "hf-rope-scaling-list": (lambda r: hf(r, rope_scaling=[1]), ["extend", "{in}", "-s", "2", "-o", "{out}"], 3, "rope_scaling must be an object"),
    "hf-unknown-rope-type": (lambda r: hf(r, rope_scaling={"rope_type": "magic", "factor": 2.0}), ["inspect", "{in}"], 4, "rope type 'magic'"),
    "hf-theta-string": (lambda r: hf(r, rope_theta="1e4"), ["extend", "{in}", "-s", "2", "-o", "{out}"], 3, "rope_theta must be a number"),
    "hf-max-positions-string": (
        lambda r: hf(r, max_position_embeddings="4096"),
        ["extend", "{in}", "-s", "2", "-o", "{out}"],
        3,
        "max_position_embeddings must be a positive integer",
    ),
    "hf-max-positions-zero": (
        lambda r: hf(r, max_position_embeddings=0),
        ["inspect", "{in}"],
        3,
        "max_position_embeddings must be a positive integer",
    ),
    "hf-partial-rotary-string": (lambda r: hf(r, partial_rotary_factor="half"), ["inspect", "{in}"], 3, "partial_rotary_factor must be"),
    "hf-head-dim-string": (lambda r: hf(r, head_dim="16"), ["inspect", "{in}"], 3, "head_dim must be a positive integer"),
    "hf-heads-bool": (lambda r: hf(r, num_attention_heads=True), ["inspect", "{in}"], 3, "num_attention_heads must be"),
    "hf-local-base-string": (lambda r: hf(r, rope_local_base_freq="1e4"), ["inspect", "{in}"], 3, "rope_local_base_freq"),
    "hf-kv-lora-rank-string": (lambda r: hf(r, kv_lora_rank="512"), ["inspect", "{in}"], 3, "kv_lora_rank must be"),
    "hf-already-yarn": (
        lambda r: hf(r, rope_scaling={"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 128}),
        ["extend", "{in}", "-s", "2", "-o", "{out}"],
        5,
        "already declares a yarn",
    ),
    "hf-index-escapes": (
        lambda r: hf_index(r, "../../etc/passwd"),
        ["extend", "{in}", "-s", "2", "-o", "{out}"],
        3,
        "points outside the model folder",
    ),
    "hf-index-missing-shard": (lambda r: hf_index(r, "gone.safetensors"), ["inspect", "{in}"], 3, "missing from the folder"),
    "hf-overlapping-tensors": (
        lambda r: hf_raw_weights(r, {Q: F32_16, K: {**F32_16, "data_offsets": [8, 24]}}, b"\0" * 24),
        ["extend", "{in}", "-s", "2", "--bake-temperature", "-o", "{out}"],
        3,
        "overlaps",
    ),
    "hf-gap-between-tensors": (
        lambda r: hf_raw_weights(r, {Q: F32_16, K: {**F32_16, "data_offsets": [20, 36]}}, b"\0" * 36),
        ["extend", "{in}", "-s", "2", "--bake-temperature", "-o", "{out}"],
        3,
        "gap of 4 bytes",
    ),
    "hf-uncovered-tail": (
        lambda r: hf_raw_weights(r, {Q: F32_16}, b"\0" * 40),
        ["extend", "{in}", "-s", "2", "-o", "{out}"],
        3,
        "tensors cover 16 of the 40-byte",
    ),
    "hf-header-past-end": (lambda r: hf_raw_weights(r, {Q: F32_16}, b"", declared=10**6), ["inspect", "{in}"], 3, "truncated or not a safetensors"),
    "hf-unknown-dtype": (lambda r: hf_raw_weights(r, {Q: {**F32_16, "dtype": "F128"}}, b"\0" * 16), ["inspect", "{in}"], 3, "unknown dtype"),
    "hf-bake-pickled-only": (hf_pickled_only, ["extend", "{in}", "-s", "2", "--bake-temperature", "-o", "{out}"], 2, "baking reads safetensors only"),
    "missing-path": (lambda r: r / "nothing-here", ["extend", "{in}", "-s", "2", "-o", "{out}"], 2, "no such file or folder"),
    # verify's and report's own flags and files, refused before any model loads
    "verify-unknown-task": (gguf, ["verify", "{in}", "--tasks", "passkey,niah_bogus"], 2, "unknown niah_bogus"),
    "verify-threshold-above-100": (gguf, ["verify", "{in}", "--threshold", "150"], 2, "RULER scores are points"),
    "verify-samples-zero": (gguf, ["verify", "{in}", "--samples", "0"], 2, "Invalid value for '--samples'"),
    "verify-compare-unknown": (gguf, ["verify", "{in}", "--compare", "linear,dynamic"], 2, "choose from linear, ntk, none"),
    "verify-base-model-without-card": (gguf, ["verify", "{in}", "--base-model", "org/name"], 2, "add --card"),
    "report-not-json": (lambda r: _put(r / "run.json", b"{nope"), ["report", "{in}", "-o", "{out}"], 3, "not JSON"),
    "report-not-a-verify-run": (lambda r: _put(r / "run.json", b'{"a": 1}'), ["report", "{in}", "-o", "{out}"], 3, "not a verify report"),
}


def _put(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under root (symlinks not followed): a file's sha256, else what it is."""
    entries = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            relative = str(path.relative_to(root))
            if path.is_symlink():
                entries[relative] = "-> " + os.readlink(path)
            elif path.is_file():
                entries[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                entries[relative] = "dir" if path.is_dir() else "special"
    return entries


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input(tmp_path, capsys, case):
    make, args, code, message = CASES[case]
    root = tmp_path / "in"
    root.mkdir()
    source = make(root)
    before = snapshot(tmp_path)
    argv = [a.replace("{in}", str(source)).replace("{out}", str(tmp_path / "out")) for a in args]
    got, out, err = run(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == code, err
    assert "internal error" not in err and "Traceback" not in err
    assert message in " ".join(err.split()), err
    usage = lines[-1].startswith("Error:")  # the framework's usage message: [usage, hint,] the one error line
    assert len(lines) == 1 or (usage and len(lines) == 3 and lines[0].startswith("Usage: yarn")), err
    if not usage:
        assert str(source.name) in err or str(tmp_path) in err or "--" in err  # says where or which flag
    assert out == ""
    assert snapshot(tmp_path) == before


def test_there_are_at_least_fifty_cases():
    assert len(CASES) >= 50
