"""RULER's synthetic tasks as one verify task: every chosen RULER task at every length (and, for a single
needle, every depth), ``--samples`` prompts a cell, generated with the engine's own tokenizer to the length's
token budget and scored with RULER's string_match_all (points, 0-100); the effective length per variant."""

from __future__ import annotations

from typing import Any

from yarn_cli.core.rope.variants import RopeVariant
from yarn_cli.core.verify import plan as verify_plan
from yarn_cli.core.verify import ruler
from yarn_cli.core.verify.plan import Judgement
from yarn_cli.core.verify.ruler import build, niah
from yarn_cli.errors import InputError
from yarn_cli.usecases.verify.tasks.base import Cell, Column, Context, Job, TaskResult, by_variant_and_length, keyed

COLUMNS_PER_TASK = 3  # up to this many RULER tasks get a column each; more share one "ruler" average column


class RulerSuite:
    name = "ruler"

    def __init__(self, names: list[str]):
        self.tasks = [ruler.TASKS[n] for n in names]
        self.answer_tokens = max(t.tokens_to_generate for t in self.tasks)
        self.pictured = tuple(names)

    def plan(self, context: Context, length: int) -> tuple[list[Job], list[str]]:
        from yarn_cli.io import ruler_words

        lists = ruler_words.load()
        essay = niah.essay_words(context.text) if any(t.uses_text for t in self.tasks) else []
        encoder = _Encoder(context)
        options = context.options
        jobs, notes = [], []
        for task in self.tasks:
            try:
                for depth in options.depths if task.has_depth else [None]:
                    made = build.samples(task, encoder.count, length, options.samples, options.seed, lists, essay, depth)
                    jobs += [Job(self.name, length, encoder.ids(s.text), depth, i, (task.name, s.outputs), task.name) for i, s in enumerate(made)]
            except InputError as exc:
                notes.append(str(exc))
        return jobs, notes

    def run(self, engine: Any, variant: RopeVariant, job: Job) -> Cell:
        task_name, outputs = job.expected
        task = ruler.TASKS[task_name]
        generation = engine.generate(variant, job.ids, task.tokens_to_generate)
        answer = engine.tokenizer.decode(generation.tokens)
        score = ruler.string_match_all(answer, outputs)
        return Cell(
            task_name,
            variant.name,
            job.length,
            job.depth,
            job.sample,
            score,
            {"outputs": outputs, "answer": answer, "tokens": len(job.ids) + task.tokens_to_generate},
            generation.prefill_tokens,
            generation.prefill_seconds,
            generation.decode_tokens,
            generation.decode_seconds,
        )

    def finish(self, cells: list[Cell], context: Context) -> TaskResult:
        threshold = context.options.threshold
        names = [t.name for t in self.tasks]
        by_task = {t: by_variant_and_length([c for c in cells if c.task == t], _mean) for t in names}
        scores = {v: {t: by_task[t].get(v, {}) for t in names} for v in context.variants}
        average = {v: _average(scores[v], names) for v in context.variants}
        effective = {
            v: {**{t: ruler.effective_length(scores[v][t], threshold) for t in names}, "average": ruler.effective_length(average[v], threshold)}
            for v in context.variants
        }
        report = {
            "ruler": {
                "tasks": names,
                "threshold": threshold,
                "samples": context.options.samples,
                "metric": "string_match_all (RULER): share of reference strings in the answer, points 0-100",
                "scores": {v: keyed(scores[v], names) for v in context.variants},
                "average": keyed(average, context.variants),
                "effective_length": effective,
            }
        }
        judged, baseline = (average.get(v, {}) for v in (context.variants + [""])[:2])
        told = verify_plan.separation(judged, baseline, context.original_context, lambda ours, base: ours >= threshold > base)
        return TaskResult(report, _columns(names, scores, average, threshold), _judge(effective, context, threshold), separated=told)


class _Encoder:
    """A prompt's ids as the engine will run them (BOS, then the text), the last one remembered: RULER's sizing
    counts the prompt it keeps again, and its job needs the same ids, so each is tokenized once."""

    def __init__(self, context: Context):
        self.context, self.text, self.last = context, None, []

    def ids(self, text: str) -> list[int]:
        if text != self.text:
            self.text, self.last = text, self.context.bos + self.context.encode(text)
        return self.last

    def count(self, text: str) -> int:
        return len(self.ids(text))


def _mean(cells: list[Cell]) -> float:
    return sum(c.score for c in cells) / len(cells)


def _average(scores: dict[str, dict[int, float]], names: list[str]) -> dict[int, float]:
    """The mean over tasks at each length every task ran (RULER's average)."""
    lengths = set.intersection(*(set(scores[t]) for t in names)) if names else set()
    return {n: sum(scores[t][n] for t in names) / len(names) for n in sorted(lengths)}


def _columns(names, scores, average, threshold) -> list[Column]:
    good = lambda x: x >= threshold  # noqa: E731
    fmt = lambda x: f"{x:.1f}"  # noqa: E731
    if len(names) <= COLUMNS_PER_TASK:
        return [Column(t, lambda v, n, t=t: scores.get(v, {}).get(t, {}).get(n), fmt, good) for t in names]
    return [Column("ruler", lambda v, n: average.get(v, {}).get(n), fmt, good)]


def _judge(effective: dict[str, dict[str, int | None]], context: Context, threshold: float) -> Judgement:
    """RULER's effective length is reported, not gated: a small model may fall short of the bar at every length."""
    shown = "; ".join(f"{v} {_length(effective[v]['average'])}" for v in context.variants)
    return Judgement(True, f"RULER effective length (score >= {threshold:g}): {shown}", aside=True)


def _length(value: int | None) -> str:
    return "below the bar at every length" if value is None else f"{value:,}"
