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

from yarn_cli.cli.render import esc, human_bytes, print_json
from yarn_cli.errors import AlreadyScaledError, InputError, UnsupportedError, about
from yarn_cli.io.fastcopy import default_workers


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
    copy: bool = False
    workers: int | None = None


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


def write_with_progress(err_console: Console, as_json: bool, total: int, write, report: dict[str, Any]) -> Any:
    """Run ``write(advance)`` under a byte progress bar; record its files, bytes and seconds in ``report``.

    ``write`` returns the list of written files first (a tuple's first item, or the list itself)."""
    started = time.perf_counter()
    with byte_progress(err_console, "writing", total, enabled=not as_json and err_console.is_terminal) as advance:
        result = write(advance)
    written = result[0] if isinstance(result, tuple) else result
    report["files"] = [vars(w) for w in written]
    report["bytes_written"] = sum(w.bytes for w in written)
    report["seconds"] = round(time.perf_counter() - started, 3)
    return result


def write_hooks(err_console: Console, report: dict[str, Any], opts: ExtendOptions) -> dict[str, Any]:
    """Keyword arguments every writer takes: --force, --copy, --workers, and where reclaim notices go
    (stderr, and ``report["reclaimed"]``)."""
    report["reclaimed"] = []
    report["workers"] = opts.workers or default_workers()

    def notify(message: str) -> None:
        report["reclaimed"].append(message)
        err_console.print(f"[yellow]note:[/] {esc(message)}", soft_wrap=True)

    return {"force": opts.force, "notify": notify, "hardlink": not opts.copy, "workers": report["workers"]}


def link_notes(report: dict[str, Any]) -> list[str]:
    """What a user must know about hard-linked files in OUT: nothing, or one note."""
    linked = sum(1 for item in report["files"] if item["action"] == "linked")
    if not linked:
        return []
    return [
        f"{linked} unchanged weight file(s) in OUT are hard links to the input (this filesystem has no reflinks): "
        "a tool that rewrites such a file in place would change the input too; --copy writes independent files"
    ]


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
        hooks = write_hooks(err_console, report, opts)
        write_with_progress(
            err_console, as_json, total, lambda advance: gguf_writer.extend_gguf(first, plan, out, advance, **hooks), report
        )
        notes.extend(link_notes(report))
    if as_json:
        print_json(report)
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


def resolve_hf_folder(source: str, revision: str | None) -> tuple[Path, str]:
    """(local folder, display name) for a folder, a file inside one, or a hub repo id."""
    from yarn_cli.io.checkpoint import REPO_ID

    path = Path(source).expanduser()
    if path.is_file() and (path.suffix == ".safetensors" or path.name == "config.json"):
        path = path.parent
    if path.is_dir():
        if not (path / "config.json").exists():
            raise InputError(f"{path}: no config.json; pass a Hugging Face model folder, a .gguf file or a hub repo id")
        return path, path.name
    if REPO_ID.match(source) and not path.exists():
        from yarn_cli.io import hub

        return Path(hub.download_snapshot(source, revision)), source.split("/")[-1]
    if path.exists():
        raise InputError(f"{path}: unsupported file type; pass a model folder, a .gguf file or a hub repo id")
    raise InputError(f"{source}: no such file or folder, and not a hub repo id of the form org/name")


