"""`finetune`: the paper's short fine-tune at the new length, on transformers + accelerate (+ peft for LoRA).

A plain model is extended with exactly the plan `extend` uses; an extended one trains under the scaling it
declares. Checkpoints go to a work folder beside OUT (``.OUT.yarn-finetune``) so ``resume`` continues
after an interruption; OUT itself appears atomically at the end, written by the main process only.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yarn_cli.core.extend import hf_plan
from yarn_cli.core.extend.options import ExtendRequest
from yarn_cli.core.finetune import plan as finetune_plan
from yarn_cli.core.finetune.options import FinetuneRequest
from yarn_cli.core.rope import lengths
from yarn_cli.errors import AlreadyScaledError, InputError, about
from yarn_cli.usecases import finetune_output
from yarn_cli.usecases.models import is_gguf, resolve_hf_folder


@dataclass(frozen=True)
class FinetunePlan:
    source: str
    folder: Path
    output: Path
    work_dir: Path
    config: dict[str, Any]  # the YaRN config the model trains under and OUT carries
    scale: float
    original_context: int
    target_context: int
    recipe: finetune_plan.Recipe
    data: tuple[str, ...]  # empty: the offline default corpus
    batching: finetune_plan.Batching = finetune_plan.Batching(1, 1, 1)  # for the processes of this launch
    resume: bool = False
    force: bool = False
    precision: finetune_plan.Precision = finetune_plan.PRECISIONS["fp32"]
    memory: finetune_plan.TrainingMemory | None = None  # one device's estimated peak, term by term
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def estimated_bytes(self) -> int:
        return self.memory.total if self.memory is not None else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "output": str(self.output),
            "work_dir": str(self.work_dir),
            "scale": self.scale,
            "original_context": self.original_context,
            "target_context": self.target_context,
            "recipe": self.recipe.to_json(),
            "data": list(self.data) or [_default_corpus_name()],
            "estimated_peak_bytes": self.estimated_bytes,
            "precision": self.precision.name,
            "estimated_memory": self.memory.to_json() if self.memory is not None else None,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class FinetuneResult:
    plan: FinetunePlan
    steps: int
    tokens: int
    loss: tuple[dict[str, float], ...]
    seconds: float
    windows: int

    def to_json(self) -> dict[str, Any]:
        return {
            "output": str(self.plan.output),
            "steps": self.steps,
            "tokens": self.tokens,
            "loss": list(self.loss),
            "seconds": round(self.seconds, 3),
            "windows": self.windows,
            "precision": self.plan.precision.name,
            "estimated_memory": self.plan.memory.to_json() if self.plan.memory is not None else None,
        }


def _default_corpus_name() -> str:
    from yarn_cli.io.corpus import DEFAULT_CORPUS

    return DEFAULT_CORPUS


def _training_config(config: dict[str, Any], scale: float | None, to: str | None, original_context: int | None) -> tuple[dict, Any]:
    """(the config to train under, the ConfigPlan that extends a plain model, or (s, L, s·L) for a model that
    already declares YaRN: it keeps its own)."""
    from yarn_cli.core.checkpoint import hf_config

    specs, _ = hf_config.read_rope_specs(config, original_context)
    declared = specs[0].scaling
    if declared is None:
        plan = hf_plan.plan_config(config, ExtendRequest(scale=scale, to=to, original_context=original_context))
        return plan.config, plan
    if declared.type != "yarn":
        raise AlreadyScaledError(f"config.json declares a {declared.label} scaling; finetune trains YaRN: start from the unextended model")
    target = specs[0].max_context
    if scale is not None or to is not None:
        wanted = lengths.resolve_scale(scale, to, specs[0].original_context)
        if abs(wanted - (declared.factor or 0)) > 1e-6:
            raise InputError(
                f"the model already declares {declared.description}; --scale/--to {wanted:g} conflicts: "
                "omit it to train at the declared length, or start from the unextended model"
            )
    return copy.deepcopy(config), (declared.factor, specs[0].original_context, target)


def plan_finetune(model: str | Path, out: str | Path, request: FinetuneRequest | None = None, **options: Any) -> FinetunePlan:
    """Check everything that can be checked before loading a weight, and refuse what cannot fit. ``request`` holds
    every choice (``yarn_cli.core.finetune.options.FinetuneRequest``); keyword arguments change single ones."""
    from yarn_cli.io import atomic
    from yarn_cli.io.checkpoint import read_json

    r = FinetuneRequest.build(request, **options)
    recipe = r.recipe
    if is_gguf(str(model)):
        raise InputError(f"{model}: finetune trains Hugging Face weights; fine-tune the HF checkpoint, then convert it to GGUF")
    lengths.check_original_context(r.original_context)
    if recipe.steps < 1 or recipe.lr <= 0 or recipe.warmup < 0 or recipe.lora_rank < 0:
        raise InputError("--steps must be >= 1, --lr > 0, --warmup >= 0 and --lora-rank >= 0")
    from yarn_cli.io import packages
    from yarn_cli.io.corpus import check_sources

    packages.require("finetune", "finetune")
    if recipe.lora_rank:
        packages.require("--lora-rank", "lora")
    check_sources(r.data)
    folder, _ = resolve_hf_folder(str(model), r.revision)
    config = read_json(folder / "config.json")
    _check_loadable(folder, config)
    with about(folder / "config.json"):
        train_config, planned = _training_config(config, r.scale, r.to, r.original_context)
    if isinstance(planned, tuple):
        factor, base, target = planned
    else:
        factor, base, target = planned.scale, planned.original_context, planned.target_context
    seq_len = recipe.seq_len or target
    if seq_len < 2:
        raise InputError(f"--seq-len {seq_len} is too short to train on")
    output = Path(out).expanduser()
    atomic.check_output(output, folder, r.force)
    work_dir = output.parent / f".{output.name}.yarn-finetune"
    _check_work_dir(work_dir, r.resume)
    batching = finetune_plan.batching(seq_len, int(os.environ.get("WORLD_SIZE", "1")), recipe.batch_size, recipe.grad_accum, r.batch_tokens)
    precision, estimate = _check_memory(folder, config, seq_len, recipe)
    return FinetunePlan(
        source=str(model),
        folder=folder,
        output=output,
        work_dir=work_dir,
        config=train_config,
        scale=factor,
        original_context=base,
        target_context=target,
        recipe=_with_seq_len(recipe, seq_len),
        data=tuple(map(str, r.data)),
        batching=batching,
        resume=r.resume,
        force=r.force,
        precision=precision,
        memory=estimate,
    )


def _check_loadable(folder: Path, config: dict[str, Any]) -> None:
    """transformers has a causal LM for this model type."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = str(config.get("model_type") or "")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        from yarn_cli.errors import UnsupportedError

        raise UnsupportedError(
            f"{folder}: transformers does not know model type {model_type!r} as a causal LM; "
            "finetune trains what transformers can load (remote code is never run)"
        )


