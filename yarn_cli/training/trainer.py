"""The training back-end for `finetune`: transformers' Trainer (accelerate runs it on one or many
processes: DDP, FSDP or DeepSpeed from an accelerate config), peft for LoRA.

The loss is computed from the decoder's hidden states in chunks of positions, each chunk's logits
recomputed in the backward pass, so the sequence x vocabulary logits never exist whole: at 8k tokens and a
49k vocabulary that alone saves two 1.6 GB float32 tensors. The module Trainer sees wraps the causal LM and
returns that loss from its forward, so DDP's gradient hooks see every parameter.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from yarn_cli.core.finetune.plan import Precision, choose_precision, window_count

LOSS_CHUNK = 1024  # positions per logits chunk


def _chunk_loss(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, softcap: float | None) -> torch.Tensor:
    logits = head(hidden).float()
    if softcap:  # Gemma 2's final logit soft-capping
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, targets, reduction="sum")


def chunked_causal_lm_loss(
    hidden: torch.Tensor, head: torch.nn.Module, labels: torch.Tensor, softcap: float | None = None, chunk: int = LOSS_CHUNK
) -> torch.Tensor:
    """Mean next-token cross-entropy, the same number transformers' causal-LM loss gives."""
    states = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    targets = labels[:, 1:].reshape(-1)
    total = states.new_zeros((), dtype=torch.float32)
    for start in range(0, targets.shape[0], chunk):
        piece = slice(start, start + chunk)
        total = total + checkpoint(_chunk_loss, states[piece], head, targets[piece], softcap, use_reentrant=False)
    return total / targets.shape[0]


class LossModel(torch.nn.Module):
    """The causal LM with the chunked loss as its forward: what Trainer (and DDP) wrap."""

    main_input_name = "input_ids"
    _keys_to_ignore_on_save = None  # read by Trainer after a resume; the tied name is restored by the tie itself

    def __init__(self, lm: torch.nn.Module):
        super().__init__()
        self.lm = lm
        self.config = lm.config
        base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
        self._decoder = base.get_decoder()
        self._head = base.get_output_embeddings()
        text = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
        self._softcap = getattr(text, "final_logit_softcapping", None)
        self._no_split_modules = getattr(base, "_no_split_modules", None)  # FSDP's wrap policy reads it

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Tied weights (embeddings = lm_head) once: Trainer's checkpoints are safetensors, which refuse
        shared tensors; a resume loads non-strictly and the tie restores the other name."""
        kept: dict[str, torch.Tensor] = {}
        seen: set[tuple[int, tuple[int, ...]]] = set()
        for name, tensor in super().state_dict(*args, **kwargs).items():
            key = (tensor.data_ptr(), tuple(tensor.shape))
            if key not in seen:
                seen.add(key)
                kept[name] = tensor
        return kept

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self._decoder(input_ids=input_ids).last_hidden_state
        return {"loss": chunked_causal_lm_loss(hidden, self._head, labels, self._softcap)}


class Windows(torch.utils.data.Dataset):
    """Packed windows; remembers which ones this process was handed (the per-rank training record)."""

    def __init__(self, windows: torch.Tensor):
        self.windows = windows
        self.seen: list[int] = []

    def __len__(self) -> int:
        return self.windows.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        self.seen.append(int(index))
        return {"input_ids": self.windows[index], "labels": self.windows[index]}


def device_precision(pure_bf16: bool) -> tuple[Precision, int | None]:
    """The precision this machine trains in (core.finetune.plan.choose_precision) and the free memory of its GPU
    (None on a CPU)."""
    if not torch.cuda.is_available():
        return choose_precision(False, True, pure_bf16), None
    name = torch.cuda.get_device_name()
    return choose_precision(True, torch.cuda.is_bf16_supported(), pure_bf16, name), torch.cuda.mem_get_info()[0]


def load_dtype(precision: Precision, lora: bool) -> torch.dtype:
    """fp32 master weights for what trains in mixed precision; LoRA's frozen base in the compute dtype (its
    adapters are trainable, and peft keeps them in fp32)."""
    return getattr(torch, precision.compute_dtype if lora else precision.load_dtype)


def pack(tokenizer: Any, documents: Sequence[str] | Any, seq_len: int) -> tuple[torch.Tensor, int]:
    """Tokenize, join documents with EOS, cut into windows of ``seq_len``: (windows, total tokens)."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for text in documents:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
    count = window_count(len(ids), seq_len)
    return torch.tensor(ids[: count * seq_len], dtype=torch.long).view(count, seq_len), len(ids)


