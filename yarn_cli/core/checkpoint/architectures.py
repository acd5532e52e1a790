"""Architecture knowledge, loaded and validated from the JSON entries in ``yarn_cli/architectures/``.

One entry per family says where its tensors live under one role vocabulary (q, k, qkv, q_norm, ...),
how its rotary dims are laid out, which layers slide a window and which carry YaRN, and what runtimes
get wrong about it. Code asks an entry; it never compares model names. ``_gguf.json`` holds what
llama.cpp decides per GGUF architecture (layout, tensor names, defaults).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from importlib import resources
from typing import Any

from yarn_cli.core.checkpoint import layer_types
from yarn_cli.errors import FormatError, UnsupportedError

_PACKAGE = "yarn_cli.architectures"

# The one tensor-role vocabulary: per layer, then model-wide.
LAYER_ROLES = (
    "attn_norm",
    "q",
    "k",
    "v",
    "o",
    "q_bias",
    "k_bias",
    "v_bias",
    "qkv",
    "qkv_bias",
    "q_norm",
    "k_norm",
    "ffn_norm",
    "gate",
    "up",
    "down",
    "post_attn_norm",  # Gemma's sandwich norms: on the attention's output, and on the MLP's
    "post_ffn_norm",
)
TOP_ROLES = ("embed", "norm", "lm_head")
# What the native engine's forward pass reads (biases and qk-norms when an entry has them).
NATIVE_ROLES = ("attn_norm", "q", "k", "v", "o", "ffn_norm", "gate", "up", "down")
LAYOUTS = ("rotate_half", "interleaved")
QKV_LAYOUTS = ("q_k_v", "per_head_interleaved", "grouped")
NORM_SCOPES = ("head", "all_heads")
MLP_ACTIVATIONS = ("silu", "gelu_tanh")
YARN_LAYERS = ("all", "full_attention", "sliding_attention")


@dataclass(frozen=True)
class ContextWarning:
    """A config whose max_position_embeddings is known to overstate the trained length."""

    max_position_embeddings: int
    message: str


@dataclass(frozen=True)
class FamilyDoc:
    """The family's row in the docs' family table (generated from the registry by scripts/family_table.py)."""

    config: str  # what extend writes: the config / metadata column
    bake: str = ""  # where --bake-temperature puts m, or why it cannot
    models: str = ""  # the released models the entry covers, in the words users know them by
    caveats: str = ""


@dataclass(frozen=True)
class Architecture:
    family: str
    model_types: tuple[str, ...]
    rope_layout: str
    layer_prefixes: tuple[str, ...] = ()
    tensors: Mapping[str, str] = field(default_factory=dict)  # layer role -> name after the layer prefix
    top_tensors: Mapping[str, str] = field(default_factory=dict)  # model-wide role -> full name
    gguf_architectures: tuple[str, ...] = ()
    qkv_layout: str = ""  # fused qkv only: "q_k_v" blocks, "per_head_interleaved" [q_h, k_h, v_h], or "grouped":
    # per KV group [its q heads, k, v] (Falcon's new decoder architecture)
    qkv_layout_flags: Mapping[str, str] = field(default_factory=dict)  # config flag -> the qkv_layout it selects, first set wins
    norm_scope: str = ""  # qk-norm only: "head" (one norm per head) or "all_heads"
    norm_offset: float = 0.0  # 1.0 where the norm multiplies by (1 + w) (Gemma)
    yarn_layers: str = "all"  # "full_attention": sliding-window layers keep their own unscaled RoPE;
    # "sliding_attention": only the sliding-window layers rotate at all (Cohere2: the global layers have no RoPE)
    extend_warning: str = ""  # what a user extending this family must be told (extend prints it as a note)
    m_cancelled_by: str = ""  # config flag that puts a weightless norm after RoPE, cancelling any m (Llama 4's use_qk_norm)
    norm_after_rope: bool = False  # the q/k norms (with weights) follow RoPE: they cancel m in cos/sin, their weights carry it
    norm_flag: str = ""  # config flag that switches the entry's q/k norms on; off, the projections carry m (GLM-4.5)
    sliding_window_pattern: int = 0  # every N-th layer is full attention when the config does not say (0: none)
    gguf_local_rope_base: float = 0.0  # llama.cpp's base for sliding layers when the GGUF does not say
    native_engine: bool = False  # the native verify engine runs this family
    mlp_activation: str = "silu"  # the gated MLP's activation: "silu" (SwiGLU) or "gelu_tanh" (Gemma's GeGLU)
    embed_scale: str = ""  # "sqrt_hidden": embeddings are multiplied by sqrt(hidden_size) (Gemma)
    query_scale_key: str = ""  # config key whose value^-0.5 scales q·k in place of head_dim^-0.5 (Gemma's query_pre_attn_scalar)
    # llama.cpp's value for that key, which a GGUF does not store: block_count (as text, or "*") -> "head_dim" or
    # "hidden_per_head" (Gemma 3: 1/sqrt(hidden/heads) for the 62-layer 27B, 1/sqrt(head_dim) for the others)
    gguf_query_scalar: Mapping[str, str] = field(default_factory=dict)
    rotary_dim_key: str = ""  # config key giving the rotary dims directly (GPT-J's rotary_dim)
    rope_layers_key: str = ""  # config key with one flag per layer, 1 where it rotates (SmolLM3's no_rope_layers)
    rope_layer_types: tuple[str, ...] = ()  # when rope_layers_key lists layer types: those that rotate (Qwen3-Next)
    # config key -> the value with which the model rotates at all; any other value (or none) means no RoPE (Granite 4)
    rope_switch: Mapping[str, str] = field(default_factory=dict)
    no_rope_interval: int = 0  # an empty or missing rope_layers_key list: every N-th layer has no RoPE (Llama 4: 4)
    no_rope_interval_key: str = ""  # the config key that overrides no_rope_interval
    chunked_attention_key: str = ""  # config key: the chunk the rotating layers attend within (Llama 4), bounding their KV
    hf_yarn_unsupported: str = ""  # why a YaRN config.json would not be honoured for this family
    bake_unsupported: str = ""  # why --bake-temperature cannot locate q/k in this family
    hf4_keys: Mapping[str, str] = field(default_factory=dict)  # 4.x top-level names of rope_parameters values
    tensor_alternatives: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # role -> other names it may have
    # MLA (DeepSeek): each q head is [no-RoPE dims | rotary dims] (a bake scales all of q), one rotary key for all heads
    shared_rotary_key_offset_key: str = ""  # config key: rows of the k tensor before its one shared rotary key (kv_lora_rank)
    softmax_mscale_key: str = ""  # yarn key whose get_mscale(s, value)² multiplies the softmax scale on every dim
    yarn_block_keys: Mapping[str, float] = field(default_factory=dict)  # keys extend writes into a new yarn block
    context_warning: ContextWarning | None = None
    notes: str = ""
    doc: FamilyDoc | None = None

    @property
    def attention_kind(self) -> str:
        """ "fused" (one qkv tensor), "qk_norm" (norm weights carry the scale), "mla" or "separate" (q and k)."""
        if self.is_mla:
            return "mla"
        if "qkv" in self.tensors:
            return "fused"
        if "q_norm" in self.tensors:
            return "qk_norm"
        return "separate"

    @property
    def is_mla(self) -> bool:
        """Multi-head latent attention: rotary dims at the end of each q head, one rotary key shared by all heads."""
        return bool(self.shared_rotary_key_offset_key)

    def tensor_names(self, role: str) -> tuple[str, ...]:
        """The names (after the layer prefix) a role's tensor may have, the usual one first."""
        return (self.tensors[role], *self.tensor_alternatives.get(role, ()))

    def rope_layers(self, cfg: Mapping[str, Any], n_layers: int) -> list[int]:
        """The layers that apply RoPE: all, or those the per-layer flag (or layer type) list marks; an empty or missing
        list means every ``no_rope_interval``-th layer has none, as transformers builds Llama 4's config."""
        flags = cfg.get(self.rope_layers_key) if self.rope_layers_key else None
        if self.rope_layers_key == "layer_types":
            flags = layer_types.read(cfg)
        if not flags and self.no_rope_interval:
            interval = cfg.get(self.no_rope_interval_key)
            interval = self.no_rope_interval if interval is None else interval
            if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
                raise FormatError(f"config.json {self.no_rope_interval_key} must be a whole number >= 1, got {interval!r}")
            flags = [int((i + 1) % interval != 0) for i in range(n_layers)]
        if flags is None:
            return list(range(n_layers))
        if not isinstance(flags, list) or len(flags) != n_layers:
            raise UnsupportedError(f"config.json {self.rope_layers_key} must list one flag per layer ({n_layers}), got {flags!r}")
        if self.rope_layer_types:  # a list of layer types (Qwen3-Next: only full_attention layers have RoPE)
            return [i for i, kind in enumerate(flags) if kind in self.rope_layer_types]
        return [i for i, flag in enumerate(flags) if flag]

    def qkv_layout_for(self, cfg: Mapping[str, Any]) -> str:
        """The fused qkv layout of one config: the first of ``qkv_layout_flags`` it sets, else ``qkv_layout``."""
        return next((layout for flag, layout in self.qkv_layout_flags.items() if cfg.get(flag)), self.qkv_layout)

    def attention_kind_for(self, cfg: Mapping[str, Any]) -> str:
        """``attention_kind`` for one config: q/k norms that its ``norm_flag`` switches off leave q and k to carry m."""
        kind = self.attention_kind
        return "separate" if kind == "qk_norm" and self.norm_flag and not cfg.get(self.norm_flag) else kind


