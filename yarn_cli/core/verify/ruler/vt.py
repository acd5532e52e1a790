"""RULER's variable tracking (scripts/data/synthetic/variable_tracking.py), draw for draw: a chain
``VAR A = 12345``, ``VAR B = VAR A`` ... hidden in repeated filler, after one worked example; the answer is
every name bound to the value."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from typing import Any

from yarn_cli.core.verify.ruler import NOISE, RulerTask, Sample, sizing

ICL_LENGTH = 500  # RULER sizes its worked example to 500 tokens


def _chains(rng: random.Random, np_rng: Any, num_chains: int, num_hops: int, icl: bool) -> tuple[list[list[str]], list[list[str]]]:
    k = 3 if icl else 5
    num_hops = min(10, num_hops) if icl else num_hops
    names = ["".join(rng.choices(string.ascii_uppercase, k=k)).upper() for _ in range((num_hops + 1) * num_chains)]
    while len(set(names)) < num_chains * (num_hops + 1):
        names.append("".join(rng.choices(string.ascii_uppercase, k=k)).upper())
    groups, chains = [], []
    for i in range(0, len(names), num_hops + 1):
        group = names[i : i + num_hops + 1]
        groups.append(group)
        chain = [f"VAR {group[0]} = 12345" if icl else f"VAR {group[0]} = {np_rng.randint(10000, 99999)}"]
        chain += [f"VAR {group[j + 1]} = VAR {group[j]} " for j in range(num_hops)]
        chains.append(chain)
    return groups, chains


def prompt(rng: random.Random, np_rng: Any, task: RulerTask, num_noises: int, icl: bool) -> tuple[str, list[str]]:
    """RULER's generate_input_output for the noise haystack: (prompt with the answer prefix, the chain's names)."""
    num_chains, num_hops = task.args["num_chains"], task.args["num_hops"]
    groups, chains = _chains(rng, np_rng, num_chains, num_hops, icl)
    value = chains[0][0].split("=")[-1].strip()
    lines = [NOISE] * num_noises
    for chain in chains:
        positions = sorted(rng.sample(range(len(lines)), len(chain)))
        for position, j in zip(positions, range(len(chain))):
            lines.insert(position + j, chain[j])
    context = "\n".join(lines).replace(". \n", ".\n")
    return task.template.format(context=context, query=value, num_v=num_hops + 1), groups[0]


def _randomize_example(rng: random.Random, np_rng: Any, example: str, num_hops: int) -> str:
    for item in example.strip().split()[-num_hops - 1 :]:
        example = example.replace(item, "".join(rng.choices(string.ascii_uppercase, k=len(item))).upper())
    return example.replace("12345", str(np_rng.randint(10000, 99999)))


def _run(
    rng, np_rng, task: RulerTask, count: Callable[[str], int], length: int, n: int, example: str | None, answer_tokens: int, incremental: int
) -> list[tuple[str, list[str], int, int]]:
    """RULER's sys_vartrack_w_noise_random: the worked example's run (``example`` None) or the prompts'."""
    example_tokens = count(example) if example is not None else 0
    icl = example is None

    def make(size: int) -> tuple[str, list[str]]:
        return prompt(rng, np_rng, task, size, icl)

    per_unit = count(make(incremental)[0]) / incremental
    upper = max(int((length / per_unit) * 3), incremental * 2)
    size = sizing.search(lambda size: count(make(size)[0]) + example_tokens + answer_tokens <= length, incremental, upper)
    size = size or incremental

    def make_full(size: int) -> tuple[str, list[str]]:
        text, names = make(size)
        if example is not None:
            text = _randomize_example(rng, np_rng, example, task.args["num_hops"]) + "\n" + text
        return text, names

    result = []
    for _ in range(n):
        (text, names), used = sizing.fit(
            make_full, lambda made: count(made[0]) + answer_tokens <= length, size, incremental, f"{task.name} at {length:,} tokens"
        )
        result.append((text, names, count(text) + answer_tokens, used))
    return result


def samples(task: RulerTask, count: Callable[[str], int], length: int, n: int, seed: int) -> list[Sample]:
    """RULER's main(): a worked example sized to 500 tokens, then ``n`` prompts that each start with it
    (names and value drawn anew) and fit ``length`` with the answer budget."""
    import numpy

    rng, np_rng = random.Random(seed), numpy.random.RandomState(seed)
    text, names, _, _ = _run(rng, np_rng, task, count, ICL_LENGTH, 1, None, 0, 5)[0]
    example = text + " " + " ".join(names) + "\n"
    incremental = 5 if length < 4096 else 10
    made = _run(rng, np_rng, task, count, length, n, example, task.tokens_to_generate, incremental)
    return [Sample(text, names, tokens, used) for text, names, tokens, used in made]
