"""`yarn verify`: build the engine, run the protocol with a progress bar, render the table and verdict."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.padding import Padding
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from yarn_cli.cli.output import command_line, print_json
from yarn_cli.cli.render import esc, human_bytes
from yarn_cli.core.verify import plan as verify_plan
from yarn_cli.core.verify.options import VerifyRequest
from yarn_cli.errors import EngineCrashed


def run(console: Console, err_console: Console, as_json: bool, model: str | None, request: VerifyRequest, notify: Callable[[str], None]) -> int:
    """Load the engine under a spinner, run under a progress bar, render; returns the exit code."""
    from yarn_cli.usecases.verify import prepare_verify

    what = f"{esc(Path(str(model)).name) if model else 'the built-in default model'} ({esc(request.engine)} engine)"
    with err_console.status(f"loading {what}", spinner="dots") if not as_json else contextlib.nullcontext():
        prepared = prepare_verify(model, request, notify=notify)
    prepared.command = command_line()
    progress = Progress(
        TextColumn("verifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=err_console,
        transient=True,
        disable=as_json or not err_console.is_terminal,
    )
    # lm-eval prints some of its progress to stdout, where --json output goes alone
    with progress, contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        task = progress.add_task("", total=prepared.total_steps)
        report = prepared.run(
            lambda n: progress.advance(task, n),
            lambda text: progress.update(task, description=esc(text)),
            None if as_json else lambda estimate: progress.console.print(_estimate_line(estimate, bool(request.lm_eval))),
        )
    if as_json:
        print_json(report.to_json())
    else:
        render(console, report.to_json(), report.columns, prepared.path)
    if report.ok:
        return 0
    return EngineCrashed.exit_code if report.to_json().get("engine_crash") else 1


SHORT = {"extended": "ext", "baseline": "base"}


def _estimate_line(estimate: dict[str, Any], lm_eval: bool) -> str:
    """The tasks' expected time before they start, and what it was priced from."""
    from yarn_cli.core.verify.timing import spoken

    prefill, decode = estimate["prefill_tokens_per_second"], estimate["decode_tokens_per_second"]
    measured = f"prefill {prefill:,.0f} tok/s" if prefill else "prefill not timed"
    measured += f", decode {_rate(decode)} tok/s" if decode else ""
    extra = "; lm-eval comes after, not included" if lm_eval else ""
    return f"estimated time for the tasks: about {spoken(estimate['seconds'])} ({measured} at {estimate['measured_tokens']:,} tokens{extra})"


def _format(column: Any, variant: str, length: int) -> str:
    value = column.value(variant, length)
    if value is None:
        return "-"
    text = column.format(value)
    return f"[{'green' if column.good(value) else 'red'}]{text}[/]" if column.good else text


def _speed(report: dict[str, Any], kind: str, variant: str, length: int) -> str:
    value = report["speed"].get(variant, {}).get(str(length), {}).get(f"{kind}_tokens_per_second")
    if value is None:
        return "-"
    return _rate(value)


def _rate(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:,.0f}"  # a slow decode reads 1.4, not a rounded 1


def render(console: Console, report: dict[str, Any], columns: list, path: Path) -> None:
    console.print(
        f"[bold]{esc(path.name)}[/]: {esc(report['scaling'])}, trained {report['original_context']:,} -> "
        f"{report['target_context']:,}; {report['engine']} engine on {report['device']}"
    )
    parity = report.get("parity")
    if parity:
        console.print(f"[{'green' if parity['diagnosis'] == 'exact' else 'red'}]{esc(parity['line'])}[/]")
    if "lengths" not in report:  # --parity-only
        _render_footer(console, report)
        return
    names = [v["name"] for v in report["variants"]]
    if columns:
        _render_lengths(console, report, columns, names)
    if report.get("lm_eval"):
        _render_lm_eval(console, report["lm_eval"], names)
    _render_footer(console, report)


def _render_lengths(console: Console, report: dict[str, Any], columns: list, names: list[str]) -> None:
    """One row per length and variant, one column per task: it fits 80 columns with the default tasks, and a header
    too long for the terminal folds onto a second line instead of being cut."""
    # the title on a line of its own: as a table title it would wrap at the (narrow) table's width
    console.print(" vs ".join(esc(n) for n in names) + " (same weights; baseline: scaling removed)")
    table = Table(header_style="bold")
    table.add_column("length", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    for title in [column.title for column in columns] + ["prefill\ntok/s", "decode\ntok/s"]:
        table.add_column(title, justify="right", overflow="fold")
    for length in report["lengths"]:
        marker = " *" if length > report["original_context"] else ""
        for i, name in enumerate(names):
            table.add_row(
                f"{length:,}{marker}" if i == 0 else "",
                esc(SHORT.get(name, name)),
                *[_format(column, name, length) for column in columns],
                _speed(report, "prefill", name, length),
                _speed(report, "decode", name, length),
                end_section=i == len(names) - 1,
            )
    console.print(table)
    console.print("[dim]* beyond the trained length[/]")


def _render_lm_eval(console: Console, section: dict[str, Any], names: list[str]) -> None:
    """lm-eval's numbers as its own table prints them (a fraction stays a fraction), with the difference in points."""
    table = Table(header_style="bold", title=f"lm-eval {esc(section['version'])}: {esc(names[0])} vs {esc(names[1])}", title_justify="left")
    for title in ("task", "metric", *[esc(SHORT.get(n, n)) for n in names], "drop (points)", "± stderr"):
        table.add_column(title, justify="left" if title in ("task", "metric") else "right")
    limit = section.get("max_task_drop")
    for row in section["rows"]:
        values = [("-" if row["values"][n] is None else f"{row['values'][n]:.4f}") for n in names]
        drop = row["drop_points"]
        stderr = row["difference_stderr"]
        shown = "-" if drop is None else f"{drop:+.1f}"
        if drop is not None and limit is not None:
            shown = f"[{'red' if drop > limit else 'green'}]{shown}[/]"
        table.add_row(esc(row["task"]), esc(row["metric"]), *values, shown, "-" if stderr is None else f"{100 * stderr:.1f}")
    console.print(table)


def _render_footer(console: Console, report: dict[str, Any]) -> None:
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {esc(note)}")
    for item in report.get("skipped", []):
        console.print(
            f"[yellow]skipped[/] {item['length']:,}: needs ~{human_bytes(item['needs_bytes'])}, {human_bytes(item['available_bytes'])} available"
        )
    verdict = report["verdict"]
    word = verify_plan.verdict_word(verdict)
    colour = {"PASS": "green", "FAIL": "red"}.get(word, "yellow")
    console.print(f"[bold {colour}]{word}[/]")
    for reason in verdict.get("reasons") or [verdict["reason"]]:  # reports written before the list had one sentence
        console.print(Padding(esc(reason), (0, 0, 0, 2), expand=False))
