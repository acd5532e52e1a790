"""Planning an HF config rewrite for YaRN that every reader in use honours (docs/conventions.md §4).

What is written: a ``rope_scaling`` block (``rope_type`` and the older ``type`` "yarn", a float
``factor``, ``original_max_position_embeddings``, non-default betas, ``attention_factor`` 1.0 after a
bake), a top-level ``rope_theta``, a 5.x ``rope_parameters`` block kept consistent when the source has
one, and ``max_position_embeddings = s·L`` so factor == max/original exactly. Every other key keeps its
value and position.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from yarn_cli.core.checkpoint import architectures, hf_config
from yarn_cli.core.extend import existing
from yarn_cli.core.extend.existing import baked_factor as baked_factor  # the engines read a bake record here
from yarn_cli.core.extend.options import ExtendRequest
from yarn_cli.core.rope import lengths
from yarn_cli.core.rope import scalars as rope_scalars
from yarn_cli.core.rope.spec import Scaling
from yarn_cli.errors import InputError, UnsupportedError

# Keys of an existing yarn block that describe the model, not the extension: kept on --replace.
_MODEL_YARN_KEYS = ("beta_fast", "beta_slow", "truncate", "mscale", "mscale_all_dim")
# tokenizer_config.json uses this sentinel for "no limit".
_UNLIMITED = 10**18


@dataclass(frozen=True)
class Change:
    path: str  # dotted JSON path, e.g. "text_config.rope_scaling"
    old: Any
    new: Any

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class ConfigPlan:
    config: dict[str, Any]  # the new config.json content
    changes: tuple[Change, ...]
    scale: float
    original_context: int
    target_context: int
    attention_factor: float  # m the runtime applies (1.0 in the config after a bake)
    bake_factor: float | None  # m multiplied into q/k weights, when baking
    replaced: str | None = None  # description of a scaling that --replace dropped
    notes: tuple[str, ...] = field(default_factory=tuple)
    softmax_mscale: float | None = None  # MLA: the part of m on every q·k dim (through the softmax scale), else None

    def to_json(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "original_context": self.original_context,
            "target_context": self.target_context,
            "attention_factor": self.attention_factor,
            "bake_factor": self.bake_factor,
            "replaced": self.replaced,
            "config_changes": [c.to_json() for c in self.changes],
            "notes": list(self.notes),
            "softmax_mscale": self.softmax_mscale,
        }


def _set(target: dict[str, Any], key: str, value: Any, prefix: str, changes: list[Change]) -> None:
    old = target.get(key)
    if key in target and old == value and type(old) is type(value):
        return
    changes.append(Change(prefix + key, copy.deepcopy(old), copy.deepcopy(value)))
    target[key] = value


def check_attention_factor(value: float | None) -> None:
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= 10):
        raise InputError(f"--attention-factor must be a number between 0 and 10 (the paper's m is 0.1·ln s + 1), not {value!r}")


def _family(config: dict[str, Any]) -> architectures.Architecture | None:
    return hf_config.family(config)


def _family_notes(config: dict[str, Any]) -> list[str]:
    """What the family's entry says a user extending it must be told."""
    cfg = hf_config.text_config(config)
    family = _family(config)
    notes = [family.extend_warning] if family is not None and family.extend_warning else []
    if family is not None and family.m_cancelled_by and cfg.get(family.m_cancelled_by):
        notes.append(
            f"{family.m_cancelled_by} is set: a weightless norm follows RoPE and cancels YaRN's attention factor in "
            "every runtime, so only the frequencies change"
        )
    return notes


YARN_LAYER_CHOICES = ("full", "all")


