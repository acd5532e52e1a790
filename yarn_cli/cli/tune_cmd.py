"""`yarn tune`: measure the candidates under a progress bar, render the table, the decision and what was written."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from yarn_cli.cli.output import print_json
from yarn_cli.cli.render import esc
from yarn_cli.core.tune.options import TuneRequest


def run(
    console: Console, err_console: Console, as_json: bool, model: str | None, out: Any, request: TuneRequest, notify: Callable[[str], None]
) -> int:
    from yarn_cli.usecases.tune import tune

    progress = Progress(
        TextColumn("tuning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=as_json or not err_console.is_terminal,
    )
    with progress:
        task = progress.add_task("", total=None)

        def advance(done: int, expected: int, label: str) -> None:
            progress.update(task, completed=done, total=max(expected, done + 1), description=esc(label))

        result = tune(model, out, request, progress=advance, notify=notify)
    report = result.to_json()
    if as_json:
        print_json(report)
    else:
        render(console, report)
    return 0 if result.ok else 1


def _ppl(value: float | None, reference: float | None) -> str:
    if value is None:
        return "-"
    if not reference:
        return f"{value:.3f}"
    change = value / reference - 1
    return f"{value:.3f} ({change:+.1%})"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def render(console: Console, report: dict[str, Any]) -> None:
    lengths = report["lengths"]
    console.print(
        f"[bold]{esc(report['model'])}[/]: trained {lengths['original']:,}; tuning for {lengths['long']:,} on the "
        f"{report['engine']} engine, {report['docs']} document(s); objective {report['objective']['name']}"
    )
    console.print(_table(report))
    _render_outcome(console, report)


def _table(report: dict[str, Any]) -> Table:
    """One row per candidate under the unextended reference, the chosen one marked."""
    lengths, reference = report["lengths"], report["reference"]
    table = Table(
        header_style="bold",
        title_justify="left",
        title=f"short: an input of {lengths['short']:,} tokens; long: tokens {lengths['original']:,}.."
        + ("s·L for each s" if report["mode"] == "fit" else f"{lengths['long']:,}"),
    )
    betas = len({(c["beta_fast"], c["beta_slow"]) for c in report["candidates"]}) > 1
    for title in (
        "s",
        "m",
        *(("beta fast/slow",) if betas else ()),
        "short ppl (vs unextended)",
        "long ppl",
        "retrieval short",
        "retrieval long",
        "",
    ):
        table.add_column(title, justify="right")
    table.add_row(
        "-",
        "-",
        *(("-",) if betas else ()),
        _ppl(reference["short_ppl"], None),
        _ppl(reference["long_ppl"], None),
        _share(reference["short_retrieval"]),
        "-",
        "unextended",
    )
    chosen = report["chosen"]
    for c in sorted(report["candidates"], key=lambda c: (c["scale"], c["m"], c["beta_fast"], c["beta_slow"])):
        mark = "[bold green]chosen[/]" if chosen and c["name"] == chosen["name"] else ""
        paper = abs(c["m"] - report["paper_m"][str(c["scale"])]) < 1e-6
        table.add_row(
            f"{c['scale']:g}",
            f"{c['m']:.4f}" + (" (paper)" if paper else ""),
            *((f"{c['beta_fast']:g}/{c['beta_slow']:g}",) if betas else ()),
            _ppl(c["short_ppl"], reference["short_ppl"]),
            _ppl(c["long_ppl"], None),
            _share(c["short_retrieval"]),
            _share(c["long_retrieval"]),
            mark,
        )
    return table


def _render_outcome(console: Console, report: dict[str, Any]) -> None:
    chosen = report["chosen"]
    fit = report["fit"]
    if fit:
        a_err = f" ± {fit['a_stderr']:.3f}" if fit["a_stderr"] is not None else ""
        b_err = f" ± {fit['b_stderr']:.3f}" if fit["b_stderr"] is not None else ""
        console.print(f"fit: m = {fit['a']:.4f}{a_err} · ln s + {fit['b']:.4f}{b_err}   (paper: 0.1 · ln s + 1)")
        for s, best in report["best_by_scale"].items():
            console.print(f"  s {float(s):g}: best m {best['m']:.4f} (paper {report['paper_m'][s]:.4f})")
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {esc(note)}", soft_wrap=True)
    if report["plot"]:
        console.print(f"plot: {esc(report['plot'])}")
    if report["reason"]:
        colour = "green" if chosen else "red"
        console.print(f"[bold {colour}]{'CHOSEN' if chosen else 'NONE'}[/]: {esc(report['reason'])}", soft_wrap=True)
    if report["output"]:
        console.print(
            f"wrote {esc(report['output']['output'])} (YaRN x{chosen['scale']:g}, m {chosen['m']:.4f}); "
            f"`yarn verify {esc(report['output']['output'])} --parity-only` checks your engine applies it"
        )
