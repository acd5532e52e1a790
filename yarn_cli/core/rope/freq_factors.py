"""Per-pair frequency factors that a runtime divides θ by before any scaling: llama.cpp's ``rope_freqs`` tensor.

llama.cpp's converter writes Llama 3.x's ``llama3`` scaling (and Llama 4's) as this tensor instead of as
``rope.scaling.*`` keys, and llama.cpp applies it under every scaling, YaRN included: it runs
θ'_i = θ_i / f_i through the scaling, while YaRN's ramp is computed from the undivided base. The factors are
part of the model as llama.cpp runs it, so every variant built from a spec carries them.

Recovering the llama3 parameters is a fit that is checked: a candidate (s, L, low, high) is accepted only when the
converter's own formula, evaluated with it, reproduces every factor in the file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from yarn_cli.core.rope.frequencies import inv_freq_values
from yarn_cli.errors import FormatError

TENSOR = "rope_freqs.weight"
SOURCE = "gguf rope_freqs"  # Scaling.source of a scaling read from the tensor alone
# Float32 storage: the converter's own float32 arithmetic differs from ours by ~1e-7.
_TOLERANCE = 1e-5
# Trained lengths tried when the factors are a plain step (no pair in the blend region) and so cannot name L themselves:
# the released models' first, then every other power of two (the first that reproduces the step is taken).
_RELEASED_LENGTHS = (8192, 4096, 2048, 16384, 32768, 1024, 65536)
_STEP_LENGTHS = _RELEASED_LENGTHS + tuple(2**k for k in range(4, 21) if 2**k not in _RELEASED_LENGTHS)


@dataclass(frozen=True)
class FreqFactors:
    """The per-pair divisors of θ a GGUF carries, and the llama3 scaling that produces them where one does."""

    values: tuple[float, ...]
    factor: float | None = None  # s
    original_context: int | None = None  # L
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    assumed_length: bool = False  # a step table fits several L; the first usual one was taken

    @property
    def recognized(self) -> bool:
        return self.factor is not None

    @property
    def label(self) -> str:
        if self.recognized:
            return f"llama3 x{self.factor:g}"
        return f"per-pair factors {min(self.values):g}..{max(self.values):g}"

    def to_json(self) -> dict[str, Any]:
        return {
            "tensor": TENSOR,
            "values": list(self.values),
            "llama3": None
            if not self.recognized
            else {
                "factor": self.factor,
                "original_context": self.original_context,
                "low_freq_factor": self.low_freq_factor,
                "high_freq_factor": self.high_freq_factor,
                "length_assumed": self.assumed_length,
            },
        }


def divisors(factors: FreqFactors | None) -> tuple[float, ...] | None:
    """What the frequency functions of ``rope`` take: the values, or None."""
    return None if factors is None else factors.values


def llama3_table(base: float, dim: int, factor: float, original: float, low: float, high: float) -> tuple[float, ...]:
    """The factors llama.cpp's converter writes for a llama3 scaling (``LlamaModel.generate_extra_tensors``)."""
    table = []
    for theta in inv_freq_values(base, dim):
        wavelength = 2 * math.pi / theta
        if wavelength < original / high:
            table.append(1.0)
        elif wavelength > original / low:
            table.append(float(factor))
        else:
            smooth = (original / wavelength - low) / (high - low)
            table.append(1 / ((1 - smooth) / factor + smooth))
    return tuple(table)


def read(values: Sequence[float], base: float, dim: int) -> FreqFactors | None:
    """The factors as a model fact: None when every factor is 1 (they change nothing), else the llama3 scaling
    that reproduces them when one does (low_freq_factor 1, as every released Llama 3.x and 4 has)."""
    values = tuple(float(v) for v in values)
    if any(not (math.isfinite(v) and v > 0) for v in values):
        raise FormatError(f"{TENSOR} holds a factor that is not a positive number")
    if len(values) != dim // 2:
        raise FormatError(f"{TENSOR} has {len(values)} factors for {dim // 2} rotary pairs; llama.cpp requires one per pair")
    if all(abs(v - 1.0) <= _TOLERANCE for v in values):
        return None
    s = max(values)
    for original, high, assumed in _candidates(values, base, dim, s):
        if original >= 1 and high > 1.0 - 1e-9 and _matches(llama3_table(base, dim, s, original, 1.0, high), values):
            return FreqFactors(values, s, int(original), 1.0, high, assumed)
    return FreqFactors(values)


def _candidates(values: tuple[float, ...], base: float, dim: int, s: float) -> list[tuple[float, float, bool]]:
    """(L, high_freq_factor, assumed) to try: solved from the blend pairs where there are any, else usual lengths."""
    theta = inv_freq_values(base, dim)
    blend = [(theta[i], _smooth(v, s)) for i, v in enumerate(values) if 1 + _TOLERANCE < v < s * (1 - _TOLERANCE)]
    found: list[tuple[float, float, bool]] = []
    if len(blend) >= 2:  # L·θ/2π = 1 + smooth·(high - 1) at two pairs: two equations, two unknowns
        (t1, m1), (t2, m2) = blend[0], blend[-1]
        det = t1 * m2 - t2 * m1
        if det:
            a = (m2 - m1) / det  # L / 2π
            d = (t1 - t2) / det  # high - 1
            found.append((_round(2 * math.pi * a), _round(1 + d, 1e-4), False))
    if blend:  # one pair: high = 4, the released models' value
        t, m = blend[0]
        found.append((_round(2 * math.pi * (1 + 3 * m) / t), 4.0, False))
    found += [(float(length), high, True) for length in _STEP_LENGTHS for high in (4.0, 1.0)] if not blend else []
    return found


def _smooth(value: float, s: float) -> float:
    """Invert f = 1 / ((1 - smooth)/s + smooth)."""
    return (1 / value - 1 / s) / (1 - 1 / s)


def _round(value: float, tolerance: float = 1e-3) -> float:
    nearest = round(value)
    return float(nearest) if abs(value - nearest) <= tolerance * max(1.0, abs(value)) else value


def _matches(expected: Sequence[float], values: Sequence[float]) -> bool:
    return all(abs(e - v) <= _TOLERANCE * max(1.0, abs(v)) for e, v in zip(expected, values, strict=True))
