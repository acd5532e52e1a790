"""`verify`: load an engine, check its RoPE (parity), run the tasks (passkey retrieval, perplexity) for each
RoPE variant (the extended model and its baseline), and judge."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yarn_cli.core.rope.lengths import check_original_context
from yarn_cli.core.verify.options import VerifyRequest
from yarn_cli.core.verify.ruler import THRESHOLD
from yarn_cli.errors import InputError
from yarn_cli.io import packages
from yarn_cli.usecases.models import Notify, resolve_local_model
from yarn_cli.usecases.verify import protocol

if TYPE_CHECKING:
    from yarn_cli.runtimes.base import Engine


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

    engine: Engine
    options: protocol.VerifyOptions
    prepared: protocol.Prepared
    path: Path
    report_folder: Path | None = None  # --report DIR: written after the run
    card: bool = False  # --card: the model card next to the checkpoint, after the run
    base_model: str | None = None  # --base-model: the card's base_model
    load_seconds: float = 0.0
    command: str | None = None  # the command line that asked for the run (the CLI sets it), for the provenance

    def _provenance(self, report: dict[str, Any]) -> dict[str, Any]:
        """What a reader of the report needs to trust or repeat it."""
        import datetime
        import platform

        from yarn_cli import __version__
        from yarn_cli.io.digest import checkpoint_digest

        return {
            "yarn_cli": __version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": self.command,
            "checkpoint": checkpoint_digest(self.path),
            "engine": report.get("engine"),
            "device": report.get("device"),
            "seed": self.options.seed,
            "samples_per_cell": self.options.samples,
            "python": platform.python_version(),
        }

    @property
    def total_steps(self) -> int:
        return self.prepared.total_steps(self.options)

    def run(
        self,
        progress: Callable[[int], None] | None = None,
        describe: Callable[[str], None] | None = None,
        estimated: Callable[[dict[str, Any]], None] | None = None,
    ) -> VerifyReport:
        """Run the protocol; ``progress`` hears each finished step, ``describe`` which cell runs next, ``estimated``
        the tasks' expected time (the report's ``estimate``) before the first of them starts."""
        try:
            report, columns = protocol.run(self.engine, self.options, progress, self.prepared, describe, estimated)
        finally:
            self.engine.close()  # engines with worker processes (vLLM) stop them now, not in interpreter teardown
        report["timings"] = {"load_seconds": self.load_seconds, **report["timings"]}
        report["provenance"] = self._provenance(report)
        written = {}
        if self.report_folder is not None:
            from yarn_cli.usecases import report as reports

            written["report"] = str(reports.write([(reports.run_title(report, self.path.name), report)], self.report_folder).html)
        if self.card:
            from yarn_cli.usecases import card

            written["card"] = str(card.write(self.path, report, self.base_model))
        report.update(written)
        return VerifyReport(report, columns)


def _model_path(model: str | Path | None, request: VerifyRequest, notify: Notify | None) -> Path:
    """The engine's name, every package the request needs and the model's path, checked (the default model
    fetched) before anything loads."""
    from yarn_cli.runtimes.base import check_engine

    engine = request.engine
    check_engine(engine, "verify")
    if request.report is not None:
        packages.require("--report", "plot")
    if request.card:
        packages.require("--card", "plot")
    if request.lm_eval:
        packages.require("--lm-eval", "lm-eval")
    path = resolve_local_model(model, "verify", notify)
    if engine == "native" and (request.parity or request.parity_only):
        # the native engine is held to transformers' forward pass
        feature = "transformers-gguf" if path.suffix.lower() == ".gguf" else "transformers"
        packages.require("the parity check", feature, "or pass --no-parity to skip it")
    return path


def _lengths(value: str | Sequence[int] | None) -> list[int] | None:
    from yarn_cli.core.verify import plan as verify_plan

    if value is None or isinstance(value, str):
        return verify_plan.parse_lengths(value) if value else None
    lengths = sorted({int(n) for n in value})
    if not lengths or lengths[0] < 1:
        raise InputError(f"lengths {list(value)!r}: give positive token counts, e.g. [4096, 16384]")
    return lengths


def _parity_length(value: str | int | None) -> int | None:
    from yarn_cli.core.rope.lengths import parse_length

    if value is None:
        return None
    length = parse_length(str(value), "--parity-length")
    if length < 2:
        raise InputError(f"--parity-length {value}: the parity sequence needs at least 2 tokens")
    return length


def prepare_verify(
    model: str | Path | None = None, request: VerifyRequest | None = None, *, notify: Notify | None = None, **options: Any
) -> VerifyRun:
    """Check the request, load MODEL on its engine and plan the lengths that fit in memory and the parity check.

    ``request`` holds every choice (``yarn_cli.core.verify.options.VerifyRequest``, its defaults those of the
    command); keyword arguments change single fields, e.g. ``prepare_verify(path, lengths=[4096], samples=2)``."""
    from yarn_cli.runtimes.base import load_engine, pick_device

    request = VerifyRequest.build(request, **options)
    path = _model_path(model, request, notify)
    checked = _options(request)
    check_original_context(request.original_context)
    report_folder = _report_folder(request.report, path, request.card, request.base_model)
    longest = max(checked.lengths or [0]) + 16
    server = _server(request)  # reachable and serving one model, before anything loads
    started = time.perf_counter()
    loaded = load_engine(request.engine, path, pick_device(request.device), request.original_context, longest, request.engine_options.to_dict())
    try:
        if server is not None:
            from yarn_cli.runtimes.endpoint import EndpointEngine

            loaded = EndpointEngine(server, loaded, request.concurrency)
        prepared = protocol.prepare(loaded, checked)
    except BaseException:
        loaded.close()
        raise
    return VerifyRun(loaded, checked, prepared, path, report_folder, request.card, request.base_model, time.perf_counter() - started)


def _server(request: VerifyRequest):
    """--endpoint's server, connected and checked (runtimes.endpoint.connect), or None; its flags alone are refused."""
    if request.endpoint is None:
        alone = [flag for flag, value in (("--served-model", request.served_model), ("--api-key-env", request.api_key_env)) if value]
        if alone:
            raise InputError(f"{', '.join(alone)} go with --endpoint URL")
        return None
    if request.concurrency < 1:
        raise InputError(f"--concurrency {request.concurrency}: at least one request in flight")
    if request.lm_eval:
        raise InputError("--lm-eval runs in-process: drop --endpoint to run it")
    from yarn_cli.runtimes.endpoint import connect

    return connect(request.endpoint, request.served_model, request.api_key_env)


