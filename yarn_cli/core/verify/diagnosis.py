"""Engine parity diagnosis (docs/conventions.md §10), pure: the RoPE variants an engine's output is held against, and
the diagnosis that says which one the engine computes.

Each hypothesis is a way engines have got a declared scaling wrong, written as the RoPE it would run on
the same weights: the frequencies θ per pair and the factor m that cos/sin carry. The reference forward
pass runs each one; the engine's next-token log-probabilities are closest to the one it implements.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from yarn_cli.core.rope import freq_factors, variants
from yarn_cli.core.rope.spec import RopeSpec
from yarn_cli.core.rope.variants import RopeVariant

DIAGNOSES = ("exact", "no-scaling", "no-freq-factors", "no-attention-factor", "attention-factor-twice", "linear", "other")
# What each hypothesis means, for the one line verify prints.
MEANINGS = {
    "exact": "the declared scaling",
    "no-scaling": "YaRN ignored",
    "no-freq-factors": "the rope_freqs frequency factors ignored",
    "no-attention-factor": "the attention factor dropped",
    "attention-factor-twice": "the attention factor applied twice",
    "linear": "linear interpolation instead",
    "truncate-flipped": "the ramp bounds rounded the other way (truncate)",
}
# The verdict is relative, so that quantized weights and bf16 engines are judged as fairly as float32
# ones. Along the line from the closest hypothesis to any other, the engine must lie within this fraction
# of the way (a quarter: three times nearer the closest one)...
CLEAR = 0.25
# ...and a hypothesis counts only where the engine's noise leaves its position that certain.
RESOLVE = 0.05
# A float32 engine matches its hypothesis to ~1e-5; below this the line says "exactly".
FLOAT_MAX = 1e-3
# Default length of the sequence: past the trained length, where a missing scaling shows most.
REACH = 1.5
CPU_CAP = 1024  # a forward pass per hypothesis on a CPU: keep the check to seconds


def hypotheses(spec: RopeSpec, baked: float | None, seq_len: int) -> list[RopeVariant]:
    """The declared RoPE ("exact") first, then each fault that gives a different RoPE on these weights.

    ``baked``: the m already multiplied into q/k (a baked checkpoint), so "twice" means the engine adds
    one more m on top of it. Faults that coincide with the declared RoPE (a baked checkpoint's
    "no attention factor") cannot be told apart and are left out.
    """
    exact = variants.declared(spec, baked, seq_len, name="exact")
    found = [exact]
    if spec.freq_factors is not None:  # a GGUF loader that drops rope_freqs (transformers' does) runs the rest alone
        alone = replace(spec, freq_factors=None, scaling=None if spec.scaling and spec.scaling.source == freq_factors.SOURCE else spec.scaling)
        found.append(variants.declared(alone, baked, seq_len, name="no-freq-factors"))
    scaling = spec.scaling
    if scaling is None:
        return found
    found.append(variants.renamed(variants.baseline(spec), "no-scaling", baked=baked))
    if scaling.type == "yarn":
        s, model_m = exact.factor, exact.effective_m
        common: dict[str, Any] = dict(beta_fast=exact.beta_fast, beta_slow=exact.beta_slow, original_context=exact.original_context, baked=baked)
        found.append(variants.yarn(spec, s, 1.0 * (baked or 1.0), truncate=exact.truncate, name="no-attention-factor", **common))
        found.append(variants.yarn(spec, s, model_m**2, truncate=exact.truncate, name="attention-factor-twice", **common))
        found.append(variants.yarn(spec, s, model_m, truncate=not exact.truncate, name="truncate-flipped", **common))
        if spec.softmax_mscale_key:  # MLA read without its mscale pair: the paper's m on cos/sin, the rotary dims only
            plain = variants.yarn(replace(spec, softmax_mscale_key=""), s, None, truncate=exact.truncate, **common)
            found.append(variants.renamed(plain, "m-on-rotary-dims-only"))
    factor = scaling.declared_factor(spec.max_context)
    if scaling.type != "linear" and factor > 1:
        found.append(variants.linear(spec, factor, baked, name="linear"))
    return [h for i, h in enumerate(found) if not any(h.same_rope(earlier) for earlier in found[:i])]


def sequence_length(original: int, target: int, device: str, requested: int | None = None) -> int:
    """About 1.5·L (never past s·L); on a CPU at most CPU_CAP unless asked for more."""
    if requested:
        return requested
    length = min(int(REACH * original), target)
    return min(length, CPU_CAP) if device == "cpu" else length


@dataclass(frozen=True)
class Distance:
    max_abs_diff: float
    mean_abs_diff: float


def distance(engine: Sequence[float], reference: Sequence[float]) -> Distance:
    """Position by position, over log-probabilities of the tokens that follow (NaN counts as infinitely far)."""
    diffs = [abs(a - b) if math.isfinite(a) and math.isfinite(b) else math.inf for a, b in zip(engine, reference)]
    if not diffs:
        return Distance(math.inf, math.inf)
    return Distance(max(diffs), sum(diffs) / len(diffs))


@dataclass(frozen=True)
class Parity:
    engine: str
    reference: str
    positions: int
    declared: str  # the declared scaling's label
    distances: dict[str, Distance]  # by hypothesis, "exact" first
    diagnosis: str  # one of DIAGNOSES
    closest: str  # the hypothesis nearest the engine (may be "truncate-flipped", which has no diagnosis of its own)
    indistinct: list[str]  # hypotheses this run cannot tell from the closest one (their difference is below the noise)
    clear: bool  # the engine lies within CLEAR of the way from the closest towards every hypothesis told apart

    @property
    def ok(self) -> bool:
        return self.diagnosis == "exact"

    @property
    def line(self) -> str:
        """The one line verify prints."""
        return describe(self)

    def to_json(self) -> dict[str, Any]:
        exact = self.distances["exact"]
        return {
            "engine": self.engine,
            "reference": self.reference,
            "positions": self.positions,
            "max_abs_diff": _finite(exact.max_abs_diff),
            "mean_abs_diff": _finite(exact.mean_abs_diff),
            "diagnosis": self.diagnosis,
            "closest": self.closest,
            "indistinct": self.indistinct,
            "hypotheses": {name: _finite(d.max_abs_diff) for name, d in self.distances.items()},
            "hypotheses_mean": {name: _finite(d.mean_abs_diff) for name, d in self.distances.items()},
            "line": self.line,
        }


@dataclass(frozen=True)
class Geometry:
    """Where the engine lies between two hypotheses' references: ``position`` 0 at ``a``, 1 at ``b``, along
    the line from a to b; ``error``: its standard error from the engine's noise around ``a``."""

    position: float
    error: float


