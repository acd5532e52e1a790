"""`yarn tune`'s decisions as pure functions: perplexity bands out of one pass per document, the candidate
attention factors m (a bracket around the paper's 0.1·ln s + 1 that includes 1.0, then a 1-D refinement),
the objectives and their guard for short inputs, the choice, and the paper-style fit m = a·ln s + b.

Losses come from one causal pass from a document's start: ``losses[j]`` is the loss of token j+1 predicted
from tokens 0..j. A causal model's loss at a position does not depend on what follows, so every length's
perplexity comes out of the longest pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from yarn_cli.core.rope.scalars import get_mscale
from yarn_cli.errors import InputError

OBJECTIVES = ("long", "balanced", "short-guard")
DEFAULT_OBJECTIVE = "balanced"
DEFAULT_MAX_SHORT_LOSS = 0.02
M_FLOOR, M_CEIL = 0.8, 2.5  # the search never leaves these: beyond them attention is flat or one-hot
GRID_POINTS = 5
REFINE_TOLERANCE = 0.002  # m values closer than this are not told apart by a few thousand tokens
PENALTY = 100.0  # a broken guard outweighs any perplexity gain in the search's value
SCALE_MULTIPLES = (1.0, 1.5, 2.0)  # --to N: s = N/L (Qwen's advice: typical length / L), and larger
# --search-betas: a coordinate search at the chosen m, beta_fast first (it moves the most pairs), then beta_slow
BETA_FAST_STEPS = (0.5, 2.0)  # x the base beta_fast: 16 and 64 around the paper's 32
BETA_SLOW_STEPS = (0.5, 2.0)  # x the base beta_slow: 0.5 and 2 around the paper's 1


# -- perplexity out of one pass -------------------------------------------------------------------------


def band(docs: Sequence[Sequence[float | None]], start: int, stop: int) -> float | None:
    """Perplexity of the tokens at positions [start, stop) of every document (position t is predicted from
    the t tokens before it; a None loss is a token that is not text, skipped); None when no document reaches
    that far or a loss is not finite."""
    start = max(start, 1)
    total, count = 0.0, 0
    for losses in docs:
        part = [x for x in losses[start - 1 : stop - 1] if x is not None]
        total += sum(part)
        count += len(part)
    if not count or not math.isfinite(total):
        return None
    return math.exp(total / count)


def chunk_losses(docs: Sequence[Sequence[float | None]], start: int, stop: int, chunk: int) -> tuple[float, ...]:
    """Mean loss of each ``chunk``-token piece of [start, stop) in every document: paired samples, the same
    pieces of text for every candidate, so two candidates can be told apart beyond the text's own noise."""
    means = []
    for losses in docs:
        for begin in range(max(start, 1), stop, chunk):
            part = [x for x in losses[begin - 1 : min(begin + chunk, stop) - 1] if x is not None]
            if part:
                means.append(sum(part) / len(part))
    return tuple(means)