def _options(request: VerifyRequest) -> protocol.VerifyOptions:
    """Every option checked (lm-eval's tasks loaded too) before the model loads, as protocol.VerifyOptions."""
    from yarn_cli.core.rope.lengths import parse_length
    from yarn_cli.core.verify import plan as verify_plan
    from yarn_cli.usecases.verify import tasks as task_registry

    r = request
    if not 0 <= r.min_accuracy <= 1:
        raise InputError("--min-accuracy is a fraction between 0 and 1")
    if not 0 <= r.threshold <= 100:
        raise InputError(f"--threshold {r.threshold:g}: RULER scores are points between 0 and 100 (RULER's bar is {THRESHOLD})")
    if r.samples < 1:
        raise InputError(f"--samples {r.samples}: at least one prompt per cell")
    chosen_tasks = task_registry.parse(r.tasks)
    if r.parity_only and r.lm_eval:
        raise InputError("--parity-only runs the parity check alone: drop it to run --lm-eval")
    harness = _lm_eval_request(r.lm_eval, r.lm_eval_args, r.max_task_drop)
    if not chosen_tasks and harness is None and not r.parity_only:
        raise InputError("--tasks none leaves nothing to run: add --lm-eval TASKS, or use --parity-only")
    return protocol.VerifyOptions(
        lengths=_lengths(r.lengths),
        max_length=parse_length(str(r.max_length), "--max-length") if r.max_length else None,
        depths=verify_plan.parse_depths(r.depths if isinstance(r.depths, str) else ",".join(map(str, r.depths))),
        samples=r.samples,
        seed=r.seed,
        threshold=r.threshold,
        text=Path(r.text) if r.text is not None else None,
        ppl_windows=r.ppl_windows,
        min_accuracy=r.min_accuracy,
        ppl_margin=r.ppl_margin,
        parity=r.parity or r.parity_only,
        parity_only=r.parity_only,
        parity_length=_parity_length(r.parity_length),
        tasks=chosen_tasks,
        variants=_variant_names(r.variants),
        compare=_comparisons(r.compare),
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
    from yarn_cli.core.rope.variants import COMPARISONS
    from yarn_cli.core.units import split_names

    names = split_names(value) if value else []
    unknown = [n for n in names if n not in COMPARISONS]
    if unknown:
        raise InputError(f"--compare {','.join(names)}: unknown {', '.join(unknown)}; choose from {', '.join(COMPARISONS)}")
    return tuple(dict.fromkeys(names))


def _variant_names(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    from yarn_cli.core.rope.variants import parse_names

    return None if value is None else parse_names(value)


def verify(
    model: str | Path | None = None, request: VerifyRequest | None = None, *, progress: Callable[[int], None] | None = None, **options: Any
) -> VerifyReport:
    """prepare_verify(model, request, **options), then run it: the extended model and its baseline, length by length."""
    return prepare_verify(model, request, **options).run(progress)
