"""RoPE frequency math: original, YaRN and the other scalings runtimes implement.

Pure Python floats (float64), torch- and numpy-free, so `inspect` starts fast; ``.inv_freq`` and
``.ramp`` hand numpy arrays to callers that want them. Conventions (docs/conventions.md), shared by transformers'
``modeling_rope_utils``, llama.cpp's ``rope_yarn`` and vLLM:

* ``D`` is the rotary dimension (``head_dim * partial_rotary_factor``); pairs are ``i = 0 .. D/2 - 1``.
* ``inv_freq[i] = base ** (-2i / D)`` (θ_i); wavelength ``λ_i = 2π / θ_i``.
* rotations within the trained context ``r_i = L / λ_i``; high-frequency pairs have large r.
* YaRN's β thresholds are on r (rotations), never on λ/L; the ramp is linear in the pair *index*
  between floor/ceil-truncated bounds, as every runtime computes it.
* The attention factor ``m`` multiplies cos and sin, so q and k each carry m and the logits m².
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# The scalar formulas live in rope_scalars; re-exported.
from yarn_cli.core.rope.scalars import (  # noqa: F401
    BETA_FAST_DEFAULT,
    BETA_SLOW_DEFAULT,
    correction_dim,
    get_mscale,
    longrope_attention_factor,
    yarn_attention_factor,
    yarn_correction_range,
)
from yarn_cli.errors import FormatError

# Below this ramp the pair keeps its frequency, above 1 - this it is fully interpolated; used only
# to name regions for display.
_REGION_EPS = 1e-12
Vector = tuple[float, ...]


def _array(values: Iterable[float]) -> Any:
    import numpy as np

    return np.asarray(tuple(values), dtype=np.float64)


def inv_freq_values(base: float, rotary_dim: int) -> Vector:
    """θ_i = base^(-2i/D) for i = 0 .. D/2-1."""
    if rotary_dim < 2 or rotary_dim % 2:
        raise FormatError(f"rotary dimension must be an even number >= 2, got {rotary_dim}")
    if base <= 1:
        raise FormatError(f"RoPE base must be > 1, got {base}")
    return tuple(1.0 / (float(base) ** (float(i) / rotary_dim)) for i in range(0, rotary_dim, 2))


def _divided(theta: Vector, divisors: Sequence[float] | None) -> Vector:
    if divisors is None:
        return theta
    if len(divisors) != len(theta):
        raise FormatError(f"{len(divisors)} frequency factors for {len(theta)} rotary pairs; a runtime needs one per pair")
    return tuple(t / float(d) for t, d in zip(theta, divisors))


def inv_freq(base: float, rotary_dim: int) -> Any:
    """θ_i as a numpy float64 array."""
    return _array(inv_freq_values(base, rotary_dim))


def wavelength_values(frequencies: Iterable[float]) -> Vector:
    return tuple(2.0 * math.pi / float(f) for f in frequencies)


def wavelengths(frequencies: Iterable[float]) -> Any:
    """λ_i = 2π / θ_i, in tokens (numpy array)."""
    return _array(wavelength_values(frequencies))


def rotation_values(frequencies: Iterable[float], context: float) -> Vector:
    return tuple(float(context) / w for w in wavelength_values(frequencies))


def rotations(frequencies: Iterable[float], context: float) -> Any:
    """r_i = L / λ_i: how many full turns pair i makes within ``context`` tokens (numpy array)."""
    return _array(rotation_values(frequencies, context))


def linear_ramp(low: float, high: float, n_pairs: int) -> Vector:
    """clamp((i - low) / (high - low), 0, 1) over pair indices; 0 keeps θ_i, 1 fully interpolates."""
    if high == low:
        high += 0.001  # the runtimes' guard against a zero-width ramp
    return tuple(min(max((float(i) - low) / (high - low), 0.0), 1.0) for i in range(n_pairs))


@dataclass(frozen=True)
class ScaledFrequencies:
    """The result of a scaling method: new θ per pair, the ramp where the method has one, and m."""

    method: str
    inv_freq_values: Vector  # θ'_i per pair (inv_freq: the same as an array)
    attention_factor: float
    ramp_values: Vector | None = None
    low: float | None = None
    high: float | None = None
    base: float | None = None  # the effective base, for methods that change it

    @property
    def inv_freq(self) -> Any:
        """θ'_i as a numpy float64 array."""
        return _array(self.inv_freq_values)

    @property
    def ramp(self) -> Any:
        return None if self.ramp_values is None else _array(self.ramp_values)


