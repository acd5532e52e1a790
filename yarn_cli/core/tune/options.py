"""`yarn tune`'s choices as one value, each default declared here once (the CLI's flags read them from ``TUNE``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarn_cli.core.options import DEFAULT_DEVICE, DEFAULT_ENGINE, ENGINE, EngineOptions, with_changes
from yarn_cli.core.rope.scalars import BETA_FAST_DEFAULT, BETA_SLOW_DEFAULT
from yarn_cli.core.tune.plan import DEFAULT_OBJECTIVE


@dataclass(frozen=True)
class TuneRequest:
    """Every choice of a tune run, as the user gives it; checked by the use case before anything loads."""

    scale: float | None = None  # exactly one of scale and to (or fit)
    to: str | None = None
    engine: str = DEFAULT_ENGINE
    device: str = DEFAULT_DEVICE
    text: str | Path | None = None  # None: Python's own pydoc_data.topics
    objective: str = DEFAULT_OBJECTIVE
    max_short_loss: float | None = None  # implies short-guard
    short: int | None = None  # None: L/2
    docs: int = 1
    passkeys: int = 1
    refinements: int = 3
    fit: bool = False
    fit_scales: str = "2,4,8"
    search_betas: bool = False
    plot: str | Path | None = None
    budget: float | None = None  # minutes
    beta_fast: float = BETA_FAST_DEFAULT
    beta_slow: float = BETA_SLOW_DEFAULT
    bake_temperature: bool = False
    original_context: int | None = None
    force: bool = False
    engine_options: EngineOptions = ENGINE  # vLLM's settings, as verify takes them

    @classmethod
    def build(cls, request: TuneRequest | None = None, **changes: Any) -> TuneRequest:
        if "engine_options" in changes:
            changes["engine_options"] = EngineOptions.of(changes["engine_options"])
        return with_changes(cls, request, changes, "tune")


TUNE = TuneRequest()
