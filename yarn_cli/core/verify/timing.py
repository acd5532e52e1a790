"""How long a verify run's tasks will take, from one short generation timed on the engine before they start.

A forward pass costs the weights' work for every token plus attention's, which grows with the context: per layer,
about 24·h² multiply-adds per token for the weights against 2·n·h for attention over n earlier tokens (h the
hidden size). A prefill of n tokens attends to n/2 of them on average, one decoding step at length n to all n.
So a prefill of n tokens costs n·(1 + n/(12h)) in units of one token's weights, and a decoding step at n costs
1 + n/(6h); the measured seconds of one short prefill and of its decoding steps price those units. That ignores
how an engine's efficiency changes with size (a CPU at 1k tokens and at 16k is not equally busy), so the figure is
an estimate, reported beside what the run then took.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MEASURE_TOKENS = 1024  # the timed prefill's length (or the shortest planned length, where that is shorter)
MEASURE_ANSWER = 8  # decoding steps timed after it


@dataclass(frozen=True)
class Measured:
    """One short generation on the engine: its prefill and the decoding steps after it."""

    tokens: int
    prefill_seconds: float
    decode_tokens: int
    decode_seconds: float
    hidden: int

    def prefill(self, n: int) -> float:
        """Seconds for a prefill of ``n`` tokens."""
        unit = lambda tokens: tokens * (1 + tokens / (12 * self.hidden))  # noqa: E731
        return self.prefill_seconds * unit(n) / unit(self.tokens)

    def decode(self, n: int, steps: int) -> float:
        """Seconds for ``steps`` decoding steps after a prompt of ``n`` tokens (0 where none was timed)."""
        if not self.decode_tokens or steps <= 0:
            return 0.0
        per_step = self.decode_seconds / self.decode_tokens
        unit = lambda at: 1 + at / (6 * self.hidden)  # noqa: E731
        return steps * per_step * unit(n) / unit(self.tokens)


@dataclass(frozen=True)
class Estimate:
    seconds: float
    measured: Measured

    def to_json(self) -> dict[str, float | int | None]:
        m = self.measured
        return {
            "seconds": self.seconds,
            "measured_tokens": m.tokens,
            "prefill_tokens_per_second": m.tokens / m.prefill_seconds if m.prefill_seconds > 0 else None,
            "decode_tokens_per_second": m.decode_tokens / m.decode_seconds if m.decode_tokens and m.decode_seconds > 0 else None,
        }


def estimate(measured: Measured, runs: Iterable[tuple[int, int]]) -> Estimate:
    """``runs``: (prompt tokens, decoding steps at most) of every engine call the tasks will make, variants included."""
    return Estimate(sum(measured.prefill(n) + measured.decode(n, steps) for n, steps in runs), measured)


def spoken(seconds: float) -> str:
    """A duration as a reader says it: "40 s", "6 min", "1 h 25 min"."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
