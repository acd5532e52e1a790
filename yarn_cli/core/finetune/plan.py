"""The fine-tune recipe (docs/conventions.md §9), pure: defaults, batch arithmetic, packing, a memory estimate.

YaRN's paper extends Llama 2 with 400 steps at the new length: AdamW (0.9, 0.95), lr 2e-5 with a linear
warm-up of 20 steps and no decay after it, no weight decay, a global batch of 64 windows of s·L tokens,
each window one training sequence. The YaRN config is active while training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from yarn_cli.errors import InputError

PAPER_GLOBAL_BATCH = 64


@dataclass(frozen=True)
class Recipe:
    steps: int = 400
    lr: float = 2e-5
    warmup: int = 20
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.0
    seq_len: int = 0  # tokens per window; 0 means s·L
    batch_size: int = 1  # windows per device per micro-step
    grad_accum: int = 0  # 0: chosen so the global batch is the paper's 64 windows (or --batch-tokens)
    lora_rank: int = 0  # 0: full fine-tune
    lora_alpha: int = 0  # 0: twice the rank
    gradient_checkpointing: bool = True
    pure_bf16: bool = False  # weights, gradients and AdamW state all in bf16 (default: fp32 masters, mixed precision)
    seed: int = 0
    save_steps: int = 50
    logging_steps: int = 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Batching:
    per_device: int
    grad_accum: int
    world: int

    @property
    def global_windows(self) -> int:
        return self.per_device * self.grad_accum * self.world


def batching(seq_len: int, world: int, batch_size: int, grad_accum: int, batch_tokens: int | None) -> Batching:
    """Windows per device and accumulation steps. ``batch_tokens`` (the global batch in tokens) wins over
    ``grad_accum``; with neither, the paper's 64 windows per optimizer step."""
    if batch_size < 1 or grad_accum < 0 or world < 1:
        raise InputError("--batch-size must be >= 1 and --grad-accum >= 1")
    if batch_tokens is not None:
        if batch_tokens < seq_len:
            raise InputError(f"--batch-tokens {batch_tokens:,} is less than one window of {seq_len:,} tokens")
        windows = batch_tokens // seq_len
        return Batching(batch_size, max(1, windows // (batch_size * world)), world)
    if grad_accum:
        return Batching(batch_size, grad_accum, world)
    return Batching(batch_size, max(1, PAPER_GLOBAL_BATCH // (batch_size * world)), world)


def window_count(n_tokens: int, seq_len: int) -> int:
    """Packed windows of ``seq_len`` tokens in ``n_tokens`` (the remainder is dropped)."""
    return n_tokens // seq_len


def check_enough(n_tokens: int, seq_len: int, where: str) -> None:
    if window_count(n_tokens, seq_len) < 1:
        raise InputError(
            f"{where}: {n_tokens:,} tokens after tokenizing, fewer than one window of {seq_len:,}; "
            f"give at least {seq_len:,} tokens of text (about {seq_len * 4:,} characters of English), or a shorter --seq-len"
        )


@dataclass(frozen=True)
class Sharding:
    """How many processes share the weights, the gradients and the optimizer state (1: each holds all)."""

    weights: int = 1
    gradients: int = 1
    optimizer: int = 1


def sharding(env: Mapping[str, str], world: int) -> Sharding:
    """What accelerate's launch environment shards across ``world`` processes: FSDP (full or hybrid shard by
    default; SHARD_GRAD_OP keeps the weights whole; NO_SHARD nothing) or DeepSpeed ZeRO stage 1/2/3. DDP
    shards nothing."""
    if world <= 1:
        return Sharding()
    if env.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        strategy = env.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD").upper()
        if strategy in ("NO_SHARD", "3"):
            return Sharding()
        if strategy in ("SHARD_GRAD_OP", "2") or env.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() == "false":
            return Sharding(1, world, world)
        return Sharding(world, world, world)
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        stage = env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
        return {"1": Sharding(1, 1, world), "2": Sharding(1, world, world), "3": Sharding(world, world, world)}.get(stage, Sharding())
    return Sharding()


@dataclass(frozen=True)
class Precision:
    """How the weights are kept and the passes computed. Mixed precision (the default on a GPU) keeps fp32
    master weights, gradients and AdamW state and computes in bf16 or fp16 under autocast; pure bf16 keeps all
    of them in bf16, which halves what the trainable parameters cost but rounds away updates below a weight's
    bf16 step (2^-8 relative: at the paper's lr of 2e-5 most of AdamW's steps)."""

    name: str  # fp32, mixed-bf16, mixed-fp16 or pure-bf16
    master_bytes: int  # per trainable parameter: the weights the optimizer updates
    frozen_bytes: int  # per frozen parameter (LoRA's base model): never updated, so kept in the compute dtype
    state_bytes: int  # per trainable parameter: gradient, exp_avg and exp_avg_sq, each at this size
    compute_bytes: int  # per activation value
    loss_scaling: bool = False  # fp16's dynamic loss scale (Trainer's GradScaler)

    @property
    def load_dtype(self) -> str:
        """What the model is loaded in; LoRA's frozen base takes the compute dtype instead."""
        return "bfloat16" if self.master_bytes == 2 else "float32"

    @property
    def compute_dtype(self) -> str:
        return {"mixed-fp16": "float16", "fp32": "float32"}.get(self.name, "bfloat16")


PRECISIONS = {
    "fp32": Precision("fp32", 4, 4, 4, 4),
    "mixed-bf16": Precision("mixed-bf16", 4, 2, 4, 2),
    "mixed-fp16": Precision("mixed-fp16", 4, 2, 4, 2, loss_scaling=True),
    "pure-bf16": Precision("pure-bf16", 2, 2, 2, 2),
}


def choose_precision(on_gpu: bool, bf16_supported: bool, pure_bf16: bool, where: str = "this GPU") -> Precision:
    """fp32 on a CPU; on a GPU mixed precision with fp32 master weights, in bf16 where the GPU has it (Ampere and
    later) and fp16 with loss scaling before; pure bf16 only when asked for, and only where bf16 runs."""
    if pure_bf16:
        if on_gpu and not bf16_supported:
            raise InputError(
                f"--pure-bf16: {where} has no bfloat16 (it needs compute capability 8.0, Ampere, or later); drop the flag to train in mixed fp16"
            )
        return PRECISIONS["pure-bf16"]
    if not on_gpu:
        return PRECISIONS["fp32"]
    return PRECISIONS["mixed-bf16" if bf16_supported else "mixed-fp16"]


@dataclass(frozen=True)
class TrainingMemory:
    """One device's peak while training, term by term, in bytes."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits

    def to_json(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def training_memory(
    parameters: int,
    layers: int,
    hidden: int,
    vocab: int,
    seq_len: int,
    batch: int,
    trainable: int,
    checkpointing: bool,
    precision: Precision,
    shards: Sharding = Sharding(),
) -> TrainingMemory:
    """A lower bound on one device's peak: the weights (trainable ones at the master size, frozen ones at the
    compute size), the trainable parameters' gradients and AdamW's two moments (torch keeps both at the
    parameter's dtype), activations (one hidden state per layer with gradient checkpointing, about 16 per
    layer without), and one chunk of float32 logits and their gradient. Attention uses SDPA: scores are never
    materialized whole. Sharded weights are gathered one layer at a time, so one whole layer is counted on top
    of the shard."""
    frozen = parameters - trainable
    weights = (trainable * precision.master_bytes + frozen * precision.frozen_bytes) / shards.weights
    if shards.weights > 1:
        weights += parameters * precision.compute_bytes / max(layers, 1)
    gradients = trainable * precision.state_bytes / shards.gradients
    optimizer = trainable * 2 * precision.state_bytes / shards.optimizer
    per_layer = batch * seq_len * hidden * precision.compute_bytes
    activations = layers * per_layer * (1 if checkpointing else 16) + 16 * per_layer
    logits = batch * min(seq_len, 4096) * vocab * 4 * 2
    return TrainingMemory(int(weights), int(gradients), int(optimizer), int(activations), int(logits))
