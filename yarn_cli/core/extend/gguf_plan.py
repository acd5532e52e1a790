"""Planning a GGUF extension: which KV records change, with the exact types llama.cpp's loader demands.

llama.cpp reads (docs/conventions.md §6): ``{arch}.rope.scaling.type`` STRING "yarn", ``{arch}.rope.scaling.factor``
FLOAT32 s, ``{arch}.rope.scaling.original_context_length`` UINT32 L, and ``{arch}.context_length`` UINT32,
which Ollama and llama-server use as the default and cap, so it becomes s·L. It applies the attention
factor itself for yarn, so a GGUF never gets the temperature baked in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from yarn_cli.core.checkpoint import architectures
from yarn_cli.core.checkpoint.gguf_meta import EXT_FACTOR_KEY, LONGROPE_TENSORS
from yarn_cli.core.rope import freq_factors, lengths
from yarn_cli.core.rope import scalars as rope_scalars
from yarn_cli.core.rope.freq_factors import FreqFactors
from yarn_cli.errors import AlreadyScaledError, FormatError, InputError, UnsupportedError

STRING, UINT32, FLOAT32 = "STRING", "UINT32", "FLOAT32"


@dataclass(frozen=True)
class KVChange:
    key: str
    type: str  # GGUF value type name to write
    new: Any  # None with action "remove"
    old: Any = None
    old_type: str | None = None
    action: str = "set"  # "set" (replace in place or add) or "remove"

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "action": self.action, "type": self.type, "old": self.old, "old_type": self.old_type, "new": self.new}


@dataclass(frozen=True)
class TensorChange:
    """A small tensor rewritten in place (same type, shape and offset), so every other byte stays as it was."""

    name: str
    values: tuple[float, ...]
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"tensor": self.name, "values": list(self.values), "why": self.why}


@dataclass(frozen=True)
class GGUFPlan:
    architecture: str
    original_context: int
    scale: float
    target_context: int
    attention_factor: float
    changes: tuple[KVChange, ...]
    insert_after: str | None  # new keys go after this record, keeping the rope keys together
    notes: tuple[str, ...] = field(default_factory=tuple)
    tensor_changes: tuple[TensorChange, ...] = ()
    stacked_on: str | None = None  # the frequency factors YaRN is stacked on (--stack), by label

    def to_json(self) -> dict[str, Any]:
        return {
            "tensor_changes": [c.to_json() for c in self.tensor_changes],
            "stacked_on": self.stacked_on,
            "architecture": self.architecture,
            "original_context": self.original_context,
            "scale": self.scale,
            "target_context": self.target_context,
            "attention_factor": self.attention_factor,
            "changes": [c.to_json() for c in self.changes],
            "notes": list(self.notes),
        }


def _existing_scaling(meta: Mapping[str, tuple[str, Any]], prefix: str) -> dict[str, Any]:
    return {key: value for key, (_, value) in meta.items() if key.startswith(prefix + "rope.scaling.") or key == prefix + "rope.scale_linear"}


def _base_length(existing: dict[str, Any], p: str, context: int, original_context: int | None, replace: bool) -> int:
    """The trained length L the extension starts from; an existing scaling is refused unless ``replace``."""
    kind = existing.get(p + "rope.scaling.type")
    scaled = (kind not in (None, "none")) or existing.get(p + "rope.scale_linear") not in (None, 1.0)
    existing_original = existing.get(p + "rope.scaling.original_context_length")
    if scaled and not replace:
        what = ", ".join(f"{k}={v!r}" for k, v in existing.items())
        hint = f" from {existing_original}" if existing_original else ""
        raise AlreadyScaledError(
            f"GGUF already carries a RoPE scaling ({what}); pass --replace to re-extend{hint} instead of stacking, or start from the unextended file"
        )
    if original_context is not None:
        base_length = original_context
    elif scaled and existing_original:
        base_length = int(existing_original)
    elif scaled:
        raise InputError(f"the existing {kind or 'linear'} scaling names no original length: pass --original-context with the trained length")
    else:
        base_length = context
    if base_length <= 0:
        raise InputError(f"--original-context must be positive, got {base_length}")
    return base_length


def _wanted(
    arch: str, existing: dict[str, Any], target: int, s: float, base_length: int, notes: list[str], attention_factor: float | None = None
) -> list[tuple[str, str, Any]]:
    """The records llama.cpp needs, with their types. A chosen m goes into ``rope.scaling.attn_factor``, which
    llama.cpp multiplies into its own m = 0.1·ln s + 1, so it is written as m / (0.1·ln s + 1)."""
    p = f"{arch}."
    wanted: list[tuple[str, str, Any]] = [
        (p + "context_length", UINT32, target),
        (p + "rope.scaling.type", STRING, "yarn"),
        (p + "rope.scaling.factor", FLOAT32, s),
        (p + "rope.scaling.original_context_length", UINT32, base_length),
    ]
    default_multiplier = architectures.gguf_yarn_log_multiplier(arch)
    if default_multiplier is not None:  # DeepSeek2 carries 0.1·mscale_all_dim here (mscale_all_dim 1 by default)
        multiplier = existing.get(p + "rope.scaling.yarn_log_multiplier")
        if multiplier is None:
            multiplier = default_multiplier
            notes.append(f"{p}rope.scaling.yarn_log_multiplier set to {default_multiplier:g} (0.1 x mscale_all_dim 1)")
        wanted.append((p + "rope.scaling.yarn_log_multiplier", FLOAT32, float(multiplier)))
        if attention_factor is not None:
            raise InputError(
                f"--attention-factor cannot be written for {arch}: llama.cpp computes that architecture's attention factor "
                "from rope.scaling.yarn_log_multiplier, not from rope.scaling.attn_factor"
            )
    ext_factor = existing.get(p + EXT_FACTOR_KEY)
    if ext_factor is not None and ext_factor != 1.0:
        wanted.append((p + EXT_FACTOR_KEY, FLOAT32, 1.0))
        notes.append(f"{p}{EXT_FACTOR_KEY} was {ext_factor:g}; written as 1, YaRN's extrapolation mix")
    if attention_factor is not None:
        multiplier = float(attention_factor) / rope_scalars.get_mscale(s)
        wanted.append((p + "rope.scaling.attn_factor", FLOAT32, multiplier))
        notes.append(
            f"{p}rope.scaling.attn_factor = {multiplier:.6f}: llama.cpp multiplies its own m "
            f"{rope_scalars.get_mscale(s):.6f} by it, giving m = {float(attention_factor):.6f}"
        )
    return wanted


def _changes(
    meta: Mapping[str, tuple[str, Any]], existing: dict[str, Any], wanted: list[tuple[str, str, Any]], replace: bool, notes: list[str]
) -> list[KVChange]:
    """Removals of an old scaling's other keys (on --replace), then each wanted record that differs."""
    changes = []
    wanted_keys = {key for key, _, _ in wanted}
    if replace:
        for key in existing:
            if key not in wanted_keys:
                removed_type, removed = meta[key]
                changes.append(KVChange(key, removed_type, None, removed, removed_type, action="remove"))
    for key, type_name, value in wanted:
        old_type, old = meta.get(key, (None, None))
        if old_type == type_name and _same(old, value, type_name):
            continue
        if old_type is not None and old_type != type_name:
            notes.append(f"{key} was {old_type}; written as {type_name}, the type llama.cpp requires")
        changes.append(KVChange(key, type_name, value, old, old_type))
    return changes


