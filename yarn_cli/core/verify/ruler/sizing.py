"""RULER's way of sizing a haystack to a token budget: a binary search over the haystack size (each probe a
fresh prompt, so it draws from the generator's random stream exactly as RULER's does), then per sample a
shrink by RULER's increment until the prompt fits."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from yarn_cli.errors import InputError

T = TypeVar("T")
RETRIES = 50  # RULER retries forever at its smallest size; a prompt that cannot fit after this many is refused


def search(probe: Callable[[int], bool], lower: int, upper: int) -> int | None:
    """The largest size in [lower, upper] that ``probe`` accepts, by RULER's bisection (None: none tried fits)."""
    best = None
    while lower <= upper:
        middle = (lower + upper) // 2
        if probe(middle):
            best = middle
            lower = middle + 1
        else:
            upper = middle - 1
    return best


def fit(make: Callable[[int], T], fits: Callable[[T], bool], size: int, incremental: int, what: str) -> tuple[T, int]:
    """A prompt of ``size`` units, shrunk by ``incremental`` while it overflows (RULER's sample loop; a
    generator error counts as an overflow, as there)."""
    for _ in range(RETRIES + size // max(incremental, 1)):
        try:
            made = make(size)
            if fits(made):
                return made, size
        except (ValueError, IndexError):
            pass
        if size > incremental:
            size -= incremental
    raise InputError(f"{what}: no prompt fits the length; choose a longer length for this task")
