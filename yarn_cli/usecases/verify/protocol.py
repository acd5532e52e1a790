"""The verification protocol: a parity check of the engine's RoPE, then every task at every length that fits,
for each RoPE variant on the same prompts (the extended model and its baseline by default), and the verdict.
Pure orchestration: engines compute, tasks plan and score."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yarn_cli.core.rope import variants
from yarn_cli.core.rope.variants import RopeVariant
from yarn_cli.core.verify import heatmap, timing
from yarn_cli.core.verify import plan as verify_plan
from yarn_cli.core.verify.options import VERIFY
from yarn_cli.errors import EngineCrashed, InputError, UnsupportedError
from yarn_cli.usecases.verify import parity_check, tasks
from yarn_cli.usecases.verify.concurrent import concurrently
from yarn_cli.usecases.verify.tasks.base import Cell, Column, Context, Job, TaskResult

# --json: 2 replaced tokens_per_second by speed (prefill and decode apart) and added variants, tasks, cells; 3 added
# ruler, heatmaps and perplexity_curve (perplexity now read from one pass per document, windows from its start); 4 added
# the curve's spread, overlapping and readings, and estimate (the time the run was expected to take, and from what)
SCHEMA = 4


@dataclass
class VerifyOptions:
    """A VerifyRequest checked and parsed (use case ``_options``); its defaults are the request's."""

    lengths: list[int] | None = None
    max_length: int | None = None
    depths: list[float] = field(default_factory=lambda: list(verify_plan.DEFAULT_DEPTHS))
    samples: int = VERIFY.samples
    threshold: float = VERIFY.threshold
    text: Path | None = None
    ppl_windows: int = VERIFY.ppl_windows
    min_accuracy: float = VERIFY.min_accuracy
    ppl_margin: float = VERIFY.ppl_margin
    seed: int = VERIFY.seed
    parity: bool = VERIFY.parity
    parity_only: bool = VERIFY.parity_only
    parity_length: int | None = None
    tasks: tuple[str, ...] = tasks.DEFAULT_TASKS
    variants: tuple[str, ...] | None = None  # names (variants.select); None: extended and baseline
    compare: tuple[str, ...] = ()  # the paper's alternatives added on the same weights (variants.comparison)
    lm_eval: Any = None  # lm_eval_suite.LmEvalRequest: lm-eval's tasks on every variant, after the others


def load_text(path: Path | None) -> str:
    """--text FILE, or the text of Python's own pydoc_data.topics (offline, ships with every Python)."""
    if path is not None:
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise InputError(f"--text {path}: cannot read ({exc.strerror or exc})") from exc
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def default_variants(engine: Any) -> list[RopeVariant]:
    """The checkpoint as declared ("extended") and the same weights with the scaling removed ("baseline")."""
    facts = engine.facts
    return [variants.declared(facts.rope, facts.baked_attention_factor), variants.baseline(facts.rope, facts.baked_attention_factor)]


@dataclass(frozen=True)
class Prepared:
    """What a run needs before it starts: the variants, the lengths that fit and those skipped (with the largest
    that fits), every task's jobs, and the parity check's sequence, hypotheses and reference (or why none).

    Computed once, so the caller can size a progress bar before anything runs."""

    variants: list[RopeVariant]
    lengths: list[int]
    skipped: list[dict[str, Any]]
    largest_fitting: int | None
    context: Context
    tasks: list[Any]  # tasks.base.Task, in the order they run and are judged
    jobs: dict[str, list[Job]]  # task name -> jobs, every length
    notes: list[str]
    parity: parity_check.ParityPlan | None

    def total_steps(self, options: VerifyOptions) -> int:
        checks = self.parity.steps if self.parity else 0
        if options.parity_only:
            return checks
        harness = len(self.variants) if options.lm_eval else 0
        return checks + harness + len(self.variants) * sum(len(jobs) for jobs in self.jobs.values())


def _with_comparisons(chosen: list[RopeVariant], names: tuple[str, ...], facts: Any) -> tuple[list[RopeVariant], list[str]]:
    """The run's variants with --compare's after them; one that runs the same RoPE as a variant already there
    (``none`` beside the baseline) is that variant, so it is left out, with a note."""
    result, notes = list(chosen), []
    for name in names:
        added = variants.comparison(name, facts.rope, facts.baked_attention_factor)
        twin = next((v for v in result if v.same_rope(added)), None)
        if twin is not None:
            notes.append(f"--compare {name}: the same RoPE as the {twin.name} variant, shown there")
        else:
            result.append(added)
    return result, notes


