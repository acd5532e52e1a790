"""The KV cache a runtime allocates for a model: the one place its size is computed.

Full-attention layers cache every token; sliding-window layers cache at most the window (what
transformers' static cache, vLLM and llama.cpp keep for them; llama.cpp adds one batch on top).
MLA models (DeepSeek) cache the compressed latent plus the shared rotary key instead of K and V.
Chunked-attention layers (Llama 4) hold at most one chunk, as a window. Linear-attention layers (Qwen3-Next's Gated
DeltaNet) keep a fixed-size state and cache no tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BYTES_16BIT = 2


@dataclass(frozen=True)
class AttentionLayout:
    layers: int
    kv_dims: int  # numbers cached per token per layer (K and V together, or the MLA latent)
    sliding_window: int = 0
    sliding_layers: tuple[int, ...] = ()  # indices of the sliding-window layers
    linear_layers: tuple[int, ...] = ()  # indices of the layers without attention (a recurrent state instead)
    full_kv_dims: int = 0  # the full-attention layers' own numbers per token where their heads differ (Gemma 4)

    @property
    def full_layers(self) -> int:
        return self.layers - len(self.sliding_layers) - len(self.linear_layers)


def kv_cache_bytes(layout: AttentionLayout, tokens: int, bytes_per_value: float = BYTES_16BIT) -> int:
    """Bytes of K and V (or latents) for one sequence of ``tokens`` tokens."""
    windowed = min(tokens, layout.sliding_window) if layout.sliding_layers else 0
    values = (layout.full_kv_dims or layout.kv_dims) * layout.full_layers * tokens + layout.kv_dims * len(layout.sliding_layers) * windowed
    return int(values * bytes_per_value)


def kv_cache_report(layout: AttentionLayout | None, original: int, target: int | None) -> dict[str, Any] | None:
    """The ``kv_cache`` object of `inspect --json`. ``bytes_per_token_*``: what each token beyond the
    sliding window adds (full-attention layers only); the totals count the windows exactly."""
    if layout is None:
        return None
    per_token = (layout.full_kv_dims or layout.kv_dims) * layout.full_layers * BYTES_16BIT
    report: dict[str, Any] = {
        "bytes_per_token_16bit": per_token,
        "bytes_per_token_8bit": per_token // 2,
        "bytes_at_original_16bit": kv_cache_bytes(layout, original),
        "layers": layout.layers,
        "full_attention_layers": layout.full_layers,
        "sliding_window_layers": len(layout.sliding_layers),
        "sliding_window": layout.sliding_window or None,
        "linear_attention_layers": len(layout.linear_layers),
    }
    if target:
        report["bytes_at_target_16bit"] = kv_cache_bytes(layout, target)
    return report


def pattern_layers(n_layers: int, pattern: int) -> tuple[int, ...]:
    """Sliding layers when every ``pattern``-th layer is full attention (transformers' and llama.cpp's
    convention: layers 0..N-2 of each group slide, the last is global)."""
    return tuple(i for i in range(n_layers) if (i + 1) % pattern)
