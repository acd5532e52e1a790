"""`yarn extend`: plan, show the diff, write atomically with a progress bar, summarise."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from yarn_cli.cli.render import esc, human_bytes
from yarn_cli.errors import InputError


@dataclass(frozen=True)
class ExtendOptions:
    scale: float | None
    to: str | None
    out: Path | None
    original_context: int | None
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    bake_temperature: bool = False
    replace: bool = False
    dry_run: bool = False
    force: bool = False
    revision: str | None = None


@contextlib.contextmanager
def byte_progress(err_console: Console, description: str, total: int, enabled: bool) -> Iterator[Any]:
    """A rich bar for bytes written (on stderr, so --json stdout stays clean); yields the advance callback."""
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
        console=err_console, transient=True, disable=not enabled,
    )
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def _print_json(data: Any) -> None:
    from yarn_cli.cli.app import print_json

    print_json(data)


def _value(value: Any) -> str:
    if value is None:
        return "[dim]-[/]"
    if isinstance(value, float):
        return f"{value:g}"
    return esc(value)


def extend_gguf(source: str, opts: ExtendOptions, console: Console, err_console: Console, as_json: bool) -> None:
    from yarn_cli.io import atomic, gguf_writer
    from yarn_cli.io.checkpoint import check_original_context
    from yarn_cli.io.gguf_reader import split_shards

    if opts.bake_temperature:
        raise InputError(
            "--bake-temperature is for Hugging Face checkpoints: llama.cpp applies the YaRN attention factor itself "
            "for GGUF, so baking it in would apply it twice"
        )
    path = Path(source)
    check_original_context(opts.original_context)
    first, plan = gguf_writer.plan_file(path, opts.scale, opts.to, opts.original_context, opts.replace)
    notes = list(plan.notes)
    if (opts.beta_fast, opts.beta_slow) != (32.0, 1.0):
        notes.append("--beta-fast/--beta-slow are not written to GGUF: llama.cpp uses 32 and 1 for most architectures")
    out = opts.out or gguf_writer.default_output(path, plan.scale)
    if out.is_dir():
        out = out / gguf_writer.default_output(path, plan.scale).name
    shards = split_shards(path)
    finals = gguf_writer.output_shard_paths(out, len(shards))
    for final in finals:
        for shard in shards:
            atomic.check_output(final, shard, opts.force)

    report: dict[str, Any] = {
        "source": str(path),
        "format": "gguf",
        "output": str(finals[0]),
        "dry_run": opts.dry_run,
        **plan.to_json(),
        "notes": notes,
        "files": [],
    }
    if not opts.dry_run:
        total = sum(s.stat().st_size for s in shards)
        started = time.perf_counter()
        with byte_progress(err_console, "writing", total, enabled=not as_json and err_console.is_terminal) as advance:
            written = gguf_writer.extend_gguf(path, plan, out, advance)
        seconds = time.perf_counter() - started
        report["files"] = [vars(w) for w in written]
        report["bytes_written"] = sum(w.bytes for w in written)
        report["seconds"] = round(seconds, 3)
    if as_json:
        _print_json(report)
        return
    render_gguf(console, report, plan, notes)


def render_gguf(console: Console, report: dict[str, Any], plan: Any, notes: list[str]) -> None:
    console.print(
        f"[bold]{esc(report['source'])}[/]: {esc(plan.architecture)}, trained length {plan.original_context:,} -> "
        f"[bold]{plan.target_context:,}[/] (YaRN x{plan.scale:g}; llama.cpp applies m = {plan.attention_factor:.4f} itself)"
    )
    table = Table(title="GGUF metadata changes", title_justify="left", header_style="bold")
    for column in ("key", "type", "old", "new"):
        table.add_column(column)
    for change in plan.changes:
        new = "[red]removed[/]" if change.action == "remove" else _value(change.new)
        table.add_row(esc(change.key), change.type, _value(change.old), new)
    console.print(table)
    console.print("[dim]every other KV record, the tensor infos and the tensor data are copied unchanged[/]")
    for note in notes:
        console.print(f"[yellow]note:[/] {esc(note)}")
    if report["dry_run"]:
        console.print(f"dry run: would write {esc(report['output'])}; nothing written")
        return
    for item in report["files"]:
        console.print(f"{item['action']} {esc(item['path'])} ({human_bytes(item['bytes'])})")
    rate = report["bytes_written"] / max(report["seconds"], 1e-9)
    console.print(f"done in {report['seconds']:.2f} s ({human_bytes(rate)}/s)")
    name = Path(report["output"]).name
    console.print(
        f"run it: [bold]llama-cli -m {esc(name)} -c {plan.target_context}[/] (-c 0 takes the new context_length), "
        f"or Ollama: FROM ./{esc(name)} + PARAMETER num_ctx {plan.target_context}"
    )


def extend_hf(source: str, opts: ExtendOptions, console: Console, err_console: Console, as_json: bool) -> None:
    raise InputError(f"{source}: extending Hugging Face checkpoints is not available yet; pass a .gguf file")