def plan_lengths(engine: Any, options: VerifyOptions, answer_tokens: int) -> tuple[list[int], list[dict[str, Any]], int | None]:
    """The lengths to run, those skipped because their memory estimate does not fit, and the largest that fits
    (all from one estimate). Variants run one at a time over shared weights, so one estimate holds for each."""
    facts = engine.facts
    lengths = options.lengths or verify_plan.length_ladder(facts.original_context, facts.target_context, options.max_length)
    if options.max_length:
        lengths = [n for n in lengths if n <= options.max_length] or [options.max_length]
    available = engine.available_memory()

    def estimate(length: int) -> verify_plan.MemoryEstimate:
        return verify_plan.estimate_memory(
            facts.weight_bytes, facts.attention, facts.heads, facts.hidden, facts.vocab, length + answer_tokens, min(length, 2048), facts.value_bytes
        )

    served = getattr(getattr(engine, "server", None), "max_length", None)
    if served:  # a server's own limit: lengths past it are left out, with its number
        beyond = [n for n in lengths if n + answer_tokens > served]
        if beyond and not options.parity_only:
            engine.notes.append(f"{', '.join(f'{n:,}' for n in beyond)} not run: the server serves at most {served:,} tokens")
            lengths = [n for n in lengths if n not in beyond]
    runnable = [n for n in lengths if verify_plan.fits(estimate(n), available)]
    skipped = [{"length": n, "needs_bytes": estimate(n).total, "available_bytes": available} for n in lengths if n not in runnable]
    largest = verify_plan.largest_fitting(estimate, available, max(lengths)) if skipped else None
    return runnable, skipped, largest


def prepare(engine: Any, options: VerifyOptions, chosen: list[RopeVariant] | None = None) -> Prepared:
    facts = engine.facts
    if chosen is None and options.variants:
        chosen = variants.select_all(list(options.variants), facts.rope, facts.baked_attention_factor)
    chosen = chosen or default_variants(engine)
    chosen, compare_notes = _with_comparisons(chosen, options.compare, facts)
    if len(chosen) >= 2 and chosen[0].same_rope(chosen[1]):
        compare_notes.append(
            f"{chosen[0].name} and {chosen[1].name} run the same RoPE ({chosen[1].label}): nothing tells them "
            "apart; extend the checkpoint first, or name other --variants"
        )
    task_list, left_out = [], []
    for task in tasks.build(options.tasks):
        needed = getattr(task, "requires", None)
        if needed and not callable(getattr(engine, needed, None)):
            raise UnsupportedError(f"--tasks {task.name}: the {engine.name} engine cannot run it yet; use --engine native")
        why = getattr(engine, "cannot", {}).get(needed)
        if why:  # a server's limit, found when connecting: the task is left out, with the reason
            left_out.append(f"{task.name} not run: {why}")
        else:
            task_list.append(task)
    answer = max((task.answer_tokens for task in task_list), default=0)
    # --tasks none (lm-eval only): no length to plan, so none is reported as run
    lengths, skipped, largest = plan_lengths(engine, options, answer) if task_list else ([], [], None)
    text = load_text(options.text)
    text_ids = engine.tokenizer.encode(text)
    context = Context(
        engine.tokenizer.encode,
        engine.tokenizer.bos,
        text_ids,
        engine.facts.original_context,
        options,
        [v.name for v in chosen],
        text,
        [] if options.parity_only else list(lengths),
    )
    notes = list(engine.notes) + compare_notes + left_out
    jobs: dict[str, list[Job]] = {task.name: [] for task in task_list}
    for length in lengths if not options.parity_only else []:
        for task in task_list:
            planned, task_notes = task.plan(context, length)
            jobs[task.name] += planned
            notes += task_notes
    parity = parity_check.plan(engine, options, text_ids, notes) if options.parity else None
    engine.reserve(max([n + answer for n in lengths if not options.parity_only] + [len(parity.ids) if parity else 0]))
    # after reserve: whether a variant can run depends on the run's longest sequence (vLLM's YaRN table)
    for variant in chosen:
        reason = engine.unsupported(variant)
        if reason:
            raise UnsupportedError(f"the {engine.name} engine cannot run variant {variant.name!r} ({variant.label}): {reason}")
    return Prepared(chosen, lengths, skipped, largest, context, task_list, jobs, notes, parity)


