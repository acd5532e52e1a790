"""The report's pictures (matplotlib, Agg): a heatmap per task and variant (length across, depth down, mean
score as colour on the red -> amber -> green scale of the needle-in-a-haystack charts), the difference of two
variants, and the perplexity curves. Each function draws exactly the numbers it is given and returns them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yarn_cli.core.verify import heatmap
from yarn_cli.report.plots import pyplot

COLOURS = ("#F0496E", "#EBB839", "#0CD79F")  # gkamradt/LLMTest_NeedleInAHaystack's scale: 0 red, 50 amber, 100 green
# A difference has a sign, not a grade: no change is a neutral grey, worse red, better green (amber would say "half")
DIFFERENCE_COLOURS = ("#F0496E", "#E6E6E6", "#0CD79F")
SIZE = (7.2, 4.0)  # inches at DPI: every PNG is 720 x 400 pixels
DPI = 100


def _colour_map(diverging: bool):
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("yarn_diff" if diverging else "yarn_niah", DIFFERENCE_COLOURS if diverging else COLOURS)


def cell_font_size(columns: int, rows: int) -> float:
    """Cell values big enough to read in a PNG of fixed size: large in a one-cell map, never below 7 points."""
    return max(7.0, min(22.0, 60.0 / max(columns, rows, 1) ** 0.8))


def draw_heatmap(values: dict[str, dict[str, float]], title: str, path: Path, diverging: bool = False) -> list[list[float | None]]:
    """One task and variant (or a difference, from -100 to 100) as a PNG; returns the grid drawn."""
    import numpy

    plt = pyplot()
    lengths, depths, rows = heatmap.grid(values)
    data = numpy.array([[numpy.nan if x is None else x for x in row] for row in rows], dtype=float)
    fig, ax = plt.subplots(figsize=SIZE, dpi=DPI)
    try:
        limit = (-100, 100) if diverging else (0, 100)
        image = ax.imshow(data, cmap=_colour_map(diverging), vmin=limit[0], vmax=limit[1], aspect="auto")
        size = cell_font_size(len(lengths), len(depths))
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                if value is not None:
                    shown = (f"{value:+.0f}" if round(value) else "0") if diverging else f"{value:.0f}"
                    ax.text(j, i, shown, ha="center", va="center", fontsize=size)
        ax.set_xticks(range(len(lengths)), [f"{n:,}" for n in lengths], rotation=30, fontsize=8)
        ax.set_yticks(range(len(depths)), [d if d == heatmap.NO_DEPTH else f"{float(d):.0%}" for d in depths], fontsize=8)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("needle depth")
        ax.set_title(title, fontsize=10)
        fig.colorbar(image, ax=ax, label="extended - baseline (points)" if diverging else "score (points)")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return rows


def curve_caption(documents: int, overlapping: bool) -> str:
    """What a perplexity curve averages, and what its band is (or why it has none)."""
    if documents <= 1:
        return "one window of the text: no spread (--ppl-windows 3 or more for an average and its spread)"
    shared = "; the windows overlap, so the band understates the spread between documents" if overlapping else ""
    return f"pooled over {documents} windows of the text; band: the lowest to the highest window{shared}"


def draw_curves(
    curves: dict[str, dict[str, float]],
    labels: dict[str, str],
    original: int,
    method: str,
    title: str,
    path: Path,
    spread: dict[str, dict[str, list[float]]] | None = None,
    caption: str = "",
) -> dict[str, dict[str, float]]:
    """Perplexity against length, one line per variant with its spread as a band, the trained length marked;
    returns what it drew."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=SIZE, dpi=DPI)
    try:
        for variant, values in curves.items():
            if values:
                lengths = sorted(int(n) for n in values)
                (line,) = ax.plot(lengths, [values[str(n)] for n in lengths], marker="o", markersize=3, label=labels.get(variant, variant))
                band = (spread or {}).get(variant) or {}
                banded = [n for n in lengths if str(n) in band]
                if banded:
                    low, high = [band[str(n)][0] for n in banded], [band[str(n)][1] for n in banded]
                    ax.fill_between(banded, low, high, color=line.get_color(), alpha=0.18, linewidth=0)
        ax.axvline(original, color="grey", linestyle="--", linewidth=1, label=f"trained length {original:,}")
        ax.set_xlabel("context length (tokens)" + (f"\n{caption}" if caption else ""), fontsize=9)
        ax.set_ylabel("perplexity")
        ax.set_title(f"{title}: {method}", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return curves


def pictures(report: dict[str, Any], folder: Path) -> list[dict[str, str]]:
    """Every picture of one verify report, written into ``folder``: [{file, title, kind}] in reading order."""
    written = []
    names = [v["name"] for v in report["variants"]]
    for task, by_variant in report.get("heatmaps", {}).items():
        for variant in names:
            if variant in by_variant:
                file = f"heatmap-{task}-{variant}.png"
                draw_heatmap(by_variant[variant], f"{task}: {variant}", folder / file)
                written.append({"file": file, "title": f"{task}: {variant}", "kind": "heatmap"})
        if len(names) > 1 and names[0] in by_variant and names[1] in by_variant:
            file = f"heatmap-{task}-difference.png"
            title = f"{task}: {names[0]} - {names[1]}"
            draw_heatmap(heatmap.difference(by_variant[names[0]], by_variant[names[1]]), title, folder / file, diverging=True)
            written.append({"file": file, "title": title, "kind": "difference"})
    curve = report.get("perplexity_curve")
    if curve and curve["lengths"]:
        labels = {v["name"]: f"{v['name']} ({v['label']})" for v in report["variants"]}
        for method in ("last_tokens", "all_tokens"):
            file = f"perplexity-{method.replace('_', '-')}.png"
            caption = curve_caption(curve.get("documents", 1), curve.get("overlapping", False))
            spread = curve.get("spread", {}).get(method)  # reports before schema 4 have none
            draw_curves(curve[method], labels, report["original_context"], curve["labels"][method], "perplexity", folder / file, spread, caption)
            written.append({"file": file, "title": f"perplexity: {curve['labels'][method]}", "kind": "curve"})
    return written
