"""The statistics of a KL-divergence comparison, as ``llama-perplexity --kl-divergence`` prints them: for each scored
position, KL(P_original ‖ P_variant) over the whole vocabulary, summarised by its mean, median, 99th and 99.9th
percentiles and maximum, with the share of positions where both distributions put the same token first."""

from __future__ import annotations

import math
from collections.abc import Sequence

STATISTICS = ("mean", "median", "p99", "p99_9", "max", "top1_agreement")


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of sorted values, linear between the two nearest ranks (numpy's default)."""
    rank = fraction * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def statistics(divergences: Sequence[float], agree: Sequence[bool]) -> dict[str, float] | None:
    """{mean, median, p99, p99_9, max, top1_agreement (%)} of per-position divergences (nats); None for no position."""
    if not divergences:
        return None
    ordered = sorted(divergences)
    return {
        "mean": math.fsum(ordered) / len(ordered),
        "median": percentile(ordered, 0.5),
        "p99": percentile(ordered, 0.99),
        "p99_9": percentile(ordered, 0.999),
        "max": ordered[-1],
        "top1_agreement": 100.0 * sum(bool(a) for a in agree) / len(agree),
    }
