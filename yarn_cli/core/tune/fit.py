"""The paper's fit, m = a·ln s + b, over the best m that `tune --fit` found at each s."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from yarn_cli.errors import InputError


@dataclass(frozen=True)
class LogFit:
    """m = a·ln s + b by least squares over (s, best m) points, with standard errors (None below 3 points)."""

    a: float
    b: float
    a_stderr: float | None
    b_stderr: float | None
    points: tuple[tuple[float, float], ...]

    def predict(self, scale: float) -> float:
        return self.a * math.log(scale) + self.b

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "a_stderr": self.a_stderr,
            "b_stderr": self.b_stderr,
            "points": [{"scale": s, "m": m} for s, m in self.points],
            "paper": {"a": 0.1, "b": 1.0},
        }


def fit_log(points: Sequence[tuple[float, float]]) -> LogFit:
    if len({s for s, _ in points}) < 2:
        raise InputError("--fit needs best m values at two or more distinct scales (--fit-scales)")
    xs = [math.log(s) for s, _ in points]
    ys = [m for _, m in points]
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    a = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sxx
    b = mean_y - a * mean_x
    if n < 3:
        return LogFit(a, b, None, None, tuple(points))
    residual = sum((y - (a * x + b)) ** 2 for x, y in zip(xs, ys)) / (n - 2)
    return LogFit(a, b, math.sqrt(residual / sxx), math.sqrt(residual * (1 / n + mean_x**2 / sxx)), tuple(points))


def parse_scales(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--fit-scales {text!r}: expected numbers > 1 separated by commas, e.g. 2,4,8") from None
    if len(values) < 2 or any(not math.isfinite(v) or v <= 1 for v in values):
        raise InputError(f"--fit-scales {text!r}: expected two or more numbers > 1, e.g. 2,4,8")
    return sorted(set(values))
