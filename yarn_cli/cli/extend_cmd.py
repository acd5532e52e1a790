"""`yarn extend`: plan, show the diff, write atomically with a progress bar, summarise."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from yarn_cli.cli.output import print_json
from yarn_cli.cli.render import esc, human_bytes


@contextlib.contextmanager
def byte_progress(err_console: Console, description: str, total: int, enabled: bool) -> Iterator[Any]:
    """A rich bar for bytes written (on stderr, so --json stdout stays clean); yields the advance callback."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not enabled,
    )
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def run(plan, console: Console, err_console: Console, *, dry_run: bool, copy: bool, workers: int | None, as_json: bool) -> None:
    """Show the plan; unless --dry-run, write it under a progress bar; then the summary (or --json)."""
    from yarn_cli.usecases.extend import apply_extend

    if dry_run:
        report = plan.to_json()
    else:

        def notify(message: str) -> None:
            err_console.print(f"[yellow]note:[/] {esc(message)}", soft_wrap=True)

        with byte_progress(err_console, "writing", plan.total_bytes, enabled=not as_json and err_console.is_terminal) as advance:
            report = apply_extend(plan, progress=advance, copy=copy, workers=workers, notify=notify).to_json()
    if as_json:
        print_json(report)
    elif plan.format == "gguf":
        render_gguf(console, report, plan.rope)
    else:
        render_hf(console, report, plan.rope)


def _value(value: Any) -> str:
    if value is None:
        return "[dim]-[/]"
    if isinstance(value, float):
        return f"{value:g}"
    return esc(value)


def render_gguf(console: Console, report: dict[str, Any], plan: Any) -> None:
    console.print(
        f"[bold]{esc(report['source'])}[/]: {esc(plan.architecture)}, trained length {plan.original_context:,} -> "
        f"[bold]{plan.target_context:,}[/] (YaRN x{plan.scale:g}{_stacked(plan)}; llama.cpp applies m = {plan.attention_factor:.4f} itself)"
    )
    table = Table(title="GGUF metadata changes", title_justify="left", header_style="bold")
    for column in ("key", "type", "old", "new"):
        table.add_column(column)
    for change in plan.changes:
        new = "[red]removed[/]" if change.action == "remove" else _value(change.new)
        table.add_row(esc(change.key), change.type, _value(change.old), new)
    console.print(table)
    for change in plan.tensor_changes:
        console.print(f"tensor {esc(change.name)}: rewritten in place to {len(change.values)} x 1.0 ({esc(change.why)})")
    rest = "every other tensor's data" if plan.tensor_changes else "the tensor data"
    console.print(f"[dim]every other KV record, the tensor infos and {rest} are copied unchanged[/]")
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {esc(note)}")
    if report["dry_run"]:
        console.print(f"dry run: would write {esc(report['output'])}; nothing written")
        return
    for item in report["files"]:
        console.print(f"{item['action']} {esc(item['path'])} ({human_bytes(item['bytes'])})")
    rate = report["bytes_written"] / max(report["seconds"], 1e-9)
    console.print(f"done in {report['seconds']:.2f} s ({human_bytes(rate)}/s)")
    render_run(console, report["run"])


def _stacked(plan: Any) -> str:
    return f" stacked on rope_freqs' {esc(plan.stacked_on)}" if plan.stacked_on else ""


def render_hf(console: Console, report: dict[str, Any], plan: Any) -> None:
    action = f"YaRN x{plan.scale:g}"
    if plan.replaced:
        action += f", replacing {esc(plan.replaced)}"
    console.print(f"[bold]{esc(report['source'])}[/]: trained length {plan.original_context:,} -> [bold]{plan.target_context:,}[/] ({action})")
    table = Table(title="config changes", title_justify="left", header_style="bold")
    for column in ("key", "old", "new"):
        table.add_column(column, overflow="fold")
    for change in plan.changes:
        table.add_row(esc(change.path), _json_value(change.old), _json_value(change.new))
    for cap in report["length_caps"]:
        table.add_row(esc(cap["path"]), _json_value(cap["old"]), _json_value(cap["new"]))
    console.print(table)
    if plan.bake_factor is not None:
        console.print(
            f"baking m = {plan.bake_factor:.6f} into {report['tensors_changed']} q/k tensors "
            f"({'MLA: every q row; the shared rotary key only for a cos/sin ratio' if plan.softmax_mscale is not None else 'rotary rows only'}); "
            "attention_factor 1.0 in the config"
        )
    else:
        where = "to q·k" if plan.softmax_mscale is not None else "to cos/sin"
        console.print(f"the runtime applies m = {plan.attention_factor:.4f} {where}; no tensor bytes change")
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {esc(note)}")
    if report["dry_run"]:
        console.print(f"dry run: would write {esc(report['output'])}; nothing written")
        return
    counts: dict[str, int] = {}
    for item in report["files"]:
        counts[item["action"]] = counts.get(item["action"], 0) + 1
    summary = ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))
    console.print(f"wrote {esc(report['output'])}: {summary} ({human_bytes(report['bytes_written'])} in {report['seconds']:.2f} s)")
    render_run(console, report["run"])


def render_run(console: Console, hints: list[dict[str, Any]]) -> None:
    """How to serve it at the new length (the same lines as --json's "run")."""
    console.print("run it at the new length:")
    for hint in hints:
        console.print(f"  {esc(hint['engine'])}: [bold]{esc(hint['command'])}[/] [dim]({esc(hint['note'])})[/]", soft_wrap=True)


def _json_value(value: Any) -> str:
    import json

    if value is None:
        return "[dim]-[/]"
    if isinstance(value, dict):  # one key per line keeps wide blocks readable
        return "\n".join(f"{esc(k)}: {esc(json.dumps(v))}" for k, v in value.items())
    return esc(json.dumps(value)) if isinstance(value, list) else _value(value)
