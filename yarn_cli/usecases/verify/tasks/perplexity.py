"""Perplexity at every length from one pass per document. A causal model's loss at position p does not depend
on what follows, so one pass over a document of the longest length gives, for every shorter length n, the
losses of the window made of its first n tokens.

Two readings of those losses, both reported: the YaRN paper's (and Hugging Face's) sliding-window figure,
where a window scores only its last PPL_STRIDE tokens, the ones with the most context; and LongLoRA's, the
mean over all of a window's tokens. The table and the verdict use the first; the numbers differ.

The curves pool the windows (``--ppl-windows``, evenly spaced through the text) token by token, and carry their
spread: the lowest and the highest window's perplexity at each length. A window's last 256 tokens are one stretch
of text, so one window alone zig-zags with what that stretch says (code or prose); the spread shows how far."""

from __future__ import annotations

import math
from typing import Any

from yarn_cli.core.rope.variants import RopeVariant
from yarn_cli.core.verify import plan as verify_plan
from yarn_cli.core.verify.plan import Judgement
from yarn_cli.usecases.verify.tasks.base import Cell, Column, Context, Job, TaskResult, keyed

METHODS = {
    "last_tokens": f"each window of n tokens scores its last {verify_plan.PPL_STRIDE} (the YaRN paper's sliding window, stride "
    f"{verify_plan.PPL_STRIDE}; Hugging Face's perplexity guide)",
    "all_tokens": "each window of n tokens scores all of them (LongLoRA's reading): lower, as early tokens have little context",
}

LABELS = {"last_tokens": f"last {verify_plan.PPL_STRIDE} tokens of each window (YaRN paper)", "all_tokens": "all tokens of each window (LongLoRA)"}


class PerplexityTask:
    name = "perplexity"
    answer_tokens = 0
    pictured = ()
    requires = "score"  # prompt log-probabilities: a server that returns none leaves the task out

    def plan(self, context: Context, length: int) -> tuple[list[Job], list[str]]:
        """Documents only at the pass length (the longest length the text holds); other lengths read them."""
        text = context.text_ids
        if length > len(text) and context.options.ppl_windows:
            return [], [f"the text has {len(text):,} tokens, fewer than {length:,}: no perplexity at that length"]
        if length != pass_length(context):
            return [], []
        # a window starts as every other prompt does (the tokenizer's BOS, where it adds one): n tokens in all
        taken = length - len(context.bos)
        starts = verify_plan.ppl_windows(len(text), taken, context.options.ppl_windows)
        return [Job(self.name, length, context.bos + text[start : start + taken], None, sample, 0) for sample, start in enumerate(starts)], []

    def run(self, engine: Any, variant: RopeVariant, job: Job) -> Cell:
        scored = engine.score(variant, job.ids, 0)
        losses = scored.losses
        finite = all(math.isfinite(x) for x in losses)
        return Cell(
            self.name,
            variant.name,
            job.length,
            None,
            job.sample,
            sum(losses) if finite else None,
            {"losses": losses, "finite": finite},
            scored.prefill_tokens,
            scored.prefill_seconds,
        )

    def finish(self, cells: list[Cell], context: Context) -> TaskResult:
        longest = pass_length(context)
        grid = curve_lengths(context.original_context, longest, context.lengths)
        curves = {method: {v: curve([c for c in cells if c.variant == v], grid, method) for v in context.variants} for method in METHODS}
        spreads = {method: {v: spread([c for c in cells if c.variant == v], grid, method) for v in context.variants} for method in METHODS}
        table = {v: {n: x for n, x in curves["last_tokens"][v].items() if n in context.lengths} for v in context.variants}
        broken = {v: first_nonfinite([c for c in cells if c.variant == v]) for v in context.variants}
        notes = [f"{v} model: NaN/infinite log-probabilities from {bad[0]:,} tokens on; no perplexity" for v, bad in broken.items() if bad]
        judged, against = context.variants[0], context.variants[1] if len(context.variants) > 1 else None
        column = Column("ppl", lambda v, n: table.get(v, {}).get(n), lambda x: f"{x:.2f}")
        judgement = judge(table.get(judged, {}), table.get(against, {}), context.original_context, context.options.ppl_margin, broken[judged])
        documents = len({c.sample for c in cells})
        report = {
            "perplexity": keyed(table, context.variants),
            "perplexity_curve": {
                "lengths": grid,
                "documents": documents,
                "overlapping": bool(longest) and windows_overlap(context, longest),
                "pass_tokens": longest,
                "methods": METHODS,
                "labels": LABELS,
                **{m: keyed(curves[m], context.variants) for m in METHODS},
                # [lowest, highest] window at each length, where more than one window ran
                "spread": {m: {v: {str(n): list(pair) for n, pair in spreads[m][v].items()} for v in context.variants} for m in METHODS},
                "readings": readings_differ(curves, context.original_context, judged, against),
            },
        }
        margin = context.options.ppl_margin
        told = verify_plan.separation(
            table.get(judged, {}), table.get(against or "", {}), context.original_context, lambda ours, base: base > ours * (1 + margin)
        )
        return TaskResult(report, [column], judgement, notes, told)