def extend_hf(source: str, opts: ExtendOptions, console: Console, err_console: Console, as_json: bool) -> None:
    from yarn_cli.core import architectures
    from yarn_cli.core.bake_plan import plan_bake
    from yarn_cli.core.hf_config import text_config
    from yarn_cli.core.hf_plan import plan_config
    from yarn_cli.io import atomic, hf_writer
    from yarn_cli.io.checkpoint import check_original_context, read_json

    folder, name = resolve_hf_folder(source, opts.revision)
    check_original_context(opts.original_context)
    config = read_json(folder / "config.json")
    family = architectures.for_model_type(str(text_config(config).get("model_type") or config.get("model_type") or ""))
    if family is not None and family.hf_yarn_unsupported:
        raise UnsupportedError(f"{folder}: {family.family}: {family.hf_yarn_unsupported}")
    with about(folder / "config.json"):
        plan = plan_config(
            config, opts.scale, opts.to, opts.original_context, opts.beta_fast, opts.beta_slow, opts.replace, opts.bake_temperature
        )
    headers = hf_writer.read_shards(folder)
    ops = []
    if opts.bake_temperature:
        if not headers:
            raise InputError(f"{folder}: no .safetensors weights; baking reads safetensors only (pickled weights are never loaded)")
        already = {k: v for h in headers for k, v in h.metadata.items() if k.startswith(hf_writer.METADATA_PREFIX)}
        if already:
            raise AlreadyScaledError(f"{folder}: safetensors metadata records an earlier bake ({already}); extend the original checkpoint")
        tensors = {name_: (info.dtype, info.shape) for h in headers for name_, info in h.tensors.items()}
        ops = plan_bake(config, tensors, plan.bake_factor)
    out = opts.out or default_hf_output(source, folder, name, plan.scale)
    atomic.check_output(out, folder, opts.force)

    report: dict[str, Any] = {
        "source": str(source),
        "format": "hf",
        "output": str(out),
        "dry_run": opts.dry_run,
        **plan.to_json(),
        "tensors_changed": len(ops),
        "baked_tensors": [op.tensor for op in ops],
        "files": [],
    }
    if opts.dry_run:
        report["length_caps"] = [c.to_json() for c in hf_writer.planned_cap_changes(folder, plan.target_context)]
    else:
        hooks = write_hooks(err_console, report, opts)
        _, caps = write_with_progress(
            err_console, as_json, hf_writer.total_bytes(folder),
            lambda advance: hf_writer.write_extension(folder, plan, ops, out, advance, headers, **hooks), report,
        )
        report["length_caps"] = [c.to_json() for c in caps]
        report["notes"].extend(link_notes(report))
    if as_json:
        print_json(report)
        return
    render_hf(console, report, plan)


def default_hf_output(source: str, folder: Path, name: str, scale: float) -> Path:
    """A sibling of a local folder; for a hub repo, a folder in the current directory."""
    if Path(source).expanduser().exists():
        return folder.with_name(f"{folder.name}-yarn{scale:g}x")
    return Path.cwd() / f"{name}-yarn{scale:g}x"


def render_hf(console: Console, report: dict[str, Any], plan: Any) -> None:
    action = f"YaRN x{plan.scale:g}"
    if plan.replaced:
        action += f", replacing {esc(plan.replaced)}"
    console.print(
        f"[bold]{esc(report['source'])}[/]: trained length {plan.original_context:,} -> [bold]{plan.target_context:,}[/] ({action})"
    )
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
            f"baking m = {plan.bake_factor:.6f} into {report['tensors_changed']} q/k tensors (rotary rows only); "
            "attention_factor 1.0 in the config"
        )
    else:
        console.print(f"the runtime applies m = {plan.attention_factor:.4f} to cos/sin; no tensor bytes change")
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
    n = plan.target_context
    console.print(
        f"run it: transformers AutoModelForCausalLM.from_pretrained({esc(report['output'])!r}); "
        f"vLLM: vllm serve {esc(report['output'])} --max-model-len {n}; "
        f"SGLang: python -m sglang.launch_server --model-path {esc(report['output'])} --context-length {n}"
    )


def _json_value(value: Any) -> str:
    import json

    if value is None:
        return "[dim]-[/]"
    if isinstance(value, dict):  # one key per line keeps wide blocks readable
        return "\n".join(f"{esc(k)}: {esc(json.dumps(v))}" for k, v in value.items())
    return esc(json.dumps(value)) if isinstance(value, list) else _value(value)
