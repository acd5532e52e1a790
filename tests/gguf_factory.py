"""Tiny GGUF files written by gguf-py's own GGUFWriter (the reference writer), for reader/extend tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

QUANT_TYPES = ("F32", "F16", "Q8_0", "Q4_0", "Q4_1", "Q6_K")


def write_tiny_gguf(
    path: Path,
    arch: str = "llama",
    context: int = 4096,
    base: float = 10000.0,
    extra: dict | None = None,
    vocab: int = 300,
    alignment: int | None = None,
    split_max_tensors: int = 0,
    blocks: int = 2,
    tensors: dict | None = None,
) -> Path:
    """A llama-shaped GGUF with tensors in several quant types and a real-looking (tiny) vocabulary."""
    import gguf
    from gguf import quants

    writer = gguf.GGUFWriter(path, arch, split_max_tensors=split_max_tensors)
    writer.add_name("tiny test model")
    writer.add_block_count(blocks)
    writer.add_context_length(context)
    writer.add_embedding_length(256)
    writer.add_feed_forward_length(512)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_rope_freq_base(base)
    writer.add_rope_dimension_count(64)
    writer.add_layer_norm_rms_eps(1e-5)
    if alignment:
        writer.add_custom_alignment(alignment)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"tok{i}" for i in range(vocab)])
    writer.add_token_types([1] * vocab)
    writer.add_token_merges([f"t o{i}" for i in range(vocab // 2)])
    for key, value in (extra or {}).items():
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
    for name, values in (tensors or {}).items():  # extra float32 tensors, such as rope_freqs.weight
        writer.add_tensor(name, np.asarray(values, dtype=np.float32))
    rng = np.random.default_rng(0)
    for i, type_name in enumerate(QUANT_TYPES):
        qtype = gguf.GGMLQuantizationType[type_name]
        data = rng.standard_normal((8, 256)).astype(np.float32)
        if type_name == "F16":
            writer.add_tensor(f"blk.{i % 2}.t{i}.weight", data.astype(np.float16))
        elif type_name == "F32":
            writer.add_tensor(f"blk.{i % 2}.t{i}.weight", data)
        elif type_name.endswith("_K"):
            # gguf-py cannot quantize K-quants; their bytes only need the right block size here.
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            raw = rng.integers(0, 255, (8, 256 // block * size), dtype=np.uint8)
            writer.add_tensor(f"blk.{i % 2}.t{i}.weight", raw, raw_dtype=qtype)
        else:
            writer.add_tensor(f"blk.{i % 2}.t{i}.weight", quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_large_gguf(path: Path, data_bytes: int, context: int = 4096) -> Path:
    """A valid llama GGUF whose one F32 tensor holds ``data_bytes`` of zeros, stored sparse (instant to
    create): big enough that a signal sent while it is being extended lands mid-write."""
    import struct

    def string(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    kv = [
        string("general.architecture") + struct.pack("<I", 8) + string("llama"),
        string("llama.context_length") + struct.pack("<II", 4, context),
        string("llama.embedding_length") + struct.pack("<II", 4, 256),
        string("llama.attention.head_count") + struct.pack("<II", 4, 4),
        string("llama.rope.dimension_count") + struct.pack("<II", 4, 64),
        string("llama.rope.freq_base") + struct.pack("<If", 6, 10000.0),
    ]
    columns = 4096
    rows = data_bytes // (4 * columns)
    info = string("blk.0.ffn_up.weight") + struct.pack("<IQQIQ", 2, columns, rows, 0, 0)
    head = b"GGUF" + struct.pack("<IQQ", 3, 1, len(kv)) + b"".join(kv) + info
    head += b"\0" * (-len(head) % 32)
    with open(path, "wb") as handle:
        handle.write(head)
        handle.truncate(len(head) + rows * columns * 4)
    return path