def yarn(
    base: float,
    rotary_dim: int,
    original_context: float,
    scale: float,
    beta_fast: float = BETA_FAST_DEFAULT,
    beta_slow: float = BETA_SLOW_DEFAULT,
    truncate: bool = True,
    attention_factor: float | None = None,
    mscale: float | None = None,
    mscale_all_dim: float | None = None,
    divisors: Sequence[float] | None = None,
) -> ScaledFrequencies:
    """YaRN: θ'_i = θ_i·(1 - ramp_i) + (θ_i / s)·ramp_i, with the attention factor m.

    ``divisors``: per-pair factors the runtime divides θ by first (llama.cpp's rope_freqs); the ramp still comes
    from the undivided base, as llama.cpp computes it."""
    theta = _divided(inv_freq_values(base, rotary_dim), divisors)
    low, high = yarn_correction_range(rotary_dim, base, original_context, beta_fast, beta_slow, truncate)
    ramp = linear_ramp(low, high, rotary_dim // 2)
    scaled = tuple(t * (1.0 - r) + (t / scale) * r for t, r in zip(theta, ramp))
    m = yarn_attention_factor(scale, attention_factor, mscale, mscale_all_dim)
    return ScaledFrequencies("yarn", scaled, m, ramp, low, high, float(base))


def ntk_by_parts(
    base: float,
    rotary_dim: int,
    original_context: float,
    scale: float,
    beta_fast: float = BETA_FAST_DEFAULT,
    beta_slow: float = BETA_SLOW_DEFAULT,
    truncate: bool = True,
) -> ScaledFrequencies:
    """NTK-by-parts: YaRN's frequencies without its temperature (m = 1)."""
    result = yarn(base, rotary_dim, original_context, scale, beta_fast, beta_slow, truncate, attention_factor=1.0)
    return ScaledFrequencies("by-parts", result.inv_freq_values, 1.0, result.ramp_values, result.low, result.high, float(base))


def linear(base: float, rotary_dim: int, scale: float, divisors: Sequence[float] | None = None) -> ScaledFrequencies:
    """Position interpolation (PI): θ'_i = θ_i / s for every pair (θ divided by ``divisors`` first)."""
    theta = _divided(inv_freq_values(base, rotary_dim), divisors)
    return ScaledFrequencies("linear", tuple(t / scale for t in theta), 1.0, tuple(1.0 for _ in theta), base=float(base))


def ntk_aware_base(base: float, rotary_dim: int, scale: float) -> float:
    """NTK-aware base change: b' = b·s^(D/(D-2))."""
    return float(base) * float(scale) ** (rotary_dim / (rotary_dim - 2))


def ntk_aware(base: float, rotary_dim: int, scale: float) -> ScaledFrequencies:
    """NTK-aware: original RoPE with the base raised to b·s^(D/(D-2))."""
    new_base = ntk_aware_base(base, rotary_dim, scale)
    return ScaledFrequencies("ntk", inv_freq_values(new_base, rotary_dim), 1.0, base=new_base)


def dynamic_ntk_base(base: float, rotary_dim: int, scale: float, context: float, seq_len: float) -> float:
    """transformers' ``dynamic``: b' = b·((s·l/L) - (s-1))^(D/(D-2)) with l = max(seq_len, L)."""
    length = max(float(seq_len), float(context))
    return float(base) * ((scale * length / context) - (scale - 1)) ** (rotary_dim / (rotary_dim - 2))


def dynamic_ntk(base: float, rotary_dim: int, scale: float, context: float, seq_len: float) -> ScaledFrequencies:
    """Dynamic NTK at a given sequence length (equals the original RoPE up to L)."""
    new_base = dynamic_ntk_base(base, rotary_dim, scale, context, seq_len)
    return ScaledFrequencies("dynamic", inv_freq_values(new_base, rotary_dim), 1.0, base=new_base)


def llama3(
    base: float,
    rotary_dim: int,
    scale: float,
    original_context: float,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
) -> ScaledFrequencies:
    """Llama 3.1: λ < L/high keeps θ, λ > L/low gets θ/s, between blends by smooth = (L/λ - low)/(high - low).

    The returned ramp is the interpolated share (1 - smooth) so it reads like YaRN's.
    """
    theta = inv_freq_values(base, rotary_dim)
    low_freq_wavelen = original_context / low_freq_factor
    high_freq_wavelen = original_context / high_freq_factor
    scaled, ramp = [], []
    for t, wavelen in zip(theta, wavelength_values(theta)):
        smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        if wavelen > low_freq_wavelen:
            scaled.append(t / scale)
            ramp.append(1.0)
        elif wavelen < high_freq_wavelen:
            scaled.append(t)
            ramp.append(0.0)
        else:
            scaled.append((1 - smooth) * t / scale + smooth * t)
            ramp.append(1 - smooth)
    return ScaledFrequencies("llama3", tuple(scaled), 1.0, tuple(ramp), base=float(base))


def longrope(
    base: float,
    rotary_dim: int,
    ext_factors: Sequence[float],
    scale: float,
    original_context: float,
    attention_factor: float | None = None,
) -> ScaledFrequencies:
    """LongRoPE: θ'_i = θ_i / ext_i with per-pair factors (``long_factor`` past L, ``short_factor`` within)."""
    theta = inv_freq_values(base, rotary_dim)
    if len(ext_factors) != len(theta):
        raise FormatError(f"longrope needs {len(theta)} per-pair factors, got {len(ext_factors)}")
    m = longrope_attention_factor(scale, original_context, attention_factor)
    return ScaledFrequencies("longrope", tuple(t / float(f) for t, f in zip(theta, ext_factors)), m, base=float(base))


def regions(ramp: Iterable[float]) -> list[str]:
    """Name each pair by what the ramp does to it: extrapolate (kept), blend, interpolate (θ/s)."""
    names = []
    for value in ramp:
        if value <= _REGION_EPS:
            names.append("extrapolate")
        elif value >= 1 - _REGION_EPS:
            names.append("interpolate")
        else:
            names.append("blend")
    return names
