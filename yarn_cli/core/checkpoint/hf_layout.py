"""A Hugging Face config's layers: how many, which slide a window or attend in chunks, which hold a fixed state
instead of a KV cache, and the dims the KV cache holds (the RoPE itself is read by ``hf_config``)."""

from __future__ import annotations

from typing import Any

from yarn_cli.core.checkpoint import kv_cache, layer_types, proportional
from yarn_cli.core.checkpoint.hf_config import family, head_dims, is_nested_rope_parameters, positive_int, text_config


def sliding_layers(cfg: dict[str, Any], n_layers: int) -> tuple[int, ...]:
    """The sliding-window layers, as transformers builds its config: ``layer_types`` when listed, else a
    pattern (the config's, or the family's default), else Qwen-style ``max_window_layers``, else every layer."""
    types = layer_types.read(cfg)
    if types is not None and len(types) == n_layers:
        return tuple(i for i, kind in enumerate(types) if kind == "sliding_attention")
    if not cfg.get("sliding_window") or cfg.get("use_sliding_window") is False:
        return ()
    arch = family(cfg)
    pattern = positive_int(cfg, "sliding_window_pattern") or (arch.sliding_window_pattern if arch else 0)
    if pattern:
        return kv_cache.pattern_layers(n_layers, pattern)
    first = positive_int(cfg, "max_window_layers") if cfg.get("use_sliding_window") else None
    return tuple(range(first or 0, n_layers))


def _kv_dims(cfg: dict[str, Any], kv_heads: int | None) -> int | None:
    latent = positive_int(cfg, "kv_lora_rank") if cfg.get("kv_lora_rank") else None  # 0 or null: not MLA
    if latent:
        # MLA caches the compressed latent plus the shared rotary key, as vLLM and SGLang store it; a sparse-attention
        # indexer (DeepSeek-V3.2, GLM-5) caches one key of index_head_dim per token beside it, as transformers does
        indexer = positive_int(cfg, "index_head_dim") if cfg.get("index_topk") else None
        return latent + (positive_int(cfg, "qk_rope_head_dim") or 0) + (indexer or 0)
    if kv_heads is None:
        return None
    head_dim, _ = head_dims(cfg, None if is_nested_rope_parameters(cfg.get("rope_parameters")) else cfg.get("rope_parameters"))
    return kv_heads * (head_dim + (positive_int(cfg, "v_head_dim") or head_dim))


def _chunked_layers(cfg: dict[str, Any], n_layers: int) -> tuple[tuple[int, ...], int]:
    """(the layers that attend within fixed chunks, the chunk size): ``layer_types`` when listed, else the layers
    that rotate, as transformers builds Llama 4's config (the family's ``chunked_attention_key`` names the size)."""
    arch = family(cfg)
    size = positive_int(cfg, arch.chunked_attention_key) if arch and arch.chunked_attention_key else None
    if arch is None or not size:
        return (), 0
    types = layer_types.read(cfg)
    if types is not None and len(types) == n_layers:
        return tuple(i for i, kind in enumerate(types) if kind == "chunked_attention"), size
    return tuple(arch.rope_layers(cfg, n_layers)), size


def _full_layer_kv_dims(cfg: dict[str, Any], kv_heads: int) -> int:
    """Gemma 4: the full-attention layers' numbers per token, with their own head width and KV heads, as transformers
    builds ``per_layer_config`` (the saved form) from ``global_head_dim`` and ``num_global_key_value_heads`` (the hub's
    form); 0 for models whose layers share one head shape."""
    if not (cfg.get("per_layer_config") or cfg.get("global_head_dim")):
        return 0
    overridden = layer_types.override(cfg, "num_key_value_heads")
    if overridden is not None:
        kv_heads = positive_int({"num_key_value_heads": overridden}, "num_key_value_heads") or kv_heads
    elif not cfg.get("per_layer_config") and cfg.get("attention_k_eq_v"):  # the config class default: False
        kv_heads = positive_int(cfg, "num_global_key_value_heads") or kv_heads
    return 2 * kv_heads * proportional.global_head_dim(cfg)


# layer_types values of layers that keep a fixed-size state instead of a KV cache: linear attention and Mamba (which
# transformers files under linear_attention), LFM2's short convolutions
_STATE_LAYER_TYPES = ("linear_attention", "conv")


def model_dims(config: dict[str, Any]) -> dict[str, Any]:
    """Layer, head and width counts, and the attention layout the KV cache follows."""
    cfg = text_config(config)
    layers = positive_int(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = positive_int(cfg, "num_attention_heads", "n_head", "num_heads")
    kv_heads = positive_int(cfg, "num_key_value_heads", "num_kv_heads", "n_head_kv")
    if cfg.get("multi_query") and not cfg.get("new_decoder_architecture"):  # Falcon-7B: one KV head whatever else it says
        kv_heads = 1
    if kv_heads is None:
        kv_heads = heads
    kv_dims = _kv_dims(cfg, kv_heads)
    layout = None
    shared = cfg.get("num_kv_shared_layers")
    if layers and kv_dims and not shared:  # layers that reuse another layer's cache (Gemma 3n/4 edge models): not counted
        sliding = sliding_layers(cfg, layers)
        window = positive_int(cfg, "sliding_window") if sliding else 0
        if not window:  # chunked attention bounds a layer's cache as a window does
            sliding, window = _chunked_layers(cfg, layers)
        types = layer_types.read(cfg) or []
        linear = tuple(i for i, kind in enumerate(types) if kind in _STATE_LAYER_TYPES)
        full_dims = _full_layer_kv_dims(cfg, kv_heads or 1)
        layout = kv_cache.AttentionLayout(layers, kv_dims, window or 0, sliding if window else (), linear, full_dims)
    return {
        "layers": layers,
        "heads": heads,
        "kv_heads": kv_heads,
        "hidden_size": positive_int(cfg, "hidden_size", "n_embd", "d_model"),
        "attention": layout,
    }