def _with_seq_len(recipe: finetune_plan.Recipe, seq_len: int) -> finetune_plan.Recipe:
    return dataclasses.replace(recipe, seq_len=seq_len)


def complete_checkpoints(work_dir: Path) -> list[Path]:
    """Checkpoints Trainer finished writing, oldest first. It writes a checkpoint folder in place and its
    trainer_state.json last, so a folder without a readable one was cut off mid-save and is skipped."""
    found = []
    for folder in work_dir.glob("checkpoint-*") if work_dir.is_dir() else ():
        try:
            json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if folder.name.removeprefix("checkpoint-").isdigit():
            found.append(folder)
    return sorted(found, key=lambda f: int(f.name.removeprefix("checkpoint-")))


def _check_work_dir(work_dir: Path, resume: bool) -> None:
    checkpoints = complete_checkpoints(work_dir)
    if checkpoints and not resume:
        raise InputError(
            f"{work_dir}: an interrupted run left {len(checkpoints)} checkpoint(s); pass --resume to continue it, or delete the folder to start over"
        )
    if resume and not checkpoints:
        raise InputError(f"--resume: no complete checkpoint in {work_dir} to continue from; run without --resume")


def _check_memory(
    folder: Path, config: dict[str, Any], seq_len: int, recipe: finetune_plan.Recipe
) -> tuple[finetune_plan.Precision, finetune_plan.TrainingMemory]:
    """The precision to train in, and the estimate of one device's peak (with what FSDP or ZeRO shards across the
    launched processes taken off); a window that cannot fit is refused before anything loads."""
    from yarn_cli.core.checkpoint import hf_config, hf_layout
    from yarn_cli.io.checkpoint import summarize_hf_folder
    from yarn_cli.runtimes.base import available_host_memory
    from yarn_cli.training.trainer import device_precision

    summary = summarize_hf_folder(folder)
    dims = hf_layout.model_dims(config)
    cfg = hf_config.text_config(config)
    base = summary.tensors.parameters or 0
    trainable = base // 100 if recipe.lora_rank else base  # LoRA's adapters: about 1% of the weights, on top of them
    parameters = base + trainable if recipe.lora_rank else base
    precision, available = device_precision(recipe.pure_bf16)
    needed = finetune_plan.training_memory(
        parameters,
        dims["layers"] or 0,
        dims["hidden_size"] or 0,
        int(cfg.get("vocab_size") or 0),
        seq_len,
        recipe.batch_size,
        trainable,
        recipe.gradient_checkpointing,
        precision,
        finetune_plan.sharding(os.environ, int(os.environ.get("WORLD_SIZE", "1"))),
    )
    available = available if available is not None else available_host_memory()
    if needed.total > 0.9 * available:
        from yarn_cli.core.units import human_bytes

        raise InputError(
            f"a {seq_len:,}-token window needs about {human_bytes(needed.total)} to train in {precision.name}, and {human_bytes(available)} is free: "
            "use --lora-rank, a smaller --seq-len or --batch-size, keep gradient checkpointing on, or more devices (FSDP)"
        )
    return precision, needed


