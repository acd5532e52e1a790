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

from yarn_cli.core.checkpoint import architectures, hf_config, hf_layout
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


def _sliding_block_scaled(cfg: dict[str, Any]) -> bool:
    """The planned config scales the sliding layers' own RoPE block too (extend --yarn-layers all)."""
    parameters = cfg.get("rope_parameters")
    sliding = parameters.get("sliding_attention") if hf_config.is_nested_rope_parameters(parameters) else None
    return isinstance(sliding, dict) and sliding.get("rope_type") == "yarn"


def yarn_layers(cfg: dict[str, Any], n_layers: int, arch: architectures.Architecture) -> list[int]:
    """The layers whose RoPE carries the YaRN scaling (Gemma 3: the full-attention layers only; Cohere2: the sliding ones,
    its only rotating layers; SmolLM3: the layers that rotate at all, since m baked into a layer without RoPE would
    change it and nothing else would)."""
    rotating = arch.rope_layers(cfg, n_layers)
    if arch.yarn_layers == "all" or _sliding_block_scaled(cfg):
        return rotating
    sliding = set(hf_layout.sliding_layers({**cfg, "sliding_window": cfg.get("sliding_window") or 1}, n_layers))
    if arch.yarn_layers == "sliding_attention":  # without a window every layer rotates (Exaone 4 1.2B)
        return [i for i in rotating if i in sliding] if cfg.get("sliding_window") else rotating
    return [i for i in rotating if i not in sliding]


@dataclass(frozen=True)
class _Shape:
    """What locating the rotary rows needs: head counts and sizes."""

    heads: int
    kv_heads: int
    head_dim: int
    rotary_dim: int

    def q_rows(self) -> list[tuple[int, int]]:
        return _head_rows(self.heads, self.head_dim, self.rotary_dim)

    def k_rows(self) -> list[tuple[int, int]]:
        return _head_rows(self.kv_heads, self.head_dim, self.rotary_dim)


def _family(config: dict[str, Any]) -> architectures.Architecture:
    if config.get("quantization_config") or hf_config.text_config(config).get("quantization_config"):
        raise UnsupportedError(
            "config.json has a quantization_config: baking needs float q/k weights; bake the unquantized checkpoint, then quantize"
        )
    model_type = hf_config.model_type(config)
    arch = hf_config.family(config)
    if arch is None:
        raise UnsupportedError(
            f"--bake-temperature does not know where q/k live in model type {model_type!r}; supported: "
            f"{', '.join(architectures.supported_model_types())} (a config-only extend works for any RoPE model)"
        )
    if arch.bake_unsupported:
        raise UnsupportedError(f"--bake-temperature: {arch.family}: {arch.bake_unsupported} (a config-only extend works)")
    if arch.m_cancelled_by and hf_config.text_config(config).get(arch.m_cancelled_by):
        raise UnsupportedError(
            f"--bake-temperature: {arch.family}: {arch.m_cancelled_by} puts a weightless norm after RoPE, "
            "which cancels any factor in q/k, so a bake would change nothing (a config-only extend works)"
        )
    return arch


def _fused_rows(arch: architectures.Architecture, cfg: dict[str, Any], shape: _Shape) -> list[tuple[int, int]]:
    """q and k rows inside one fused qkv tensor."""
    heads, head_dim, rotary = shape.heads, shape.head_dim, shape.rotary_dim
    layout = arch.qkv_layout_for(cfg)
    if layout == "q_k_v":
        return shape.q_rows() + _head_rows(shape.kv_heads, head_dim, rotary, start=heads * head_dim)
    if layout == "grouped":  # per KV group [q heads of the group, k, v]
        if heads % shape.kv_heads:
            raise UnsupportedError(f"{arch.family}: {heads} heads do not split into {shape.kv_heads} KV groups")
        per_group = heads // shape.kv_heads
        stride = (per_group + 2) * head_dim
        # the group's q heads and then its k: per_group + 1 consecutive heads at the start of each group
        return [row for g in range(shape.kv_heads) for row in _head_rows(per_group + 1, head_dim, rotary, start=g * stride)]
    if heads != shape.kv_heads:  # per head [q_h, k_h, v_h]
        raise UnsupportedError(f"{arch.family}: per-head interleaved qkv needs as many KV heads as heads")
    return _head_rows(heads, head_dim, rotary, stride=3 * head_dim) + _head_rows(heads, head_dim, rotary, start=head_dim, stride=3 * head_dim)


def _layer_targets(arch: architectures.Architecture, cfg: dict[str, Any], shape: _Shape, kind: str) -> list[tuple[str, list[tuple[int, int]], bool]]:
    """(role, rows, required) for every tensor of a layer that carries m (``kind``: the entry's attention kind)."""
    if kind == "fused":
        rows = _fused_rows(arch, cfg, shape)
        return [("qkv", rows, True)] + ([("qkv_bias", rows, False)] if "qkv_bias" in arch.tensors else [])
    if kind == "qk_norm":
        per_head = [(0, shape.rotary_dim)]
        q_rows, k_rows = (per_head, per_head) if arch.norm_scope == "head" else (shape.q_rows(), shape.k_rows())
        return [("q_norm", q_rows, True), ("k_norm", k_rows, True)]
    targets = [("q", shape.q_rows(), True), ("k", shape.k_rows(), True)]
    biases = [(role + "_bias", rows, False) for role, rows, _ in targets if role + "_bias" in arch.tensors]
    return targets + biases


