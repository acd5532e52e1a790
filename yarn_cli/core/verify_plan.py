"""The verification protocol (docs/conventions.md §7), pure: length ladder, passkey prompts and scoring, memory
estimates and the verdict. Engines only turn token ids into tokens and losses.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from yarn_cli.core.kv_cache import AttentionLayout, kv_cache_bytes
from yarn_cli.core.model import RopeSpec
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
    from yarn_cli.core.lengths import parse_length

    values = sorted({parse_length(part) for part in text.split(",") if part.strip()})
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
    return bool(match) and int(match.group()) == key


def ppl_windows(n_tokens: int, length: int, windows: int) -> list[int]:
    """Start offsets of up to ``windows`` evenly spaced windows of ``length`` tokens in the text."""
    if n_tokens < length:
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


def estimate_memory(
    weight_bytes: int, attention: AttentionLayout, heads: int, hidden: int, vocab: int, length: int, chunk: int, value_bytes: int,
) -> MemoryEstimate:
    """Weights + the KV cache at ``length`` + the largest activations of one prefill chunk.

    Activations: attention scores (heads x chunk x length, fp32 when no fused kernel), the MLP and
    the chunk's logits (fp32). A 25% allowance covers allocator slack.
    """
    kv = kv_cache_bytes(attention, length, value_bytes)
    scores = heads * chunk * length * 4
    mlp = chunk * hidden * 12 * value_bytes
    logits = chunk * vocab * 4
    return MemoryEstimate(weight_bytes, kv, int(1.25 * (scores + mlp + logits)))


@dataclass(frozen=True)
class Baseline:
    """The model verify compares against: the same weights under plain RoPE at the checkpoint's base.

    ``attention_factor`` is what cos/sin carry: 1, or 1/m for a checkpoint whose q/k have m baked in,
    so the baseline equals the unextended model either way."""

    theta: float
    rotary_dim: int
    attention_factor: float


def baseline(spec: RopeSpec, baked_attention_factor: float | None) -> Baseline:
    """The one definition of the baseline every engine runs."""
    factor = 1.0 / float(baked_attention_factor) if baked_attention_factor else 1.0
    return Baseline(spec.theta, spec.rotary_dim, factor)


@dataclass
class Verdict:
    ok: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def verdict(
    accuracy: dict[str, dict[int, float]],
    perplexity: dict[str, dict[int, float]],
    original: int,
    min_accuracy: float,
    ppl_margin: float,
    skipped: Sequence[int] = (),
    nonfinite: Sequence[int] = (),
) -> Verdict:
    """Pass when the extended model reaches min_accuracy at every length it ran and its perplexity at
    the original length is within ppl_margin (relative) of the baseline's.

    ``nonfinite``: lengths at which the extended model gave NaN or infinite log-probabilities."""
    if nonfinite:
        return Verdict(
            False,
            f"the extended model gives NaN/infinite log-probabilities at {min(nonfinite):,} tokens: its weights hold "
            "non-finite values or the engine's dtype overflows; check the checkpoint (inspect the source model too)",
        )
    extended = accuracy.get("extended", {})
    if not extended:
        return Verdict(False, "no length could run: nothing verified" + (f" (skipped {list(skipped)})" if skipped else ""))
    misses = {n: a for n, a in extended.items() if a < min_accuracy}
    if misses:
        worst = min(misses, key=misses.get)
        return Verdict(False, f"extended passkey accuracy {misses[worst]:.0%} at {worst:,} tokens is below --min-accuracy {min_accuracy:.0%}")
    at_original = [n for n in perplexity.get("extended", {}) if n == original] or [
        n for n in perplexity.get("extended", {}) if n <= original
    ]
    if at_original:
        n = max(at_original)
        ours, base = perplexity["extended"][n], perplexity.get("baseline", {}).get(n)
        if base is not None and ours > base * (1 + ppl_margin):
            return Verdict(False, f"extended perplexity {ours:.3f} at {n:,} tokens is more than {ppl_margin:.0%} above the baseline's {base:.3f}")
        reason = f"passkey >= {min_accuracy:.0%} at every length; perplexity at {n:,} within {ppl_margin:.0%} of baseline"
    else:
        reason = f"passkey >= {min_accuracy:.0%} at every length (no perplexity at or below the original length to compare)"
    return Verdict(True, reason)
