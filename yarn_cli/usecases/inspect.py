"""`inspect`: a checkpoint's RoPE state and the per-pair table, from headers only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarn_cli.core.inspect.options import InspectRequest
from yarn_cli.core.rope.lengths import check_original_context
from yarn_cli.core.rope.spec import ModelSummary
from yarn_cli.errors import InputError
from yarn_cli.usecases.models import Notify, resolve_model


@dataclass(frozen=True)
class InspectReport:
    summary: ModelSummary
    data: dict[str, Any]  # the `inspect --json` object

    def to_json(self) -> dict[str, Any]:
        return self.data


def inspect(model: str | Path | None = None, request: InspectRequest | None = None, *, notify: Notify | None = None, **options: Any) -> InspectReport:
    """Read MODEL's headers (never its weights) and report its RoPE state; with ``scale``, the per-pair
    table of ``method`` ("yarn", "linear", "ntk", "dynamic", "by-parts", or "all" to compare). ``request`` holds every
    choice (``yarn_cli.core.inspect.options.InspectRequest``); keyword arguments change single ones."""
    from yarn_cli.core.rope.analysis import METHODS, YarnOptions, inspect_report
    from yarn_cli.io.checkpoint import summarize

    r = InspectRequest.build(request, **options)
    if r.method != "all" and r.method not in METHODS:
        raise InputError(f"--method {r.method!r} is not one of {', '.join(METHODS)}, all")
    if r.plot is not None and r.scale is None:
        raise InputError("--plot needs --scale: the plot compares methods at that scale")
    if r.plot is not None:
        from yarn_cli.io import packages

        packages.require("--plot", "plot")
    summary = summarize(resolve_model(model, notify), r.revision, check_original_context(r.original_context))
    yarn = YarnOptions(r.beta_fast, r.beta_slow)
    data = inspect_report(summary, r.scale, r.method, yarn)
    if r.plot is not None:
        from yarn_cli.report.plots import plot_wavelengths

        plot_wavelengths(summary.rope, r.scale, r.plot, yarn)
        data["plot"] = str(r.plot)
    return InspectReport(summary, data)