def _all_layers(config: dict[str, Any], choice: str | None, notes: list[str]) -> bool:
    """--yarn-layers: where a config names a sliding and a full-attention RoPE block and the family's design scales the
    full-attention layers only, ``all`` puts YaRN on the sliding layers too; anything else is refused in one line."""
    if choice is None:
        return False
    if choice not in YARN_LAYER_CHOICES:
        raise InputError(f"--yarn-layers {choice!r}: choose full or all")
    family = _family(config)
    parameters = hf_config.text_config(config).get("rope_parameters")
    both = hf_config.is_nested_rope_parameters(parameters) and {"full_attention", "sliding_attention"} <= set(parameters)
    if family is None or family.yarn_layers != "full_attention" or not both:
        raise UnsupportedError(
            "--yarn-layers chooses between sliding-window and full-attention layers, for models whose config gives each its "
            "own RoPE block and whose design scales the full-attention ones (Gemma 3, OLMo 3); this config has no such choice"
        )
    if choice == "all":
        notes.append(
            "YaRN on the sliding-window layers too (--yarn-layers all): transformers 5.x and vLLM read the config so; llama.cpp "
            "applies YaRN to the full-attention layers only (measured on OLMo 3), so a GGUF converted from this folder runs the "
            "model's own design"
        )
    return choice == "all"


def _yarn_block(
    s: float, base_length: int, existing: Scaling | None, beta_fast: float, beta_slow: float, bake: bool, attention_factor: float | None = None
) -> dict[str, Any]:
    """The rope_scaling block: both type keys, the factor, L, non-default betas, the model's own yarn keys on --replace."""
    block: dict[str, Any] = {"rope_type": "yarn", "type": "yarn", "factor": float(s), "original_max_position_embeddings": base_length}
    if existing is not None and existing.type == "yarn":
        block.update({k: existing.params[k] for k in _MODEL_YARN_KEYS if k in existing.params})
    if beta_fast != rope_scalars.BETA_FAST_DEFAULT:
        block["beta_fast"] = float(beta_fast)
    if beta_slow != rope_scalars.BETA_SLOW_DEFAULT:
        block["beta_slow"] = float(beta_slow)
    if block.get("beta_fast", rope_scalars.BETA_FAST_DEFAULT) <= block.get("beta_slow", rope_scalars.BETA_SLOW_DEFAULT):
        raise InputError("--beta-fast must be greater than --beta-slow (defaults 32 and 1)")
    if bake:
        block["attention_factor"] = 1.0
    elif attention_factor is not None:
        block["attention_factor"] = float(attention_factor)
    return block


def _mla_factors(
    block: dict[str, Any], s: float, family: architectures.Architecture, bake: bool, attention_factor: float | None
) -> tuple[float, float]:
    """(m, M) for an MLA block, completed in place. Its runtimes multiply cos/sin by get_mscale(s, mscale) /
    get_mscale(s, mscale_all_dim) and the softmax scale by M² = get_mscale(s, mscale_all_dim)², so m = ratio·M on the
    rotary dims and M on the others. A chosen m is written as the pair (x, x) with get_mscale(s, x) = m: the ratio is 1
    and every dim carries m, in transformers, vLLM and SGLang alike. No attention_factor goes with it: vLLM takes
    attention_factor 1.0 as "no softmax factor" for this family. Only m = 1 (x = 0) needs attention_factor 1.0, since
    transformers would fall back to the paper's m on cos/sin. After a bake the pair is (0, 0) and attention_factor
    1.0: no runtime adds anything."""
    key = family.softmax_mscale_key
    for name, value in family.yarn_block_keys.items():
        block.setdefault(name, float(value))  # a model's own pair (kept on --replace) wins
    if attention_factor is not None:
        x = rope_scalars.mscale_for(s, float(attention_factor))
        block.update({"mscale": x, key: x, **({"attention_factor": 1.0} if x == 0 else {})})
    softmax = rope_scalars.softmax_mscale(s, block.get(key))
    ratio = rope_scalars.yarn_attention_factor(s, block.get("attention_factor"), block.get("mscale"), block.get(key))
    if bake:
        block.update({"mscale": 0.0, key: 0.0, "attention_factor": 1.0})
    return ratio * softmax, softmax