def noise_chunk(lengths: Lengths) -> int:
    """The piece size for paired comparisons: 16 pieces between L and the long length, at least 32 tokens."""
    return max((lengths.long - lengths.original) // 16, 32)


def worse_beyond_noise(candidate: Sequence[float], best: Sequence[float], z: float = 2.0) -> bool:
    """Whether ``candidate``'s chunk losses exceed ``best``'s by more than ``z`` standard errors of the paired
    difference (a text too short to say so means no)."""
    n = len(best)
    if n < 2 or len(candidate) != n:
        return False
    diffs = [c - b for c, b in zip(candidate, best)]
    mean = sum(diffs) / n
    spread = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    return mean > z * spread / math.sqrt(n) if spread > 0 else mean > 0


def input_perplexity(docs: Sequence[Sequence[float | None]], length: int) -> float | None:
    """What an input of ``length`` tokens scores: every token of it (the paper's truncated-document perplexity)."""
    return band(docs, 1, length)


def curve_points(original: int, target: int) -> list[int]:
    """Every L/4 up to the target (and the target itself)."""
    step = max(original // 4, 1)
    points = list(range(step, target + 1, step))
    return points if points and points[-1] == target else [*points, target]


def curve(docs: Sequence[Sequence[float | None]], points: Sequence[int]) -> dict[int, float]:
    """Perplexity per chunk: the tokens between the previous point and each point (the paper's App. A.2 way)."""
    result, previous = {}, 1
    for point in points:
        value = band(docs, previous, point)
        if value is not None:
            result[point] = value
        previous = point
    return result


# -- candidates and objectives ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Lengths:
    original: int  # L
    short: int  # the short input the guard protects (default L/2)
    long: int  # the target: perplexity over the tokens beyond L up to here, retrieval at it

    def to_json(self) -> dict[str, int]:
        return {"original": self.original, "short": self.short, "long": self.long}


@dataclass(frozen=True)
class Measure:
    """One configuration measured on the tuning text. ``scale`` None is the unextended model."""

    name: str
    scale: float | None
    m: float | None
    short_ppl: float | None
    long_ppl: float | None
    curve: dict[int, float] = field(default_factory=dict)
    short_retrieval: float | None = None
    long_retrieval: float | None = None
    seconds: float = 0.0
    long_chunks: tuple[float, ...] = ()  # mean loss per chunk beyond L, document by document (paired samples)
    betas: tuple[float, float] | None = None  # (beta_fast, beta_slow) of a candidate

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scale": self.scale,
            "m": self.m,
            "beta_fast": self.betas[0] if self.betas else None,
            "beta_slow": self.betas[1] if self.betas else None,
            "short_ppl": self.short_ppl,
            "long_ppl": self.long_ppl,
            "short_retrieval": self.short_retrieval,
            "long_retrieval": self.long_retrieval,
            "curve": {str(k): v for k, v in self.curve.items()},
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True)
class Objective:
    """long: the lowest perplexity beyond L. balanced: that, among candidates whose short inputs keep the
    unextended model's retrieval. short-guard: also at most ``max_short_loss`` (relative) more short perplexity."""

    name: str = DEFAULT_OBJECTIVE
    max_short_loss: float = DEFAULT_MAX_SHORT_LOSS

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise InputError(f"--objective {self.name!r} is not one of {', '.join(OBJECTIVES)}")
        if not (math.isfinite(self.max_short_loss) and 0 <= self.max_short_loss <= 1):
            raise InputError(f"--max-short-loss must be between 0% and 100%, not {self.max_short_loss:.4g}")

    def short_loss(self, candidate: Measure, reference: Measure) -> float | None:
        if candidate.short_ppl is None or not reference.short_ppl:
            return None
        return candidate.short_ppl / reference.short_ppl - 1

    def violations(self, candidate: Measure, reference: Measure) -> list[str]:
        """Why ``candidate`` breaks this objective's guard (empty: it holds)."""
        broken = []
        if candidate.long_ppl is None:
            broken.append("no finite perplexity beyond L")
        if self.name == "long":
            return broken
        if reference.short_retrieval is not None and candidate.short_retrieval is not None and candidate.short_retrieval < reference.short_retrieval:
            broken.append(f"short-input retrieval {candidate.short_retrieval:.0%} < unextended {reference.short_retrieval:.0%}")
        if self.name == "short-guard":
            loss = self.short_loss(candidate, reference)
            if loss is None or loss > self.max_short_loss:
                shown = "unknown" if loss is None else f"{loss:+.1%}"
                broken.append(f"short perplexity {shown} over unextended (allowed {self.max_short_loss:.1%})")
        return broken

    def value(self, candidate: Measure, reference: Measure) -> float:
        """What the search minimises: log perplexity beyond L, plus a penalty that grows with a broken guard."""
        if candidate.long_ppl is None:
            return math.inf
        penalty = 0.0
        if self.name != "long":
            if reference.short_retrieval is not None and candidate.short_retrieval is not None:
                penalty += max(reference.short_retrieval - candidate.short_retrieval, 0.0)
            loss = self.short_loss(candidate, reference)
            if self.name == "short-guard" and loss is not None:
                penalty += max(loss - self.max_short_loss, 0.0)
        return math.log(candidate.long_ppl) + PENALTY * penalty

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "max_short_loss": self.max_short_loss if self.name == "short-guard" else None}


