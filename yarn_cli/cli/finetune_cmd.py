"""`yarn finetune`: plan (refusing early), train under a progress bar with loss and tokens/s, summarise."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from yarn_cli.cli.output import print_json
from yarn_cli.cli.render import esc, human_bytes
from yarn_cli.errors import YarnError


def is_main_process() -> bool:
    """Under `accelerate launch`, only rank 0 talks."""
    return int(os.environ.get("RANK", "0")) == 0


def run(plan: Any, console: Console, err_console: Console, as_json: bool) -> None:
    from yarn_cli.usecases.finetune import run_finetune

    main = is_main_process()
    if main and not as_json:
        r = plan.recipe
        console.print(
            f"[bold]{esc(plan.source)}[/]: YaRN x{plan.scale:g}, trained length {plan.original_context:,} -> "
            f"[bold]{plan.target_context:,}[/]; {r.steps} steps of {r.seq_len:,}-token windows, lr {r.lr:g} "
            f"(warm-up {r.warmup}), {'LoRA rank ' + str(r.lora_rank) if r.lora_rank else 'full fine-tune'}, "
            f"{plan.precision.name}, about {human_bytes(plan.estimated_bytes)} per device"
        )
    progress = Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[rate]} tok/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=as_json or not main or not err_console.is_terminal,
    )
    with progress:
        task = progress.add_task("train", total=plan.recipe.steps, loss="-", rate="-")

        def advance(step: int, loss: float | None, rate: float) -> None:
            progress.update(task, completed=step, loss=f"{loss:.3f}" if loss is not None else "-", rate=f"{rate:,.0f}")

        try:
            result = run_finetune(plan, progress=advance)
        except BaseException as exc:  # Ctrl-C, SIGTERM or a crash: the checkpoints stay for --resume
            from yarn_cli.usecases.finetune import complete_checkpoints

            if main and not isinstance(exc, YarnError) and complete_checkpoints(plan.work_dir):
                err_console.print(f"[yellow]note:[/] checkpoints in {esc(plan.work_dir)} are kept: add --resume to continue", soft_wrap=True)
            raise
    if not main:
        return
    if as_json:
        print_json(result.to_json())
        return
    losses = [item["loss"] for item in result.loss]
    trend = f"loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "no loss logged"
    console.print(f"wrote {esc(plan.output)}: {result.steps} steps, {result.tokens:,} tokens, {trend}, {result.seconds:.1f} s")
    console.print(f"next: [bold]yarn verify {esc(plan.output)} --engine transformers[/]")
