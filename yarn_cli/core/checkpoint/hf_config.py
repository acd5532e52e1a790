"""Reading the RoPE state out of a Hugging Face config.json (as a dict), both the 4.x and 5.x forms.

transformers 4.x reads top-level ``rope_theta`` and ``rope_scaling``; 5.x writes ``rope_parameters``
(possibly nested per layer type, e.g. Gemma 3's full/sliding attention) and still reads the 4.x form.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, TypeGuard

from yarn_cli.core.checkpoint import architectures, proportional
from yarn_cli.core.rope.spec import KNOWN_SCALING_TYPES, LOCAL_ROPE_NAME, SCALING_ALIASES, RopeSpec, Scaling
from yarn_cli.errors import FormatError, UnsupportedError

DEFAULT_THETA = 10_000.0
TEXT_CONFIG_KEYS = ("text_config", "llm_config", "language_config")
# transformers' labels for per-layer-type RoPE blocks inside rope_parameters.
_LAYER_TYPE_LABELS = ("full_attention", "sliding_attention", "chunked_attention", "linear_attention")


def text_config_key(config: dict[str, Any]) -> str | None:
    """The key under which a multimodal config nests its text model, or None for a flat config."""
    for key in TEXT_CONFIG_KEYS:
        if isinstance(config.get(key), dict):
            return key
    return None


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    key = text_config_key(config)
    return config[key] if key else config


def model_type(config: dict[str, Any]) -> str:
    """The model type that names the family: the text model's (a multimodal config nests it), else the config's own."""
    return str(text_config(config).get("model_type") or config.get("model_type") or "")


def family(config: dict[str, Any]) -> architectures.Architecture | None:
    """A config's registry entry: by its text model's type, else by the outer type (a multimodal wrapper's)."""
    return architectures.for_model_type(model_type(config)) or architectures.for_model_type(str(config.get("model_type") or ""))


def _first(cfg: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = cfg.get(key)
        if value is not None:
            return value
    return None


def positive_int(cfg: dict[str, Any], *keys: str) -> int | None:
    """The first of ``keys`` the config sets, as a whole number > 0 (a FormatError otherwise); None when none is set."""
    value = _first(cfg, *keys)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or value != int(value):
        raise FormatError(f"config.json: {keys[0]} must be a positive integer, got {value!r}")
    return int(value)


def required_int(cfg: dict[str, Any], *keys: str) -> int:
    """positive_int for a key the caller has seen set."""
    value = positive_int(cfg, *keys)
    if value is None:
        raise FormatError(f"config.json: needs {keys[0]}")
    return value


def is_nested_rope_parameters(rope_parameters: Any) -> TypeGuard[dict[str, Any]]:
    """5.x nests rope_parameters by layer type ({"full_attention": {...}, "sliding_attention": {...}})."""
    return isinstance(rope_parameters, dict) and any(key in _LAYER_TYPE_LABELS and isinstance(value, dict) for key, value in rope_parameters.items())


def scaling_type(block: dict[str, Any] | None) -> str:
    """The normalized scaling type of a rope_scaling / rope_parameters block ("default" when none)."""
    if not block:
        return "default"
    raw = block.get("rope_type", block.get("type", "default"))
    name = SCALING_ALIASES.get(str(raw), str(raw))
    return name


def _ntk_alpha_of(block: Any) -> float | None:
    """HunYuan's NTK-alpha: a "dynamic" block with a fixed ``alpha``, which makes the base θ·α^(D/(D-2)) whatever the
    length (transformers' HunYuan reads it so, and llama.cpp's converter writes that base)."""
    if not isinstance(block, dict) or scaling_type(block) != "dynamic" or block.get("alpha") is None:
        return None
    if not _is_number(block["alpha"]) or block["alpha"] <= 0:
        raise FormatError(f"config.json: the dynamic block's alpha must be a positive number, got {block['alpha']!r}")
    return float(block["alpha"])


def ntk_alpha(cfg: dict[str, Any]) -> float | None:
    """The NTK-alpha a config ships (rope_scaling first, as transformers reads it), or None."""
    for name in ("rope_scaling", "rope_parameters"):
        alpha = _ntk_alpha_of(cfg.get(name))
        if alpha is not None:
            return alpha
    return None


def _scaling_from_block(block: dict[str, Any] | None, source: str, cfg: dict[str, Any]) -> Scaling | None:
    kind = scaling_type(block)
    if kind == "default" or block is None or _ntk_alpha_of(block) is not None:
        return None
    if kind not in KNOWN_SCALING_TYPES:
        raise UnsupportedError(
            f"config.json: {source} has rope type {kind!r}, which this tool does not know (known: {', '.join(KNOWN_SCALING_TYPES)})"
        )
    _check_block_types(block, source)
    factor = block.get("factor")
    original = _first(block, "original_max_position_embeddings") or positive_int(cfg, "original_max_position_embeddings")
    return Scaling(
        type=kind,
        factor=float(factor) if factor is not None else None,
        original_context=int(original) if original is not None else None,
        params={k: v for k, v in block.items() if k not in ("rope_theta",)},
        source=source,
    )


# Scaling-block keys that runtimes read as numbers, and the lists of numbers (longrope).
_NUMBER_KEYS = (
    "factor",
    "attention_factor",
    "beta_fast",
    "beta_slow",
    "mscale",
    "mscale_all_dim",
    "low_freq_factor",
    "high_freq_factor",
    "rope_theta",
    "partial_rotary_factor",
)
_NUMBER_LIST_KEYS = ("short_factor", "long_factor")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_block_types(block: dict[str, Any], source: str) -> None:
    """One line naming the key, rather than a crash deep in the math, for a value of the wrong type."""
    for key in _NUMBER_KEYS:
        if block.get(key) is not None and not _is_number(block[key]):
            raise FormatError(f"config.json: {source}.{key} must be a finite number, got {block[key]!r}")
    original = block.get("original_max_position_embeddings")
    if original is not None and (not _is_number(original) or original <= 0 or original != int(original)):
        raise FormatError(f"config.json: {source}.original_max_position_embeddings must be a positive integer, got {original!r}")
    for key in _NUMBER_LIST_KEYS:
        value = block.get(key)
        if value is not None and not (isinstance(value, list) and all(_is_number(v) for v in value)):
            raise FormatError(f"config.json: {source}.{key} must be a list of numbers")
    if block.get("truncate") is not None and not isinstance(block["truncate"], bool):
        raise FormatError(f"config.json: {source}.truncate must be true or false, got {block['truncate']!r}")


def _number(cfg: dict[str, Any], key: str) -> float | None:
    value = cfg.get(key)
    if value is not None and not _is_number(value):
        raise FormatError(f"config.json: {key} must be a finite number, got {value!r}")
    return value


def _theta(cfg: dict[str, Any], flat_parameters: dict[str, Any] | None) -> float:
    value = _first(flat_parameters or {}, "rope_theta")
    if value is None:
        value = _first(cfg, "rope_theta", "rotary_emb_base")
    if value is None:
        return DEFAULT_THETA
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 1:
        raise FormatError(f"config.json: rope_theta must be a number > 1, got {value!r}")
    return float(value)


def head_dims(cfg: dict[str, Any], parameters: dict[str, Any] | None = None) -> tuple[int, int]:
    """(head_dim, rotary_dim) as transformers derives them.

    head_dim is ``config.head_dim`` when set, else hidden_size // num_attention_heads; the rotary
    dim is int(head_dim * partial_rotary_factor). DeepSeek's MLA rotates only ``qk_rope_head_dim``.
    """
    hidden = positive_int(cfg, "hidden_size", "n_embd", "d_model")
    heads = positive_int(cfg, "num_attention_heads", "n_head", "num_heads")
    if cfg.get("qk_rope_head_dim"):
        rope_dim = required_int(cfg, "qk_rope_head_dim")
        nope_dim = positive_int(cfg, "qk_nope_head_dim") or 0
        return rope_dim + nope_dim, rope_dim
    head_dim = positive_int(cfg, "head_dim")
    if head_dim is None:
        if not hidden or not heads:
            raise FormatError("config.json: needs head_dim, or hidden_size and num_attention_heads, to size RoPE")
        head_dim = hidden // heads
    arch = family(cfg)
    if arch is not None and arch.rotary_dim_key and cfg.get(arch.rotary_dim_key):
        return head_dim, required_int(cfg, arch.rotary_dim_key)
    factor = _first(parameters or {}, "partial_rotary_factor")
    if factor is None:
        factor = _first(cfg, "partial_rotary_factor", "rotary_pct")
    if factor is not None and not _is_number(factor):
        raise FormatError(f"config.json: partial_rotary_factor must be a number, got {factor!r}")
    factor = 1.0 if factor is None else float(factor)
    if not 0 < factor <= 1:
        raise FormatError(f"config.json: partial_rotary_factor must be in (0, 1], got {factor}")
    return head_dim, int(head_dim * factor)


def _blocks_agree(a: Scaling | None, b: Scaling | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.type == b.type and (a.factor or 0) == (b.factor or 0) and (a.original_context or 0) == (b.original_context or 0)


def _refuse_non_rope(cfg: dict[str, Any], kind: str) -> None:
    reason = architectures.hf_non_rope_reason(kind)
    if reason is None and cfg.get("alibi"):
        reason = "ALiBi attention biases"
    if reason is None and cfg.get("position_embedding_type") == "absolute":
        reason = "learned absolute position embeddings"
    if reason is None and cfg.get("position_embedding_type") == "nope":
        reason = "no position encoding (position_embedding_type 'nope')"
    arch = architectures.for_model_type(kind) if kind else None
    for key, value in (arch.rope_switch if arch and reason is None else {}).items():
        if cfg.get(key) != value:  # transformers builds no rotary module then
            reason = f"no position encoding: {key} is {cfg.get(key)!r}, and the model rotates only with {value!r}"
    if reason:
        raise UnsupportedError(f"config.json: model type {kind!r} does not use RoPE ({reason}); YaRN applies only to RoPE models")


def _declared_scaling(cfg: dict[str, Any], warnings: list[str]) -> tuple[Scaling | None, dict[str, Any] | None, bool]:
    """(the scaling the global layers run, their rope_parameters block, whether rope_parameters is nested)."""
    rope_scaling, rope_parameters = cfg.get("rope_scaling"), cfg.get("rope_parameters")
    for name, block in (("rope_scaling", rope_scaling), ("rope_parameters", rope_parameters)):
        if block is not None and not isinstance(block, dict):
            raise FormatError(f"config.json: {name} must be an object, got {type(block).__name__}")
    from_scaling = _scaling_from_block(rope_scaling, "rope_scaling", cfg)
    if is_nested_rope_parameters(rope_parameters):
        block = rope_parameters.get("full_attention") or next(iter(rope_parameters.values()))
        return _scaling_from_block(block, "rope_parameters.full_attention", cfg) or from_scaling, block, True
    from_parameters = _scaling_from_block(rope_parameters, "rope_parameters", cfg)
    if rope_scaling is not None and rope_parameters is not None and not _blocks_agree(from_scaling, from_parameters):
        warnings.append("rope_scaling and rope_parameters disagree; transformers 5.x silently uses rope_scaling, other readers may use either")
    if from_parameters is not None and rope_scaling is None:
        warnings.append(
            f"the {from_parameters.type} scaling is only in the 5.x rope_parameters block: transformers 4.x "
            "and runtimes that read rope_scaling see no scaling" + ("" if "rope_theta" in cfg else " and rope_theta 10000")
        )
    return from_scaling or from_parameters, rope_parameters, False


BAKE_RECORD_KEY = "yarn_cli"  # top-level config key: transformers and vLLM keep unknown keys as attributes


def _baked_softmax_mscale(config: dict[str, Any]) -> float | None:
    """MLA: the part M of a baked m that went into every q row (the record's ``softmax_mscale``); None unbaked."""
    record = config.get(BAKE_RECORD_KEY)
    value = record.get("softmax_mscale") if isinstance(record, dict) and "baked_attention_factor" in record else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise FormatError(f"config.json: {BAKE_RECORD_KEY}.softmax_mscale must be a positive number, got {value!r}")
    return float(value)


DCA_KEY = "dual_chunk_attention_config"


def dual_chunk_attention(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """Qwen2.5-1M's dual chunk attention block, which reaches max_position_embeddings from a shorter trained length."""
    block = cfg.get(DCA_KEY)
    if block is not None and not isinstance(block, dict):
        raise FormatError(f"config.json: {DCA_KEY} must be an object, got {type(block).__name__}")
    return block or None


def _trained_length(cfg: dict[str, Any], scaling: Scaling | None, max_context: int | None, override: int | None) -> tuple[int, str]:
    """The original (trained) length L and the key it came from."""
    if override is not None:
        return override, "--original-context"
    if scaling is not None and scaling.original_context:
        return scaling.original_context, f"{scaling.source}.original_max_position_embeddings"
    dca = dual_chunk_attention(cfg)
    if dca is not None and dca.get("original_max_position_embeddings") is not None:
        return required_int(dca, "original_max_position_embeddings"), f"{DCA_KEY}.original_max_position_embeddings"
    if cfg.get("original_max_position_embeddings"):
        return required_int(cfg, "original_max_position_embeddings"), "original_max_position_embeddings"
    if max_context:
        return max_context, "max_position_embeddings"
    raise FormatError("config.json: no max_position_embeddings; pass --original-context with the trained length")


def read_rope_specs(config: dict[str, Any], original_context_override: int | None = None) -> tuple[tuple[RopeSpec, ...], list[str]]:
    """The RoPE families of a config (one, or Gemma 3's global + sliding) and warnings about them."""
    cfg = text_config(config)
    kind = model_type(config)
    _refuse_non_rope(cfg, kind)
    arch = family(config)
    warnings: list[str] = []
    scaling, parameters, nested = _declared_scaling(cfg, warnings)
    theta = _theta(cfg, parameters)
    head_dim, rotary_dim = head_dims(cfg, parameters)
    if scaling is not None and scaling.type == "proportional" and parameters is not None:
        theta, head_dim, rotary_dim, scaling = proportional.read(cfg, parameters, theta, warnings)
    alpha = ntk_alpha(cfg)
    if alpha is not None:
        theta = theta * alpha ** (head_dim / (head_dim - 2))
        warnings.append(
            f'the rope block labelled "dynamic" carries alpha {alpha:g}: a fixed NTK base, read as '
            f"θ = {theta:.6g} at every length (transformers' HunYuan and llama.cpp's converter do the same); "
            "extend writes that base as rope_theta"
        )
    if rotary_dim < 2 or rotary_dim % 2:
        raise FormatError(f"config.json: rotary dimension {rotary_dim} (head_dim {head_dim}) must be even")
    max_context = positive_int(cfg, "max_position_embeddings", "n_positions", "seq_length", "max_seq_len")
    original, source = _trained_length(cfg, scaling, max_context, original_context_override)
    max_context = max_context or original
    if scaling is not None:
        warnings.extend(_scaling_warnings(scaling, max_context))
    dca = dual_chunk_attention(cfg)
    if dca is not None:
        settings = ", ".join(f"{key} {value:,}" if isinstance(value, int) else f"{key} {value!r}" for key, value in dca.items())
        warnings.append(
            f"dual chunk attention ({DCA_KEY}: {settings}) reaches {max_context:,} positions from the trained {original:,}: "
            "vLLM runs it with its dual-chunk attention backend; transformers has none and runs plain RoPE"
        )
    hint = arch.context_warning if arch else None
    if hint and max_context == hint.max_position_embeddings and scaling is None and original_context_override is None:
        warnings.append(hint.message)
    if kind and arch is None and not (cfg.get("rope_scaling") or cfg.get("rope_parameters") or "rope_theta" in cfg or "rotary_emb_base" in cfg):
        warnings.append(f"model type {kind!r} names no RoPE keys; assuming RoPE with base 10000 as transformers does")
    # DeepSeek-V3's rope_interleave says how its checkpoint lays out the rotary dims; without it the family decides
    interleaved = cfg["rope_interleave"] if "rope_interleave" in cfg else (arch is not None and arch.rope_layout == "interleaved")
    spec = RopeSpec(
        base=theta,
        head_dim=head_dim,
        rotary_dim=rotary_dim,
        original_context=original,
        original_context_source=source,
        max_context=max_context,
        scaling=scaling,
        layout="interleaved" if interleaved else "rotate_half",
        name="global",
        softmax_mscale_key=arch.softmax_mscale_key if arch else "",
        baked_softmax_mscale=_baked_softmax_mscale(config) if arch and arch.softmax_mscale_key else None,
    )
    local = _local_rope(cfg, cfg.get("rope_parameters") if nested else None, spec)
    return ((spec, local) if local is not None else (spec,)), warnings


def _local_rope(cfg: dict[str, Any], nested_parameters: dict[str, Any] | None, global_spec: RopeSpec) -> RopeSpec | None:
    """Gemma 3's sliding-window layers use their own, unscaled base."""
    block = (nested_parameters or {}).get("sliding_attention")
    theta = _first(block or {}, "rope_theta") or _number(cfg, "rope_local_base_freq")
    if theta is None:
        return None
    if not _is_number(theta) or theta <= 1:
        raise FormatError(f"config.json: the sliding-window RoPE base must be a number > 1, got {theta!r}")
    local_scaling = _scaling_from_block(block, "rope_parameters.sliding_attention", cfg) if block else None
    local = replace(global_spec, base=float(theta), scaling=local_scaling, name=LOCAL_ROPE_NAME)
    if global_spec.head_dim != head_dims(cfg)[0] and block is not None:  # Gemma 4: the global layers' head is wider
        head_dim, rotary_dim = head_dims(cfg, block)
        local = replace(local, head_dim=head_dim, rotary_dim=rotary_dim)
    return local


def _scaling_warnings(scaling: Scaling, max_context: int) -> list[str]:
    warnings = []
    if scaling.type in ("yarn", "llama3", "longrope") and not scaling.original_context:
        warnings.append(
            f"{scaling.source} ({scaling.type}) has no original_max_position_embeddings: transformers takes "
            f"max_position_embeddings ({max_context}) as the trained length"
        )
    if scaling.type in ("yarn", "linear", "dynamic", "llama3") and scaling.factor is None:
        warnings.append(f"{scaling.source} ({scaling.type}) has no factor")
    if scaling.type == "yarn" and scaling.factor and scaling.original_context:
        implied = max_context / scaling.original_context
        if not math.isclose(implied, scaling.factor, rel_tol=1e-6):
            warnings.append(
                f"yarn factor {scaling.factor:g} != max_position_embeddings/original = "
                f"{max_context}/{scaling.original_context} = {implied:g}; transformers 4.51-4.55 and some "
                "runtimes derive the factor from that ratio"
            )
    return warnings


def architecture_name(config: dict[str, Any]) -> str:
    names = config.get("architectures")
    if isinstance(names, list) and names and isinstance(names[0], str):
        return names[0]
    return model_type(config) or "unknown"