def first_nonfinite(cells: list[Cell]) -> list[int]:
    """[the shortest window length that holds a non-finite loss], or [] when every loss is finite."""
    found = [i + 2 for c in cells if not c.detail["finite"] for i, x in enumerate(c.detail["losses"]) if not math.isfinite(x)]
    return [min(found)] if found else []


def pass_length(context: Context) -> int | None:
    """The one pass's length: the longest planned length the text holds."""
    fitting = [n for n in context.lengths if n <= len(context.text_ids)]
    return max(fitting) if fitting else None


def curve_lengths(original: int, longest: int | None, lengths: list[int]) -> list[int]:
    """Every quarter of the trained length up to the pass length, and the verified lengths (all with a full
    stride to score)."""
    if not longest:
        return []
    step = max(original // 4, 1)
    grid = set(range(step, longest + 1, step)) | {n for n in lengths if n <= longest}
    return sorted(n for n in grid if n > verify_plan.PPL_STRIDE)


def curve(cells: list[Cell], grid: list[int], method: str) -> dict[int, float]:
    """Perplexity at each length of ``grid`` over the documents' passes (token-weighted, like one long text)."""
    if not cells or any(not c.detail["finite"] for c in cells):
        return {}
    result = {}
    for n in grid:
        first = n - 1 - verify_plan.PPL_STRIDE if method == "last_tokens" else 0
        chosen = [x for c in cells for x in c.detail["losses"][first : n - 1]]
        if chosen:
            result[n] = math.exp(sum(chosen) / len(chosen))
    return result


def spread(cells: list[Cell], grid: list[int], method: str) -> dict[int, tuple[float, float]]:
    """The lowest and the highest single window's perplexity at each length of ``grid`` (two windows or more)."""
    if len(cells) < 2:
        return {}
    each = [curve([c], grid, method) for c in cells]
    if any(not one for one in each):
        return {}
    return {n: (min(one[n] for one in each), max(one[n] for one in each)) for n in grid if all(n in one for one in each)}


def windows_overlap(context: Context, longest: int) -> bool:
    """Whether the windows share tokens (the text is shorter than their total): then their spread understates how
    much separate documents would differ."""
    taken = longest - len(context.bos)
    starts = verify_plan.ppl_windows(len(context.text_ids), taken, context.options.ppl_windows)
    return any(b - a < taken for a, b in zip(starts, starts[1:]))


def readings_differ(curves: dict[str, dict[str, dict[int, float]]], original: int, judged: str, against: str | None) -> list[str]:
    """Why the all-tokens curve can rank the variants the other way beyond the trained length: one sentence for the
    longest length where the two readings disagree, or none."""
    if against is None:
        return []
    last, every = curves["last_tokens"], curves["all_tokens"]
    disagree = [
        n
        for n in every[judged]
        if n > original
        and n in every[against]
        and n in last[judged]
        and n in last[against]
        and (last[judged][n] < last[against][n]) != (every[judged][n] < every[against][n])
    ]
    if not disagree:
        return []
    n = max(disagree)
    ahead = lambda values: judged if values[judged][n] < values[against][n] else against  # noqa: E731
    within = min(original, n) / n
    return [
        f"at {n:,} tokens the all-tokens reading puts the {ahead(every)} model ahead ({every[judged][n]:.2f} vs "
        f"{every[against][n]:.2f}) while the last-{verify_plan.PPL_STRIDE}-tokens reading puts the {ahead(last)} model ahead "
        f"({last[judged][n]:.2f} vs {last[against][n]:.2f}): {within:.0%} of each {n:,}-token window lies within the trained "
        f"{original:,} tokens, where the two differ only by what each changes at short range, so the all-tokens figure "
        f"mostly measures short contexts; the last-tokens figure scores only positions near {n:,}, the ones the extension is for"
    ]


def judge(ours: dict[int, float], base: dict[int, float], original: int, margin: float, nonfinite: list[int]) -> Judgement | None:
    """Perplexity at the original length (or the longest below it) within ``margin`` (relative) of the baseline's."""
    if nonfinite:
        return Judgement(
            False,
            f"the extended model gives NaN/infinite log-probabilities at {min(nonfinite):,} tokens: its weights "
            "hold non-finite values or the engine's dtype overflows; check the checkpoint (inspect the source model too)",
            fatal=True,
        )
    at_original = [n for n in ours if n == original] or [n for n in ours if n <= original]
    if not at_original:
        return Judgement(True, "no perplexity at or below the original length to compare", aside=True)
    n = max(at_original)
    reference = base.get(n)
    if reference is not None and ours[n] > reference * (1 + margin):
        return Judgement(False, f"extended perplexity {ours[n]:.3f} at {n:,} tokens is more than {margin:.0%} above the baseline's {reference:.3f}")
    return Judgement(True, f"perplexity at {n:,} within {margin:.0%} of baseline")
