"""What every verb's options object shares: built from another one plus keyword changes, unknown names refused."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from yarn_cli.errors import InputError

T = TypeVar("T")

# The verbs that load weights (verify, tune) share these: the engine and the device they run on.
DEFAULT_ENGINE = "native"
DEFAULT_DEVICE = "auto"  # cuda where torch sees a GPU, else cpu


def with_changes(cls: type[T], base: T | None, changes: dict[str, Any], verb: str) -> T:
    """``base`` (or the defaults of ``cls``) with ``changes``; a name the verb does not know is one clear line."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise InputError(f"{verb}: unknown option {', '.join(unknown)}; known: {', '.join(names)}")
    start = base if base is not None else cls()
    return cls(**{**{name: getattr(start, name) for name in names}, **changes})