_TYPES: dict[str, Any] = {
    "family": str,
    "model_types": list,
    "rope_layout": str,
    "layer_prefixes": list,
    "tensors": dict,
    "top_tensors": dict,
    "gguf_architectures": list,
    "qkv_layout": str,
    "norm_scope": str,
    "norm_offset": (int, float),
    "yarn_layers": str,
    "sliding_window_pattern": int,
    "gguf_local_rope_base": (int, float),
    "native_engine": bool,
    "mlp_activation": str,
    "embed_scale": str,
    "query_scale_key": str,
    "gguf_query_scalar": dict,
    "rotary_dim_key": str,
    "rope_layers_key": str,
    "hf_yarn_unsupported": str,
    "bake_unsupported": str,
    "hf4_keys": dict,
    "context_warning": dict,
    "notes": str,
    "extend_warning": str,
    "m_cancelled_by": str,
    "norm_flag": str,
    "norm_after_rope": bool,
    "tensor_alternatives": dict,
    "shared_rotary_key_offset_key": str,
    "softmax_mscale_key": str,
    "yarn_block_keys": dict,
    "qkv_layout_flags": dict,
    "rope_layer_types": list,
    "rope_switch": dict,
    "chunked_attention_key": str,
    "no_rope_interval": int,
    "no_rope_interval_key": str,
    "doc": dict,
}


