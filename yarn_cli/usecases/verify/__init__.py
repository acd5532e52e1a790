"""`verify`: load an engine, check its RoPE (parity), run the tasks (passkey retrieval, perplexity) for each
RoPE variant (the extended model and its baseline), and judge."""

from __future__ import annotations

import time

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yarn_cli.errors import InputError
from yarn_cli.core.lengths import check_original_context
from yarn_cli.usecases.models import Notify, resolve_model

@dataclass(frozen=True)
class VerifyReport:
    data: dict[str, Any]  # the `verify --json` object
    columns: list = field(default_factory=list)  # the tasks' table columns (tasks.base.Column)

    @property
    def ok(self) -> bool:
        return bool(self.data["verdict"]["ok"])

    def to_json(self) -> dict[str, Any]:
        return self.data


@dataclass
class VerifyRun:
    """A loaded engine and a planned protocol; ``total_steps`` sizes a progress bar before ``run``."""

    engine: Any
    options: Any  # protocol.VerifyOptions
    prepared: Any  # protocol.Prepared
    path: Path
    report_folder: Path | None = None  # --report DIR: written after the run
    card: bool = False  # --card: the model card next to the checkpoint, after the run
    base_model: str | None = None  # --base-model: the card's base_model

    @property
    def total_steps(self) -> int:
        return self.prepared.total_steps(self.options)

    load_seconds: float = 0.0

    def run(self, progress: Callable[[int], None] | None = None, describe: Callable[[str], None] | None = None) -> VerifyReport:
        """Run the protocol; ``progress`` hears each finished step, ``describe`` which cell runs next."""
        from yarn_cli.usecases.verify import protocol

        try:
            report, columns = protocol.run(self.engine, self.options, progress, self.prepared, describe)
        finally:
            self.engine.close()  # engines with worker processes (vLLM) stop them now, not in interpreter teardown
        report["timings"] = {"load_seconds": self.load_seconds, **report["timings"]}
        written = {}
        if self.report_folder is not None:
            from yarn_cli.usecases import report as reports

            written["report"] = str(reports.write([(self.path.name, report)], self.report_folder).html)
        if self.card:
            from yarn_cli.usecases import card

            written["card"] = str(card.write(self.path, report, self.base_model))
        report.update(written)
        return VerifyReport(report, columns)