def _factors_route(
    factors: FreqFactors | None, existing: dict[str, Any], context: int, original_context: int | None, replace: bool, stack: bool
) -> tuple[int | None, list[TensorChange]]:
    """What becomes of llama.cpp's frequency factors: refused unless ``replace`` (rewritten to ones, YaRN from the
    length they were fitted at) or ``stack`` (kept, YaRN from the file's own context on top). Returns the length
    the extension starts from where the route fixes it, and the tensor rewrites."""
    if replace and stack:
        raise InputError("--replace and --stack exclude each other: replace the frequency factors, or stack YaRN on them")
    if factors is None:
        if stack:
            raise InputError(f"--stack keeps a GGUF's frequency factors ({freq_factors.TENSOR}) under YaRN, and this file has none")
        return None, []
    trained = f" from {factors.original_context}" if factors.recognized else ""
    if not (replace or stack):
        raise AlreadyScaledError(
            f"GGUF carries a {factors.label}{trained} scaling in its {freq_factors.TENSOR} tensor, which llama.cpp applies under "
            f"YaRN too; pass --replace to re-extend{trained} with YaRN alone (the tensor is rewritten to ones), or --stack to "
            f"keep it and add YaRN on top from {context}, exactly as llama.cpp computes the two together"
        )
    if stack:
        if existing:
            raise InputError(
                f"--stack adds YaRN over {freq_factors.TENSOR} where no scaling keys are set yet, and this file "
                f"has {', '.join(existing)}; start from the file without them"
            )
        return original_context or context, []
    if original_context is None and not factors.recognized:
        raise InputError(
            f"{freq_factors.TENSOR} encodes no llama3 scaling this tool recognises, so the trained length is unknown: pass --original-context with it"
        )
    ones = tuple(1.0 for _ in factors.values)
    why = f"{factors.label}{trained} removed: llama.cpp divides θ by these factors under any scaling"
    return original_context or factors.original_context, [TensorChange(freq_factors.TENSOR, ones, why)]