def m_grid(scale: float, points: int = GRID_POINTS) -> list[float]:
    """The bracket the search starts from: 1.0, the paper's m, and as far again above it, evenly spaced."""
    paper = get_mscale(scale)
    step = max((paper - 1.0) / ((points - 1) // 2), 0.005)
    return [round(1.0 + k * step, 6) for k in range(points)]


def grid_step(grid: Sequence[float]) -> float:
    return grid[1] - grid[0] if len(grid) > 1 else 0.01


def next_grid_point(grid: Sequence[float], values: dict[float, float]) -> float | None:
    """Extend the grid outward while its best point sits at an end (inside M_FLOOR..M_CEIL); None when done."""
    best = min(grid, key=lambda m: values[m])
    step = grid_step(grid)
    if best == grid[0] and grid[0] - step >= M_FLOOR:
        return round(grid[0] - step, 6)
    if best == grid[-1] and grid[-1] + step <= M_CEIL:
        return round(grid[-1] + step, 6)
    return None


def refine_point(values: dict[float, float]) -> float | None:
    """The next m of the 1-D refinement: the vertex of the parabola through the best point and its two
    evaluated neighbours, kept inside them; the middle of the wider side when the parabola does not open
    upward. None when the bracket is narrower than REFINE_TOLERANCE."""
    ms = sorted(values)
    i = min(range(len(ms)), key=lambda k: values[ms[k]])
    if i == 0 or i == len(ms) - 1:
        return None
    a, b, c = ms[i - 1], ms[i], ms[i + 1]
    if c - a < 2 * REFINE_TOLERANCE:
        return None
    fa, fb, fc = values[a], values[b], values[c]
    denominator = (b - a) * (fb - fc) - (b - c) * (fb - fa)
    vertex = None
    if denominator != 0 and all(math.isfinite(x) for x in (fa, fb, fc)):
        vertex = b - 0.5 * ((b - a) ** 2 * (fb - fc) - (b - c) ** 2 * (fb - fa)) / denominator
    if vertex is None or not (a < vertex < c) or min(abs(vertex - m) for m in ms) < REFINE_TOLERANCE:
        vertex = (a + b) / 2 if b - a > c - b else (b + c) / 2
    if min(abs(vertex - m) for m in ms) < REFINE_TOLERANCE:
        return None
    return round(vertex, 6)


def grid_order(scale: float, grid: Sequence[float]) -> list[float]:
    """The grid as it is measured: the paper's m (what `extend` writes) and m = 1.0 first, so a search that a
    budget cuts short has always compared the default with the one alternative every runtime can express."""
    paper = round(get_mscale(scale), 6)
    return sorted(grid, key=lambda m: (m != paper, m != 1.0, m))


def search_m(
    evaluate: Callable[[float], float], scale: float, refinements: int, stop: Callable[[], bool] = lambda: False, required: int = 0
) -> dict[float, float]:
    """The 1-D search for one s: the grid, widened while its best is at an end, then ``refinements``
    parabolic steps. ``evaluate(m)`` returns the value to minimise; ``stop()`` ends the search early, except for the
    first ``required`` grid points (the paper's m, then 1.0), which are measured whatever it says."""
    grid = m_grid(scale)
    values: dict[float, float] = {}
    for index, m in enumerate(grid_order(scale, grid)):
        if index >= required and stop():
            return values
        values[m] = evaluate(m)
    while (extra := next_grid_point(sorted(values), values)) is not None:
        if stop():
            return values
        values[extra] = evaluate(extra)
    for _ in range(refinements):
        point = refine_point(values)
        if point is None or stop():
            break
        values[point] = evaluate(point)
    return values


def search_betas(
    evaluate: Callable[[tuple[float, float]], float], base: tuple[float, float], base_value: float, stop: Callable[[], bool] = lambda: False
) -> dict[tuple[float, float], float]:
    """--search-betas at one (s, m): beta_fast at BETA_FAST_STEPS times the base, the best of those and the
    base kept; then beta_slow likewise. ``evaluate(betas)`` returns the value to minimise."""
    values = {base: base_value}
    best = base
    for position, steps in ((0, BETA_FAST_STEPS), (1, BETA_SLOW_STEPS)):
        for factor in steps:
            betas = (best[0] * factor, best[1]) if position == 0 else (best[0], best[1] * factor)
            if betas[1] >= betas[0] or betas in values:
                continue  # beta_slow must stay below beta_fast
            if stop():
                return values
            values[betas] = evaluate(betas)
        best = min(values, key=values.__getitem__)
    return values


def scale_candidates(target: int, original: int) -> list[float]:
    """--to N: the smallest s that reaches N, and larger ones (more interpolation, less extrapolation at N)."""
    if target <= original:
        raise InputError(f"--to {target:,} is not beyond the trained length {original:,}: nothing to extend")
    base = target / original
    return [round(base * k, 6) for k in SCALE_MULTIPLES]


# -- the decision ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    chosen: Measure | None
    reason: str  # one line: why this one, or why none
    neighbours: tuple[float, ...] = ()  # the nearest m either side that the text shows to be worse
    indistinct: tuple[float, float] | None = None  # the m range the text cannot tell from the chosen one


def _set(value: float | None) -> float:
    """A candidate's m and long perplexity, which only the unextended reference leaves unset."""
    if value is None:
        raise ValueError("a tune candidate without m or long perplexity")
    return value


def choose(candidates: Sequence[Measure], reference: Measure, objective: Objective) -> Decision:
    """The best candidate that meets the guard; when none does, None and the nearest options in one line."""
    if not candidates:
        return Decision(None, "no candidate was measured (the budget ran out before the first one)")
    passing = [c for c in candidates if not objective.violations(c, reference)]
    if not passing:
        nearest = min(candidates, key=lambda c: objective.value(c, reference))
        why = "; ".join(objective.violations(nearest, reference))
        return Decision(
            None,
            (
                f"no static YaRN configuration meets the {objective.name} guard (nearest: s {nearest.scale:g}, m {nearest.m:.4f}: "
                f"{why}); options: a smaller --scale, `yarn finetune` at the new length, or serve the unextended model for "
                "inputs within its trained length"
            ),
        )
    best = min(passing, key=lambda c: _set(c.long_ppl))
    best_m = _set(best.m)
    same_scale = sorted((c for c in passing if c.scale == best.scale and c.betas == best.betas), key=lambda c: _set(c.m))
    below = [c for c in reversed(same_scale) if _set(c.m) < best_m and worse_beyond_noise(c.long_chunks, best.long_chunks)]
    above = [c for c in same_scale if _set(c.m) > best_m and worse_beyond_noise(c.long_chunks, best.long_chunks)]
    low, high = (below[0].m if below else None), (above[0].m if above else None)
    tied = [_set(c.m) for c in same_scale if (low is None or _set(c.m) > low) and (high is None or _set(c.m) < high)]
    neighbours = tuple(x for x in (low, high) if x is not None)
    what = {
        "long": "lowest perplexity beyond L",
        "balanced": "lowest perplexity beyond L that keeps short-input retrieval",
        "short-guard": f"lowest perplexity beyond L within {objective.max_short_loss:.1%} short-perplexity loss",
    }[objective.name]
    searched = len({c.betas for c in candidates}) > 1
    betas = f", beta_fast {best.betas[0]:g}, beta_slow {best.betas[1]:g}" if best.betas and searched else ""
    reason = f"s {best.scale:g}, m {best.m:.4f}{betas}: {what} ({best.long_ppl:.3f} beyond L)"
    if len(tied) > 1:
        reason += f"; this text cannot tell m {min(tied):.4f}..{max(tied):.4f} apart"
    return Decision(best, reason, neighbours, (min(tied), max(tied)))
