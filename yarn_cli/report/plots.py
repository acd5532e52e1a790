"""--plot: wavelength per pair for the original RoPE and each method (matplotlib, an optional extra)."""

from __future__ import annotations

from pathlib import Path

from yarn_cli.core.rope import frequencies as rope
from yarn_cli.core.rope.analysis import YarnOptions, method_frequencies
from yarn_cli.core.rope.spec import RopeSpec
from yarn_cli.errors import InputError, OutputError


def plot_wavelengths(spec: RopeSpec, scale: float, path: Path, options: YarnOptions) -> None:
    plt = pyplot()
    original = rope.wavelengths(rope.inv_freq(spec.base, spec.rotary_dim))
    pairs = range(len(original))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    ax.plot(pairs, original, label="original", color="black", linewidth=2)
    for method, label in (("linear", "PI (linear)"), ("ntk", "NTK-aware"), ("yarn", "YaRN")):
        result = method_frequencies(spec, method, scale, options)
        ax.plot(pairs, rope.wavelengths(result.inv_freq), label=label)
    ax.axhline(spec.original_context, color="grey", linestyle="--", linewidth=1, label=f"L = {spec.original_context:,}")
    ax.axhline(spec.original_context * scale, color="grey", linestyle=":", linewidth=1, label=f"s·L = {int(spec.original_context * scale):,}")
    ax.set_yscale("log")
    ax.set_xlabel("pair i")
    ax.set_ylabel("wavelength λ (tokens)")
    ax.set_title(f"RoPE wavelengths, base {spec.base:g}, D={spec.rotary_dim}, x{scale:g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the plot ({exc.strerror or exc})") from exc
    finally:
        plt.close(fig)


def plot_tune(report: dict, path: Path, force: bool = False) -> Path:
    """`tune --plot`: perplexity beyond L against m for each s (the paper's App. A.2 sweep), the unextended
    model's and the paper's m marked; with --fit, relative to each s's best, and a second panel of the best m
    per s and the fitted line."""
    plt = pyplot()
    from yarn_cli.io.atomic import atomic_path

    fit = report.get("fit")
    fig, axes = plt.subplots(1, 2 if fit else 1, figsize=(12 if fit else 7, 4.5), dpi=120, squeeze=False)
    ax = axes[0][0]
    for scale in report["scales"]:
        points = sorted((c["m"], c["long_ppl"]) for c in report["candidates"] if c["scale"] == scale and c["long_ppl"])
        if not points:
            continue
        if fit:  # each s is judged on its own range, L..s·L: compare the curves' shapes, not their levels
            low = min(p for _, p in points)
            points = [(m, 100 * (p / low - 1)) for m, p in points]
        line = ax.plot([m for m, _ in points], [p for _, p in points], marker="o", label=f"s = {scale:g}")[0]
        ax.axvline(report["paper_m"][str(scale)], color=line.get_color(), linestyle=":", linewidth=1)
    chosen = report.get("chosen")
    if chosen:
        ax.plot(
            [chosen["m"]],
            [chosen["long_ppl"]],
            marker="*",
            markersize=14,
            color="black",
            linestyle="none",
            label=f"chosen: s {chosen['scale']:g}, m {chosen['m']:.4f}",
        )
    lengths = report["lengths"]
    ax.set_xlabel("attention factor m (on each of q and k); dotted: the paper's 0.1 ln s + 1")
    if fit:
        ax.set_ylabel("perplexity above the best m's (%)")
        ax.set_title(f"{Path(report['model']).name}: tokens {lengths['original']:,}..s·L", fontsize=10)
    else:
        ax.set_ylabel(f"perplexity, tokens {lengths['original']:,}..{lengths['long']:,}")
        ax.set_title(f"{Path(report['model']).name}: perplexity beyond L against m")
    ax.legend(fontsize=8)
    if fit:
        _fit_panel(axes[0][1], fit)
    fig.tight_layout()
    try:
        with atomic_path(path, force) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".").lower())
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the plot ({exc.strerror or exc})") from exc
    finally:
        plt.close(fig)
    return path


def _fit_panel(ax, fit: dict) -> None:
    import math

    scales = [p["scale"] for p in fit["points"]]
    grid = [min(scales) * (max(scales) / min(scales)) ** (k / 50) for k in range(51)]
    ax.plot(scales, [p["m"] for p in fit["points"]], marker="o", linestyle="none", color="black", label="best m per s")
    stderr = f" ± {fit['a_stderr']:.3f}" if fit["a_stderr"] is not None else ""
    ax.plot(grid, [fit["a"] * math.log(s) + fit["b"] for s in grid], label=f"fit: m = {fit['a']:.3f}{stderr}·ln s + {fit['b']:.3f}")
    ax.plot(grid, [0.1 * math.log(s) + 1 for s in grid], linestyle="--", label="paper: m = 0.1·ln s + 1")
    ax.set_xscale("log")
    ax.minorticks_off()  # a narrow range of s would otherwise get labels like 1.3x10^0
    ax.set_xticks(scales, [f"{s:g}" for s in scales])
    ax.set_xlabel("scale s")
    ax.set_ylabel("attention factor m")
    ax.set_title("best m against s")
    ax.legend(fontsize=8)


def pyplot():
    """matplotlib's pyplot on the Agg backend, or one line naming the extra that installs it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        from yarn_cli.io.packages import FEATURES

        raise InputError(f"drawing needs matplotlib, which is not installed: {FEATURES['plot'].install}") from exc
    return plt
