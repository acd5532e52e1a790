"""The `yarn` command line: parse, call core, render. Errors become one line and an exit code here only."""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import typer

from yarn_cli import __version__
from yarn_cli.core.extend.options import EXTEND, ExtendRequest
from yarn_cli.core.finetune.options import FINETUNE, FinetuneRequest
from yarn_cli.core.inspect.options import INSPECT, InspectRequest
from yarn_cli.core.options import ENGINE, EngineOptions
from yarn_cli.core.tune.options import TUNE, TuneRequest
from yarn_cli.core.verify.options import VERIFY, VerifyRequest
from yarn_cli.errors import Interrupted, YarnError
from yarn_cli.io import interrupts

app = typer.Typer(
    name="yarn",
    help="YaRN context extension for RoPE language models: inspect, extend, verify, tune, finetune, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class _Consoles:
    """rich consoles, built on first use: a --json run never imports rich's console machinery."""

    @functools.cached_property
    def out(self):
        from rich.console import Console

        return Console()

    @functools.cached_property
    def err(self):
        from rich.console import Console

        return Console(stderr=True)


RECIPE = FINETUNE.recipe  # the paper's fine-tune, the defaults of finetune's flags
consoles = _Consoles()

MODEL_HELP = "HF model folder, hub repo id (org/name), .safetensors or .gguf file; default: the built-in SmolLM2-135M GGUF."


def _version(value: bool) -> None:
    if value:
        print(f"yarn_cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """YaRN context extension for RoPE language models."""


def _note(message: str) -> None:
    consoles.err.print(f"[dim]{render_escape(message)}[/]", soft_wrap=True)


@app.command()
def inspect(
    model: str | None = typer.Argument(None, help=MODEL_HELP, show_default=False),
    scale: float | None = typer.Option(None, "--scale", "-s", help="Show the per-pair table for this extension factor."),
    original_context: int | None = typer.Option(None, "--original-context", help="Override the trained length L."),
    method: str = typer.Option(INSPECT.method, "--method", help="yarn, linear, ntk, dynamic, by-parts, or all to compare."),
    beta_fast: float = typer.Option(INSPECT.beta_fast, "--beta-fast", help="YaRN: pairs with more rotations keep their frequency."),
    beta_slow: float = typer.Option(INSPECT.beta_slow, "--beta-slow", help="YaRN: pairs with fewer rotations are fully interpolated."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG of wavelength per pair by method (needs matplotlib)."),
    revision: str | None = typer.Option(None, "--revision", help="Hub revision (branch, tag or commit)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Show a checkpoint's RoPE state, reading headers only (no weights, no torch)."""
    from yarn_cli.cli.output import print_json
    from yarn_cli.usecases.inspect import inspect as run_inspect

    request = InspectRequest(scale=scale, original_context=original_context, method=method, beta_fast=beta_fast,
                             beta_slow=beta_slow, revision=revision, plot=plot)
    report = run_inspect(model, request, notify=_note)
    if as_json:
        print_json(report.to_json())
    else:
        from yarn_cli.cli import render

        render.inspect_report(consoles.out, report.summary, report.to_json(), scale)


@app.command()
def extend(
    model: str | None = typer.Argument(None, help=MODEL_HELP, show_default=False),
    scale: float | None = typer.Option(None, "--scale", "-s", help="Extension factor s: the new length is s x L."),
    to: str | None = typer.Option(None, "--to", help="Target length instead of --scale, e.g. 32768 or 128k."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output path (default: a sibling named after the model and scale; the current folder for the built-in model)."),
    original_context: int | None = typer.Option(None, "--original-context", help="Override the trained length L."),
    beta_fast: float = typer.Option(EXTEND.beta_fast, "--beta-fast", help="YaRN beta_fast (HF configs only; llama.cpp uses 32)."),
    beta_slow: float = typer.Option(EXTEND.beta_slow, "--beta-slow", help="YaRN beta_slow (HF configs only; llama.cpp uses 1)."),
    bake_temperature: bool = typer.Option(EXTEND.bake_temperature, "--bake-temperature", help="HF only: multiply q/k by m in the weights and write attention_factor 1.0."),
    attention_factor: float | None = typer.Option(None, "--attention-factor", help="The m to apply instead of the paper's 0.1 ln s + 1 (what `yarn tune` finds); written in each format's own form."),
    replace: bool = typer.Option(EXTEND.replace, "--replace", help="Re-extend a checkpoint that already carries a scaling, from its original length."),
    stack: bool = typer.Option(EXTEND.stack, "--stack", help="GGUF with frequency factors (Llama 3.x's rope_freqs): keep them and add YaRN on top from the file's context, as llama.cpp computes the two."),
    yarn_layers: str | None = typer.Option(EXTEND.yarn_layers, "--yarn-layers", help="Models with sliding-window and full-attention layers (Gemma 3, OLMo 3): full (their design, the default) or all, YaRN on the sliding layers too (transformers 5.x and vLLM read it; llama.cpp does not)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the planned changes; write nothing."),
    force: bool = typer.Option(EXTEND.force, "--force", help="Replace an existing OUT (never the input)."),
    copy: bool = typer.Option(
        False, "--copy",
        help="Never hard-link unchanged files into OUT: reflink where the filesystem can, else copy (uses disk).",
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, max=64, help="Files and byte ranges written in parallel (default: up to 4, one per core)."
    ),
    revision: str | None = typer.Option(None, "--revision", help="Hub revision (branch, tag or commit)."),
    modelfile: bool = typer.Option(EXTEND.modelfile, "--modelfile", help="GGUF: also write OUT.Modelfile for Ollama (FROM + PARAMETER num_ctx s x L)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary instead of tables."),
) -> None:
    """Write an extended checkpoint: config (HF) or metadata (GGUF) that runtimes honour with no flags."""
    from yarn_cli.cli import extend_cmd
    from yarn_cli.usecases.extend import plan_extend

    request = ExtendRequest(scale=scale, to=to, original_context=original_context, beta_fast=beta_fast, beta_slow=beta_slow,
                            bake_temperature=bake_temperature, replace=replace, force=force, revision=revision,
                            modelfile=modelfile, attention_factor=attention_factor, stack=stack, yarn_layers=yarn_layers)
    plan = plan_extend(model, out, request, notify=_note)
    extend_cmd.run(plan, consoles.out, consoles.err, dry_run=dry_run, copy=copy, workers=workers, as_json=as_json)


# vLLM's settings, the same flags on verify and tune
_TENSOR_PARALLEL = typer.Option(ENGINE.tensor_parallel_size, "--tensor-parallel-size", "-tp", min=1, help="vllm: GPUs each layer is split across.")
_PIPELINE_PARALLEL = typer.Option(ENGINE.pipeline_parallel_size, "--pipeline-parallel-size", "-pp", min=1, help="vllm: stages the layers are split into (across nodes with Ray).")
_DTYPE = typer.Option(ENGINE.dtype, "--dtype", help="vllm: weight and activation dtype (auto, bfloat16, float16, float32); auto is float32 on a CPU.")
_GPU_MEMORY = typer.Option(ENGINE.gpu_memory_utilization, "--gpu-memory-utilization", help="vllm: fraction of each GPU's memory it may take.")
_EAGER = typer.Option(ENGINE.enforce_eager, "--enforce-eager", help="vllm: no CUDA graphs (faster start-up, slower decoding).")


@app.command()
def verify(
    model: str | None = typer.Argument(None, help="Extended checkpoint: HF folder or .gguf (default: the built-in SmolLM2 GGUF).", show_default=False),
    engine: str = typer.Option(VERIFY.engine, "--engine", help="native, transformers, llama.cpp or vllm."),
    device: str = typer.Option(VERIFY.device, "--device", help="auto, cuda or cpu."),
    lengths: str | None = typer.Option(None, "--lengths", help="Comma-separated lengths, e.g. 4k,8k,16k (default: L/2, L, between, s·L)."),
    max_length: str | None = typer.Option(None, "--max-length", help="Cap the default ladder, e.g. 32k."),
    depths: str = typer.Option(VERIFY.depths, "--depths", help="Needle depths as fractions."),
    samples: int = typer.Option(VERIFY.samples, "--samples", "--trials", min=1, help="Prompts per cell (length, and depth for single-needle tasks), seeded by --seed."),
    seed: int = typer.Option(VERIFY.seed, "--seed", help="Seed of every generated prompt (passkeys, RULER's draws)."),
    threshold: float = typer.Option(VERIFY.threshold, "--threshold", help="RULER score (points) a length must reach to count toward the effective length."),
    text: Path | None = typer.Option(None, "--text", help="Text for perplexity and RULER's essay haystacks (default: Python's pydoc_data.topics)."),
    ppl_windows: int = typer.Option(VERIFY.ppl_windows, "--ppl-windows", min=0, help="Windows of the text perplexity pools, evenly spaced; 2 or more also give the curves a spread."),
    min_accuracy: float = typer.Option(VERIFY.min_accuracy, "--min-accuracy", help="Passkey accuracy the extended model must reach at every length."),
    ppl_margin: float = typer.Option(VERIFY.ppl_margin, "--ppl-margin", help="Allowed relative perplexity rise over the baseline at the original length."),
    original_context: int | None = typer.Option(None, "--original-context", help="Override the trained length L."),
    parity: bool = typer.Option(VERIFY.parity, "--parity/--no-parity", help="First check that the engine computes the declared RoPE exactly, and name the fault if not."),
    parity_only: bool = typer.Option(VERIFY.parity_only, "--parity-only", help="Run only the parity check: one forward pass per fault hypothesis (about a minute for a 135M model on a CPU)."),
    parity_length: str | None = typer.Option(None, "--parity-length", help="Tokens in the parity sequence (default: 1.5 x L, at most s·L; at most 1k on a CPU)."),
    tasks: str | None = typer.Option(None, "--tasks", help="Comma-separated tasks: passkey, perplexity, kld (KL divergence from the unextended model, lengths up to L; native engine), RULER's niah_single_1..3, niah_multikey_1..3, niah_multivalue, niah_multiquery, vt, cwe, fwe, ruler (all of them), or none (default: passkey,perplexity,niah_single_1)."),
    variants: str | None = typer.Option(None, "--variants", help="RoPE variants to compare, the first judged against the second: extended, baseline, paper (m = 0.1 ln s + 1), m=X (default: extended,baseline)."),
    compare: str | None = typer.Option(None, "--compare", help="Add the paper's alternatives at the checkpoint's factor on the same weights: linear (Position Interpolation), ntk (NTK-aware), none."),
    lm_eval: str | None = typer.Option(None, "--lm-eval", help="lm-evaluation-harness tasks or groups to run on every variant, e.g. arc_easy,hellaswag (needs yarn-cli[eval])."),
    lm_eval_args: str | None = typer.Option(None, "--lm-eval-args", help="lm-eval settings as key=value,..., e.g. num_fewshot=5,limit=100,include_path=DIR."),
    max_task_drop: float | None = typer.Option(None, "--max-task-drop", help="Fail when an lm-eval task's score is more than this many points below the second variant's."),
    tensor_parallel_size: int = _TENSOR_PARALLEL,
    pipeline_parallel_size: int = _PIPELINE_PARALLEL,
    dtype: str = _DTYPE,
    gpu_memory_utilization: float = _GPU_MEMORY,
    enforce_eager: bool = _EAGER,
    endpoint: str | None = typer.Option(None, "--endpoint", help="Run the extended model through this OpenAI-compatible server (its /v1 base URL, e.g. http://127.0.0.1:8000/v1); the baseline runs in-process on --engine."),
    served_model: str | None = typer.Option(None, "--served-model", help="With --endpoint: the model name, where the server serves several."),
    api_key_env: str | None = typer.Option(None, "--api-key-env", help="With --endpoint: the environment variable that holds the server's API key (never printed or stored)."),
    concurrency: int = typer.Option(VERIFY.concurrency, "--concurrency", min=1, help="With --endpoint: requests in flight at once."),
    report: Path | None = typer.Option(None, "--report", help="Write DIR/report.html (self-contained) with heatmaps, the difference heatmap and perplexity curves as PNGs."),
    card: bool = typer.Option(VERIFY.card, "--card", help="Write or update the checkpoint's model card (README.md) with the scaling, the results and the heatmap."),
    base_model: str | None = typer.Option(None, "--base-model", help="With --card: the hub id of the model this one extends (the card's base_model)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Test an extended checkpoint at its new length: a parity check of the engine's RoPE, then passkey retrieval,
    perplexity and RULER's synthetic tasks, extended vs baseline, and on request lm-eval's benchmarks for
    short-context retention."""
    from yarn_cli.cli import verify_cmd

    request = VerifyRequest(
        engine=engine, device=device, lengths=lengths, max_length=max_length, depths=depths, samples=samples, seed=seed,
        threshold=threshold, text=text, ppl_windows=ppl_windows, min_accuracy=min_accuracy, ppl_margin=ppl_margin,
        original_context=original_context, parity=parity, parity_only=parity_only, parity_length=parity_length, tasks=tasks,
        variants=variants, compare=compare, lm_eval=lm_eval, lm_eval_args=lm_eval_args, max_task_drop=max_task_drop,
        endpoint=endpoint, served_model=served_model, api_key_env=api_key_env, concurrency=concurrency,
        engine_options=EngineOptions(tensor_parallel_size=tensor_parallel_size, pipeline_parallel_size=pipeline_parallel_size,
                                     dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager),
        report=report, card=card, base_model=base_model,
    )
    code = verify_cmd.run(consoles.out, consoles.err, as_json, model, request, _note)
    if code:
        raise typer.Exit(code)


@app.command()
def tune(
    model: str | None = typer.Argument(None, help="Unextended checkpoint: HF folder or .gguf (default: the built-in SmolLM2 GGUF).", show_default=False),
    scale: float | None = typer.Option(None, "--scale", "-s", help="Extension factor s; m is searched."),
    to: str | None = typer.Option(None, "--to", help="Target length instead of --scale (s = N/L and larger are tried), e.g. 16k."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the chosen extension here (as `yarn extend` would)."),
    text: Path | None = typer.Option(None, "--text", help="Tuning text (default: Python's pydoc_data.topics)."),
    engine: str = typer.Option(TUNE.engine, "--engine", help="native, transformers, llama.cpp or vllm: tune on the engine you deploy."),
    device: str = typer.Option(TUNE.device, "--device", help="auto, cuda or cpu."),
    objective: str = typer.Option(TUNE.objective, "--objective", help="long, balanced (keeps short-input retrieval) or short-guard."),
    max_short_loss: float | None = typer.Option(None, "--max-short-loss", help="short-guard: allowed relative rise of short-input perplexity (default 0.02 = 2%); implies short-guard."),
    short: int | None = typer.Option(None, "--short", help="The short input length the guard protects (default: L/2)."),
    docs: int = typer.Option(TUNE.docs, "--docs", help="Documents of the long length scored per candidate."),
    passkeys: int = typer.Option(TUNE.passkeys, "--passkeys", help="Pass keys hidden in the text, answered at the short and at the long length (0: perplexity only)."),
    refinements: int = typer.Option(TUNE.refinements, "--refinements", help="1-D refinement steps after the grid of m."),
    fit: bool = typer.Option(TUNE.fit, "--fit", help="Sweep m at each of --fit-scales and fit m = a ln s + b (the paper's way)."),
    fit_scales: str = typer.Option(TUNE.fit_scales, "--fit-scales", help="Scales for --fit."),
    search_betas: bool = typer.Option(TUNE.search_betas, "--search-betas", help="Then search beta_fast (x0.5, x2) and beta_slow (x0.5, x2) at the best m (4 more candidates; HF output only)."),
    plot: Path | None = typer.Option(None, "--plot", help="Write perplexity against m (and the fit) as .png/.svg/.pdf (needs matplotlib)."),
    budget: float | None = typer.Option(None, "--budget", help="Minutes: stop the search there and decide on the best so far."),
    beta_fast: float = typer.Option(TUNE.beta_fast, "--beta-fast", help="YaRN beta_fast of the candidates (where --search-betas starts)."),
    beta_slow: float = typer.Option(TUNE.beta_slow, "--beta-slow", help="YaRN beta_slow of the candidates (where --search-betas starts)."),
    bake_temperature: bool = typer.Option(TUNE.bake_temperature, "--bake-temperature", help="HF only: bake the chosen m into q/k (as extend does)."),
    original_context: int | None = typer.Option(None, "--original-context", help="Override the trained length L."),
    tensor_parallel_size: int = _TENSOR_PARALLEL,
    pipeline_parallel_size: int = _PIPELINE_PARALLEL,
    dtype: str = _DTYPE,
    gpu_memory_utilization: float = _GPU_MEMORY,
    enforce_eager: bool = _EAGER,
    force: bool = typer.Option(TUNE.force, "--force", help="Replace an existing OUT or plot."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Fit YaRN's attention factor (and, with --to, the factor) to your model, engine and text; write the best."""
    from yarn_cli.cli import tune_cmd

    request = TuneRequest(
        scale=scale, to=to, text=text, engine=engine, device=device, objective=objective, max_short_loss=max_short_loss,
        short=short, docs=docs, passkeys=passkeys, refinements=refinements, fit=fit, fit_scales=fit_scales,
        search_betas=search_betas, plot=plot, budget=budget, beta_fast=beta_fast, beta_slow=beta_slow,
        bake_temperature=bake_temperature, original_context=original_context, force=force,
        engine_options=EngineOptions(tensor_parallel_size=tensor_parallel_size, pipeline_parallel_size=pipeline_parallel_size,
                                     dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager),
    )
    code = tune_cmd.run(consoles.out, consoles.err, as_json, model, out, request, _note)
    if code:
        raise typer.Exit(code)


@app.command()
def finetune(
    model: str = typer.Argument(..., help="HF model folder or hub repo id, plain or already extended with YaRN."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the fine-tuned checkpoint."),
    scale: float | None = typer.Option(None, "--scale", "-s", help="Extension factor s (a plain model is extended first, as extend does)."),
    to: str | None = typer.Option(None, "--to", help="Target length instead of --scale, e.g. 32k."),
    data: list[str] | None = typer.Option(None, "--data", help="Training text: .txt, .jsonl (text field), .parquet, or a hub dataset id; repeatable (default: Python's documentation topics, a demo corpus)."),
    steps: int = typer.Option(RECIPE.steps, "--steps", help="Optimizer steps (the paper: 400 at s = 16)."),
    lr: float = typer.Option(RECIPE.lr, "--lr", help="Learning rate after warm-up (held constant)."),
    warmup: int = typer.Option(RECIPE.warmup, "--warmup", help="Linear warm-up steps."),
    seq_len: int | None = typer.Option(None, "--seq-len", help="Tokens per training window (default: s x L)."),
    batch_tokens: int | None = typer.Option(None, "--batch-tokens", help="Global batch in tokens (default: 64 windows, the paper's)."),
    batch_size: int = typer.Option(RECIPE.batch_size, "--batch-size", min=1, help="Windows per device per micro-step."),
    grad_accum: int | None = typer.Option(None, "--grad-accum", min=1, help="Micro-steps per optimizer step (default: to reach the global batch)."),
    lora_rank: int = typer.Option(RECIPE.lora_rank, "--lora-rank", min=0, help="Train LoRA adapters of this rank on the attention projections, merged at the end (0: full fine-tune)."),
    gradient_checkpointing: bool = typer.Option(RECIPE.gradient_checkpointing, "--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations in the backward pass."),
    pure_bf16: bool = typer.Option(RECIPE.pure_bf16, "--pure-bf16", help="Keep weights, gradients and AdamW state in bf16 (half their memory; updates below a weight's bf16 step are lost). Default: fp32 master weights with bf16 autocast on GPUs that have it, fp16 with loss scaling on older ones, fp32 on a CPU."),
    seed: int = typer.Option(RECIPE.seed, "--seed", help="Seed for weights of new adapters and the data order."),
    save_steps: int = typer.Option(RECIPE.save_steps, "--save-steps", min=1, help="Steps between checkpoints in the work folder (for --resume)."),
    resume: bool = typer.Option(FINETUNE.resume, "--resume", help="Continue an interrupted run from its last checkpoint."),
    original_context: int | None = typer.Option(None, "--original-context", help="Override the trained length L."),
    force: bool = typer.Option(False, "--force", help="Replace an existing OUT (never the input)."),
    revision: str | None = typer.Option(None, "--revision", help="Hub revision (branch, tag or commit)."),
    as_json: bool = typer.Option(False, "--json", help="Print {output, steps, tokens, loss, seconds} as JSON."),
) -> None:
    """Fine-tune at the new length with the YaRN paper's recipe (transformers Trainer; accelerate for many devices)."""
    from yarn_cli.cli import finetune_cmd
    from yarn_cli.usecases.finetune import plan_finetune

    recipe = dataclasses.replace(RECIPE, steps=steps, lr=lr, warmup=warmup, seq_len=seq_len or 0, batch_size=batch_size, grad_accum=grad_accum or 0,
                                 lora_rank=lora_rank, gradient_checkpointing=gradient_checkpointing, pure_bf16=pure_bf16, seed=seed,
                                 save_steps=save_steps)
    request = FinetuneRequest(scale=scale, to=to, data=tuple(data or ()), original_context=original_context, recipe=recipe,
                              batch_tokens=batch_tokens, resume=resume, force=force, revision=revision)
    plan = plan_finetune(model, out, request)
    finetune_cmd.run(plan, consoles.out, consoles.err, as_json)


@app.command()
def report(
    reports: list[Path] = typer.Argument(..., help="verify --json files (or --report folders) to show side by side.", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Folder for report.html and its PNGs (new, empty, or an earlier report)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Put verify runs side by side in one self-contained report.html (heatmaps, differences, perplexity curves)."""
    from yarn_cli.cli.output import print_json
    from yarn_cli.cli.render import esc
    from yarn_cli.usecases.report import compare

    result = compare(reports, out)
    if as_json:
        print_json(result.to_json())
    else:
        consoles.out.print(f"wrote {esc(result.html)} ({len(result.pictures)} pictures)")


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("YARN_CLI_DEBUG") == "1"


HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _on_signal(signum: int, _frame: Any) -> None:
    # Later signals are ignored so they cannot cut the cleanup short (kill -9 still ends everything).
    for other in HANDLED_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    interrupts.deliver(signum)  # raises here, or, where threads hold locks, at the next safe point


def install_signal_handlers() -> None:
    """Ctrl-C, SIGTERM (timeout, systemd, Slurm, Kubernetes) and SIGHUP all unwind the same way."""
    for signum in HANDLED_SIGNALS:
        signal.signal(signum, _on_signal)


def _usage_error_class() -> type[Exception]:
    """The ClickException class of the click that typer runs on: its own bundled copy in recent typer
    releases, the click package in older ones. Found through typer's public BadParameter."""
    return sys.modules[typer.BadParameter.__module__].ClickException


def _interrupted(signum: int) -> None:
    what = "interrupted" if signum == signal.SIGINT else f"terminated by {signal.Signals(signum).name}"
    consoles.err.print(f"[red]{what}[/]: stopped, and nothing was left half-written")
    sys.exit(128 + signum)


def _program_name() -> str:
    """The name the user typed (yarn or yarn-cli), for usage lines; yarn under ``python -m yarn_cli``."""
    typed = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return typed if typed in ("yarn", "yarn-cli") else "yarn"


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the Typer app and turns every failure into one line and an exit code.

    Usage errors (unknown option, missing value, bad type) get the framework's usage message and exit 2.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.getsignal(signum) for signum in HANDLED_SIGNALS} if in_main_thread else {}
    if in_main_thread:
        install_signal_handlers()
    try:
        result = app(args=argv, prog_name=_program_name(), standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Interrupted as exc:
        _interrupted(exc.signum)
    except (KeyboardInterrupt, typer.Abort):
        _interrupted(signal.SIGINT)
    except YarnError as exc:
        if debug:
            traceback.print_exc()
        consoles.err.print(f"[red]error:[/] {render_escape(str(exc))}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if isinstance(exc, _usage_error_class()):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:  # a bug of ours: still one line, the traceback on request
            traceback.print_exc()
        consoles.err.print(
            f"[red]internal error:[/] {render_escape(type(exc).__name__)}: {render_escape(str(exc))} "
            "(rerun with --debug for the traceback, and please report it)",
            soft_wrap=True,
        )
        sys.exit(70)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if result == 128 + signal.SIGINT:  # typer turns a KeyboardInterrupt into this exit code
        _interrupted(signal.SIGINT)
    sys.exit(result if isinstance(result, int) else 0)


def render_escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
