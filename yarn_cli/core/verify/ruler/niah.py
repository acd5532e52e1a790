"""RULER's needle-in-a-haystack generator (scripts/data/synthetic/niah.py), draw for draw. A depth, when
given, moves the single needle there after the draws RULER makes, so keys and values stay the seed's."""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable, Sequence

from yarn_cli.core.verify.ruler import NEEDLE, NOISE, RulerTask, Sample, sizing

# np.round(np.linspace(0, 100, num=40)).astype(int): the depths (in percent) RULER draws essay needles' places from
DEPTHS = [
    0,
    3,
    5,
    8,
    10,
    13,
    15,
    18,
    21,
    23,
    26,
    28,
    31,
    33,
    36,
    38,
    41,
    44,
    46,
    49,
    51,
    54,
    56,
    59,
    62,
    64,
    67,
    69,
    72,
    74,
    77,
    79,
    82,
    85,
    87,
    90,
    92,
    95,
    97,
    100,
]


def essay_words(text: str) -> list[str]:
    """An essay haystack as RULER keeps it: whitespace runs collapsed, split on spaces."""
    return re.sub(r"\s+", " ", text).split(" ")


def split_sentences(text: str) -> list[str]:
    """Sentences for placing needles in prose. RULER uses nltk's punkt model, a download; a split after
    sentence-final punctuation places needles between sentences the same way on ordinary prose."""
    return [part for part in re.split(r"(?<=[.!?])\s+", text) if part]


def _random(rng: random.Random, kind: str, words: Sequence[str]) -> str:
    if kind == "numbers":
        return str(rng.randint(10**6, 10**7 - 1))
    if kind == "words":
        return rng.choice(words)
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def prompt(
    rng: random.Random,
    task: RulerTask,
    num_haystack: int,
    haystack: Sequence[str],
    words: Sequence[str],
    seed: int,
    depth: float | None = None,
    sentences: Callable[[str], list[str]] = split_sentences,
) -> tuple[str, list[str]]:
    """RULER's generate_input_output: (prompt text with the answer prefix, the reference values)."""
    a = task.args
    type_k, type_v, num_v, num_q = a["type_needle_k"], a["type_needle_v"], a["num_needle_v"], a["num_needle_q"]
    num_k = max(a["num_needle_k"], num_q)
    keys, values, needles = [], [], []
    for _ in range(num_k):
        keys.append(_random(rng, type_k, words))
        value = []
        for _ in range(num_v):
            value.append(_random(rng, type_v, words))
            needles.append(NEEDLE.format(type_needle_v=type_v, key=keys[-1], value=value[-1]))
        values.append(value)
    random.Random(seed).shuffle(needles)
    if a["type_haystack"] == "essay":
        context = _essay(rng, num_haystack, haystack, needles, depth, sentences)
    else:
        context = _lines(rng, task, num_haystack, needles, words, depth)
    indices = rng.sample(range(num_k), num_q)
    queries = [keys[i] for i in indices]
    answers = [v for i in indices for v in values[i]]
    query = ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]
    template = task.template
    if num_q * num_v == 1:
        template = template.replace("Some", "A").replace("are all", "is").replace("are", "is").replace("answers", "answer")
        type_v = type_v[:-1]
    return template.format(type_needle_v=type_v, context=context, query=query), answers


def _essay(
    rng: random.Random, num_haystack: int, haystack: Sequence[str], needles: list[str], depth: float | None, sentences: Callable[[str], list[str]]
) -> str:
    if num_haystack <= len(haystack):
        text = " ".join(haystack[:num_haystack])
    else:
        repeats = (num_haystack + len(haystack) - 1) // len(haystack)
        text = " ".join((list(haystack) * repeats)[:num_haystack])
    document = sentences(text.strip())
    drawn = sorted(int(len(document) * (d / 100)) for d in rng.sample(DEPTHS, len(needles)))
    if depth is not None:
        drawn = [int(len(document) * depth)]
    positions = [0] + drawn + [len(document)]
    parts = []
    for i in range(1, len(positions)):
        parts.append(" ".join(document[positions[i - 1] : positions[i]]))
        if i - 1 < len(needles):
            parts.append(needles[i - 1])
    return " ".join(parts)


def _lines(rng: random.Random, task: RulerTask, num_haystack: int, needles: list[str], words: Sequence[str], depth: float | None) -> str:
    a = task.args
    if a["type_haystack"] == "noise":
        lines = [NOISE] * num_haystack
    else:
        lines = [
            NEEDLE.format(
                type_needle_v=a["type_needle_v"], key=_random(rng, a["type_needle_k"], words), value=_random(rng, a["type_needle_v"], words)
            )
            for _ in range(num_haystack)
        ]
    indexes = sorted(rng.sample(range(num_haystack), len(needles)), reverse=True)
    if depth is not None:
        indexes = [int(round(num_haystack * depth))]
    for index, element in zip(indexes, needles):
        lines.insert(index, element)
    return "\n".join(lines)


def samples(
    task: RulerTask,
    count: Callable[[str], int],
    length: int,
    n: int,
    seed: int,
    words: Sequence[str],
    haystack: Sequence[str] = (),
    depth: float | None = None,
    sentences: Callable[[str], list[str]] = split_sentences,
) -> list[Sample]:
    """RULER's generate_samples: ``n`` prompts whose tokens (``count``) plus the answer budget fit ``length``."""
    rng = random.Random(seed)
    essay = task.args["type_haystack"] == "essay"
    incremental = 500 if essay else (5 if length < 4096 else 25)
    budget = length - task.tokens_to_generate

    def make(size: int) -> tuple[str, list[str]]:
        return prompt(rng, task, size, haystack, words, seed, depth, sentences)

    per_unit = count(make(incremental)[0]) / incremental
    upper = max(int((length / per_unit) * 3), incremental * 2)
    size = sizing.search(lambda size: count(make(size)[0]) <= budget, incremental, upper) or incremental
    result = []
    for _ in range(n):
        (text, answers), used = sizing.fit(make, lambda made: count(made[0]) <= budget, size, incremental, f"{task.name} at {length:,} tokens")
        result.append(Sample(text, answers, count(text) + task.tokens_to_generate, used, depth))
    return result
