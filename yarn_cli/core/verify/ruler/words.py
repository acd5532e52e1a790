"""RULER's word tasks, draw for draw: common words extraction (scripts/data/synthetic/common_words_extraction.py)
and frequent words extraction (freq_words_extraction.py); and the adjective-noun keys its needles use."""

from __future__ import annotations

import math
import random
import string
from collections.abc import Callable, Sequence

from yarn_cli.core.verify.ruler import RulerTask, Sample, sizing
from yarn_cli.errors import InputError

ZETA_2 = math.pi**2 / 6  # scipy.special.zeta(2.0), the only α RULER's fwe uses


class WordPairs(Sequence[str]):
    """``sorted(set(f"{adj}-{noun}"))`` over wonderwords' lists (RULER's needle keys) without building its six
    million strings. Sorted by ``adj + "-"``, an adjective's strings form one block (its nouns in order),
    except where that head starts the next ones ("blue-" and "blue-eyed-"): such a family's strings
    interleave, so they alone are built and sorted."""

    def __init__(self, adjectives: Sequence[str], nouns: Sequence[str]):
        self.nouns = sorted(set(nouns))
        ordered = sorted(set(adjectives), key=lambda a: a + "-")
        self.blocks: list[str | list[str]] = []  # an adjective (implicit block) or a family's sorted strings
        i = 0
        while i < len(ordered):
            j = i + 1
            while j < len(ordered) and (ordered[j] + "-").startswith(ordered[i] + "-"):
                j += 1
            if j == i + 1:
                self.blocks.append(ordered[i])
            else:
                self.blocks.append(sorted({f"{a}-{n}" for a in ordered[i:j] for n in self.nouns}))
            i = j
        self.starts = [0]
        for block in self.blocks:
            self.starts.append(self.starts[-1] + (len(self.nouns) if isinstance(block, str) else len(block)))

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, index):  # type: ignore[override]
        import bisect

        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        block = bisect.bisect_right(self.starts, index) - 1
        found, offset = self.blocks[block], index - self.starts[block]
        return f"{found}-{self.nouns[offset]}" if isinstance(found, str) else found[offset]


def cwe_words(words: Sequence[str], seed: int) -> list[str]:
    """RULER's cwe vocabulary: nouns, adjectives and verbs, deduplicated, sorted, shuffled by the seed."""
    result = sorted(set(words))
    random.Random(seed).shuffle(result)
    return result


def _cwe_example(
    rng: random.Random, words: list[str], num_words: int, common_repeats: int, uncommon_repeats: int, common_nums: int, seed: int
) -> tuple[str, list[str]]:
    if num_words > len(words):
        # RULER switches to a word list of its own repository here; yarn_cli ships none
        raise InputError(
            f"cwe needs {num_words:,} distinct words at this length, more than wonderwords' {len(words):,}; leave cwe out at this length"
        )
    chosen = rng.sample(words, num_words)
    common, uncommon = chosen[:common_nums], chosen[common_nums:]
    listed = common * int(common_repeats) + uncommon * int(uncommon_repeats)
    random.Random(seed).shuffle(listed)
    return " ".join(f"{i + 1}. {word}" for i, word in enumerate(listed)), common


def cwe_prompt(rng: random.Random, task: RulerTask, words: list[str], num_words: int, length: int, seed: int) -> tuple[str, list[str]]:
    """RULER's generate_input_output for cwe (one worked example, as its default): (prompt, the common words)."""
    a = task.args
    short = length < 4096
    example, example_answer = _cwe_example(rng, words, 20 if short else 40, 3 if short else 10, 1 if short else 3, a["num_cw"], seed)
    context, answer = _cwe_example(rng, words, num_words, 6 if short else a["freq_cw"], 1 if short else a["freq_ucw"], a["num_cw"], seed)
    template = task.template
    shot = (
        template.format(num_cw=a["num_cw"], context=example, query="") + " " + " ".join(f"{i + 1}. {word}" for i, word in enumerate(example_answer))
    )
    return shot + "\n" + template.format(num_cw=a["num_cw"], context=context, query=""), answer


