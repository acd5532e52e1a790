"""`yarn verify`: build the engine, run the protocol with a progress bar, render the table and verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from yarn_cli.cli.render import esc, human_bytes, print_json
from yarn_cli.errors import InputError


def make_engine(name: str, model: Path, device: str, original_context: int | None, max_length: int):
    from yarn_cli.engines.base import ENGINES

    if name == "native":
        from yarn_cli.engines.native_engine import NativeEngine

        return NativeEngine(model, device, original_context)
    if name == "transformers":
        from yarn_cli.engines.hf_engine import TransformersEngine

        return TransformersEngine(model, device, original_context)
    if name == "llama.cpp":
        from yarn_cli.engines.llamacpp_engine import LlamaCppEngine

        return LlamaCppEngine(model, device, original_context, max_length=max_length)
    raise InputError(f"--engine {name!r} is not one of {', '.join(ENGINES)}")


def verify(model: str, engine_name: str, device: str, lengths: str | None, max_length: str | None, depths: str,
           trials: int, text: Path | None, ppl_windows: int, min_accuracy: float, ppl_margin: float,
           original_context: int | None, console: Console, err_console: Console, as_json: bool) -> int:
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise InputError("verify needs torch: pip install torch") from exc
    from yarn_cli.core import verify_plan
    from yarn_cli.core.lengths import parse_length
    from yarn_cli.engines import harness
    from yarn_cli.engines.base import pick_device
    from yarn_cli.io.checkpoint import check_original_context

    path = Path(model).expanduser()
    if not path.exists():
        raise InputError(f"{model}: no such file or folder; verify runs a local HF folder or .gguf")
    if not 0 <= min_accuracy <= 1:
        raise InputError("--min-accuracy is a fraction between 0 and 1")
    options = harness.VerifyOptions(
        lengths=verify_plan.parse_lengths(lengths) if lengths else None,
        max_length=parse_length(max_length) if max_length else None,
        depths=verify_plan.parse_depths(depths), trials=trials, text=text, ppl_windows=ppl_windows,
        min_accuracy=min_accuracy, ppl_margin=ppl_margin,
    )
    check_original_context(original_context)
    device = pick_device(device)
    with err_console.status(f"loading {esc(path.name)} on {device} ({engine_name} engine)", spinner="dots") if not as_json else _null():
        engine = make_engine(engine_name, path, device, original_context, max(options.lengths or [0]) + 16)
    prepared = harness.prepare(engine, options)
    progress = Progress(TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err_console, transient=True, disable=as_json or not err_console.is_terminal)
    with progress:
        task = progress.add_task("verify", total=prepared.total_steps(options))
        report = harness.run(engine, options, lambda n: progress.advance(task, n), prepared)
    if as_json:
        print_json(report)
    else:
        render(console, report, path, min_accuracy)
    return 0 if report["verdict"]["ok"] else 1


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _cell(report: dict[str, Any], section: str, variant: str, length: str, min_accuracy: float) -> str:
    value = report[section][variant].get(length)
    if value is None:
        return "-"
    if section == "accuracy":
        return f"[{'green' if value >= min_accuracy else 'red'}]{value:.0%}[/]"
    return f"{value:.2f}" if section == "perplexity" else f"{value:,.0f}"


def render(console: Console, report: dict[str, Any], path: Path, min_accuracy: float) -> None:
    console.print(
        f"[bold]{esc(path.name)}[/]: {esc(report['scaling'])}, trained {report['original_context']:,} -> "
        f"{report['target_context']:,}; {report['engine']} engine on {report['device']}"
    )
    table = Table(header_style="bold", title="extended vs baseline (same weights, scaling removed)", title_justify="left")
    for column in ("length", "passkey ext", "passkey base", "ppl ext", "ppl base", "tok/s ext", "tok/s base"):
        table.add_column(column, justify="right")
    for length in report["lengths"]:
        cells = [_cell(report, section, variant, str(length), min_accuracy)
                 for section in ("accuracy", "perplexity", "tokens_per_second") for variant in ("extended", "baseline")]
        marker = " *" if length > report["original_context"] else ""
        table.add_row(f"{length:,}{marker}", *cells)
    console.print(table)
    console.print("[dim]* beyond the trained length[/]")
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {esc(note)}")
    for item in report["skipped"]:
        console.print(f"[yellow]skipped[/] {item['length']:,}: needs ~{human_bytes(item['needs_bytes'])}, {human_bytes(item['available_bytes'])} available")
    verdict = report["verdict"]
    colour = "green" if verdict["ok"] else "red"
    console.print(f"[bold {colour}]{'PASS' if verdict['ok'] else 'FAIL'}[/]: {esc(verdict['reason'])}")
