"""Header readers: agreement with the reference parsers, and hostile files giving one clear error."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from gguf_factory import write_tiny_gguf

from yarn_cli.errors import FormatError
from yarn_cli.io import gguf_reader
from yarn_cli.io.gguf_reader import read_gguf, split_shards
from yarn_cli.io.safetensors_header import read_header


def test_ggml_type_table_matches_gguf_py():
    import gguf

    for qtype, (block, size) in gguf.GGML_QUANT_SIZES.items():
        assert gguf_reader.GGML_TYPES[int(qtype)] == (qtype.name, block, size)


def compare_with_gguf_py(path: Path):
    import gguf

    reference = gguf.GGUFReader(path)
    ours = read_gguf(path)
    assert list(ours.fields) == [k for k in reference.fields if not k.startswith("GGUF.")]
    for key, field in ours.fields.items():
        ref = reference.fields[key]
        assert field.type == int(ref.types[0]), key
        if isinstance(field.value, gguf_reader.ArrayInfo):
            assert field.value.count == len(ref.data), key
        elif field.type == gguf_reader.FLOAT32:
            assert field.value == pytest.approx(ref.contents(), rel=1e-7), key
        else:
            assert field.value == ref.contents(), key
    assert [(t.name, t.ggml_type, t.nbytes) for t in ours.tensors] == [(t.name, int(t.tensor_type), int(t.n_bytes)) for t in reference.tensors]
    assert ours.data_start == reference.data_offset
    return ours


def test_gguf_reader_agrees_with_gguf_py_on_generated_file(tmp_path):
    path = write_tiny_gguf(tmp_path / "tiny.gguf", vocab=5000)
    ours = compare_with_gguf_py(path)
    assert isinstance(ours.get("tokenizer.ggml.tokens"), gguf_reader.ArrayInfo)  # skipped, not decoded


def test_gguf_reader_agrees_with_gguf_py_on_smollm2(smollm2_gguf):
    ours = compare_with_gguf_py(smollm2_gguf)
    assert ours.get("llama.rope.freq_base") == 100000.0
    assert ours.get("tokenizer.ggml.tokens").count == 49152


def test_gguf_custom_alignment(tmp_path):
    path = write_tiny_gguf(tmp_path / "a.gguf", alignment=64)
    parsed = compare_with_gguf_py(path)
    assert parsed.alignment == 64 and parsed.data_start % 64 == 0


def test_split_gguf_shards(tmp_path):
    write_tiny_gguf(tmp_path / "m.gguf", split_max_tensors=2)
    first = tmp_path / "m-00001-of-00003.gguf"
    assert [p.name for p in split_shards(first)] == [f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    (tmp_path / "m-00002-of-00003.gguf").unlink()
    with pytest.raises(FormatError, match="missing shard"):
        split_shards(first)


def _header(n_tensors=0, n_kv=1, version=3):
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _string(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


HOSTILE = {
    "bad magic": b"GGML" + b"\0" * 40,
    "too short": b"GGUF\x03\0\0",
    "version 1": _header(version=1) + b"\0" * 16,
    "big-endian": b"GGUF" + struct.pack(">IQQ", 3, 0, 1) + b"\0" * 16,
    "absurd kv count": b"GGUF" + struct.pack("<IQQ", 3, 0, 2**60) + b"\0" * 16,
    "absurd tensor count": b"GGUF" + struct.pack("<IQQ", 3, 2**60, 0) + b"\0" * 16,
    "huge key length": _header() + struct.pack("<Q", 2**62) + b"\0" * 16,
    "huge string value": _header() + _string(b"k") + struct.pack("<I", 8) + struct.pack("<Q", 2**40) + b"\0" * 8,
    "huge array": _header() + _string(b"k") + struct.pack("<IIQ", 9, 4, 2**50) + b"\0" * 8,
    "huge string array": _header() + _string(b"k") + struct.pack("<IIQ", 9, 8, 2**50) + b"\0" * 8,
    "unknown value type": _header() + _string(b"k") + struct.pack("<I", 99) + b"\0" * 8,
    "truncated value": _header() + _string(b"k") + struct.pack("<I", 10) + b"\0\0",
    "duplicate key": _header(n_kv=2) + (_string(b"k") + struct.pack("<IB", 0, 1)) * 2 + b"\0" * 8,
    "bad alignment": _header() + _string(b"general.alignment") + struct.pack("<II", 4, 3) + b"\0" * 8,
    "tensor offset outside": _header(n_tensors=1, n_kv=0) + _string(b"t") + struct.pack("<IQIQ", 1, 1024, 0, 0) + b"\0" * 64,
    "too many dims": _header(n_tensors=1, n_kv=0) + _string(b"t") + struct.pack("<I", 9) + b"\0" * 80,
    "unknown ggml type": _header(n_tensors=1, n_kv=0) + _string(b"t") + struct.pack("<IQIQ", 1, 32, 77, 0) + b"\0" * 64,
    "not utf-8 key": _header() + _string(b"\xff\xfe") + struct.pack("<IB", 0, 1) + b"\0" * 8,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_gguf_gives_format_error(tmp_path, name):
    path = tmp_path / "bad.gguf"
    path.write_bytes(HOSTILE[name])
    with pytest.raises(FormatError) as info:
        read_gguf(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_real_gguf(tmp_path, smollm2_gguf):
    cut = tmp_path / "cut.gguf"
    with open(smollm2_gguf, "rb") as src:
        cut.write_bytes(src.read(500_000))  # inside the vocabulary arrays
    with pytest.raises(FormatError, match="truncated or corrupt"):
        read_gguf(cut)
    cut.write_bytes(smollm2_gguf.read_bytes()[:-1000])  # data region short
    with pytest.raises(FormatError, match="outside"):
        read_gguf(cut)


def write_safetensors(path: Path, tensors: dict, metadata: dict | None = None) -> Path:
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata=metadata)
    return path


def test_safetensors_header_agrees_with_safetensors(tmp_path):
    from safetensors import safe_open

    tensors = {"a": np.zeros((3, 4), np.float32), "b": np.ones((5,), np.float16), "c": np.zeros((2, 2), np.int8)}
    path = write_safetensors(tmp_path / "m.safetensors", tensors, {"format": "pt"})
    header = read_header(path)
    with safe_open(str(path), "np") as reference:
        assert set(reference.keys()) == set(header.tensors)
        assert reference.metadata() == header.metadata
        for name in reference.keys():
            assert list(reference.get_slice(name).get_shape()) == list(header.tensors[name].shape)
    assert header.tensors["a"].nbytes == 48 and header.tensors["b"].dtype == "F16"


def _raw_safetensors(path: Path, header: object, data: bytes = b"", declared: int | None = None) -> Path:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    path.write_bytes(struct.pack("<Q", len(raw) if declared is None else declared) + raw + data)
    return path


HOSTILE_SAFETENSORS = {
    "header longer than file": ({"a": {}}, b"", 10**6),
    "header over cap": ({"a": {}}, b"", 2**40),
    "not json": (b"{nope", b"", None),
    "not an object": ([1, 2], b"", None),
    "offsets outside": ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, None),
    "size mismatch": ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, b"\0" * 8, None),
    "unknown dtype": ({"a": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, b"\0" * 16, None),
    "negative shape": ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b"", None),
    "bad metadata": ({"__metadata__": {"k": 1}}, b"", None),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_SAFETENSORS))
def test_hostile_safetensors_gives_format_error(tmp_path, name):
    header, data, declared = HOSTILE_SAFETENSORS[name]
    path = _raw_safetensors(tmp_path / "bad.safetensors", header, data, declared)
    with pytest.raises(FormatError) as info:
        read_header(path)
    assert "\n" not in str(info.value)


def test_tiny_safetensors_file_is_format_error(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"abc")
    with pytest.raises(FormatError, match="too short"):
        read_header(path)
