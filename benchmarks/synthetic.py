"""Synthetic checkpoints for benchmarks: real safetensors headers over sparse (or random) data."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

LLAMA2_70B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "max_position_embeddings": 4096,
    "num_attention_heads": 64,
    "num_hidden_layers": 80,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "vocab_size": 32000,
    "torch_dtype": "bfloat16",
}


def llama_tensor_shapes(config: dict) -> list[tuple[str, list[int]]]:
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    d = h // heads
    shapes = [("model.embed_tokens.weight", [v, h])]
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes += [
            (p + "self_attn.q_proj.weight", [heads * d, h]),
            (p + "self_attn.k_proj.weight", [kv * d, h]),
            (p + "self_attn.v_proj.weight", [kv * d, h]),
            (p + "self_attn.o_proj.weight", [h, heads * d]),
            (p + "mlp.gate_proj.weight", [i, h]),
            (p + "mlp.up_proj.weight", [i, h]),
            (p + "mlp.down_proj.weight", [h, i]),
            (p + "input_layernorm.weight", [h]),
            (p + "post_attention_layernorm.weight", [h]),
        ]
    shapes += [("model.norm.weight", [h]), ("lm_head.weight", [v, h])]
    return shapes


def write_checkpoint(folder: Path, config: dict, shard_bytes: int, fill: str = "sparse", dtype: str = "BF16") -> Path:
    """A sharded HF folder. fill="sparse" leaves data as holes (no disk used); "random" writes random bytes;
    "weights" writes values distributed like trained weights (random bits are 1/128 NaN, inf or subnormal,
    which real weights never are, and subnormals make float arithmetic many times slower)."""
    width = {"BF16": 2, "F16": 2, "F32": 4}[dtype]
    shards: list[list[tuple[str, list[int]]]] = [[]]
    size = 0
    for name, shape in llama_tensor_shapes(config):
        n = width * _numel(shape)
        if shards[-1] and size + n > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += n
    return _write_shards(folder, config, shards, dtype, fill)


LLAMA31_405B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 16384,
    "intermediate_size": 53248,
    "max_position_embeddings": 131072,
    "num_attention_heads": 128,
    "num_hidden_layers": 126,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "vocab_size": 128256,
    "torch_dtype": "bfloat16",
}


def write_fixed_shards(folder: Path, config: dict, n_shards: int, dtype: str = "BF16") -> Path:
    """A sparse HF folder cut into exactly ``n_shards`` shards of about equal size, tensors in name order as
    save_pretrained writes them (so within a layer the MLP comes before self_attn, and some shards hold
    no q/k at all)."""
    width = {"BF16": 2, "F16": 2, "F32": 4}[dtype]
    tensors = sorted(llama_tensor_shapes(config))
    sizes = [width * _numel(shape) for _, shape in tensors]
    target = sum(sizes) / n_shards
    shards: list[list[tuple[str, list[int]]]] = [[] for _ in range(n_shards)]
    running = 0
    for (name, shape), size in zip(tensors, sizes):
        shards[min(int(running // target), n_shards - 1)].append((name, shape))
        running += size
    return _write_shards(folder, config, [s for s in shards if s], dtype, "sparse")


def _write_shards(folder: Path, config: dict, shards: list[list[tuple[str, list[int]]]], dtype: str, fill: str) -> Path:
    """config.json, one safetensors file per list of (name, shape), and the index."""
    width = {"BF16": 2, "F16": 2, "F32": 4}[dtype]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    weight_map = {}
    for index, members in enumerate(shards, 1):
        file_name = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        header, offset = {}, 0
        for name, shape in members:
            n = width * _numel(shape)
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
            offset += n
            weight_map[name] = file_name
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with open(folder / file_name, "wb") as handle:
            handle.write(struct.pack("<Q", len(raw)) + raw)
            if fill == "sparse":
                handle.truncate(8 + len(raw) + offset)
                continue
            remaining = offset
            chunk = _weight_like(min(remaining, 64 << 20), dtype) if fill == "weights" else os.urandom(min(remaining, 64 << 20))
            while remaining:
                part = chunk[: min(remaining, len(chunk))]
                handle.write(part)
                remaining -= len(part)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def _numel(shape: list[int]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


def _weight_like(nbytes: int, dtype: str) -> bytes:
    import numpy as np

    values = np.random.default_rng(0).normal(0.0, 0.02, nbytes // {"BF16": 2, "F16": 2, "F32": 4}[dtype]).astype(np.float32)
    if dtype == "BF16":
        return (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    return values.astype("<f2" if dtype == "F16" else "<f4").tobytes()