def estimate_time(engine: Any, prepared: Prepared, options: VerifyOptions) -> timing.Estimate | None:
    """Time one short generation on the engine and price every task call from it (None where no task runs).
    The prompt is filler alone, which no task prompt starts with, so no engine's prefix cache carries it over."""
    calls = [(len(job.ids), task.answer_tokens) for task in prepared.tasks for job in prepared.jobs[task.name] for _ in prepared.variants]
    if options.parity_only or not calls:
        return None
    tokens = min(timing.MEASURE_TOKENS, min(n for n, _ in calls))
    filler = prepared.context.encode(" ".join([verify_plan.FILLER] * (tokens // 8 + 1)))
    ids = (engine.tokenizer.bos + filler)[:tokens]
    done = engine.generate(prepared.variants[0], ids, timing.MEASURE_ANSWER)
    measured = timing.Measured(len(ids), done.prefill_seconds, done.decode_tokens, done.decode_seconds, engine.facts.hidden)
    return timing.estimate(measured, calls)


def run(
    engine: Any,
    options: VerifyOptions,
    advance: Callable[[int], None] | None = None,
    prepared: Prepared | None = None,
    describe: Callable[[str], None] | None = None,
    estimated: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], list[Column]]:
    """The report (the --json object) and the tasks' table columns. ``describe`` hears which cell runs next,
    ``estimated`` the tasks' expected time once it is measured (after parity, before the first task)."""
    prepared = prepared or prepare(engine, options)
    notes = list(prepared.notes)
    started = time.perf_counter()
    crash: EngineCrashed | None = None
    try:
        checked = parity_check.run(engine, prepared.parity, options, notes, advance) if prepared.parity else None
    except EngineCrashed as exc:
        checked, crash = None, exc
    timings = {"parity_seconds": time.perf_counter() - started}
    if crash is not None:
        return _crashed(engine, prepared, {task.name: [] for task in prepared.tasks}, notes, crash, timings)
    if options.parity_only:
        return {
            **_header(engine, prepared),
            "parity": checked.to_json(),
            "notes": notes,
            "verdict": verify_plan.Verdict(checked.ok, checked.line).to_json(),
            "timings": _timings(engine, timings),
            "estimate": None,
        }, []
    started = time.perf_counter()
    try:
        estimate = estimate_time(engine, prepared, options)
    except EngineCrashed as exc:
        return _crashed(engine, prepared, {task.name: [] for task in prepared.tasks}, notes, exc, timings, checked)
    if estimate and estimated:
        estimated(estimate.to_json())
    cells, crash = _cells(engine, prepared, advance, describe)
    timings["protocol_seconds"] = time.perf_counter() - started
    if crash is not None:
        return _crashed(engine, prepared, cells, notes, crash, timings, checked, estimate)
    extra = []
    if options.lm_eval is not None:
        from yarn_cli.usecases.verify import lm_eval_suite

        started = time.perf_counter()
        extra.append(lm_eval_suite.run(engine, prepared.variants, options.lm_eval, advance))
        timings["lm_eval_seconds"] = time.perf_counter() - started
    report, columns = _report(engine, prepared, cells, notes, extra)
    report["parity"] = checked.to_json() if checked else None
    report["timings"] = _timings(engine, timings)
    report["estimate"] = estimate.to_json() if estimate else None
    if checked and not checked.ok:
        report["verdict"] = verify_plan.Verdict(False, checked.line).to_json()
    return report, columns


def _crashed(
    engine: Any,
    prepared: Prepared,
    cells: dict[str, list[Cell]],
    notes: list[str],
    crash: EngineCrashed,
    timings: dict,
    checked: Any = None,
    estimate: timing.Estimate | None = None,
) -> tuple[dict[str, Any], list[Column]]:
    """The report of a run whose engine died: every cell measured before, and a FAIL that says what happened."""
    report, columns = _report(engine, prepared, cells, notes, [])
    report["parity"] = checked.to_json() if checked else None
    report["timings"] = _timings(engine, timings)
    report["engine_crash"] = str(crash)
    report["estimate"] = estimate.to_json() if estimate else None
    report["verdict"] = verify_plan.Verdict(False, str(crash)).to_json()
    return report, columns


def _cells(engine: Any, prepared: Prepared, advance, describe) -> tuple[dict[str, list[Cell]], EngineCrashed | None]:
    """Each task's cells (a cell names the task it scores: RULER's suite names its own tasks), variant by
    variant (an engine that holds one model at a time switches once), then task by task. An engine that crashes
    ends the loop; the cells measured before are kept, with the crash."""
    cells: dict[str, list[Cell]] = {task.name: [] for task in prepared.tasks}
    for variant in prepared.variants:
        for task in prepared.tasks:
            in_flight = getattr(engine, "concurrency", 1) if getattr(engine, "remote", lambda v: False)(variant) else 1
            if in_flight > 1:  # a server batches what it is sent at once: its jobs go out together, kept in order
                cells[task.name] += concurrently(engine, task, variant, prepared.jobs[task.name], in_flight, advance, describe)
                continue
            for job in prepared.jobs[task.name]:
                if describe:
                    describe(job.describe(variant.name))
                try:
                    cells[task.name].append(task.run(engine, variant, job))
                except EngineCrashed as exc:
                    return cells, exc
                if advance:
                    advance(1)
    return cells, None


def _header(engine: Any, prepared: Prepared) -> dict[str, Any]:
    """The keys every verify report opens with."""
    facts = engine.facts
    return {
        "schema": SCHEMA,
        "engine": engine.name,
        "device": engine.device,
        "scaling": facts.scaling,
        "original_context": facts.original_context,
        "target_context": facts.target_context,
        "variants": [v.to_json() for v in prepared.variants],
    }


def _timings(engine: Any, timings: dict[str, float]) -> dict[str, float]:
    """Where the time went; ``engine_startup_seconds`` for engines that start servers of their own (vLLM),
    which the other figures include."""
    startup = getattr(engine, "startup_seconds", None)
    return {**timings, **({"engine_startup_seconds": startup} if startup is not None else {})}


def speed(cells: list[Cell]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Prefill and decoding tokens per second per variant and length, every task's cells together."""
    totals: dict[str, dict[int, list[float]]] = {}
    for cell in cells:
        row = totals.setdefault(cell.variant, {}).setdefault(cell.length, [0, 0.0, 0, 0.0])
        row[0] += cell.prefill_tokens
        row[1] += cell.prefill_seconds
        row[2] += cell.decode_tokens
        row[3] += cell.decode_seconds
    rate = lambda tokens, seconds: tokens / seconds if tokens and seconds > 0 else None  # noqa: E731
    return {
        v: {str(n): {"prefill_tokens_per_second": rate(r[0], r[1]), "decode_tokens_per_second": rate(r[2], r[3])} for n, r in lengths.items()}
        for v, lengths in totals.items()
    }


def _report(
    engine: Any, prepared: Prepared, by_task: dict[str, list[Cell]], notes: list[str], extra: list[TaskResult]
) -> tuple[dict[str, Any], list[Column]]:
    """``extra``: results computed outside the task loop (lm-eval's), judged and reported like a task's."""
    results = [task.finish(by_task[task.name], prepared.context) for task in prepared.tasks] + extra
    cells = [cell for task in prepared.tasks for cell in by_task[task.name]]
    for result in results:
        notes += result.notes
    if prepared.skipped:
        skipped_text = ", ".join(f"{item['length']:,}" for item in prepared.skipped)
        fits = f"; the largest length that fits is {prepared.largest_fitting:,}" if prepared.largest_fitting else "; not even 256 tokens fit"
        notes.append(f"skipped {skipped_text} tokens: the memory estimate exceeds what the device has{fits}")
    judgements = [r.judgement for r in results if r.judgement]
    facts = engine.facts
    if prepared.tasks:
        separated = [r.separated for r in results if r.separated is not None]
        result = verify_plan.verdict(
            prepared.lengths,
            [s["length"] for s in prepared.skipped],
            facts.original_context,
            facts.target_context,
            judgements,
            verify_plan.merged_separation(separated) if separated else None,
        )
    else:
        result = verify_plan.judged(judgements, "lm-eval ran")
    report = {
        **_header(engine, prepared),
        "tasks": list(prepared.context.options.tasks),
        "lengths": prepared.lengths,
        "skipped": prepared.skipped,
        "largest_fitting_length": prepared.largest_fitting,
    }
    for task_result in results:
        report.update(task_result.report)
    cell_json = [c.to_json() for c in cells]
    pictured = [name for task in prepared.tasks for name in task.pictured]
    report.update(heatmaps=heatmap.heatmaps(cell_json, pictured), speed=speed(cells), cells=cell_json, verdict=result.to_json(), notes=notes)
    return report, [column for r in results for column in r.columns]
