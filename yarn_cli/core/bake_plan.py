"""Which rows of which tensors carry YaRN's attention factor m when it is baked into the weights (docs/conventions.md §5).

RoPE is a rotation, so scaling q and k by a constant commutes with it: multiplying the rotary part
of the q and k projections by m each gives the logits the runtime's cos/sin x m would. Where a
per-head norm follows the projection (qk-norm) the norm weight carries m instead, since the norm
would undo a projection scale. Only the rotary dims of each head are scaled (rotate-half layout:
the first D of each head).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from yarn_cli.core import architectures, hf_config
from yarn_cli.errors import UnsupportedError

FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


@dataclass(frozen=True)
class BakeOp:
    """Multiply ``rows`` (index ranges along dim 0) of ``tensor`` by ``factor``.

    With ``norm_offset`` = 1 (Gemma's RMSNorm multiplies by 1 + w) the new value is factor·(1 + w) - 1.
    """

    tensor: str
    rows: tuple[tuple[int, int], ...]
    factor: float
    norm_offset: float = 0.0
    role: str = ""


def _head_rows(n_heads: int, head_dim: int, rotary_dim: int, start: int = 0, stride: int | None = None) -> list[tuple[int, int]]:
    """The rotary rows of each head: [start + h·stride, start + h·stride + D)."""
    stride = head_dim if stride is None else stride
    return [(start + h * stride, start + h * stride + rotary_dim) for h in range(n_heads)]


def _merge(rows: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[list[int]] = []
    for begin, end in sorted(rows):
        if merged and begin <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([begin, end])
    return tuple((a, b) for a, b in merged)


def yarn_layers(cfg: dict[str, Any], n_layers: int, policy: str) -> list[int]:
    """The layers whose RoPE carries the YaRN scaling (Gemma 3: global layers only)."""
    if policy == "all":
        return list(range(n_layers))
    layer_types = cfg.get("layer_types")
    if isinstance(layer_types, list) and len(layer_types) == n_layers:
        return [i for i, kind in enumerate(layer_types) if kind != "sliding_attention"]
    pattern = int(cfg.get("sliding_window_pattern") or 6)  # transformers' Gemma 3 default: every 6th layer is global
    return [i for i in range(n_layers) if (i + 1) % pattern == 0]


def plan_bake(config: dict[str, Any], tensors: Mapping[str, tuple[str, tuple[int, ...]]], factor: float) -> list[BakeOp]:
    """Every tensor operation that bakes ``factor`` into q and k, validated against the headers.

    ``tensors`` maps each tensor name to (safetensors dtype, shape).
    """
    if config.get("quantization_config") or hf_config.text_config(config).get("quantization_config"):
        raise UnsupportedError(
            "config.json has a quantization_config: baking needs float q/k weights; bake the unquantized checkpoint, then quantize"
        )
    cfg = hf_config.text_config(config)
    model_type = str(cfg.get("model_type") or config.get("model_type") or "")
    arch = architectures.for_model_type(model_type) or architectures.for_model_type(str(config.get("model_type") or ""))
    if arch is None:
        raise UnsupportedError(
            f"--bake-temperature does not know where q/k live in model type {model_type!r}; supported: "
            f"{', '.join(architectures.supported_model_types())} (a config-only extend works for any RoPE model)"
        )
    dims = hf_config.model_dims(config)
    layers, heads, kv_heads = dims["layers"], dims["heads"], dims["kv_heads"]
    if not layers or not heads or not kv_heads:
        raise UnsupportedError(f"config.json lacks layer or head counts needed to locate q/k rows for {model_type!r}")
    head_dim, rotary_dim = hf_config.head_dims(cfg, None if hf_config.is_nested_rope_parameters(cfg.get("rope_parameters")) else cfg.get("rope_parameters"))
    attention = arch.attention
    ops: list[BakeOp] = []

    def find(layer: int, suffix: str, required: bool = True) -> str | None:
        for prefix in arch.layer_prefixes:
            name = prefix.format(layer=layer) + suffix
            if name in tensors:
                return name
        if required:
            raise UnsupportedError(
                f"{arch.family}: expected tensor ...{suffix} for layer {layer} under "
                f"{' or '.join(p.format(layer=layer) for p in arch.layer_prefixes)}; the checkpoint does not have it"
            )
        return None

    def add(name: str | None, rows: list[tuple[int, int]], role: str, offset: float = 0.0) -> None:
        if name is None:
            return
        dtype, shape = tensors[name]
        if dtype not in FLOAT_DTYPES:
            raise UnsupportedError(f"{name} is {dtype}: baking needs a float tensor (F16, BF16, F32); quantized weights are not supported")
        if not shape or max(end for _, end in rows) > shape[0]:
            raise UnsupportedError(f"{name}: shape {list(shape)} does not fit {heads} heads x {head_dim} (config and weights disagree)")
        ops.append(BakeOp(name, _merge(rows), factor, offset, role))

    q_rows = _head_rows(heads, head_dim, rotary_dim)
    k_rows = _head_rows(kv_heads, head_dim, rotary_dim)
    for layer in yarn_layers(cfg, layers, arch.yarn_layers):
        kind = arch.attention_kind
        if kind == "separate":
            add(find(layer, attention["q_weight"]), q_rows, "q")
            add(find(layer, attention["k_weight"]), k_rows, "k")
            if "q_bias" in attention:
                add(find(layer, attention["q_bias"], required=False), q_rows, "q bias")
                add(find(layer, attention["k_bias"], required=False), k_rows, "k bias")
        elif kind == "fused":
            if attention["qkv_layout"] == "q_k_v":
                rows = q_rows + _head_rows(kv_heads, head_dim, rotary_dim, start=heads * head_dim)
            else:  # per head [q_h, k_h, v_h]
                if heads != kv_heads:
                    raise UnsupportedError(f"{arch.family}: per-head interleaved qkv needs as many KV heads as heads")
                rows = _head_rows(heads, head_dim, rotary_dim, stride=3 * head_dim) + _head_rows(
                    heads, head_dim, rotary_dim, start=head_dim, stride=3 * head_dim
                )
            add(find(layer, attention["qkv_weight"]), rows, "qkv")
            if "qkv_bias" in attention:
                add(find(layer, attention["qkv_bias"], required=False), rows, "qkv bias")
        else:
            offset = float(attention.get("norm_offset", 0.0))
            if attention["norm_scope"] == "head":
                norm_rows = [(0, rotary_dim)]
                add(find(layer, attention["q_norm"]), norm_rows, "q norm", offset)
                add(find(layer, attention["k_norm"]), norm_rows, "k norm", offset)
            else:
                add(find(layer, attention["q_norm"]), q_rows, "q norm", offset)
                add(find(layer, attention["k_norm"]), k_rows, "k norm", offset)
    return ops
