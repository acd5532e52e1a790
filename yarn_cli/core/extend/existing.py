"""What a checkpoint already carries that an extension must not stack on: another scaling, dual chunk attention, a
baked attention factor, or a family whose runtimes ignore a YaRN config. Each is refused in one line with the way out."""

from __future__ import annotations

from typing import Any

from yarn_cli.core.checkpoint import hf_config
from yarn_cli.core.rope.spec import Scaling
from yarn_cli.errors import AlreadyScaledError, InputError, UnsupportedError


def baked_record(config: dict[str, Any]) -> dict[str, Any] | None:
    record = config.get(hf_config.BAKE_RECORD_KEY)
    return record if isinstance(record, dict) and "baked_attention_factor" in record else None


def baked_factor(config: dict[str, Any]) -> float | None:
    """The m a bake multiplied into q/k, or None for a checkpoint without one."""
    record = baked_record(config)
    return float(record["baked_attention_factor"]) if record else None


def refuse(config: dict[str, Any]) -> None:
    """Configs that must not be extended: a family whose runtimes ignore YaRN, or q/k already baked."""
    family = hf_config.family(config)
    if family is not None and family.hf_yarn_unsupported:
        raise UnsupportedError(f"{family.family}: {family.hf_yarn_unsupported}")
    record = baked_record(config)
    if record is not None:
        raise AlreadyScaledError(
            f"config.json records a baked attention factor ({record['baked_attention_factor']}): its q/k weights already "
            "carry YaRN's temperature; extend the original checkpoint instead"
        )


def replaced(existing: Scaling | None, replace: bool, original_context: int | None) -> str | None:
    """What --replace drops (its description), after refusing to stack a scaling on an existing one."""
    if existing is None:
        return None
    if not replace:
        hint = (
            f"--replace re-extends from its original length {existing.original_context}"
            if existing.original_context
            else "--replace with --original-context L re-extends from the trained length L"
        )
        raise AlreadyScaledError(
            f"config.json already declares a {existing.description} RoPE scaling ({existing.source}); stacking a second one "
            f"would be wrong: {hint}, or start from the unextended checkpoint"
        )
    if not existing.original_context and original_context is None:
        raise InputError(f"the existing {existing.type} scaling names no original length: pass --original-context with the trained length")
    return existing.description


def replaced_dca(config: dict[str, Any], trained: int, reach: int, replace: bool) -> str | None:
    """Dual chunk attention is an extension of its own: refused unless ``replace``, which drops the block."""
    dca = hf_config.dual_chunk_attention(hf_config.text_config(config))
    if dca is None:
        return None
    if not replace:
        raise AlreadyScaledError(
            f"config.json declares dual chunk attention ({hf_config.DCA_KEY}), which reaches {reach:,} from the trained "
            f"{trained:,}; YaRN on top would stack two extensions: serve it as it is (vLLM's dual-chunk attention), or pass "
            f"--replace to drop the block and extend from {trained:,} with YaRN alone"
        )
    return f"dual chunk attention (chunk_size {dca.get('chunk_size')!r}, local_size {dca.get('local_size')!r})"