def _set_rope_parameters(
    cfg: dict[str, Any], block: dict[str, Any], theta: float, prefix: str, changes: list[Change], all_layers: bool = False
) -> None:
    """Keep a 5.x rope_parameters block consistent with rope_scaling (its global block, when nested by layer type;
    the sliding layers' block too with ``all_layers``, each keeping its own base)."""
    rope_parameters = cfg.get("rope_parameters")
    yarn_keys = {k: v for k, v in block.items() if k != "type"}
    if hf_config.is_nested_rope_parameters(rope_parameters):
        for layer_type in ("full_attention", "sliding_attention"):
            old = rope_parameters.get(layer_type)
            if not isinstance(old, dict) or (layer_type == "sliding_attention" and not all_layers and old.get("rope_type") != "yarn"):
                continue
            # transformers 5.x reads each layer type's block here; a sliding block an earlier --yarn-layers all scaled
            # goes back to plain RoPE unless this extension scales it again (the refusal to stack came first)
            scaled = all_layers or layer_type == "full_attention"
            new = {"rope_theta": old.get("rope_theta", theta), **(yarn_keys if scaled else {"rope_type": "default"})}
            new.update({k: v for k, v in old.items() if k == "partial_rotary_factor"})
            _set(rope_parameters, layer_type, new, prefix + "rope_parameters.", changes)
    elif isinstance(rope_parameters, dict):
        new_parameters = {k: v for k, v in rope_parameters.items() if k in ("rope_theta", "partial_rotary_factor")}
        new_parameters.setdefault("rope_theta", theta)
        new_parameters.update(yarn_keys)
        _set(cfg, "rope_parameters", new_parameters, prefix, changes)


def plan_config(config: dict[str, Any], request: ExtendRequest) -> ConfigPlan:
    """The new config.json and its diff. Refuses to stack a scaling on an existing one unless ``replace``,
    and a family whose runtimes would not honour a YaRN config. ``attention_factor``: the m to apply instead of
    the paper's (written verbatim, or baked into q/k with ``bake_temperature``)."""
    r = request
    existing.refuse(config)
    check_attention_factor(r.attention_factor)
    specs, _ = hf_config.read_rope_specs(config, r.original_context)
    spec = specs[0]
    replaced = existing.replaced_dca(config, spec.original_context, spec.max_context, r.replace) or existing.replaced(
        spec.scaling, r.replace, r.original_context
    )
    base_length = spec.original_context
    target, s = lengths.consistent_scale(base_length, lengths.resolve_scale(r.scale, r.to, base_length))
    family = _family(config)
    block, m, softmax = _new_block(family, s, base_length, spec.scaling, r.beta_fast, r.beta_slow, r.bake_temperature, r.attention_factor)

    new_config = copy.deepcopy(config)
    text_key = hf_config.text_config_key(new_config)
    cfg = new_config[text_key] if text_key else new_config
    prefix = f"{text_key}." if text_key else ""
    block.update(_carried_keys(cfg))
    changes: list[Change] = []
    notes = _family_notes(config)
    if hf_config.DCA_KEY in cfg:  # --replace: YaRN takes over the whole extension
        changes.append(Change(prefix + hf_config.DCA_KEY, cfg.pop(hf_config.DCA_KEY), None))
    original_parameters = copy.deepcopy(cfg.get("rope_parameters"))
    _set_rope_parameters(cfg, block, spec.base, prefix, changes, _all_layers(config, r.yarn_layers, notes))
    _set(cfg, "rope_scaling", block, prefix, changes)
    if hf_config.ntk_alpha(hf_config.text_config(config)) is not None:
        _fold_ntk_alpha(cfg, spec.base, prefix, changes, notes)
    for key, value in _legacy_rope_keys(cfg, original_parameters, specs, str(cfg.get("model_type") or "")).items():
        _set(cfg, key, value, prefix, changes)
    _set(cfg, "max_position_embeddings", target, prefix, changes)
    if "head_dim" in cfg and cfg["head_dim"] is None:
        # transformers' yarn reads getattr(config, "head_dim", ...) and fails on an explicit null (Mixtral)
        _set(cfg, "head_dim", spec.head_dim, prefix, changes)
        notes.append(f"head_dim was null; written as {spec.head_dim} (hidden_size / heads) because transformers' YaRN needs it")
    if "original_max_position_embeddings" in cfg:
        # transformers 5.x prefers this top-level key (Phi-3 style) over the block's
        _set(cfg, "original_max_position_embeddings", base_length, prefix, changes)
    bake = r.bake_temperature
    notes.extend(_factor_notes(family, block, m, softmax, bake, r.attention_factor))
    if bake:
        record = {"baked_attention_factor": m, "scale": s, "original_context": base_length}
        if softmax is not None:
            record["softmax_mscale"] = softmax
        _set(new_config, hf_config.BAKE_RECORD_KEY, record, "", changes)
    return ConfigPlan(
        config=new_config,
        changes=tuple(changes),
        scale=s,
        original_context=base_length,
        target_context=target,
        attention_factor=1.0 if bake else m,
        bake_factor=m if bake else None,
        replaced=replaced,
        notes=tuple(notes),
        softmax_mscale=softmax,
    )