Progress = Callable[[int, "float | None", float], None]  # (step, last loss, tokens/s)


def run_finetune(plan: FinetunePlan, *, progress: Progress | None = None, callbacks: Sequence[Any] = ()) -> FinetuneResult:
    """Train, then (main process only) merge LoRA, write OUT atomically and remove the work folder.

    ``callbacks``: extra transformers ``TrainerCallback``s (the API's hook into the loop)."""
    import torch
    from transformers import Trainer

    from yarn_cli.io import corpus
    from yarn_cli.training import trainer as engine

    recipe, seq_len = plan.recipe, plan.recipe.seq_len
    on_gpu = torch.cuda.is_available()
    torch.manual_seed(recipe.seed)
    engine.quiet_transformers()
    tokenizer = _tokenizer(plan.folder)
    docs = corpus.documents(plan.data) if plan.data else corpus.default_documents()
    windows, n_tokens = engine.pack(tokenizer, docs, seq_len)
    finetune_plan.check_enough(n_tokens, seq_len, "--data " + " ".join(plan.data) if plan.data else "the default corpus")
    batching = plan.batching
    if windows.shape[0] < batching.per_device * batching.world:
        raise InputError(
            f"{windows.shape[0]} window(s) of {seq_len:,} tokens cannot feed {batching.world} process(es) x "
            f"--batch-size {batching.per_device}: give more text or a smaller --seq-len"
        )
    lm = engine.load_model(plan.folder, plan.config, engine.load_dtype(plan.precision, bool(recipe.lora_rank)))
    if recipe.gradient_checkpointing:
        engine.enable_checkpointing(lm)
    lm.config.use_cache = False
    if recipe.lora_rank:
        if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
            raise InputError("--lora-rank is for one device or DDP; with FSDP or DeepSpeed, run a full fine-tune")
        lm = engine.add_lora(lm, recipe.lora_rank, recipe.lora_alpha, plan.precision)
    plan.work_dir.mkdir(parents=True, exist_ok=True)
    log = engine.TrainingLog()
    dataset = engine.Windows(windows)
    trainer = Trainer(
        model=engine.LossModel(lm),
        args=engine.training_arguments(recipe, batching, plan.work_dir, on_gpu, plan.precision),
        train_dataset=dataset,
        callbacks=[engine.make_callback(log, batching.global_windows * seq_len, progress), *callbacks],
    )
    engine.quiet(trainer)
    _train(trainer, plan)
    steps = trainer.state.global_step
    tokens = steps * batching.global_windows * seq_len
    log.losses = engine.loss_history(trainer)
    engine.write_rank_record(plan.work_dir, trainer.args.process_index, dataset, lm)
    # Every process takes part: under FSDP or ZeRO-3 this gathers the sharded weights.
    state = engine.full_state_dict(trainer)
    trainer.accelerator.wait_for_everyone()
    seconds = time.perf_counter() - log.started
    if trainer.is_world_process_zero():
        ranks = [json.loads(p.read_text()) for p in sorted(plan.work_dir.glob("rank*.json"))]
        record = finetune_output.training_record(plan, steps, tokens, n_tokens, windows.shape[0], log, seconds, ranks)
        final = lm.merge_and_unload() if recipe.lora_rank else lm
        finetune_output.write_output(plan, final, None if recipe.lora_rank else state, tokenizer, record)
        shutil.rmtree(plan.work_dir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return FinetuneResult(plan, steps, tokens, tuple(log.losses), seconds, int(windows.shape[0]))


def _train(trainer: Any, plan: FinetunePlan) -> None:
    """Trainer.train, from the last complete checkpoint on --resume; an interruption before any checkpoint
    removes the work folder, since there is nothing to resume from."""
    try:
        trainer.train(resume_from_checkpoint=str(complete_checkpoints(plan.work_dir)[-1]) if plan.resume else None)
    except BaseException:
        if trainer.is_world_process_zero() and not complete_checkpoints(plan.work_dir):
            shutil.rmtree(plan.work_dir, ignore_errors=True)
        raise


def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        from yarn_cli.errors import UnsupportedError

        raise UnsupportedError(f"{folder}: no tokenizer transformers can load ({str(exc).splitlines()[0][:160]})") from exc


def finetune(
    model: str | Path,
    out: str | Path,
    request: FinetuneRequest | None = None,
    *,
    progress: Progress | None = None,
    callbacks: Sequence[Any] = (),
    **options: Any,
) -> FinetuneResult:
    """plan_finetune(model, out, request, **options), then run it."""
    return run_finetune(plan_finetune(model, out, request, **options), progress=progress, callbacks=callbacks)