def geometry(measured: Sequence[float], a: Sequence[float], b: Sequence[float]) -> Geometry:
    """Project the engine's deviation from ``a`` onto the difference ``b - a``. Noise (quantization, bf16)
    is not aligned with any fault, so it averages out of the projection: a quantized engine's point sits
    near 0 even where its mean |Δ| is far above a float engine's."""
    delta = [y - x for x, y in zip(a, b)]
    norm2 = sum(d * d for d in delta)
    residual = [m - x for m, x in zip(measured, a)]
    if norm2 == 0.0 or not all(math.isfinite(r) for r in residual):
        return Geometry(0.0 if norm2 == 0.0 else math.inf, math.inf)
    noise = math.sqrt(sum(r * r for r in residual) / max(len(residual), 1))
    return Geometry(sum(r * d for r, d in zip(residual, delta)) / norm2, noise / math.sqrt(norm2))


def diagnose(measured: Sequence[float], references: dict[str, Sequence[float]]) -> tuple[str, str, list[str], bool]:
    """(diagnosis, closest hypothesis, hypotheses this run cannot tell from it, whether it stands clearly).

    The closest is the nearest reference (least squares). Another hypothesis whose difference from it is
    lost in the engine's noise (standard error of the projection above RESOLVE) cannot be told apart; the
    declared RoPE wins such a tie. The closest stands clearly when the engine lies within CLEAR of the way
    towards every hypothesis that can be told apart; otherwise the diagnosis is "other".
    """

    def squared(name: str) -> float:
        return sum((m - r) ** 2 if math.isfinite(m - r) else math.inf for m, r in zip(measured, references[name]))

    closest = min(references, key=squared)
    if closest != "exact" and geometry(measured, references[closest], references["exact"]).error > RESOLVE:
        closest = "exact"
    others = {name: geometry(measured, references[closest], references[name]) for name in references if name != closest}
    distinct = {name: g for name, g in others.items() if g.error <= RESOLVE}
    indistinct = [name for name in others if name not in distinct]
    if not distinct:
        clear = closest == "exact" and not others
        return ("exact" if clear else "other"), closest, indistinct, clear
    if max(g.position for g in distinct.values()) > CLEAR:
        return "other", closest, indistinct, False
    return (closest if closest in DIAGNOSES else "other"), closest, indistinct, True


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no infinity