def _check(ok: bool, name: str, what: str) -> None:
    if not ok:
        raise FormatError(f"architecture entry {name}: {what}")


def parse_entry(data: Any, name: str) -> Architecture:
    """One entry from its JSON, every key and value checked (a broken entry is a packaging bug)."""
    _check(isinstance(data, dict), name, "must be a JSON object")
    known = {f.name for f in fields(Architecture)}
    _check(not set(data) - known, name, f"unknown keys {sorted(set(data) - known)}")
    for key in ("family", "model_types", "rope_layout"):
        _check(key in data, name, f"needs {key}")
    for key, value in data.items():
        _check(isinstance(value, _TYPES[key]) and not (isinstance(value, bool) and _TYPES[key] is not bool), name, f"{key} has the wrong type")
    _check_tensors(data, name)
    _check_docs(data, name)
    warning, doc, alternatives = data.get("context_warning"), data.get("doc"), data.get("tensor_alternatives", {})
    return Architecture(
        **{
            **data,
            "model_types": tuple(data["model_types"]),
            "layer_prefixes": tuple(data.get("layer_prefixes", ())),
            "gguf_architectures": tuple(data.get("gguf_architectures", ())),
            "norm_offset": float(data.get("norm_offset", 0.0)),
            "gguf_local_rope_base": float(data.get("gguf_local_rope_base", 0.0)),
            "context_warning": ContextWarning(**warning) if warning else None,
            "doc": FamilyDoc(**doc) if doc else None,
            "tensor_alternatives": {role: tuple(names) for role, names in alternatives.items()},
            "rope_layer_types": tuple(data.get("rope_layer_types", ())),
        }
    )


