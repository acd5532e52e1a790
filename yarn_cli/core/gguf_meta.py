"""Reading the RoPE state out of GGUF metadata (a key -> value mapping), as llama.cpp's loader does.

All keys are prefixed with ``general.architecture``. llama.cpp defaults: freq_base 10000,
rope.dimension_count = head dim, original context = context_length when no
``rope.scaling.original_context_length`` is present.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from yarn_cli.core import architectures
from yarn_cli.core.model import LOCAL_ROPE_NAME, RopeSpec, Scaling
from yarn_cli.errors import FormatError, UnsupportedError

# llama.cpp's LLAMA_ROPE_SCALING_TYPES; any other string aborts its loader.
GGUF_SCALING_TYPES = ("none", "linear", "yarn", "longrope")


def _int(meta: Mapping[str, Any], key: str, required: bool = False) -> int | None:
    value = meta.get(key)
    if isinstance(value, list):  # per-layer counts (some hybrid models): the largest drives sizes
        value = max(value) if value else None
    if value is None:
        if required:
            raise FormatError(f"GGUF metadata lacks {key}, which llama.cpp requires")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FormatError(f"GGUF metadata {key} must be a non-negative integer, got {value!r}")
    return value


def read_rope_specs(
    meta: Mapping[str, Any], original_context_override: int | None = None
) -> tuple[tuple[RopeSpec, ...], list[str]]:
    arch = str(meta.get("general.architecture", ""))
    if not arch:
        raise FormatError("GGUF metadata has no general.architecture")
    reason = architectures.gguf_non_rope_reason(arch)
    if reason:
        raise UnsupportedError(f"GGUF architecture {arch!r} does not use RoPE ({reason}); YaRN applies only to RoPE models")
    p = f"{arch}."
    warnings: list[str] = []

    heads = _int(meta, p + "attention.head_count")
    hidden = _int(meta, p + "embedding_length")
    head_dim = _int(meta, p + "attention.key_length") or (hidden // heads if hidden and heads else None)
    rotary_dim = _int(meta, p + "rope.dimension_count") or head_dim
    if not head_dim or not rotary_dim:
        raise FormatError(f"GGUF metadata lacks {p}rope.dimension_count and the head sizes to derive it")
    if rotary_dim % 2:
        raise FormatError(f"GGUF metadata {p}rope.dimension_count = {rotary_dim} must be even")
    theta = meta.get(p + "rope.freq_base", 10000.0)
    if not isinstance(theta, (int, float)) or theta <= 1:
        raise FormatError(f"GGUF metadata {p}rope.freq_base must be a number > 1, got {theta!r}")
    context = _int(meta, p + "context_length", required=True)

    scaling = None
    kind = meta.get(p + "rope.scaling.type")
    factor = meta.get(p + "rope.scaling.factor")
    original = _int(meta, p + "rope.scaling.original_context_length")
    linear_legacy = meta.get(p + "rope.scale_linear")
    for key, value in ((p + "rope.scaling.factor", factor), (p + "rope.scale_linear", linear_legacy)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            raise FormatError(f"GGUF metadata {key} must be a positive number, got {value!r}")
    if context == 0:
        raise FormatError(f"GGUF metadata {p}context_length is 0; it must be the trained length")
    if kind is not None and kind not in GGUF_SCALING_TYPES:
        warnings.append(f"{p}rope.scaling.type = {kind!r} is not one llama.cpp knows ({', '.join(GGUF_SCALING_TYPES)}): it will refuse to load")
    if kind not in (None, "none") or (linear_legacy not in (None, 1.0)):
        params = {
            key[len(p) + len("rope.") :]: value
            for key, value in meta.items()
            if key.startswith(p + "rope.scal")
        }
        if kind in (None, "none") and linear_legacy:
            kind, factor = "linear", linear_legacy
        elif linear_legacy not in (None, 1.0):
            warnings.append(f"both {p}rope.scale_linear and {p}rope.scaling.type are set: stacked scalings")
        scaling = Scaling(
            type=str(kind),
            factor=float(factor) if factor is not None else None,
            original_context=original,
            params=params,
            source="gguf",
        )
        if scaling.type == "yarn" and not original:
            warnings.append(
                f"yarn metadata without {p}rope.scaling.original_context_length: llama.cpp takes "
                f"context_length ({context}) as the trained length"
            )
        if scaling.type == "yarn" and original and factor and abs(context / original - float(factor)) > 1e-6 * context:
            warnings.append(
                f"{p}context_length {context} != factor x original ({float(factor):g} x {original}); "
                "Ollama and llama-server cap the context at context_length"
            )

    if original_context_override is not None:
        original_ctx, source = original_context_override, "--original-context"
    elif scaling is not None and original:
        original_ctx, source = original, f"{p}rope.scaling.original_context_length"
    else:
        original_ctx, source = context, f"{p}context_length"

    layout = architectures.gguf_rope_layout(arch)
    specs = [
        RopeSpec(
            theta=float(theta),
            head_dim=head_dim,
            rotary_dim=rotary_dim,
            original_context=original_ctx,
            original_context_source=source,
            max_context=context,
            scaling=scaling,
            layout=layout,
        )
    ]
    swa_base = meta.get(p + "rope.freq_base_swa")
    if isinstance(swa_base, (int, float)) and swa_base > 1:
        specs.append(replace(specs[0], theta=float(swa_base), scaling=None, name=LOCAL_ROPE_NAME))
    return tuple(specs), warnings


def model_dims(meta: Mapping[str, Any]) -> dict[str, int | None]:
    arch = str(meta.get("general.architecture", ""))
    p = f"{arch}."
    heads = _int(meta, p + "attention.head_count")
    kv_heads = _int(meta, p + "attention.head_count_kv") or heads
    hidden = _int(meta, p + "embedding_length")
    key_length = _int(meta, p + "attention.key_length") or (hidden // heads if hidden and heads else None)
    value_length = _int(meta, p + "attention.value_length") or key_length
    kv_lora_rank = _int(meta, p + "attention.kv_lora_rank")
    if kv_lora_rank:
        kv_dims = kv_lora_rank + (_int(meta, p + "rope.dimension_count") or 0)
    elif kv_heads and key_length:
        kv_dims = kv_heads * (key_length + (value_length or key_length))
    else:
        kv_dims = None
    return {
        "layers": _int(meta, p + "block_count"),
        "heads": heads,
        "kv_heads": kv_heads,
        "hidden_size": hidden,
        "kv_dims": kv_dims,
    }