@dataclass
class TrainingLog:
    """What the progress bar and the training record are fed."""

    losses: list[dict[str, float]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    first_step: int | None = None  # the step this process started from (after a resume, not 0)

    def rate(self, step: int, tokens_per_step: int) -> float:
        if self.first_step is None:
            self.first_step = step - 1
        return (step - self.first_step) * tokens_per_step / max(time.perf_counter() - self.started, 1e-9)


def make_callback(log: TrainingLog, tokens_per_step: int, progress: Callable[[int, float | None, float], None] | None):
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            rate = log.rate(state.global_step, tokens_per_step)
            if progress and state.is_world_process_zero:
                progress(state.global_step, log.losses[-1]["loss"] if log.losses else None, rate)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                log.losses.append({"step": state.global_step, "loss": float(logs["loss"]), "learning_rate": float(logs.get("learning_rate", 0.0))})

    return _Progress()


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter's bytes in name order: equal digests, equal weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def write_rank_record(work_dir: Path, rank: int, dataset: Windows, model: torch.nn.Module) -> None:
    """Which windows this process loaded (its data loader reads one batch ahead), and a digest of its final
    weights (DDP keeps them equal)."""
    record = {"rank": rank, "windows_loaded": sorted(set(dataset.seen)), "weights_sha256": weights_digest(model)}
    (work_dir / f"rank{rank}.json").write_text(json.dumps(record) + "\n", encoding="utf-8")


def load_model(folder: Path, config: dict[str, Any], device_dtype: torch.dtype) -> Any:
    """The causal LM from ``folder``'s weights under ``config`` (the YaRN config it trains with)."""
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    from yarn_cli.errors import UnsupportedError

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise UnsupportedError(f"{folder}: transformers does not know model type {model_type!r}; finetune needs one it can load")
    hf_config = CONFIG_MAPPING[model_type].from_dict(copy.deepcopy(config))  # from_dict edits what it is given
    attention = "sdpa"
    try:
        import flash_attn  # noqa: F401

        attention = "flash_attention_2" if torch.cuda.is_available() else "sdpa"
    except ImportError:
        pass
    try:
        return AutoModelForCausalLM.from_pretrained(folder, config=hf_config, dtype=device_dtype, attn_implementation=attention)
    except ValueError as exc:  # "Unrecognized configuration class ..." for architectures without a causal LM
        raise UnsupportedError(f"{folder}: transformers cannot load it as a causal LM ({str(exc).splitlines()[0][:200]})") from exc


def add_lora(lm: Any, rank: int, alpha: int, precision: Precision) -> Any:
    """LoRA adapters on the attention projections (peft); merged back into plain weights after training. peft
    keeps adapters in fp32 (masters for mixed precision) unless the run is pure bf16."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        from yarn_cli.errors import InputError
        from yarn_cli.io.packages import needs

        raise InputError(needs("--lora-rank", "lora")) from exc
    targets = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in lm.named_modules()
            if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in ATTENTION_PROJECTIONS
        }
    )
    config = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, target_modules=targets, lora_dropout=0.0, bias="none")
    return get_peft_model(lm, config, autocast_adapter_dtype=precision.master_bytes == 4)


# Attention projection names across transformers' families (separate and fused).
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "query_key_value", "dense")


def training_arguments(recipe: Any, batching: Any, work_dir: Path, on_gpu: bool, precision: Precision) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(work_dir),
        max_steps=recipe.steps,
        learning_rate=recipe.lr,
        warmup_steps=recipe.warmup,
        lr_scheduler_type="constant_with_warmup",
        adam_beta1=recipe.beta1,
        adam_beta2=recipe.beta2,
        weight_decay=recipe.weight_decay,
        per_device_train_batch_size=batching.per_device,
        gradient_accumulation_steps=batching.grad_accum,
        logging_steps=recipe.logging_steps,
        save_steps=recipe.save_steps,
        save_total_limit=2,
        seed=recipe.seed,
        data_seed=recipe.seed,
        # autocast over fp32 masters (fp16 adds the GradScaler); pure bf16 needs none, its weights are bf16 already
        bf16=precision.name == "mixed-bf16",
        fp16=precision.name == "mixed-fp16",
        report_to=[],
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_drop_last=True,
        log_level="error",
        ddp_find_unused_parameters=False,
        use_cpu=not on_gpu,
    )


def quiet_transformers() -> None:
    """Our progress bar and --json own the terminal: no tqdm bars, no info logging from transformers."""
    import warnings

    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    # Deprecation notices about transformers' own internals (peft calls the old names): nothing a user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")


def quiet(trainer: Any) -> None:
    """No log dicts printed by the Trainer's own callbacks."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def enable_checkpointing(lm: Any) -> None:
    """Recompute each layer's activations in the backward pass (non-reentrant: works with DDP and LoRA)."""
    if hasattr(lm, "activation_checkpointing_enable"):  # transformers 5.2x's name
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def full_state_dict(trainer: Any) -> dict[str, torch.Tensor]:
    """The causal LM's full state dict, gathered from every process (FSDP, ZeRO-3), keyed as the LM names it."""
    state = trainer.accelerator.get_state_dict(trainer.model)
    return {name.removeprefix("lm."): tensor for name, tensor in (state or {}).items()}


def loss_history(trainer: Any) -> list[dict[str, float]]:
    """Every logged loss of the run, those before a resume included (Trainer keeps them in its state)."""
    return [
        {"step": entry["step"], "loss": float(entry["loss"]), "learning_rate": float(entry.get("learning_rate", 0.0))}
        for entry in trainer.state.log_history
        if "loss" in entry
    ]