def _check_tensors(data: dict[str, Any], name: str) -> None:
    """The tensor roles, layouts and the keys that only make sense together."""
    tensors, top = data.get("tensors", {}), data.get("top_tensors", {})
    _check(not set(tensors) - set(LAYER_ROLES), name, f"unknown tensor roles {sorted(set(tensors) - set(LAYER_ROLES))}")
    _check(not set(top) - set(TOP_ROLES), name, f"unknown model-wide roles {sorted(set(top) - set(TOP_ROLES))}")
    _check(data["rope_layout"] in LAYOUTS, name, f"rope_layout must be one of {LAYOUTS}")
    _check(data.get("yarn_layers", "all") in YARN_LAYERS, name, f"yarn_layers must be one of {YARN_LAYERS}")
    _check(all("{layer}" in p for p in data.get("layer_prefixes", [])), name, "each layer prefix needs {layer}")
    _check(not tensors or bool(data.get("layer_prefixes")), name, "tensors need layer_prefixes")
    if "qkv" in tensors:
        _check(data.get("qkv_layout") in QKV_LAYOUTS, name, f"a fused qkv needs qkv_layout, one of {QKV_LAYOUTS}")
        _check(set(data.get("qkv_layout_flags", {}).values()) <= set(QKV_LAYOUTS), name, f"qkv_layout_flags select one of {QKV_LAYOUTS}")
    elif "q_norm" in tensors:
        _check(
            data.get("norm_scope") in NORM_SCOPES and "k_norm" in tensors, name, f"qk-norm needs q_norm, k_norm and norm_scope, one of {NORM_SCOPES}"
        )
    _check(
        bool(data.get("bake_unsupported")) or {"q", "k"} <= set(tensors) or "qkv" in tensors,
        name,
        "needs q and k (or qkv) tensors, or a bake_unsupported reason",
    )
    if data.get("native_engine"):
        missing = set(NATIVE_ROLES) - set(tensors) | {"embed", "norm"} - set(top)
        _check(not missing, name, f"native_engine needs roles {sorted(missing)}")
    _check(not data.get("norm_after_rope") or "q_norm" in tensors, name, "norm_after_rope needs q_norm and k_norm")
    _check(data.get("mlp_activation", "silu") in MLP_ACTIVATIONS, name, f"mlp_activation must be one of {MLP_ACTIVATIONS}")
    _check(data.get("embed_scale", "") in ("", "sqrt_hidden"), name, "embed_scale must be sqrt_hidden when set")
    rules = set(data.get("gguf_query_scalar", {}).values())
    _check(rules <= {"head_dim", "hidden_per_head"}, name, "gguf_query_scalar values must be head_dim or hidden_per_head")
    alternatives = data.get("tensor_alternatives", {})
    _check(
        set(alternatives) <= set(tensors) and all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in alternatives.values()),
        name,
        "tensor_alternatives must map roles of tensors to lists of names",
    )
    _check(all(isinstance(v, str) for v in data.get("rope_switch", {}).values()), name, "rope_switch values must be strings")
    mla = [data.get(k) for k in ("shared_rotary_key_offset_key", "softmax_mscale_key")]
    _check(all(mla) or not any(mla), name, "MLA needs shared_rotary_key_offset_key and softmax_mscale_key together")
    _check(
        all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data.get("yarn_block_keys", {}).values()),
        name,
        "yarn_block_keys values must be numbers",
    )