def _fold_ntk_alpha(cfg: dict[str, Any], theta: float, prefix: str, changes: list[Change], notes: list[str]) -> None:
    """The yarn block replaces the NTK-alpha one, so its fixed base must become rope_theta, which YaRN scales."""
    _set(cfg, "rope_theta", theta, prefix, changes)
    parameters = cfg.get("rope_parameters")
    if isinstance(parameters, dict) and not hf_config.is_nested_rope_parameters(parameters):
        _set(parameters, "rope_theta", theta, prefix + "rope_parameters.", changes)
    notes.append(f"the NTK-alpha base is now rope_theta {theta:.6g}; YaRN scales the frequencies of that base")


def _new_block(
    family: architectures.Architecture | None,
    s: float,
    base_length: int,
    existing: Scaling | None,
    beta_fast: float,
    beta_slow: float,
    bake: bool,
    attention_factor: float | None,
) -> tuple[dict[str, Any], float, float | None]:
    """(the yarn block, the m the model ends up with, MLA's softmax part of it or None)."""
    if family is not None and family.is_mla:
        block = _yarn_block(s, base_length, existing, beta_fast, beta_slow, False)
        return (block, *_mla_factors(block, s, family, bake, attention_factor))
    block = _yarn_block(s, base_length, existing, beta_fast, beta_slow, bake, attention_factor)
    return block, rope_scalars.yarn_attention_factor(s, attention_factor, block.get("mscale"), block.get("mscale_all_dim")), None


def _factor_notes(
    family: architectures.Architecture | None, block: dict[str, Any], m: float, softmax: float | None, bake: bool, attention_factor: float | None
) -> list[str]:
    """What the user must know about where m goes and which runtimes read it so."""
    notes = []
    if softmax is not None and family is not None:  # only an MLA family has a softmax factor
        notes.append(
            f"{family.family}: multi-head latent attention; m = {m:.6f} reaches every dim of q·k "
            + (
                "through the baked q rows; the config's mscale pair is (0, 0) with attention_factor 1.0, so no runtime adds a factor"
                if bake
                else f"through the softmax scale ({family.softmax_mscale_key} "
                f"{block[family.softmax_mscale_key]:g}), as in DeepSeek's own configs and llama.cpp's deepseek2"
            )
        )
    elif attention_factor is not None and not bake:
        notes.append(
            f"attention_factor {m:.6f} is written verbatim: transformers and vLLM 0.32 apply it as m; SGLang reads only "
            "attn_factor (a multiplier on its own m) and vLLM releases that drop attention_factor apply the paper's m; "
            "verify --engine <yours> --parity-only shows which"
        )
    if bake and family is not None and family.norm_after_rope:
        notes.append(
            f"the q/k norm weights after RoPE carry m = {m:.6f}: every runtime applies it, and no factor in "
            "cos/sin can add to it, since those norms cancel it"
        )
    elif bake and softmax is None:
        notes.append(
            f"q/k weights carry m = {m:.6f}; the config says attention_factor 1.0. transformers honours that; vLLM releases "
            "before the fix for its issue #48621 ignore attention_factor and would apply m again"
        )
    return notes


