"""The verification protocol (docs/conventions.md §7), pure: length ladder, passkey prompts and scoring, memory
estimates and the verdict. Engines only turn token ids into tokens and losses.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from yarn_cli.core.checkpoint.kv_cache import AttentionLayout, kv_cache_bytes
from yarn_cli.errors import InputError

INSTRUCTION = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there."
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
QUESTION = "What is the pass key? The pass key is"
DEFAULT_DEPTHS = (0.1, 0.5, 0.9)
PPL_STRIDE = 256  # the paper's stride: each window scores its last 256 tokens
DEFAULT_PPL_MARGIN = 0.10


def needle(key: int) -> str:
    return f"The pass key is {key}. Remember it. {key} is the pass key."


def length_ladder(original: int, target: int, max_length: int | None = None) -> list[int]:
    """Half the original, the original, between (geometric mean), the new length; capped, deduplicated."""
    between = int(round(math.sqrt(original * target) / 256) * 256) if target > original else original
    ladder = [original // 2, original, between, target]
    if max_length is not None:
        ladder = [min(n, max_length) for n in ladder]
    return sorted({n for n in ladder if n >= 256})


def parse_lengths(text: str) -> list[int]:
    from yarn_cli.core.rope.lengths import parse_length

    values = sorted({parse_length(part, "--lengths") for part in text.split(",") if part.strip()})
    if not values:
        raise InputError("--lengths needs at least one length, e.g. 4k,8k,16k")
    return values


def parse_depths(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise InputError(f"--depths {text!r}: use fractions such as 0.1,0.5,0.9") from exc
    if not values or any(not 0 <= v <= 1 for v in values):
        raise InputError(f"--depths {text!r}: each depth is a fraction between 0 and 1")
    return values


@dataclass(frozen=True)
class PasskeyPrompt:
    ids: list[int]
    key: int
    depth: float
    length: int  # the requested length; len(ids) is within a filler sentence of it


def passkey_prompt(encode: Callable[[str], list[int]], length: int, depth: float, key: int, bos: list[int]) -> PasskeyPrompt:
    """Instruction, filler to ``length`` tokens with the needle at ``depth``, then the question.

    Pieces are tokenized separately and joined as ids so the length is exact to a filler sentence
    (joining token lists can differ by a token or two from tokenizing the joined text; the model
    does not care, the budget does).
    """
    head = bos + encode(INSTRUCTION + "\n")
    needle_ids = encode(" " + needle(key) + "\n")
    tail = encode("\n" + QUESTION)
    filler_ids = encode(" " + FILLER)
    if not filler_ids:
        raise InputError("the tokenizer encodes the filler text to no tokens; it cannot build a passkey prompt")
    budget = length - len(head) - len(needle_ids) - len(tail)
    if budget < len(filler_ids):
        raise InputError(f"length {length} is too short for a passkey prompt (needs > {length - budget + len(filler_ids)} tokens)")
    repeats = budget // len(filler_ids)
    before = int(round(repeats * depth))
    ids = head + filler_ids * before + needle_ids + filler_ids * (repeats - before) + tail
    return PasskeyPrompt(ids=ids, key=key, depth=depth, length=length)


def passkeys(trials: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(10000, 99999) for _ in range(trials)]


def score_answer(answer: str, key: int) -> bool:
    """A hit when the first integer in the greedy continuation equals the key."""
    match = re.search(r"\d+", answer)
    return match is not None and int(match.group()) == key


def ppl_windows(n_tokens: int, length: int, windows: int) -> list[int]:
    """Start offsets of up to ``windows`` evenly spaced windows of ``length`` tokens in the text."""
    if n_tokens < length or windows <= 0:
        return []
    last = n_tokens - length
    if windows <= 1 or last == 0:
        return [0]
    step = max(last // (windows - 1), 1)
    return sorted({min(i * step, last) for i in range(windows)})


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations


HEAD_ROWS = 2048  # positions whose logits an engine computes at once when scoring (native and transformers)


def estimate_memory(
    weight_bytes: int,
    attention: AttentionLayout,
    heads: int,
    hidden: int,
    vocab: int,
    length: int,
    chunk: int,
    value_bytes: int,
) -> MemoryEstimate:
    """Weights + the KV cache at ``length`` + the largest activations of one prefill chunk.

    Activations: attention scores (heads x chunk x length, fp32 when no fused kernel), the MLP and the fp32 logits
    of at most HEAD_ROWS of the chunk's positions. A 25% allowance covers allocator slack.
    """
    kv = kv_cache_bytes(attention, length, value_bytes)
    scores = heads * chunk * length * 4
    mlp = chunk * hidden * 12 * value_bytes
    logits = min(chunk, HEAD_ROWS) * vocab * 4
    return MemoryEstimate(weight_bytes, kv, int(1.25 * (scores + mlp + logits)))


def fits(estimate: MemoryEstimate, available: int) -> bool:
    """The one rule every length and the parity sequence are held to: 90% of what the device has."""
    return estimate.total <= 0.9 * available


def largest_fitting(estimate_at: Callable[[int], MemoryEstimate], available: int, upper: int, lower: int = 256) -> int | None:
    """The largest length (a multiple of 256, at most ``upper``) whose estimate fits, by bisection; None if
    not even ``lower`` does."""
    if not fits(estimate_at(lower), available):
        return None
    low, high = lower // 256, max(upper // 256, lower // 256)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(estimate_at(middle * 256), available):
            low = middle
        else:
            high = middle - 1
    return min(low * 256, upper)


@dataclass(frozen=True)
class Judgement:
    """A task's part of the verdict."""

    ok: bool
    reason: str
    fatal: bool = False  # a failure that makes every other number meaningless (NaN log-probabilities)
    aside: bool = False  # a pass that only says what could not be compared: shown in brackets after the others


