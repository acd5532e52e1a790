"""The numbers every picture of a verify run shows, computed once from its cells: per retrieval task and
variant, the mean score (points, 0-100) of each length and depth, and the difference between two variants.
The report's heatmaps draw exactly these; --json carries them as ``heatmaps``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

NO_DEPTH = "random"  # the row of tasks whose needles RULER places at random depths (or that have none)
POINTS = {"passkey": 100.0}  # a passkey cell scores a hit as 1: shown in points like RULER's


def depth_key(depth: float | None) -> str:
    return NO_DEPTH if depth is None else f"{depth:g}"


def heatmaps(cells: Iterable[dict[str, Any]], tasks: Iterable[str]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """{task: {variant: {length: {depth: mean points}}}} over the cells (JSON form) of the retrieval ``tasks``."""
    wanted = set(tasks)
    sums: dict[tuple[str, str, str, str], list[float]] = {}
    for cell in cells:
        if cell["task"] not in wanted or cell["score"] is None:
            continue
        key = (cell["task"], cell["variant"], str(cell["length"]), depth_key(cell["depth"]))
        sums.setdefault(key, []).append(cell["score"] * POINTS.get(cell["task"], 1.0))
    result: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for (task, variant, length, depth), scores in sums.items():
        result.setdefault(task, {}).setdefault(variant, {}).setdefault(length, {})[depth] = sum(scores) / len(scores)
    return result


def grid(values: dict[str, dict[str, float]]) -> tuple[list[int], list[str], list[list[float | None]]]:
    """(lengths across, depths down, rows of values) of one task and variant, in order; None where no cell ran."""
    lengths = sorted(int(n) for n in values)
    depths = sorted({d for row in values.values() for d in row}, key=lambda d: (d == NO_DEPTH, float(d) if d != NO_DEPTH else 0.0))
    return lengths, depths, [[values[str(n)].get(d) for n in lengths] for d in depths]


def difference(ours: dict[str, dict[str, float]], theirs: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """ours − theirs at every (length, depth) both have."""
    return {n: {d: x - theirs[n][d] for d, x in row.items() if d in theirs.get(n, {})} for n, row in ours.items() if n in theirs}
