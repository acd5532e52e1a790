"""``verify --lm-eval TASKS``: lm-evaluation-harness's tasks on every variant of the run, through the bridge
(``usecases.lm_eval_model``) over the engine verify already loaded, compared task by task.

Everything that can be refused is refused before the model loads: lm-eval missing, a malformed or unknown
``--lm-eval-args`` key, an unknown task, a task whose data cannot be found."""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yarn_cli.core.units import split_names
from yarn_cli.core.verify.plan import Judgement
from yarn_cli.errors import InputError, first_line
from yarn_cli.usecases.verify.tasks.base import TaskResult

# simple_evaluate's own parameters that verify sets itself (the model, the tasks) or that belong to the engine.
RESERVED = {"model", "model_args", "tasks", "task_manager", "device", "verbosity", "evaluation_tracker"}
OFFLINE_HELP = (
    "with network lm-eval fetches it into the Hugging Face cache once (then HF_DATASETS_OFFLINE=1 "
    "works); without, point the task at local files: a task YAML with dataset_path: json and "
    "dataset_kwargs.data_files, found through include_path=DIR in --lm-eval-args"
)


@dataclass(frozen=True)
class LmEvalRequest:
    tasks: list[str]
    evaluate_args: dict[str, Any]  # handed to lm-eval's simple_evaluate unchanged
    include_path: str | None = None
    max_task_drop: float | None = None  # points; None: reported, not judged
    task_manager: Any = field(default=None, compare=False)


