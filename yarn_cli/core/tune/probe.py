"""`yarn tune`'s retrieval probes, hidden in the perplexity documents so that one pass per document
measures both.

A document is the tuning text with named pass keys put into it. Each probe's needle sits at a depth of
its length, and its question and answer end exactly at that length. Probes of the short length are
answered mid-document and the text carries on after them; probes of the long length end the document.
A probe is a hit when every token of the key that holds a digit is the model's top choice, with the
answer's lead-in (a space, say) given. That reads retrieval out of the pass's own greedy flags; generating
the answer would cost one more pass of the probe's length per candidate. The probe's tokens (instruction,
needles, questions, answers) are not text: the perplexity skips them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from yarn_cli.core.verify import plan as verify_plan
from yarn_cli.errors import InputError

# the names that tell the probes of one document apart: every question asks for one name's key
NAMES = (
    "Alpha",
    "Bravo",
    "Charlie",
    "Delta",
    "Echo",
    "Foxtrot",
    "Golf",
    "Hotel",
    "India",
    "Juliett",
    "Kilo",
    "Lima",
    "Mike",
    "November",
    "Oscar",
    "Papa",
    "Quebec",
    "Romeo",
    "Sierra",
    "Tango",
    "Uniform",
    "Victor",
    "Whiskey",
    "Yankee",
)
TOO_SHORT = "pass a longer --short, or --passkeys 0 to tune on perplexity alone"


class TextRanOut(InputError):
    """The text left is shorter than one more document."""


def needle(name: str, key: int) -> str:
    return f"The pass key for {name} is {key}. Remember it. {key} is the pass key for {name}."


def question(name: str) -> str:
    return f"What is the pass key for {name}? The pass key for {name} is"


@dataclass(frozen=True)
class Probe:
    length: int  # the input length it tests: its question and answer end at this position
    name: str
    key: int
    checked: tuple[int, ...]  # positions of the key's digit tokens, each the model's top choice on a hit


@dataclass(frozen=True)
class ProbeDocument:
    ids: list[int]
    probes: tuple[Probe, ...]
    excluded: frozenset[int]  # positions holding probe tokens, not text

    def text_losses(self, losses: Sequence[float]) -> list[float | None]:
        """``losses[j]`` (the loss of the token at position j+1), with None where that token is a probe's."""
        return [None if j + 1 in self.excluded else x for j, x in enumerate(losses)]

    def hits(self, greedy: Sequence[bool], upto: int) -> dict[int, list[bool]]:
        """Hit or miss of every probe within the first ``upto`` positions, by probe length."""
        result: dict[int, list[bool]] = {}
        for probe in self.probes:
            if probe.length <= upto:
                result.setdefault(probe.length, []).append(all(greedy[p - 1] for p in probe.checked))
        return result


@dataclass(frozen=True)
class _Piece:
    ids: list[int]
    at: int  # where it should start
    length: int = 0  # a question block's length: it must start exactly at ``at``; a needle may move later
    probes: tuple[tuple[str, int, tuple[int, ...]], ...] = ()  # a block's (name, key, digit offsets in the piece)


def check_count(count: int, lengths: int = 2) -> None:
    if count * lengths > len(NAMES):
        raise InputError(f"--passkeys {count} asks for {count * lengths} probes; at most {len(NAMES) // lengths} per length")


def plan_probes(count: int, lengths: Sequence[int], seed: int) -> list[tuple[int, str, int, float]]:
    """(length, name, key, depth) of ``count`` probes at each length: keys drawn as verify draws them, names
    without repeats, depths spread evenly, (j + 0.5) / count."""
    check_count(count, len(lengths))
    total = count * len(lengths)
    keys = verify_plan.passkeys(total, seed)
    names = random.Random(seed).sample(NAMES, total)
    return [(length, names[i * count + j], keys[i * count + j], (j + 0.5) / count) for i, length in enumerate(lengths) for j in range(count)]


def build(
    text: Sequence[int],
    bos: Sequence[int],
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str],
    length: int,
    plan: Sequence[tuple[int, str, int, float]],
) -> tuple[ProbeDocument, int]:
    """A document of ``length`` tokens: ``bos``, the probes of ``plan`` and the text between them. Returns
    it and how many text tokens it used."""
    if not plan:
        used = length - len(bos)
        if used > len(text):
            raise TextRanOut("the tuning text ran out")
        return ProbeDocument(list(bos) + list(text[:used]), (), frozenset()), used
    pieces = [_Piece(list(bos) + encode(verify_plan.INSTRUCTION + "\n"), 0)]
    for probe_length in sorted({p[0] for p in plan}):
        here = [p for p in plan if p[0] == probe_length]
        block = _question_block(here, encode, decode)
        start = probe_length - len(block[0])
        pieces += [_Piece(encode("\n" + needle(name, key) + "\n"), int(depth * start)) for _, name, key, depth in here]
        pieces.append(_Piece(block[0], start, probe_length, block[1]))
    return _assemble(text, pieces, length)


def _question_block(plan, encode, decode) -> tuple[list[int], tuple[tuple[str, int, tuple[int, ...]], ...]]:
    """The questions of one length, each followed by its answer, and where each answer's digit tokens are."""
    ids: list[int] = []
    probes = []
    for _, name, key, _ in plan:
        asked = encode("\n" + question(name))
        answered = encode("\n" + question(name) + " " + str(key))
        shared = 0
        while shared < min(len(asked), len(answered)) and asked[shared] == answered[shared]:
            shared += 1
        answer = range(shared, len(answered))
        digits = [k for k in answer if any(ch.isdigit() for ch in decode([answered[k]]))] or list(answer)
        probes.append((name, key, tuple(len(ids) + k for k in digits)))
        ids += answered
    return ids, tuple(probes)


def _assemble(text: Sequence[int], pieces: list[_Piece], length: int) -> tuple[ProbeDocument, int]:
    ids: list[int] = []
    excluded: set[int] = set()
    probes: list[Probe] = []
    used = 0
    for piece in sorted(pieces, key=lambda p: (p.at, p.length)):
        if piece.length and len(ids) > piece.at:
            raise InputError(f"{piece.length:,} tokens are too few for the retrieval probes: {TOO_SHORT}")
        gap = max(piece.at - len(ids), 0)
        ids += text[used : used + gap]
        used += gap
        begin = len(ids)
        excluded.update(range(begin, begin + len(piece.ids)))
        probes += [Probe(piece.length, name, key, tuple(begin + k for k in digits)) for name, key, digits in piece.probes]
        ids += piece.ids
    if len(ids) > length:
        raise InputError(f"the retrieval probes do not fit {length:,} tokens: {TOO_SHORT}")
    tail = length - len(ids)
    ids += text[used : used + tail]
    used += tail
    if used > len(text):
        raise TextRanOut("the tuning text ran out")
    return ProbeDocument(ids, tuple(probes), frozenset(excluded - {0})), used
