"""RoPE's scalar formulas: the YaRN ramp bounds and the attention factors (conventions as in rope.py).

numpy-free on purpose: the GGUF extend path needs only these, and never pays numpy's import.
"""

from __future__ import annotations

import math

BETA_FAST_DEFAULT = 32.0
BETA_SLOW_DEFAULT = 1.0


def correction_dim(n_rotations: float, rotary_dim: int, base: float, original_context: float) -> float:
    """The (fractional) pair index at which r_i == n_rotations: D·ln(L / (2π n)) / (2 ln b)."""
    return rotary_dim * math.log(original_context / (n_rotations * 2 * math.pi)) / (2 * math.log(base))


def yarn_correction_range(
    rotary_dim: int,
    base: float,
    original_context: float,
    beta_fast: float = BETA_FAST_DEFAULT,
    beta_slow: float = BETA_SLOW_DEFAULT,
    truncate: bool = True,
) -> tuple[float, float]:
    """(low, high) pair-index bounds of the YaRN ramp.

    low = max(floor(corr_dim(β_fast)), 0), high = min(ceil(corr_dim(β_slow)), D-1); without
    ``truncate`` (gpt-oss's ``truncate: false``) floor/ceil are skipped, the clamps stay.
    """
    low = correction_dim(beta_fast, rotary_dim, base, original_context)
    high = correction_dim(beta_slow, rotary_dim, base, original_context)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, rotary_dim - 1)


def get_mscale(scale: float, mscale: float = 1.0) -> float:
    """0.1·mscale·ln(s) + 1, and 1 when s <= 1 (the YaRN paper's sqrt(1/t); DeepSeek's get_mscale)."""
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def yarn_attention_factor(
    scale: float,
    attention_factor: float | None = None,
    mscale: float | None = None,
    mscale_all_dim: float | None = None,
) -> float:
    """The factor m that multiplies cos and sin (so q and k each carry m, logits m²).

    An explicit ``attention_factor`` wins; with both DeepSeek keys set (non-zero) it is
    get_mscale(s, mscale) / get_mscale(s, mscale_all_dim); else 0.1·ln(s) + 1.
    """
    if attention_factor is not None:
        return float(attention_factor)
    if mscale and mscale_all_dim:
        return get_mscale(scale, mscale) / get_mscale(scale, mscale_all_dim)
    return get_mscale(scale)


def softmax_mscale(scale: float, mscale_all_dim: float | None) -> float:
    """MLA (DeepSeek): the factor M whose square multiplies the softmax scale, get_mscale(s, mscale_all_dim); 1 when the
    key is unset or zero (transformers' and vLLM's ``yarn_apply_mscale`` test it for truth)."""
    return get_mscale(scale, mscale_all_dim) if mscale_all_dim else 1.0


def mscale_for(scale: float, m: float) -> float:
    """The x with get_mscale(s, x) = m: the mscale/mscale_all_dim value that gives an MLA model the factor m (s > 1)."""
    if scale <= 1:
        raise ValueError("an mscale needs a scale factor above 1")
    return (m - 1.0) / (0.1 * math.log(scale))


def longrope_attention_factor(scale: float, original_context: float, attention_factor: float | None = None) -> float:
    """LongRoPE/Phi-3: sqrt(1 + ln(s)/ln(L)), 1 when s <= 1; an explicit value wins."""
    if attention_factor is not None:
        return float(attention_factor)
    if scale <= 1.0:
        return 1.0
    return math.sqrt(1 + math.log(scale) / math.log(original_context))
