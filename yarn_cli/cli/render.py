"""Rich rendering of core results. Every string read from a file goes through ``esc`` first."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from yarn_cli.core.checkpoint import architectures
from yarn_cli.core.rope.spec import LOCAL_ROPE_NAME, ModelSummary, RopeSpec, Scaling
from yarn_cli.core.units import human_bytes  # noqa: F401  (used here and by the command modules)


def esc(value: Any) -> str:
    """Escape anything read from a checkpoint so rich never interprets it as markup."""
    return escape(str(value))


def human_count(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def tokens(n: float) -> str:
    return f"{int(n):,}" if n < 1024 or n % 1024 else f"{int(n):,} ({int(n) // 1024}k)"


def describe_scaling(scaling: Scaling | None) -> str:
    if scaling is None:
        return "none"
    parts = [f"[bold]{esc(scaling.label)}[/]"]
    if scaling.original_context:
        parts.append(f"from {scaling.original_context:,}")
    parts.append(f"({esc(scaling.source)})")
    return " ".join(parts)


def describe_rope(spec: RopeSpec) -> str:
    rotary = "full" if spec.rotary_dim == spec.head_dim else f"partial {spec.partial_rotary_factor:g}"
    base = f"{spec.base:,.0f}" if spec.base == int(spec.base) else f"{spec.base:g}"
    layout = spec.layout.replace("_", "-")
    return f"base {base}, head dim {spec.head_dim}, rotary dim {spec.rotary_dim} ({rotary}, {layout})"


def summary(console: Console, model: ModelSummary, kv_cache: dict[str, Any] | None, target: int | None = None) -> None:
    """``kv_cache``: the report's kv_cache object (computed once, in core); ``target``: the new length, if any."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column()
    grid.add_row("Model", f"{esc(model.source)} [dim]({model.format})[/]")
    kind = model.extra.get("model_type") or model.extra.get("name")
    grid.add_row("Architecture", esc(model.architecture) + (f" [dim]({esc(kind)})[/]" if kind else ""))
    family = architectures.registry().get(model.extra.get("family") or "")
    if family is not None:
        grid.add_row("Family", f"{esc(family.family)}" + (f" [dim]({esc(family.notes)})[/]" if family.notes else ""))
    grid.add_row(
        "Layers / heads",
        f"{model.layers or '?'} layers, {model.attention_heads or '?'} attention heads, "
        f"{model.kv_heads or '?'} KV heads, hidden {model.hidden_size or '?'}",
    )
    stats = model.tensors
    if stats.count:
        dtypes = ", ".join(f"{esc(k)} x{v}" for k, v in sorted(stats.dtypes.items(), key=lambda kv: -kv[1]))
        grid.add_row(
            "Parameters",
            f"{human_count(stats.parameters)} in {stats.count} tensors, {human_bytes(stats.bytes)} across {stats.files} file(s) [dim]({dtypes})[/]",
        )
    elif model.extra.get("weights"):
        grid.add_row("Parameters", "[dim]pickled weights only (not read): " + esc(", ".join(model.extra["weights"])) + "[/]")
    for spec in model.ropes:
        # parentheses, not brackets: rich would take "[global]" for a style tag and print nothing
        label = "RoPE" if len(model.ropes) == 1 else f"RoPE ({'sliding' if spec.name == LOCAL_ROPE_NAME else esc(spec.name)})"
        grid.add_row(label, describe_rope(spec))
        grid.add_row(
            "  trained length",
            f"{tokens(spec.original_context)} [dim](from {esc(spec.original_context_source)})[/], max positions {spec.max_context:,}",
        )
        grid.add_row("  scaling", describe_scaling(spec.scaling))
    if model.extra.get("baked"):
        grid.add_row("Baked", esc(model.extra["baked"]))
    if kv_cache:
        grid.add_row("KV cache", describe_kv_cache(kv_cache, model.rope.original_context, target))
    console.print(grid)
    for warning in model.warnings:
        console.print(f"[yellow]warning:[/] {esc(warning)}")