def parity(engine: str, reference: str, declared: str, measured: Sequence[float], references: dict[str, Sequence[float]]) -> Parity:
    """Compare the engine's log-probabilities with each hypothesis's reference ones and diagnose."""
    distances = {name: distance(measured, values) for name, values in references.items()}
    if not all(math.isfinite(v) for v in measured) or not all(math.isfinite(v) for v in references["exact"]):
        return Parity(engine, reference, len(measured), declared, distances, "other", "exact", [], False)
    diagnosis, closest, indistinct, clear = diagnose(measured, references)
    return Parity(engine, reference, len(measured), declared, distances, diagnosis, closest, indistinct, clear)


def describe(result: Parity) -> str:
    exact = result.distances["exact"]
    where = f"over {result.positions:,} positions"
    if not math.isfinite(exact.mean_abs_diff):
        return (
            f"parity: {result.engine} (or the reference) gives NaN/infinite log-probabilities {where}, so nothing "
            "can be compared: the weights hold non-finite values or the dtype overflows"
        )
    nearest = result.distances[result.closest]
    apart = [d.mean_abs_diff for n, d in result.distances.items() if n != result.closest and n not in result.indistinct]
    untold = f"; cannot tell it from {', '.join(repr(n) for n in result.indistinct)} at this noise" if result.indistinct else ""
    if result.diagnosis == "exact":
        if exact.max_abs_diff <= FLOAT_MAX or not apart:
            return f"parity: {result.engine} applies {result.declared} exactly (max |Δ logprob| {exact.max_abs_diff:.1e} {where}){untold}"
        return (
            f"parity: {result.engine} applies {result.declared} as declared (mean |Δ logprob| {exact.mean_abs_diff:.1e} {where}; "
            f"clearly nearer it than any fault, the rest is numeric noise such as quantization{untold})"
        )
    if result.clear:
        return (
            f'parity: {result.engine} matches "{result.closest}" ({MEANINGS.get(result.closest, result.closest)}), '
            f"not the declared {result.declared} (mean |Δ logprob| {nearest.mean_abs_diff:.1e} vs {exact.mean_abs_diff:.1e} {where})"
        )
    if not apart:
        return (
            f"parity: {result.engine} cannot be judged: its noise (mean |Δ logprob| {nearest.mean_abs_diff:.1e} {where}) is larger "
            f"than the differences between the hypotheses; try a longer --parity-length"
        )
    return (
        f"parity: {result.engine} matches no known variant of {result.declared} clearly (mean |Δ logprob| {exact.mean_abs_diff:.1e} "
        f'from the declared one, nearest "{result.closest}" at {nearest.mean_abs_diff:.1e} {where})'
    )
