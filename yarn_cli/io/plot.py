"""--plot: wavelength per pair for the original RoPE and each method (matplotlib, an optional extra)."""

from __future__ import annotations

from pathlib import Path

from yarn_cli.core import rope
from yarn_cli.core.analysis import YarnOptions, method_frequencies
from yarn_cli.core.model import RopeSpec
from yarn_cli.errors import InputError, OutputError


def plot_wavelengths(spec: RopeSpec, scale: float, path: Path, options: YarnOptions) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise InputError("--plot needs matplotlib: pip install 'yarn-cli[plot]' (or pip install matplotlib)") from exc
    original = rope.wavelengths(rope.inv_freq(spec.theta, spec.rotary_dim))
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
    ax.set_title(f"RoPE wavelengths, base {spec.theta:g}, D={spec.rotary_dim}, x{scale:g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the plot ({exc.strerror or exc})") from exc
    finally:
        plt.close(fig)