NOT_SHOWN = "not shown"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str  # one sentence, as --json has always carried it
    reasons: tuple[str, ...] = ()  # the same, one item per judgement, for a verdict shown as a list
    status: str = ""  # "pass", "fail" or NOT_SHOWN (every task passed, yet nothing told extended from baseline); "" follows ok
    separating: tuple[int, ...] | None = None  # the lengths beyond L where a task told them apart; None: not judged so

    @property
    def label(self) -> str:
        return self.status or ("pass" if self.ok else "fail")

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "status": self.label,
            "reason": self.reason,
            "reasons": list(self.reasons or (self.reason,)),
            "separating_lengths": None if self.separating is None else list(self.separating),
        }


def verdict_word(verdict: Mapping[str, Any]) -> str:
    """PASS, FAIL or NOT SHOWN, from a report's verdict (reports written before "status" have only "ok")."""
    return str(verdict.get("status") or ("pass" if verdict["ok"] else "fail")).upper()


def separation(judged: Mapping[int, float], baseline: Mapping[int, float], original: int, better: Callable[[float, float], bool]) -> dict[int, bool]:
    """At each length beyond the trained ``original`` that both variants ran: whether the judged variant's number
    is ``better`` than the baseline's there, by the task's own bar (what makes that length evidence)."""
    return {n: better(judged[n], baseline[n]) for n in judged if n > original and n in baseline}


def merged_separation(parts: Sequence[Mapping[int, bool]]) -> dict[int, bool]:
    """A length separates the variants when any task tells them apart there."""
    merged: dict[int, bool] = {}
    for part in parts:
        for n, told in part.items():
            merged[n] = merged.get(n, False) or told
    return merged


def verdict(
    ran: Sequence[int],
    skipped: Sequence[int],
    original: int,
    target: int,
    judgements: Sequence[Judgement],
    separated: Mapping[int, bool] | None = None,
) -> Verdict:
    """Fail on a fatal judgement, on nothing run, on an extended checkpoint of which no length beyond the
    trained one ran, then on the first failing task; pass with every task's reason (``judgements`` in task order).

    ``separated`` (length beyond L -> whether some task told the extended model from its baseline there): an
    extension passes only where one length did; otherwise every task may pass and the verdict is NOT_SHOWN, since
    a length at which the unextended model also passes says nothing about the extension."""
    fatal = [j.reason for j in judgements if not j.ok and j.fatal]
    if fatal:
        return Verdict(False, fatal[0])
    if not ran:
        return Verdict(False, "no length could run: nothing verified" + (f" (skipped {list(skipped)})" if skipped else ""))
    if target > original and max(ran) <= original:
        return Verdict(
            False,
            f"no length beyond the trained length {original:,} ran, so the extension was not tested"
            + (f" (skipped for memory: {', '.join(f'{n:,}' for n in skipped)})" if skipped else "; ask for one with --lengths"),
        )
    result = judged(judgements, "every length ran")
    if not result.ok or target <= original or separated is None:
        return result
    shown = tuple(n for n in sorted(separated) if separated[n])
    if shown:
        return replace(result, separating=shown)
    reason = _not_shown(sorted(separated), max(ran), original, target)
    return Verdict(False, reason, (reason, *result.reasons), NOT_SHOWN, ())


def _not_shown(compared: list[int], longest: int, original: int, target: int) -> str:
    if not compared:
        return (
            f"not shown: no baseline ran beyond the trained length {original:,}, so nothing tells what the extension "
            "changes; keep the baseline in --variants"
        )
    where = ", ".join(f"{n:,}" for n in compared)
    if longest >= target:
        return (
            f"not shown: the unextended model also passes at {where}, up to the declared length: this model and text do not need the extension there"
        )
    step = 1024 if target - longest >= 2048 else 256
    suggest = max((longest + target) // 2 // step * step, longest + step)
    return f"not shown: the unextended model also passes at {where}; test longer lengths, e.g. --lengths {_short(suggest)}"


def _short(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def judged(judgements: Sequence[Judgement], nothing_said: str) -> Verdict:
    """Fail on the first failing judgement; pass with every reason (asides in brackets after the others).
    A run without length-based tasks (lm-eval only) is judged by this alone."""
    failed = [j.reason for j in judgements if not j.ok]
    if failed:
        return Verdict(False, failed[0])
    main = [j.reason for j in judgements if not j.aside]
    asides = [j.reason for j in judgements if j.aside]
    return Verdict(
        True, ("; ".join(main) or nothing_said) + "".join(f" ({aside})" for aside in asides), tuple(main or [nothing_said]) + tuple(asides)
    )