def describe_kv_cache(kv: dict[str, Any], original: int, target: int | None) -> str:
    line = f"{human_bytes(kv['bytes_per_token_16bit'])}/token fp16/bf16 ({human_bytes(kv['bytes_per_token_8bit'])} 8-bit)"
    if kv["sliding_window_layers"]:
        line += (
            f" on {kv['full_attention_layers']} full-attention layers; {kv['sliding_window_layers']} sliding-window (or chunked) layers "
            f"hold {kv['sliding_window']:,} tokens at most"
        )
    if kv.get("linear_attention_layers"):
        line += (
            f" on {kv['full_attention_layers']} attention layers; {kv['linear_attention_layers']} layers hold a fixed state "
            "(linear attention, Mamba or convolution) and cache no tokens"
        )
    line += f"; at {original:,}: {human_bytes(kv['bytes_at_original_16bit'])}"
    if target and kv.get("bytes_at_target_16bit") is not None:
        line += f"; at {target:,}: {human_bytes(kv['bytes_at_target_16bit'])}"
    return line


def short_number(x: float) -> str:
    """Wavelengths and rotations span 1e-2..1e7: keep them to six characters."""
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.1f}k"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.2f}"


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)


def dimension_table(rows: list[dict[str, Any]], method: str, scale: float) -> Table:
    table = _table(f"{method} x{scale:g}: per pair i, θ = base^(-2i/D), λ = 2π/θ tokens, r = L/λ rotations")
    for name in ("pair", "θ", "λ", "r", "ramp", "region", "θ'", "λ'"):
        table.add_column(name, justify="left" if name == "region" else "right", no_wrap=True)
    colours = {"extrapolate": "green", "blend": "yellow", "interpolate": "magenta"}
    for row in rows:
        table.add_row(
            str(row["pair"]),
            f"{row['inv_freq']:.3e}",
            short_number(row["wavelength"]),
            short_number(row["rotations"]),
            f"{row['ramp']:.3f}",
            f"[{colours[row['region']]}]{row['region']}[/]",
            f"{row['scaled_inv_freq']:.3e}",
            short_number(row["scaled_wavelength"]),
        )
    return table


def comparison_table(rows: list[dict[str, Any]], per_method: dict[str, list[dict[str, Any]]], scale: float) -> Table:
    table = _table(f"x{scale:g}: wavelength λ' (tokens) per pair, by method")
    for name in ("pair", "λ", "r = L/λ", *per_method):
        table.add_column(name, justify="right", no_wrap=True)
    for i, row in enumerate(rows):
        table.add_row(
            str(row["pair"]),
            short_number(row["wavelength"]),
            short_number(row["rotations"]),
            *(short_number(per_method[m][i]["scaled_wavelength"]) for m in per_method),
        )
    return table


def inspect_report(console: Console, model: ModelSummary, report: dict[str, Any], scale: float | None) -> None:
    """`inspect` as tables: the summary, then the per-pair table of the scaling shown."""
    summary(console, model, report["kv_cache"], report.get("target_context"))
    if report["method"] is None:
        return
    console.print()
    if report.get("existing"):
        console.print(f"[bold]Declared {report['method']} scaling[/], as runtimes compute it:")
    if report.get("correction_range"):
        low, high = report["correction_range"]["low"], report["correction_range"]["high"]
        console.print(
            f"YaRN ramp between pairs {low:g} (r = β_fast) and {high:g} (r = β_slow): "
            "below keeps θ, above gets θ/s, linear in the pair index between."
        )
    if report["attention_factor"] is not None:
        m, big = report["attention_factor"], report.get("softmax_mscale")
        if big is None:
            console.print(f"attention factor m = {m:.4f} on cos/sin, so q and k each carry m: logits x m² = {m * m:.4f}")
        else:
            console.print(
                f"attention factor {m:.4f} on cos/sin and M = {big:.4f} in the softmax scale (multi-head latent attention): "
                f"logits x {(m * big) ** 2:.4f} on the rotary dims, x {big * big:.4f} on the others"
            )
    if "methods" in report:
        per_method = {name: [{"scaled_wavelength": w} for w in data["scaled_wavelength"]] for name, data in report["methods"].items()}
        console.print(comparison_table(report["dimensions"], per_method, scale))
        methods = report["methods"]
        if "yarn" in methods and "by-parts" in methods and methods["yarn"]["scaled_wavelength"] == methods["by-parts"]["scaled_wavelength"]:
            console.print(
                "yarn and by-parts share every wavelength: YaRN is NTK-by-parts plus the attention factor m, which scales logits, not frequencies."
            )
    else:
        shown = scale if scale is not None else report["existing_factor"]
        console.print(dimension_table(report["dimensions"], report["method"], shown))
    if report.get("plot"):
        console.print(f"plot written to {esc(report['plot'])}")