def cwe_samples(task: RulerTask, count: Callable[[str], int], length: int, n: int, seed: int, vocabulary: Sequence[str]) -> list[Sample]:
    """RULER's sys_word_pair_random: an estimate from 4,096 words, a bisection, then ``n`` prompts."""
    rng = random.Random(seed)
    words = cwe_words(vocabulary, seed)
    budget, incremental = length - task.tokens_to_generate, 10

    def make(size: int) -> tuple[str, list[str]]:
        return cwe_prompt(rng, task, words, size, length, seed)

    per_word = count(make(4096)[0]) / 4096
    upper = max(int(length // per_word) * 2, incremental * 2)
    size = sizing.search(lambda size: count(make(size)[0]) <= budget, incremental, upper) or incremental
    result = []
    for _ in range(n):
        (text, answer), used = sizing.fit(make, lambda made: count(made[0]) <= budget, size, incremental, f"cwe at {length:,} tokens")
        result.append(Sample(text, answer, count(text) + task.tokens_to_generate, used))
    return result


def _fwe_vocabulary(rng: random.Random, vocab_size: int, seed: int, wordlen: int = 6) -> list[str]:
    vocab = ["".join(rng.choices(string.ascii_lowercase, k=wordlen)) for _ in range(vocab_size)]
    while len(set(vocab)) < vocab_size:
        vocab.append("".join(rng.choices(string.ascii_lowercase, k=wordlen)))
    vocab = sorted(set(vocab))
    random.Random(seed).shuffle(vocab)
    vocab[0] = "..."  # RULER: the top-ranked word is noise
    return vocab


def _fwe_text(task: RulerTask, vocab: list[str], num_words: int, seed: int) -> tuple[str, list[str]]:
    import numpy

    alpha = task.args["alpha"]
    ranks = numpy.arange(1, len(vocab) + 1)
    counts = (num_words * (ranks**-alpha) / ZETA_2).astype(int)
    sampled = [w for word, times in zip(vocab, counts) for w in [word] * times]
    random.Random(seed).shuffle(sampled)
    return task.template.format(context=" ".join(sampled), query=""), vocab[1:4]


def fwe_prompt(
    rng: random.Random, task: RulerTask, count: Callable[[str], int], max_len: int, num_words: int, vocab_size: int, seed: int
) -> tuple[str, list[str], int]:
    """RULER's generate_input_output for fwe: (prompt, the three most frequent coded words, words used)."""
    incremental = max_len // 32
    vocab = _fwe_vocabulary(rng, vocab_size, seed)
    if num_words > 0:
        text, answer = _fwe_text(task, vocab, num_words, seed)
        while count(text) > max_len:
            num_words -= incremental
            text, answer = _fwe_text(task, vocab, num_words, seed)
    else:
        num_words = max_len // 6
        text, answer = _fwe_text(task, vocab, num_words, seed)
        while count(text) < max_len:
            num_words += incremental
            text, answer = _fwe_text(task, vocab, num_words, seed)
        num_words -= incremental
    text, answer = _fwe_text(task, vocab, num_words, seed)
    return text, answer, num_words


def fwe_samples(task: RulerTask, count: Callable[[str], int], length: int, n: int, seed: int) -> list[Sample]:
    """RULER's sys_kwext: the word count found once, then ``n`` prompts (each with its own coded vocabulary)."""
    if task.args["alpha"] != 2.0:
        raise InputError("fwe runs RULER's α = 2 only")
    rng = random.Random(seed)
    max_len = length - task.tokens_to_generate
    vocab_size = max_len // 50
    _, _, num_words = fwe_prompt(rng, task, count, max_len, -1, vocab_size, seed)
    result = []
    for _ in range(n):
        text, answer, used = fwe_prompt(rng, task, count, max_len, num_words, vocab_size, seed)
        result.append(Sample(text, answer, count(text) + task.tokens_to_generate, used))
    return result