def plan_bake(
    config: dict[str, Any], tensors: Mapping[str, tuple[str, tuple[int, ...]]], factor: float, softmax_mscale: float | None = None
) -> list[BakeOp]:
    """Every tensor operation that bakes ``factor`` into q and k, validated against the headers.

    ``tensors`` maps each tensor name to (safetensors dtype, shape). ``softmax_mscale`` (MLA only): the part of
    ``factor`` that the family's runtimes put into the softmax scale, so onto every dim of q·k, not only the rotary ones.
    """
    arch = _family(config)
    cfg = hf_config.text_config(config)
    dims = hf_layout.model_dims(config)
    layers, heads, kv_heads = dims["layers"], dims["heads"], dims["kv_heads"]
    if not layers or not heads or not kv_heads:
        raise UnsupportedError(f"config.json lacks layer or head counts needed to locate q/k rows for {arch.family!r}")
    parameters = cfg.get("rope_parameters")
    head_dim, rotary_dim = hf_config.head_dims(cfg, None if hf_config.is_nested_rope_parameters(parameters) else parameters)
    shape = _Shape(heads, kv_heads, head_dim, rotary_dim)
    kind = arch.attention_kind_for(cfg)
    if kind == "mla":
        return _plan_mla(arch, cfg, tensors, shape, layers, factor, softmax_mscale or 1.0)
    offset = arch.norm_offset if kind == "qk_norm" else 0.0
    ops: list[BakeOp] = []
    for layer in yarn_layers(cfg, layers, arch):
        for role, rows, required in _layer_targets(arch, cfg, shape, kind):
            name = _find(arch, tensors, layer, role, required)
            if name is not None:
                ops.append(_op(name, tensors[name], rows, factor, offset, role.replace("_", " "), shape))
    return ops


def _plan_mla(
    arch: architectures.Architecture,
    cfg: dict[str, Any],
    tensors: Mapping[str, tuple[str, tuple[int, ...]]],
    shape: _Shape,
    layers: int,
    factor: float,
    softmax_mscale: float,
) -> list[BakeOp]:
    """MLA: the softmax factor M² goes on every row of q (each q·k dim carries it once), and the cos/sin ratio r =
    factor / M, squared, on the rotary key all heads share (it meets the rotary q dims only). q_a_proj is left alone:
    the norm after it would cancel a scale."""
    offset = cfg.get(arch.shared_rotary_key_offset_key)
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise UnsupportedError(f"config.json {arch.shared_rotary_key_offset_key} must be a whole number to locate the rotary key, got {offset!r}")
    ratio = factor / softmax_mscale
    q_rows, k_rows = [(0, shape.heads * shape.head_dim)], [(offset, offset + shape.rotary_dim)]
    targets = [("q", q_rows, softmax_mscale**2, True)]
    if ratio != 1.0:
        targets += [("k", k_rows, ratio**2, True), ("k_bias", k_rows, ratio**2, False)]
    ops: list[BakeOp] = []
    for layer in yarn_layers(cfg, layers, arch):
        for role, rows, value, required in targets:
            name = _find(arch, tensors, layer, role, required)
            if name is not None:
                ops.append(_op(name, tensors[name], rows, value, 0.0, role.replace("_", " "), shape))
    return ops


def _find(arch: architectures.Architecture, tensors: Mapping[str, Any], layer: int, role: str, required: bool) -> str | None:
    for prefix in arch.layer_prefixes:
        for name in arch.tensor_names(role):
            if prefix.format(layer=layer) + name in tensors:
                return prefix.format(layer=layer) + name
    if required:
        raise UnsupportedError(
            f"{arch.family}: expected tensor ...{' or ...'.join(arch.tensor_names(role))} for layer {layer} under "
            f"{' or '.join(p.format(layer=layer) for p in arch.layer_prefixes)}; the checkpoint does not have it"
        )
    return None


def _op(
    name: str, header: tuple[str, tuple[int, ...]], rows: list[tuple[int, int]], factor: float, offset: float, role: str, shape: _Shape
) -> BakeOp:
    dtype, dims = header
    if dtype not in FLOAT_DTYPES:
        raise UnsupportedError(f"{name} is {dtype}: baking needs a float tensor (F16, BF16, F32); quantized weights are not supported")
    if not dims or max(end for _, end in rows) > dims[0]:
        raise UnsupportedError(f"{name}: shape {list(dims)} does not fit {shape.heads} heads x {shape.head_dim} (config and weights disagree)")
    return BakeOp(name, _merge(rows), factor, offset, role)