def _model_path(model: str | Path | None, engine: str, notify: Notify | None) -> Path:
    """torch, the engine's name and the model's path, checked (the default model fetched) before anything loads."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise InputError("verify needs torch: pip install torch") from exc
    from yarn_cli.runtimes.base import ENGINES

    if engine not in ENGINES:
        raise InputError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}")
    path = Path(resolve_model(model, notify)).expanduser()
    if not path.exists():
        raise InputError(f"{model}: no such file or folder; verify runs a local HF folder or .gguf")
    return path


def _lengths(value: str | Sequence[int] | None) -> list[int] | None:
    from yarn_cli.core import verify_plan

    if value is None or isinstance(value, str):
        return verify_plan.parse_lengths(value) if value else None
    lengths = sorted({int(n) for n in value})
    if not lengths or lengths[0] < 1:
        raise InputError(f"lengths {list(value)!r}: give positive token counts, e.g. [4096, 16384]")
    return lengths


def _parity_length(value: str | int | None) -> int | None:
    from yarn_cli.core.lengths import parse_length

    if value is None:
        return None
    length = parse_length(str(value))
    if length < 2:
        raise InputError(f"--parity-length {value}: the parity sequence needs at least 2 tokens")
    return length


def prepare_verify(
    model: str | Path | None = None,
    *,
    engine: str = "native",
    device: str = "auto",
    lengths: str | Sequence[int] | None = None,
    max_length: str | int | None = None,
    depths: str | Sequence[float] = "0.1,0.5,0.9",
    samples: int | None = None,
    trials: int = 1,
    seed: int = 0,
    threshold: float = 85.6,
    text: str | Path | None = None,
    ppl_windows: int = 2,
    min_accuracy: float = 0.8,
    ppl_margin: float = 0.10,
    original_context: int | None = None,
    parity: bool = True,
    parity_only: bool = False,
    parity_length: str | int | None = None,
    tasks: str | Sequence[str] | None = None,
    variants: str | Sequence[str] | None = None,
    compare: str | Sequence[str] | None = None,
    lm_eval: str | Sequence[str] | None = None,
    lm_eval_args: str | dict[str, Any] | None = None,
    max_task_drop: float | None = None,
    engine_options: dict[str, Any] | None = None,
    report: str | Path | None = None,
    card: bool = False,
    base_model: str | None = None,
    notify: Notify | None = None,
) -> VerifyRun:
    """Check the request, load MODEL on ``engine`` and plan the lengths that fit in memory and the parity check.

    ``samples``: prompts per cell (formerly ``trials``); ``seed`` seeds every prompt; ``threshold``: RULER's bar for the
    effective length; ``compare``: the paper's alternatives on the same weights (linear, ntk, none). ``variants``: names to compare, the first judged against the second (extended, baseline, paper, m=X;
    default extended,baseline). ``lm_eval``: lm-evaluation-harness tasks or groups to run on every variant,
    with ``lm_eval_args`` for lm-eval's simple_evaluate (num_fewshot, limit, include_path...) and
    ``max_task_drop`` points as a gate. ``engine_options``: what only some engines take (vllm:
    tensor_parallel_size, pipeline_parallel_size, dtype, gpu_memory_utilization, enforce_eager). ``report``: a folder
    for report.html; ``card``: write (or update) the model card, naming ``base_model`` (a hub id)."""
    from yarn_cli.runtimes.base import load_engine, pick_device
    from yarn_cli.usecases.verify import protocol

    path = _model_path(model, engine, notify)
    options = _options(lengths=lengths, max_length=max_length, depths=depths, samples=samples or trials, seed=seed, threshold=threshold,
                       text=text, ppl_windows=ppl_windows, min_accuracy=min_accuracy, ppl_margin=ppl_margin, parity=parity, parity_only=parity_only,
                       parity_length=parity_length, tasks=tasks, variants=variants, compare=compare, lm_eval=lm_eval, lm_eval_args=lm_eval_args,
                       max_task_drop=max_task_drop)
    check_original_context(original_context)
    report_folder = _report_folder(report, path, card, base_model)
    longest = max(options.lengths or [0]) + 16
    started = time.perf_counter()
    loaded = load_engine(engine, path, pick_device(device), original_context, longest, engine_options or {})
    try:
        prepared = protocol.prepare(loaded, options)
    except BaseException:
        loaded.close()
        raise
    return VerifyRun(loaded, options, prepared, path, report_folder, card, base_model, time.perf_counter() - started)


def _options(*, lengths, max_length, depths, samples, seed, threshold, text, ppl_windows, min_accuracy, ppl_margin, parity, parity_only,
             parity_length, tasks, variants, compare, lm_eval, lm_eval_args, max_task_drop):
    """Every option checked (lm-eval's tasks loaded too) before the model loads, as protocol.VerifyOptions."""
    from yarn_cli.core import verify_plan
    from yarn_cli.core.lengths import parse_length
    from yarn_cli.usecases.verify import protocol
    from yarn_cli.usecases.verify import tasks as task_registry

    if not 0 <= min_accuracy <= 1:
        raise InputError("--min-accuracy is a fraction between 0 and 1")
    if not 0 <= threshold <= 100:
        raise InputError(f"--threshold {threshold:g}: RULER scores are points between 0 and 100 (RULER's bar is 85.6)")
    if samples < 1:
        raise InputError(f"--samples {samples}: at least one prompt per cell")
    chosen_tasks = task_registry.parse(tasks)
    if parity_only and lm_eval:
        raise InputError("--parity-only runs the parity check alone: drop it to run --lm-eval")
    harness = _lm_eval_request(lm_eval, lm_eval_args, max_task_drop)
    if not chosen_tasks and harness is None and not parity_only:
        raise InputError("--tasks none leaves nothing to run: add --lm-eval TASKS, or use --parity-only")
    return protocol.VerifyOptions(
        lengths=_lengths(lengths),
        max_length=parse_length(str(max_length)) if max_length else None,
        depths=verify_plan.parse_depths(depths if isinstance(depths, str) else ",".join(map(str, depths))),
        samples=samples, seed=seed, threshold=threshold, text=Path(text) if text is not None else None, ppl_windows=ppl_windows,
        min_accuracy=min_accuracy, ppl_margin=ppl_margin, parity=parity or parity_only, parity_only=parity_only,
        parity_length=_parity_length(parity_length), tasks=chosen_tasks, variants=_variant_names(variants),
        compare=_comparisons(compare),
        lm_eval=harness,
    )


def _report_folder(report: str | Path | None, model: Path, card: bool, base_model: str | None) -> Path | None:
    """--report DIR, --card and --base-model checked before the model loads (nothing is written before the run ends)."""
    if base_model and not card:
        raise InputError("--base-model names the base model in the card: add --card")
    from yarn_cli.usecases import card as cards
    from yarn_cli.usecases import report as reports

    folder = Path(report).expanduser() if report is not None else None
    if folder is not None:
        reports.check_folder(folder)
        if folder.resolve() == model.resolve() or model.resolve() in folder.resolve().parents:
            raise InputError(f"--report {folder}: inside the checkpoint; give a folder outside it")
    if card:
        cards.check(model)
    return folder


def _lm_eval_request(tasks: str | Sequence[str] | None, args: str | dict[str, Any] | None, max_task_drop: float | None):
    """The lm-eval part of the run, checked and its tasks loaded (or None when none was asked for)."""
    if tasks is None or (isinstance(tasks, str) and not tasks.strip()):
        if args or max_task_drop is not None:
            raise InputError("--lm-eval-args and --max-task-drop go with --lm-eval TASKS")
        return None
    from yarn_cli.usecases.verify import lm_eval_suite

    return lm_eval_suite.prepare(tasks, args, max_task_drop)


def _comparisons(value: str | Sequence[str] | None) -> tuple[str, ...]:
    from yarn_cli.core.units import split_names
    from yarn_cli.core.variants import COMPARISONS

    names = split_names(value) if value else []
    unknown = [n for n in names if n not in COMPARISONS]
    if unknown:
        raise InputError(f"--compare {','.join(names)}: unknown {', '.join(unknown)}; choose from {', '.join(COMPARISONS)}")
    return tuple(dict.fromkeys(names))


def _variant_names(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    from yarn_cli.core.variants import parse_names

    return None if value is None else parse_names(value)


def verify(model: str | Path | None = None, *, progress: Callable[[int], None] | None = None, **options: Any) -> VerifyReport:
    """prepare_verify(model, **options), then run it: the extended model and its baseline, length by length."""
    return prepare_verify(model, **options).run(progress)
