"""The passkey task (the YaRN paper's own retrieval test): filler text with "The pass key is N" at a depth,
then the question; a hit is a greedy answer whose first integer is N."""

from __future__ import annotations

from typing import Any

from yarn_cli.core.rope.variants import RopeVariant
from yarn_cli.core.verify import plan as verify_plan
from yarn_cli.core.verify.plan import Judgement
from yarn_cli.usecases.verify.tasks.base import Cell, Column, Context, Job, TaskResult, by_variant_and_length, keyed


class PasskeyTask:
    name = "passkey"
    answer_tokens = 10  # a 5-digit key and a few tokens around it
    pictured = ("passkey",)

    def plan(self, context: Context, length: int) -> tuple[list[Job], list[str]]:
        options = context.options
        keys = verify_plan.passkeys(options.samples, options.seed)
        jobs = []
        for depth in options.depths:
            for sample, key in enumerate(keys):
                prompt = verify_plan.passkey_prompt(context.encode, length, depth, key, context.bos)
                jobs.append(Job(self.name, length, prompt.ids, depth, sample, key))
        return jobs, []

    def run(self, engine: Any, variant: RopeVariant, job: Job) -> Cell:
        generation = engine.generate(variant, job.ids, self.answer_tokens)
        answer = engine.tokenizer.decode(generation.tokens)
        hit = verify_plan.score_answer(answer, job.expected)
        return Cell(
            self.name,
            variant.name,
            job.length,
            job.depth,
            job.sample,
            float(hit),
            {"key": job.expected, "answer": answer.strip(), "hit": hit, "tokens": len(job.ids)},
            generation.prefill_tokens,
            generation.prefill_seconds,
            generation.decode_tokens,
            generation.decode_seconds,
        )

    def finish(self, cells: list[Cell], context: Context) -> TaskResult:
        accuracy = by_variant_and_length(cells, lambda group: sum(c.score for c in group) / len(group))
        entries = [
            {
                "length": c.length,
                "depth": c.depth,
                "key": c.detail["key"],
                "answer": c.detail["answer"],
                "hit": c.detail["hit"],
                "variant": c.variant,
                "tokens": c.detail["tokens"],
            }
            for c in cells
        ]
        minimum = context.options.min_accuracy
        column = Column("passkey", lambda v, n: accuracy.get(v, {}).get(n), lambda x: f"{x:.0%}", lambda x: x >= minimum)
        judged, baseline = (accuracy.get(v, {}) for v in (context.variants + [""])[:2])
        told = verify_plan.separation(judged, baseline, context.original_context, lambda ours, base: ours >= minimum > base)
        return TaskResult({"passkey": entries, "accuracy": keyed(accuracy, context.variants)}, [column], judge(judged, minimum), separated=told)


def judge(accuracy: dict[int, float], minimum: float) -> Judgement | None:
    """The judged variant must reach ``minimum`` at every length it ran."""
    if not accuracy:
        return None
    misses = {n: a for n, a in accuracy.items() if a < minimum}
    if misses:
        worst = min(misses, key=misses.get)
        return Judgement(False, f"extended passkey accuracy {misses[worst]:.0%} at {worst:,} tokens is below --min-accuracy {minimum:.0%}")
    return Judgement(True, f"passkey >= {minimum:.0%} at every length")