def longrope_route(
    values: tuple[tuple[float, ...], tuple[float, ...]], meta: Mapping[str, tuple[str, Any]], replace: bool, original_context: int | None
) -> tuple[int, tuple[TensorChange, ...]]:
    """A Phi-3-style longrope file: refused unless ``replace``, which rewrites both factor tensors to ones and starts
    YaRN from the trained length. That is exact only where the short factors are all 1 (the model within L is then
    plain RoPE); other short factors are part of the model at short lengths, and no runtime runs YaRN over them."""
    arch = meta.get("general.architecture", (None, ""))[1]
    trained = meta.get(f"{arch}.rope.scaling.original_context_length", (None, None))[1]
    base = original_context or trained
    origin = f" from {base}" if base else ""
    long, short = values
    if not replace:
        raise AlreadyScaledError(
            f"GGUF carries a longrope scaling{origin} in its rope_factors_long/short tensors (Phi-3 style), which llama.cpp "
            f"applies under any scaling; pass --replace to re-extend{origin} with YaRN alone (both tensors are rewritten to ones), "
            "or start from the unextended model"
        )
    if any(abs(v - 1.0) > 1e-6 for v in short):
        raise UnsupportedError(
            f"rope_factors_short is not all 1 ({min(short):g} to {max(short):g}): those factors are part of the model within its "
            f"trained length, so replacing them with YaRN would change short inputs too, and no runtime applies YaRN over them; "
            "keep the file's longrope"
        )
    if not base:
        raise InputError("the longrope factors name no trained length (rope.scaling.original_context_length): pass --original-context")
    why = f"longrope{origin} removed: llama.cpp divides θ by these factors under any scaling"
    return int(base), tuple(TensorChange(name, tuple(1.0 for _ in v), why) for name, v in zip(LONGROPE_TENSORS, (long, short)))


def plan_extension(
    meta: Mapping[str, tuple[str, Any]],
    scale: float | None,
    to: str | None = None,
    original_context: int | None = None,
    replace: bool = False,
    attention_factor: float | None = None,
    factors: FreqFactors | None = None,
    stack: bool = False,
) -> GGUFPlan:
    """The KV changes that make llama.cpp run a GGUF with YaRN at s·L by default.

    ``meta`` maps each key to (type name, value) in file order. An existing scaling is refused
    unless ``replace``; then the new extension starts from its original_context_length. ``factors``: the file's
    ``rope_freqs`` (llama3 as a tensor), refused unless ``replace`` or ``stack`` (see ``_factors_route``).
    """
    arch = meta.get("general.architecture", (None, None))[1]
    if not isinstance(arch, str) or not arch:
        raise FormatError("GGUF has no general.architecture; llama.cpp could not load it either")
    p = f"{arch}."
    context_entry = meta.get(p + "context_length")
    if context_entry is None or not isinstance(context_entry[1], int) or isinstance(context_entry[1], bool):
        raise FormatError(f"GGUF lacks an integer {p}context_length, which llama.cpp requires")
    existing = _existing_scaling(meta, p)
    routed, tensor_changes = _factors_route(factors, existing, context_entry[1], original_context, replace, stack)
    base_length = routed or _base_length(existing, p, context_entry[1], original_context, replace)
    target, s = lengths.consistent_scale(base_length, lengths.resolve_scale(scale, to, base_length))
    if target > lengths.MAX_CONTEXT:
        raise InputError(f"target length {target:,} does not fit llama.cpp's UINT32 context_length")
    family = architectures.for_gguf(arch)
    notes: list[str] = [family.extend_warning] if family is not None and family.extend_warning else []
    if replace and factors is not None and factors.assumed_length and original_context is None:
        notes.append(
            f"{freq_factors.TENSOR} is a plain step that fits several trained lengths; {base_length} is assumed: "
            "pass --original-context if the model card names another"
        )
    if stack and factors is not None:
        notes.append(
            f"YaRN x{s:g} stacked on {freq_factors.TENSOR} ({factors.label}): llama.cpp divides θ by the factors, "
            "then applies YaRN with the ramp of the undivided base"
        )
    wanted = _wanted(arch, existing, target, s, base_length, notes, attention_factor)
    changes = _changes(meta, existing, wanted, replace, notes)
    rope_keys = [key for key in meta if key.startswith(p + "rope.")]
    return GGUFPlan(
        architecture=arch,
        original_context=base_length,
        scale=s,
        target_context=target,
        attention_factor=rope_scalars.get_mscale(s) if attention_factor is None else float(attention_factor),
        changes=tuple(changes),
        insert_after=rope_keys[-1] if rope_keys else p + "context_length",
        notes=tuple(notes),
        tensor_changes=tuple(tensor_changes),
        stacked_on=factors.label if stack and factors is not None else None,
    )


def _same(old: Any, new: Any, type_name: str) -> bool:
    if type_name == FLOAT32:
        import struct

        return struct.pack("<f", float(old)) == struct.pack("<f", float(new))
    return old == new
