"""`inspect`: a checkpoint's RoPE state and the per-pair table, from headers only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarn_cli.core.model import ModelSummary
from yarn_cli.errors import InputError
from yarn_cli.core.lengths import check_original_context
from yarn_cli.usecases.models import Notify, resolve_model


@dataclass(frozen=True)
class InspectReport:
    summary: ModelSummary
    data: dict[str, Any]  # the `inspect --json` object

    def to_json(self) -> dict[str, Any]:
        return self.data


def inspect(
    model: str | Path | None = None,
    *,
    scale: float | None = None,
    original_context: int | None = None,
    method: str = "yarn",
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    revision: str | None = None,
    plot: Path | None = None,
    notify: Notify | None = None,
) -> InspectReport:
    """Read MODEL's headers (never its weights) and report its RoPE state; with ``scale``, the per-pair
    table of ``method`` ("yarn", "linear", "ntk", "dynamic", "by-parts", or "all" to compare)."""
    from yarn_cli.core.analysis import METHODS, YarnOptions, inspect_report
    from yarn_cli.io.checkpoint import summarize

    if method != "all" and method not in METHODS:
        raise InputError(f"--method {method!r} is not one of {', '.join(METHODS)}, all")
    if plot is not None and scale is None:
        raise InputError("--plot needs --scale: the plot compares methods at that scale")
    summary = summarize(resolve_model(model, notify), revision, check_original_context(original_context))
    options = YarnOptions(beta_fast, beta_slow)
    data = inspect_report(summary, scale, method, options)
    if plot is not None:
        from yarn_cli.io.plot import plot_wavelengths

        plot_wavelengths(summary.rope, scale, plot, options)
        data["plot"] = str(plot)
    return InspectReport(summary, data)
