"""A config's per-layer types under the names transformers gives them when it loads the config, and the per-layer
overrides transformers saves (``per_layer_config``, Gemma 4's full-attention layers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# transformers' older layer-type names (Granite 4's "mamba"/"attention", DeepSeek-V3.2's sparse attention) and the new
# ones it remaps them to when it loads a config
_LEGACY_LAYER_TYPES = {
    "mamba": "linear_attention",
    "attention": "full_attention",
    "deepseek_sparse_attention": "indexed_attention",
    "qwen_sparse_attention": "indexed_attention",
}


def read(cfg: Mapping[str, Any]) -> list[Any] | None:
    """A config's per-layer types under their current names, as transformers reads them: ``layer_types``, or Granite
    4's ``layers_block_type``; None where neither is a list."""
    listed = cfg.get("layer_types")
    if not isinstance(listed, list):
        listed = cfg.get("layers_block_type")
    if not isinstance(listed, list):
        return None
    return [_LEGACY_LAYER_TYPES.get(kind, kind) if isinstance(kind, str) else kind for kind in listed]


def override(cfg: Mapping[str, Any], key: str) -> Any:
    """The one value ``per_layer_config`` gives ``key`` across the layers it overrides; None where it gives none, or
    several (then no single value describes those layers)."""
    overrides = cfg.get("per_layer_config")
    values = {v.get(key) for v in overrides.values() if isinstance(v, dict)} if isinstance(overrides, dict) else set()
    values.discard(None)
    return next(iter(values)) if len(values) == 1 else None