# Keys of a RoPE block that say how positions map onto the rotary dims, not how they are scaled: YaRN keeps them
# (Qwen-VL's multimodal sections; the Qwen docs' YaRN recipe writes them beside rope_type yarn).
_CARRIED_KEYS = ("mrope_section", "mrope_interleaved")


def _carried_keys(cfg: dict[str, Any]) -> dict[str, Any]:
    carried: dict[str, Any] = {}
    for name in ("rope_parameters", "rope_scaling"):
        block = cfg.get(name)
        if isinstance(block, dict) and not hf_config.is_nested_rope_parameters(block):
            carried.update({k: block[k] for k in _CARRIED_KEYS if k in block and k not in carried})
    return carried


def _legacy_rope_keys(cfg: dict[str, Any], rope_parameters: Any, specs: tuple, model_type: str) -> dict[str, Any]:
    """Top-level keys transformers 4.x (and vLLM, SGLang) read, for values a 5.x config keeps only in
    rope_parameters. 5.x reads them too, and takes rope_scaling over rope_parameters whole, so a rotary
    fraction left only inside rope_parameters would be lost there as well (GPT-NeoX would rotate every dim).
    """
    arch = architectures.for_model_type(model_type)
    names = arch.hf4_keys if arch else {}
    wanted: dict[str, Any] = {}
    if "rope_theta" not in cfg and "rotary_emb_base" not in cfg:
        wanted["rope_theta"] = specs[0].base
    if isinstance(rope_parameters, dict):
        flat = rope_parameters.get("full_attention", rope_parameters) if hf_config.is_nested_rope_parameters(rope_parameters) else rope_parameters
        fraction = flat.get("partial_rotary_factor") if isinstance(flat, dict) else None
        fraction_key = names.get("partial_rotary_factor", "partial_rotary_factor")
        if fraction is not None and fraction_key not in cfg:
            wanted[fraction_key] = fraction
    local_key = names.get("local_rope_theta")
    if local_key and local_key not in cfg and len(specs) > 1:
        wanted[local_key] = specs[1].base
    return wanted


def plan_length_caps(file_name: str, data: dict[str, Any], target: int) -> tuple[dict[str, Any], list[Change]]:
    """tokenizer_config.json / generation_config.json with the length caps that would cut s·L raised:
    (the new content, the changes). ``data`` is left as it is."""
    keys = {"tokenizer_config.json": ("model_max_length",), "generation_config.json": ("max_length",)}.get(file_name, ())
    new_data = copy.deepcopy(data)
    changes: list[Change] = []
    for key in keys:
        value = data.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < target and value < _UNLIMITED:
            _set(new_data, key, target, "", changes)
    return new_data, changes


LENGTH_CAP_FILES = ("tokenizer_config.json", "generation_config.json")


def plan_cap_files(files: Mapping[str, dict[str, Any]], target_context: int) -> tuple[list[Change], dict[str, dict[str, Any]]]:
    """The length caps to raise in ``files`` (name -> parsed JSON of each LENGTH_CAP_FILES present), as
    changes named "file:key", and the new content of each file that changes."""
    changes: list[Change] = []
    contents: dict[str, dict[str, Any]] = {}
    for name, data in files.items():
        planned, file_changes = plan_length_caps(name, data, target_context)
        if file_changes:
            contents[name] = planned
            changes += [Change(f"{name}:{c.path}", c.old, c.new) for c in file_changes]
    return changes, contents