def _check_docs(data: dict[str, Any], name: str) -> None:
    """The texts an entry carries for users: its context warning and its row in the family table."""
    warning = data.get("context_warning")
    if warning is not None:
        _check(set(warning) == {"max_position_embeddings", "message"}, name, "context_warning needs max_position_embeddings and message")
    doc = data.get("doc")
    if doc is not None:
        known_doc = {f.name for f in fields(FamilyDoc)}
        _check(
            "config" in doc and set(doc) <= known_doc and all(isinstance(v, str) for v in doc.values()),
            name,
            f"doc needs config and may have {sorted(known_doc - {'config'})}, all strings",
        )


def _read_json(name: str) -> dict[str, Any]:
    return json.loads(resources.files(_PACKAGE).joinpath(name).read_text(encoding="utf-8"))


@cache
def registry() -> dict[str, Architecture]:
    """Every family entry, keyed by family name; a model type or GGUF architecture belongs to one family."""
    items = sorted(resources.files(_PACKAGE).iterdir(), key=lambda p: p.name)
    return build_registry(
        (item.name, json.loads(item.read_text(encoding="utf-8"))) for item in items if item.name.endswith(".json") and not item.name.startswith("_")
    )


def build_registry(entries: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Architecture]:
    """Parse (file name, entry) pairs into families, refusing a model type or GGUF architecture claimed twice."""
    families: dict[str, Architecture] = {}
    for name, data in entries:
        arch = parse_entry(data, name)
        for other in families.values():
            shared = (set(other.model_types) & set(arch.model_types)) | (set(other.gguf_architectures) & set(arch.gguf_architectures))
            _check(not shared, name, f"{sorted(shared)} already belong to {other.family}")
        families[arch.family] = arch
    return families


def for_model_type(model_type: str) -> Architecture | None:
    for arch in registry().values():
        if model_type in arch.model_types:
            return arch
    return None


def for_gguf(architecture: str) -> Architecture | None:
    for arch in registry().values():
        if architecture in arch.gguf_architectures:
            return arch
    return None


def supported_model_types() -> list[str]:
    return sorted(t for arch in registry().values() if not arch.bake_unsupported for t in arch.model_types)


def native_model_types() -> list[str]:
    return sorted(t for arch in registry().values() if arch.native_engine for t in arch.model_types)


def native_gguf_architectures() -> list[str]:
    return sorted(a for arch in registry().values() if arch.native_engine for a in arch.gguf_architectures)


@cache
def _non_rope_hf() -> dict[str, str]:
    return dict(_read_json("_non_rope.json")["model_types"])


@cache
def gguf_facts() -> dict[str, Any]:
    """llama.cpp's per-architecture decisions (``_gguf.json``)."""
    return _read_json("_gguf.json")


def hf_non_rope_reason(model_type: str) -> str | None:
    """How a transformers model_type encodes positions when it is not RoPE, else None."""
    return _non_rope_hf().get(model_type)


def gguf_non_rope_reason(architecture: str) -> str | None:
    return gguf_facts()["non_rope_architectures"].get(architecture)


def gguf_rope_layout(architecture: str) -> str:
    """llama.cpp's layout for an architecture: NEOX is rotate-half, NORM is interleaved pairs."""
    return "rotate_half" if architecture in gguf_facts()["neox_architectures"] else "interleaved"


def gguf_yarn_log_multiplier(architecture: str) -> float | None:
    """The default rope.scaling.yarn_log_multiplier an architecture's loader needs with YaRN, if any."""
    return gguf_facts()["yarn_log_multiplier"].get(architecture)


def gguf_pre_tokenizer_splits_digits(pre: str) -> bool | None:
    """Whether llama.cpp's pre-tokenizer ``pre`` splits digits one by one; None when we do not know it."""
    return gguf_facts()["pre_tokenizers_split_digits"].get(pre)
