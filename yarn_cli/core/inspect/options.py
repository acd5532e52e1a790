"""`yarn inspect`'s choices as one value, each default declared here once (the CLI's flags read them from ``INSPECT``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarn_cli.core.options import with_changes
from yarn_cli.core.rope.scalars import BETA_FAST_DEFAULT, BETA_SLOW_DEFAULT


@dataclass(frozen=True)
class InspectRequest:
    scale: float | None = None  # the per-pair table of a fresh extension by this factor
    original_context: int | None = None
    method: str = "yarn"  # yarn, linear, ntk, dynamic, by-parts, or all
    beta_fast: float = BETA_FAST_DEFAULT
    beta_slow: float = BETA_SLOW_DEFAULT
    revision: str | None = None  # hub revision
    plot: Path | None = None

    @classmethod
    def build(cls, request: InspectRequest | None = None, **changes: Any) -> InspectRequest:
        return with_changes(cls, request, changes, "inspect")


INSPECT = InspectRequest()
