"""`yarn verify`'s choices as one value, each default declared here once.

The CLI builds a ``VerifyRequest`` from its flags (Typer's defaults read from ``VERIFY``), the Python API takes one or
the keyword arguments that build it, and the use case checks it into the protocol's options before anything loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarn_cli.core.options import DEFAULT_DEVICE, DEFAULT_ENGINE, ENGINE, EngineOptions, with_changes
from yarn_cli.core.verify.plan import DEFAULT_DEPTHS, DEFAULT_PPL_MARGIN
from yarn_cli.core.verify.ruler import THRESHOLD


@dataclass(frozen=True)
class VerifyRequest:
    """Every choice of a verify run, as the user gives it (strings as typed, or values); checked by the use case."""

    engine: str = DEFAULT_ENGINE
    device: str = DEFAULT_DEVICE
    lengths: str | Sequence[int] | None = None  # None: the ladder L/2, L, between, s·L
    max_length: str | int | None = None  # caps the default ladder
    depths: str | Sequence[float] = ",".join(map(str, DEFAULT_DEPTHS))
    samples: int = 1  # prompts per cell (length, and depth where a task has one)
    seed: int = 0
    threshold: float = THRESHOLD  # RULER's bar for the effective length (points)
    text: str | Path | None = None  # None: Python's own pydoc_data.topics
    ppl_windows: int = 3  # windows of the text per perplexity pass: enough for an average and its spread
    min_accuracy: float = 0.8
    ppl_margin: float = DEFAULT_PPL_MARGIN
    original_context: int | None = None
    parity: bool = True
    parity_only: bool = False
    parity_length: str | int | None = None
    tasks: str | Sequence[str] | None = None  # None: passkey, perplexity, niah_single_1
    variants: str | Sequence[str] | None = None  # None: extended, baseline
    compare: str | Sequence[str] | None = None
    lm_eval: str | Sequence[str] | None = None
    lm_eval_args: str | dict[str, Any] | None = None
    max_task_drop: float | None = None
    engine_options: EngineOptions = ENGINE
    endpoint: str | None = None  # an OpenAI-compatible server's /v1 base URL: the declared variant runs there
    served_model: str | None = None  # which of the server's models, where it serves several
    api_key_env: str | None = None  # the environment variable holding the server's key (the key itself is never taken)
    concurrency: int = 8  # requests in flight to the server
    report: str | Path | None = None  # a folder for report.html, written after the run
    card: bool = False  # write (or update) the checkpoint's model card
    base_model: str | None = None  # the card's base_model (a hub id)

    @classmethod
    def build(cls, request: VerifyRequest | None = None, **changes: Any) -> VerifyRequest:
        """``request`` (or the defaults) with keyword changes; ``trials`` is the older name of ``samples``, and
        ``engine_options`` may be a dict. An unknown keyword is one clear line."""
        if "trials" in changes:
            trials = changes.pop("trials")
            if changes.get("samples") is None:
                changes["samples"] = trials
        if changes.get("samples", 1) is None:
            changes.pop("samples")
        if "engine_options" in changes:
            changes["engine_options"] = EngineOptions.of(changes["engine_options"])
        return with_changes(cls, request, changes, "verify")


VERIFY = VerifyRequest()  # the defaults, for the CLI's flags and the protocol's checked options
