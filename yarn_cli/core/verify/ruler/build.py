"""One entry to RULER's generators: a task's samples at a length, from the lists and text the caller read."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from yarn_cli.core.verify.ruler import RulerTask, Sample, niah, vt, words


@dataclass(frozen=True)
class WordLists:
    """What RULER draws words from (wonderwords' lists): the needle keys (adjective-noun pairs, sorted) and
    the cwe vocabulary (nouns, adjectives and verbs)."""

    pairs: Sequence[str]
    vocabulary: Sequence[str]


def samples(
    task: RulerTask,
    count: Callable[[str], int],
    length: int,
    n: int,
    seed: int,
    lists: WordLists,
    essay: Sequence[str] = (),
    depth: float | None = None,
) -> list[Sample]:
    """``n`` prompts of ``task`` that fit ``length`` tokens (by ``count``) with the task's answer budget. ``depth``
    (a fraction) places a single needle; None leaves RULER's random placement."""
    if task.kind == "niah":
        return niah.samples(task, count, length, n, seed, lists.pairs, essay, depth)
    if task.kind == "vt":
        return vt.samples(task, count, length, n, seed)
    if task.kind == "cwe":
        return words.cwe_samples(task, count, length, n, seed, lists.vocabulary)
    return words.fwe_samples(task, count, length, n, seed)
