"""Dataclasses describing a checkpoint's RoPE state, as read from headers (never from weights)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from yarn_cli.core.checkpoint.kv_cache import AttentionLayout
from yarn_cli.core.rope.freq_factors import FreqFactors
from yarn_cli.core.rope.scalars import get_mscale, softmax_mscale

# transformers names (plus GGUF's) for the same scalings; "su" is Phi-3's first name for longrope.
SCALING_ALIASES = {
    "su": "longrope",
    "none": "default",
    # Qwen-VL's multimodal RoPE: plain RoPE whose rotary dims are split into (time, height, width) sections; for
    # text every section sees the same position, so it scales as plain RoPE does
    "mrope": "default",
}
LOCAL_ROPE_NAME = "local (sliding window)"
KNOWN_SCALING_TYPES = ("default", "linear", "dynamic", "yarn", "llama3", "longrope", "proportional")


@dataclass(frozen=True)
class Scaling:
    """A RoPE scaling a checkpoint already declares."""

    type: str
    factor: float | None
    original_context: int | None
    params: dict[str, Any]
    source: str  # where it was read: "rope_scaling", "rope_parameters", "gguf", ...

    def declared_factor(self, max_context: int) -> float:
        """The factor s as transformers reads it (``_compute_yarn_parameters``): ``factor``, or without one
        max_position_embeddings / the block's original length (max_position_embeddings when the block has none).
        The one rule for it: a --original-context override changes the L shown, never what a runtime computes."""
        if self.factor is not None:
            return self.factor
        return max_context / (self.original_context or max_context)

    @property
    def label(self) -> str:
        """ "yarn x4": how every report names a scaling."""
        return self.type + (f" x{self.factor:g}" if self.factor is not None else "")

    @property
    def description(self) -> str:
        """ "yarn x4 from 8192": the label and the trained length it starts from."""
        return self.label + (f" from {self.original_context}" if self.original_context else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "factor": self.factor,
            "original_context": self.original_context,
            "source": self.source,
            "params": self.params,
        }


@dataclass(frozen=True)
class RopeSpec:
    """One RoPE family of a model (Gemma 3 has two: global and sliding-window layers)."""

    base: float  # RoPE's base (rope_theta, {arch}.rope.freq_base)
    head_dim: int
    rotary_dim: int
    original_context: int
    original_context_source: str
    max_context: int
    scaling: Scaling | None = None
    layout: str = "rotate_half"  # or "interleaved" (GPT-J / GGUF "normal" layout)
    name: str = "global"
    freq_factors: FreqFactors | None = None  # per-pair divisors of θ the runtime applies first (GGUF rope_freqs)
    softmax_mscale_key: str = ""  # MLA: the yarn key whose get_mscale(s, value)² multiplies the softmax scale
    # MLA with m baked in: the part M of it every q row carries (the rotary key carries the rest, (m/M)²)
    baked_softmax_mscale: float | None = None

    def softmax_mscale(self, scale: float | None = None) -> float | None:
        """MLA only: M, whose square the softmax scale carries on every dim, for the declared scaling or a fresh one
        at ``scale`` (which extend writes with the family's pair); None for other families."""
        if not self.softmax_mscale_key:
            return None
        if scale is not None:
            return get_mscale(scale)
        if self.scaling is None or self.scaling.type != "yarn":
            return 1.0
        return softmax_mscale(self.scaling.declared_factor(self.max_context), self.scaling.params.get(self.softmax_mscale_key))

    @property
    def partial_rotary_factor(self) -> float:
        return self.rotary_dim / self.head_dim

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "theta": self.base,  # --json keeps the key users know (rope.theta)
            "head_dim": self.head_dim,
            "rotary_dim": self.rotary_dim,
            "partial_rotary_factor": self.partial_rotary_factor,
            "layout": self.layout,
            "original_context": self.original_context,
            "original_context_source": self.original_context_source,
            "max_context": self.max_context,
            "scaling": self.scaling.to_json() if self.scaling else None,
            "freq_factors": self.freq_factors.to_json() if self.freq_factors else None,
        }


@dataclass(frozen=True)
class TensorStats:
    """What the weight headers say, without touching tensor data."""

    count: int = 0
    parameters: int = 0
    bytes: int = 0
    dtypes: dict[str, int] = field(default_factory=dict)  # dtype -> number of tensors
    files: int = 0


@dataclass(frozen=True)
class ModelSummary:
    """Everything `inspect` reports about a checkpoint."""

    source: str
    format: str  # "hf", "safetensors", "gguf"
    architecture: str
    layers: int | None
    attention_heads: int | None
    kv_heads: int | None
    hidden_size: int | None
    ropes: tuple[RopeSpec, ...]
    tensors: TensorStats
    attention: AttentionLayout | None  # what the KV cache stores, layer by layer
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rope(self) -> RopeSpec:
        """The primary (global) RoPE family."""
        return self.ropes[0]


def scaling_label(scaling: Scaling | None) -> str:
    """The label of a scaling, "none" when there is none."""
    return scaling.label if scaling is not None else "none"
