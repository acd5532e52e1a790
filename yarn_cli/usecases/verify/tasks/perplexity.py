"""Sliding-window perplexity: windows of each length over long natural text, each scoring its last
PPL_STRIDE tokens (the paper's stride, at the far end of the context)."""

from __future__ import annotations

import math
from typing import Any

from yarn_cli.core import verify_plan
from yarn_cli.core.variants import RopeVariant
from yarn_cli.core.verify_plan import Judgement
from yarn_cli.usecases.verify.tasks.base import Cell, Column, Context, Job, TaskResult, by_variant_and_length, keyed


class PerplexityTask:
    name = "perplexity"
    answer_tokens = 0

    def plan(self, context: Context, length: int) -> tuple[list[Job], list[str]]:
        text = context.text_ids
        starts = verify_plan.ppl_windows(len(text), length, context.options.ppl_windows)
        if not starts and context.options.ppl_windows:
            return [], [f"the text has {len(text):,} tokens, fewer than {length:,}: no perplexity at that length"]
        jobs = []
        for sample, start in enumerate(starts):
            window = text[start : start + length]
            jobs.append(Job(self.name, length, window, None, sample, max(len(window) - 1 - verify_plan.PPL_STRIDE, 0)))
        return jobs, []

    def run(self, engine: Any, variant: RopeVariant, job: Job) -> Cell:
        scored = engine.score(variant, job.ids, job.expected)
        losses = scored.losses
        finite = all(math.isfinite(x) for x in losses)
        return Cell(self.name, variant.name, job.length, None, job.sample, sum(losses) if finite else None,
                    {"tokens_scored": len(losses), "finite": finite}, scored.prefill_tokens, scored.prefill_seconds)

    def finish(self, cells: list[Cell], context: Context) -> TaskResult:
        perplexity = by_variant_and_length(cells, _perplexity)
        broken = {v: sorted({c.length for c in cells if c.variant == v and not c.detail["finite"]}) for v in context.variants}
        notes = [f"{v} model: NaN/infinite log-probabilities at {n:,} tokens; no perplexity there" for v, lengths in broken.items() for n in lengths]
        judged, against = context.variants[0], context.variants[1] if len(context.variants) > 1 else None
        column = Column("ppl", lambda v, n: perplexity.get(v, {}).get(n), lambda x: f"{x:.2f}")
        judgement = judge(perplexity.get(judged, {}), perplexity.get(against, {}), context.original_context,
                          context.options.ppl_margin, broken[judged])
        return TaskResult({"perplexity": keyed(perplexity, context.variants)}, [column], judgement, notes)


def _perplexity(group: list[Cell]) -> float | None:
    if any(c.score is None for c in group):
        return None
    tokens = sum(c.detail["tokens_scored"] for c in group)
    return math.exp(sum(c.score for c in group) / tokens) if tokens else None


def judge(ours: dict[int, float], base: dict[int, float], original: int, margin: float, nonfinite: list[int]) -> Judgement | None:
    """Perplexity at the original length (or the longest below it) within ``margin`` (relative) of the baseline's."""
    if nonfinite:
        return Judgement(False, f"the extended model gives NaN/infinite log-probabilities at {min(nonfinite):,} tokens: its weights "
                         "hold non-finite values or the engine's dtype overflows; check the checkpoint (inspect the source model too)",
                         fatal=True)
    at_original = [n for n in ours if n == original] or [n for n in ours if n <= original]
    if not at_original:
        return Judgement(True, "no perplexity at or below the original length to compare", aside=True)
    n = max(at_original)
    reference = base.get(n)
    if reference is not None and ours[n] > reference * (1 + margin):
        return Judgement(False, f"extended perplexity {ours[n]:.3f} at {n:,} tokens is more than {margin:.0%} above the baseline's {reference:.3f}")
    return Judgement(True, f"perplexity at {n:,} within {margin:.0%} of baseline")
