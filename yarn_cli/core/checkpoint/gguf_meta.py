"""Reading the RoPE state out of GGUF metadata (a key -> value mapping), as llama.cpp's loader does.

All keys are prefixed with ``general.architecture``. llama.cpp defaults: freq_base 10000,
rope.dimension_count = head dim, original context = context_length when no
``rope.scaling.original_context_length`` is present.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal, overload

from yarn_cli.core.checkpoint import architectures, kv_cache
from yarn_cli.core.rope import freq_factors
from yarn_cli.core.rope.freq_factors import FreqFactors
from yarn_cli.core.rope.scalars import BETA_FAST_DEFAULT, BETA_SLOW_DEFAULT, get_mscale, mscale_for
from yarn_cli.core.rope.spec import LOCAL_ROPE_NAME, RopeSpec, Scaling
from yarn_cli.errors import FormatError, UnsupportedError

# llama.cpp's LLAMA_ROPE_SCALING_TYPES; any other string aborts its loader.
GGUF_SCALING_TYPES = ("none", "linear", "yarn", "longrope")


@overload
def _int(meta: Mapping[str, Any], key: str, required: Literal[True]) -> int: ...
@overload
def _int(meta: Mapping[str, Any], key: str, required: bool = False) -> int | None: ...
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


def _rope_dims(meta: Mapping[str, Any], p: str) -> tuple[int, int]:
    """(head dim, rotary dims) as llama.cpp derives them."""
    heads = _int(meta, p + "attention.head_count")
    hidden = _int(meta, p + "embedding_length")
    head_dim = _int(meta, p + "attention.key_length") or (hidden // heads if hidden and heads else None)
    rotary_dim = _int(meta, p + "rope.dimension_count") or head_dim
    if not head_dim or not rotary_dim:
        raise FormatError(f"GGUF metadata lacks {p}rope.dimension_count and the head sizes to derive it")
    if rotary_dim % 2:
        raise FormatError(f"GGUF metadata {p}rope.dimension_count = {rotary_dim} must be even")
    return head_dim, rotary_dim


def _check_scaling_numbers(meta: Mapping[str, Any], p: str) -> None:
    for key in (p + "rope.scaling.factor", p + "rope.scale_linear"):
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            raise FormatError(f"GGUF metadata {key} must be a positive number, got {value!r}")


def _declared_scaling(
    meta: Mapping[str, Any], p: str, context: int, warnings: list[str], family: architectures.Architecture | None
) -> Scaling | None:
    """The scaling llama.cpp would run: rope.scaling.*, or the legacy rope.scale_linear."""
    _check_scaling_numbers(meta, p)
    kind = meta.get(p + "rope.scaling.type")
    factor = meta.get(p + "rope.scaling.factor")
    original = _int(meta, p + "rope.scaling.original_context_length")
    linear_legacy = meta.get(p + "rope.scale_linear")
    if kind is not None and kind not in GGUF_SCALING_TYPES:
        warnings.append(f"{p}rope.scaling.type = {kind!r} is not one llama.cpp knows ({', '.join(GGUF_SCALING_TYPES)}): it will refuse to load")
    if kind in (None, "none") and linear_legacy in (None, 1.0):
        return None
    if kind in (None, "none"):
        kind, factor = "linear", linear_legacy
    elif linear_legacy not in (None, 1.0):
        warnings.append(f"both {p}rope.scale_linear and {p}rope.scaling.type are set: stacked scalings")
    params = {key[len(p) + len("rope.") :]: value for key, value in meta.items() if key.startswith(p + "rope.scal")}
    multiplier = params.get("scaling.attn_factor")
    if kind == "yarn" and isinstance(factor, (int, float)) and factor > 1 and family is not None and family.softmax_mscale_key:
        params.update(_mla_params(float(factor), params, family.softmax_mscale_key))
    elif kind == "yarn" and factor and isinstance(multiplier, (int, float)) and "scaling.yarn_log_multiplier" not in params:
        # llama.cpp multiplies its own m by this key: the m it runs, in the form the math core reads
        params["attention_factor"] = float(multiplier) * get_mscale(float(factor))
    _warn_betas(params, p, warnings)
    scaling = Scaling(type=str(kind), factor=float(factor) if factor is not None else None, original_context=original, params=params, source="gguf")
    if scaling.type == "yarn" and not original:
        warnings.append(
            f"yarn metadata without {p}rope.scaling.original_context_length: llama.cpp takes context_length ({context}) as the trained length"
        )
    if scaling.type == "yarn" and original and factor and abs(context / original - float(factor)) > 1e-6 * context:
        warnings.append(
            f"{p}context_length {context} != factor x original ({float(factor):g} x {original}); "
            "Ollama and llama-server cap the context at context_length"
        )
    return scaling


def _mla_params(factor: float, params: Mapping[str, Any], softmax_key: str) -> dict[str, float]:
    """What llama.cpp's deepseek2 runs, in the HF keys the math core reads: cos/sin x ``attention_factor``, the softmax
    scale x get_mscale(s, ``softmax_key``)². With yarn_log_multiplier = 0.1·x (x = mscale_all_dim; llama.cpp takes
    mscale = x too) cos/sin carry the attn_factor key a and the softmax (a·get_mscale(s, x))². Without it, both carry
    a·m: m lands twice on the rotary dims."""
    a = params.get("scaling.attn_factor")
    a = float(a) if isinstance(a, (int, float)) else 1.0
    log_multiplier = params.get("scaling.yarn_log_multiplier")
    if isinstance(log_multiplier, (int, float)) and log_multiplier:
        rope, softmax = a, a * get_mscale(factor, float(log_multiplier) / 0.1)
    else:
        rope = softmax = a * get_mscale(factor)
    x = mscale_for(factor, softmax)
    return {"attention_factor": rope, "mscale": x, softmax_key: x}


EXT_FACTOR_KEY = "rope.scaling.yarn_ext_factor"


def _warn_ext_factor(meta: Mapping[str, Any], p: str, warnings: list[str]) -> None:
    """YaRN's extrapolation mix is 1 (the ramp decides each pair). llama.cpp ignores this key, while forks that read
    it (ik_llama.cpp) blend every pair by its value: a converter that wrote the scale factor here is a known fault."""
    value = meta.get(p + EXT_FACTOR_KEY)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value != 1.0:
        warnings.append(
            f"{p}{EXT_FACTOR_KEY} = {value:g}, where YaRN's extrapolation mix is 1: llama.cpp ignores this key, but runtimes "
            "that read it (ik_llama.cpp) mix every pair by it and run another model; extend writes 1"
        )


def _warn_betas(params: Mapping[str, Any], p: str, warnings: list[str]) -> None:
    """llama.cpp's loader reads no β key: it runs β_fast 32 and β_slow 1 whatever the file says (Kimi-K2 ships 1 and 1)."""
    for name, default in (("yarn_beta_fast", BETA_FAST_DEFAULT), ("yarn_beta_slow", BETA_SLOW_DEFAULT)):
        value = params.get("scaling." + name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value != default:
            warnings.append(
                f"{p}rope.scaling.{name} = {value:g} is not read by llama.cpp, which runs {default:g}: pass "
                f"--yarn-{name.split('_', 1)[1].replace('_', '-')} {value:g} to llama-cli or llama-server"
            )


def read_rope_specs(
    meta: Mapping[str, Any],
    original_context_override: int | None = None,
    factor_values: Sequence[float] | None = None,
    longrope_values: tuple[Sequence[float], Sequence[float]] | None = None,
) -> tuple[tuple[RopeSpec, ...], list[str]]:
    """The RoPE families llama.cpp runs (global, and the sliding layers' own base where it has one).

    ``factor_values``: the ``rope_freqs`` tensor's values where the file has one (llama.cpp divides θ by them).
    ``longrope_values``: the (long, short) ``rope_factors_*`` tensors of a Phi-3-style file."""
    arch = str(meta.get("general.architecture", ""))
    if not arch:
        raise FormatError("GGUF metadata has no general.architecture")
    reason = architectures.gguf_non_rope_reason(arch)
    if reason:
        raise UnsupportedError(f"GGUF architecture {arch!r} does not use RoPE ({reason}); YaRN applies only to RoPE models")
    p = f"{arch}."
    warnings: list[str] = []
    head_dim, rotary_dim = _rope_dims(meta, p)
    theta = meta.get(p + "rope.freq_base", 10000.0)
    if not isinstance(theta, (int, float)) or theta <= 1:
        raise FormatError(f"GGUF metadata {p}rope.freq_base must be a number > 1, got {theta!r}")
    context = _int(meta, p + "context_length", required=True)
    if context == 0:
        raise FormatError(f"GGUF metadata {p}context_length is 0; it must be the trained length")
    family = architectures.for_gguf(arch)
    _warn_ext_factor(meta, p, warnings)
    scaling = _declared_scaling(meta, p, context, warnings, family)
    if longrope_values is not None:
        scaling = _longrope(meta, p, context, longrope_values, scaling, warnings)
    factors = freq_factors.read(factor_values, float(theta), rotary_dim) if factor_values is not None else None
    if factors is not None:
        scaling = _with_factors(scaling, factors, warnings)
    original, source = _original_length(scaling, original_context_override, context, p)
    spec = RopeSpec(
        base=float(theta),
        head_dim=head_dim,
        rotary_dim=rotary_dim,
        original_context=original,
        original_context_source=source,
        max_context=context,
        scaling=scaling,
        layout=architectures.gguf_rope_layout(arch),
        freq_factors=factors,
        softmax_mscale_key=family.softmax_mscale_key if family else "",
    )
    local_base = _local_rope_base(meta, arch)
    if local_base is None:
        return (spec,), warnings
    return (spec, replace(spec, base=local_base, scaling=None, name=LOCAL_ROPE_NAME)), warnings


def _original_length(scaling: Scaling | None, override: int | None, context: int, p: str) -> tuple[int, str]:
    """The trained length L llama.cpp's scaling starts from, and where it was read."""
    if override is not None:
        return override, "--original-context"
    if scaling is not None and scaling.original_context:
        if scaling.source == freq_factors.SOURCE:
            return scaling.original_context, f"{freq_factors.TENSOR} (the llama3 scaling it encodes)"
        return scaling.original_context, f"{p}rope.scaling.original_context_length"
    if scaling is not None and scaling.type == "longrope":
        return context, f"{p}context_length (no rope.scaling.original_context_length beside the longrope factors)"
    return context, f"{p}context_length"


LONGROPE_TENSORS = ("rope_factors_long.weight", "rope_factors_short.weight")
LONGROPE_SOURCE = "gguf rope_factors_long/short"


def _longrope(
    meta: Mapping[str, Any], p: str, context: int, values: tuple[Sequence[float], Sequence[float]], declared: Scaling | None, warnings: list[str]
) -> Scaling | None:
    """Phi-3's longrope as llama.cpp's converter writes it: two factor tensors, ``rope.scaling.attn_factor`` and the
    trained length, with no ``rope.scaling.type``. llama.cpp divides θ by the long factors when the context window
    exceeds that length and by the short ones otherwise, and multiplies cos/sin by the attention factor."""
    if declared is not None and declared.type != "longrope":
        if all(v == 1.0 for part in values for v in part):  # what extend --replace leaves: factors that change nothing
            return declared
        warnings.append(f"{' and '.join(LONGROPE_TENSORS)} sit under the declared {declared.label}: llama.cpp divides θ by them first")
        return declared
    long, short = values
    original = _int(meta, p + "rope.scaling.original_context_length") or None
    multiplier = meta.get(p + "rope.scaling.attn_factor")
    attention = float(multiplier) if isinstance(multiplier, (int, float)) and not isinstance(multiplier, bool) else 1.0
    if original:
        warnings.append(
            f"longrope (Phi-3 style) from {original}: llama.cpp uses rope_factors_long for every token once the context "
            f"window (n_ctx) exceeds {original}, and rope_factors_short otherwise; transformers picks by each sequence's length"
        )
    params = {"long_factor": list(long), "short_factor": list(short), "attention_factor": attention, "tensors": list(LONGROPE_TENSORS)}
    factor = context / original if original else None
    return Scaling(type="longrope", factor=factor, original_context=original, params=params, source=LONGROPE_SOURCE)


def _with_factors(scaling: Scaling | None, factors: FreqFactors, warnings: list[str]) -> Scaling:
    """The scaling llama.cpp runs with frequency factors: the llama3 one they encode when the keys declare none;
    otherwise the declared one, applied on top of the factors (a stack, said as such)."""
    if scaling is not None:
        warnings.append(
            f"{freq_factors.TENSOR} ({factors.label}) sits under the declared {scaling.label}: llama.cpp divides "
            "every frequency by the factors and then applies the scaling, its ramp taken from the undivided base"
        )
        return scaling
    if factors.assumed_length:
        warnings.append(
            f"{freq_factors.TENSOR} is a plain step ({factors.label}) that fits several trained lengths; "
            f"{factors.original_context} is assumed: pass --original-context if the model card names another"
        )
    if not factors.recognized:
        warnings.append(f"{freq_factors.TENSOR} holds per-pair factors that no llama3 scaling reproduces; they are shown and applied as they are")
        return Scaling(
            type="rope_freqs", factor=max(factors.values), original_context=None, params={"tensor": freq_factors.TENSOR}, source=freq_factors.SOURCE
        )
    return Scaling(
        type="llama3",
        factor=factors.factor,
        original_context=factors.original_context,
        params={"low_freq_factor": factors.low_freq_factor, "high_freq_factor": factors.high_freq_factor, "tensor": freq_factors.TENSOR},
        source=freq_factors.SOURCE,
    )


def _local_rope_base(meta: Mapping[str, Any], arch: str) -> float | None:
    """The sliding layers' base: rope.freq_base_swa, or what llama.cpp assumes for the family."""
    value = meta.get(f"{arch}.rope.freq_base_swa")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 1:
        return float(value)
    family = architectures.for_gguf(arch)
    return family.gguf_local_rope_base if family and family.gguf_local_rope_base else None


def _sliding_layers(meta: Mapping[str, Any], arch: str, n_layers: int) -> tuple[int, ...]:
    """llama.cpp's sliding-window layers: a per-layer pattern array, a period, or the family's period."""
    pattern = meta.get(f"{arch}.attention.sliding_window_pattern")
    if isinstance(pattern, list) and len(pattern) == n_layers:
        return tuple(i for i, sliding in enumerate(pattern) if sliding)
    if not (isinstance(pattern, int) and not isinstance(pattern, bool) and pattern > 0):
        family = architectures.for_gguf(arch)
        pattern = family.sliding_window_pattern if family else 0
    return kv_cache.pattern_layers(n_layers, pattern) if pattern else ()


def model_dims(meta: Mapping[str, Any]) -> dict[str, Any]:
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
    layers = _int(meta, p + "block_count")
    layout = None
    if layers and kv_dims:
        window = _int(meta, p + "attention.sliding_window") or 0
        layout = kv_cache.AttentionLayout(layers, kv_dims, window, _sliding_layers(meta, arch, layers) if window else ())
    return {"layers": layers, "heads": heads, "kv_heads": kv_heads, "hidden_size": hidden, "attention": layout}


def query_pre_attn_scalar(meta: Mapping[str, Any]) -> float | None:
    """The q·k scalar llama.cpp uses where the family's entry says its GGUF does not store one (Gemma 3's
    query_pre_attn_scalar); None where q·k is scaled by 1/sqrt(head_dim) as usual."""
    arch = str(meta.get("general.architecture", ""))
    family = architectures.for_gguf(arch)
    rules = family.gguf_query_scalar if family else {}
    p = f"{arch}."
    rule = rules.get(str(_int(meta, p + "block_count")), rules.get("*"))
    hidden, heads = _int(meta, p + "embedding_length"), _int(meta, p + "attention.head_count")
    if rule == "hidden_per_head" and hidden and heads:
        return hidden / heads
    key_length = _int(meta, p + "attention.key_length")
    return float(key_length) if rule == "head_dim" and key_length else None
