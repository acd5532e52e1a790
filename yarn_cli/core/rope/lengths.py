"""Scale and target-length arguments: `--scale S` or `--to LENGTH` (e.g. 128k), resolved against L."""

from __future__ import annotations

import math
import re

from yarn_cli.errors import InputError

_LENGTH = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_length(text: str, option: str = "--to") -> int:
    """ "32768" -> 32768, "128k" -> 131072, "1m" -> 1048576 (k = 1024 tokens, as model cards use); ``option``
    names the flag in the error."""
    match = _LENGTH.match(str(text))
    if not match:
        raise InputError(f"{option} {text!r} is not a length: use a token count such as 32768, 128k or 1m")
    number, unit = float(match[1]), match[2].lower()
    value = number * {"": 1, "k": 1024, "m": 1024 * 1024}[unit]
    if value != int(value) or value <= 0:
        raise InputError(f"{option} {text!r} must be a whole, positive number of tokens")
    return int(value)


# GGUF stores context lengths as UINT32, and no runtime indexes positions beyond it.
MAX_CONTEXT = 2**32 - 1


def check_scale(scale: float | None, original_context: int, flag: str = "--scale") -> float:
    """The one rule every verb applies to a scale: a finite number > 1 whose s·L fits MAX_CONTEXT."""
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale) or not scale > 1:
        raise InputError(f"{flag} must be a finite number > 1 (YaRN extends, it does not shorten), got {scale}")
    if scale * original_context > MAX_CONTEXT:
        raise InputError(
            f"{flag} {scale:g} x trained length {original_context:,} = {scale * original_context:,.0f} tokens, beyond "
            f"the {MAX_CONTEXT:,} a context length can hold (GGUF stores it as u32); choose a smaller scale"
        )
    return float(scale)


def resolve_scale(scale: float | None, to: str | None, original_context: int) -> float:
    """The factor s from exactly one of --scale / --to; s must exceed 1."""
    if (scale is None) == (to is None):
        raise InputError("give exactly one of --scale S or --to LENGTH (e.g. --scale 4 or --to 128k)")
    if to is not None:
        target = parse_length(to)
        if target > MAX_CONTEXT:
            raise InputError(f"--to {to} ({target:,} tokens) is beyond the {MAX_CONTEXT:,} a context length can hold")
        if target <= original_context:
            raise InputError(f"--to {to} ({target:,} tokens) is not longer than the trained length {original_context:,}: nothing to extend")
        return target / original_context
    return check_scale(scale, original_context)


def target_length(original_context: int, scale: float) -> int:
    """s·L as the integer runtimes store (round, so 4096 x 2.5 is 10240 exactly)."""
    return int(round(original_context * scale))


def consistent_scale(original_context: int, scale: float) -> tuple[int, float]:
    """(s·L rounded to a token count, the factor that is exactly that count / L).

    Runtimes derive the factor from max_position_embeddings / original (transformers warns when
    the two disagree, 4.51-4.55 silently used the ratio), so the factor written is the ratio.
    """
    target = target_length(original_context, scale)
    return target, target / original_context


def check_original_context(value: int | None) -> int | None:
    """--original-context, when given, is a positive number of tokens."""
    if value is not None and value <= 0:
        raise InputError(f"--original-context must be a positive number of tokens, got {value}")
    return value