def parse_args(text: str | dict[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    """``key=value,key=value`` (lm-eval's own model_args form) -> (simple_evaluate's arguments, include_path)."""
    try:
        from lm_eval import evaluator
        from lm_eval.utils import handle_arg_string
    except ImportError as exc:
        from yarn_cli.io.packages import needs

        raise InputError(needs("--lm-eval", "lm-eval")) from exc
    if isinstance(text, dict):
        pairs = dict(text)
    else:
        pairs = {}
        for part in split_names(text or ""):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise InputError(f"--lm-eval-args {text!r}: {part!r} is not key=value (e.g. num_fewshot=5,limit=100)")
            pairs[key.strip()] = handle_arg_string(value.strip())
    include = pairs.pop("include_path", None)
    known = set(inspect.signature(evaluator.simple_evaluate).parameters) - RESERVED
    unknown = sorted(set(pairs) - known)
    if unknown:
        raise InputError(
            f"--lm-eval-args: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not lm-eval's; "
            f"use include_path or any of {', '.join(sorted(known))}"
        )
    pairs.setdefault("log_samples", False)
    return pairs, None if include is None else str(include)


def prepare(tasks: str | Sequence[str], args: str | dict[str, Any] | None, max_task_drop: float | None) -> LmEvalRequest:
    """Parse and check the request, and load every task (its data too) so that nothing fails after the model loads."""
    evaluate_args, include = parse_args(args)
    names = list(dict.fromkeys(split_names(tasks)))
    if not names:
        raise InputError("--lm-eval: name one or more lm-eval tasks or groups, e.g. arc_easy,hellaswag")
    if max_task_drop is not None and not (math.isfinite(max_task_drop) and max_task_drop >= 0):
        raise InputError(f"--max-task-drop {max_task_drop}: give the points a task may lose, e.g. 2")
    with _quiet():
        manager = _manager(include)
        names = _resolve(names, manager)
        for name in names:
            try:
                manager.load(name)
            except Exception as exc:  # datasets/hub errors have no common base: the task is named, the cause quoted
                raise InputError(f"lm-eval task {name!r}: its data could not be loaded ({first_line(exc)}); {OFFLINE_HELP}") from exc
    return LmEvalRequest(names, evaluate_args, include, max_task_drop, manager)


def _resolve(names: list[str], manager: Any) -> list[str]:
    """Task, group and tag names as lm-eval's own CLI takes them: a name, a glob (``mmlu_*``) or a YAML path."""
    resolved: list[str] = []
    for name in names:
        matched = [name] if Path(name).is_file() else manager.match_tasks([name])
        if not matched:
            raise InputError(
                f"lm-eval task {name!r} is not known to lm-eval {_version()}: list the tasks with "
                "`python -m yarn_cli.lm_eval ls tasks`, or add yours with include_path=DIR in --lm-eval-args"
            )
        resolved += [m for m in matched if m not in resolved]
    return resolved


def _manager(include: str | None):
    from lm_eval.tasks import TaskManager

    if include is not None:
        if not Path(include).is_dir():
            raise InputError(f"--lm-eval-args include_path={include}: no such folder of task YAMLs")
    return TaskManager(include_path=include)


def run(engine: Any, variants: list, request: LmEvalRequest, advance: Callable[[int], None] | None = None) -> TaskResult:
    """Each variant through simple_evaluate on the shared engine; the comparison rows, the judgement, lm-eval's results."""
    from lm_eval import evaluator

    from yarn_cli.usecases.lm_eval_model import YarnLM

    results: dict[str, dict[str, Any]] = {}
    with _quiet():
        for variant in variants:
            model = YarnLM(loaded=engine, variant=variant, progress=False)
            output = evaluator.simple_evaluate(model=model, tasks=list(request.tasks), task_manager=request.task_manager, **request.evaluate_args)
            results[variant.name] = _serializable(output)
            if advance:
                advance(1)
    names = [v.name for v in variants]
    rows = compare(results, names)
    judgement = judge(rows, names, request.max_task_drop)
    report = {
        "lm_eval": {
            "version": _version(),
            "tasks": request.tasks,
            "args": request.evaluate_args,
            "include_path": request.include_path,
            "max_task_drop": request.max_task_drop,
            "rows": rows,
            "results": results,
        }
    }
    return TaskResult(report, [], judgement)


@contextlib.contextmanager
def _quiet():
    """lm-eval logs each step at INFO, and the hub client each retry of an unreachable dataset; verify shows its
    own progress and one line for a task it cannot load, so only lm-eval's warnings pass (unless the user set
    LMEVAL_LOG_LEVEL, lm-eval's own switch)."""
    levels = {"lm_eval": logging.WARNING, "huggingface_hub": logging.ERROR, "datasets": logging.ERROR}
    loggers = {name: logging.getLogger(name) for name in levels}
    before = {name: logger.level for name, logger in loggers.items()}
    if not os.environ.get("LMEVAL_LOG_LEVEL"):
        for name, logger in loggers.items():
            logger.setLevel(levels[name])
    try:
        yield
    finally:
        for name, logger in loggers.items():
            logger.setLevel(before[name])


def compare(results: dict[str, dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """One row per task (and group) and metric: each variant's value and standard error, the first variant's
    difference from the second, and, for a score (a fraction, higher is better), its drop in points
    (100 x the difference; positive = worse)."""
    first = results[names[0]]
    rows = []
    for task, metrics in first.get("results", {}).items():
        better = first.get("higher_is_better", {}).get(task, {})
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue  # metrics are "name,filter"; alias, name and sample_len (a count) are not
            metric, _, filter_name = key.partition(",")
            values = {n: _number(results[n].get("results", {}).get(task, {}).get(key)) for n in names}
            errors = {n: _number(results[n].get("results", {}).get(task, {}).get(f"{metric}_stderr,{filter_name}")) for n in names}
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "filter": filter_name,
                    "higher_is_better": better.get(metric),
                    "values": values,
                    "stderr": errors,
                    **_difference(values, errors, names, better.get(metric)),
                }
            )
    return rows


def _difference(values: dict, errors: dict, names: list[str], higher_is_better: bool | None) -> dict[str, Any]:
    a, b = values[names[0]], values[names[1]]
    if a is None or b is None:
        return {"difference": None, "difference_stderr": None, "drop_points": None}
    ea, eb = errors[names[0]], errors[names[1]]
    stderr = math.hypot(ea, eb) if ea is not None and eb is not None else None
    # a score (accuracy, exact match, F1) is a fraction where higher is better: its drop is counted in points;
    # perplexities and bits per byte are compared, never gated
    drop = 100.0 * (b - a) if higher_is_better is True and 0.0 <= a <= 1.0 and 0.0 <= b <= 1.0 else None
    return {"difference": a - b, "difference_stderr": stderr, "drop_points": drop}


def judge(rows: list[dict[str, Any]], names: list[str], max_task_drop: float | None) -> Judgement:
    """Gate on ``max_task_drop`` points over every score (a fraction lm-eval says is better higher)."""
    gated = [r for r in rows if r["drop_points"] is not None]
    worst = max(gated, key=lambda r: r["drop_points"], default=None)
    if max_task_drop is None or worst is None:
        drop = "" if worst is None else f", largest drop {worst['drop_points']:.1f} points ({worst['task']} {worst['metric']})"
        summary = f"lm-eval: {len(rows)} metric(s) compared{drop}"
        return Judgement(True, summary, aside=True)
    if worst["drop_points"] > max_task_drop:
        return Judgement(
            False,
            f"lm-eval {worst['task']} {worst['metric']}: {names[0]} is {worst['drop_points']:.1f} points "
            f"below {names[1]} (more than --max-task-drop {max_task_drop:g})",
        )
    return Judgement(True, f"lm-eval: no task drops more than {max_task_drop:g} points (largest {max(worst['drop_points'], 0):.1f})")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _serializable(output: dict[str, Any] | None) -> dict[str, Any]:
    """lm-eval's results object as its own CLI writes it to JSON (its encoder for what JSON lacks), with NaN
    and infinities as null: strict JSON has no spelling for them."""
    import json

    from lm_eval.utils import handle_non_serializable

    def strict(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: strict(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strict(v) for v in value]
        return value

    return strict(json.loads(json.dumps(output or {}, default=handle_non_serializable)))


def _version() -> str:
    from importlib.metadata import version

    return version("lm_eval")
