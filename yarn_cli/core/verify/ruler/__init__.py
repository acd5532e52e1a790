"""RULER's synthetic long-context tasks (NVIDIA/RULER, scripts/synthetic.yaml and scripts/data/synthetic/*.py),
generated offline and scored as RULER scores them. Pure: the caller hands in the tokenizer's counter, the word
lists and the essay text; the generators follow RULER's own random draws so that, for a seed, a length and a
tokenizer, they write RULER's prompts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
THRESHOLD = 85.6  # Llama-2-7B's RULER score at 4k: RULER's bar for "effective length"

# RULER's scripts/data/synthetic/constants.py: the template, the answer prefix appended to it for every model,
# and the answer budget the prompt is sized to leave free.
NIAH = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. I will quiz you "
    "about the {type_needle_v} afterwards.\n{context}\nWhat are all the special magic {type_needle_v} for {query} "
    "mentioned in the provided text?",
    " The special magic {type_needle_v} for {query} mentioned in the provided text are",
    128,
)
VT = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\nQuestion: Find "
    "all variables that are assigned the value {query} in the text above.",
    " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are assigned the value {query}, they are: ",
    30,
)
CWE = (
    "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones that "
    "appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?",
    " Answer: The top 10 words that appear most often in the list are:",
    120,
)
FWE = (
    "Read the following coded text and track the frequency of each coded word. Find the three most frequently "
    "appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What "
    "are the three most frequently appeared words in the above coded text?",
    " Answer: According to the coded text above, the three most frequently appeared words are:",
    50,
)
TEMPLATES = {"niah": NIAH, "vt": VT, "cwe": CWE, "fwe": FWE}


@dataclass(frozen=True)
class RulerTask:
    """One task of RULER's synthetic.yaml: its generator (``kind``), that generator's arguments, and what it
    measures (for the README and --help)."""

    name: str
    kind: str  # niah, vt, cwe, fwe
    measures: str
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def template(self) -> str:
        """The task's template with its answer prefix, as RULER's prepare.py builds it for a base model."""
        template, prefix, _ = TEMPLATES[self.kind]
        return template + prefix

    @property
    def answer_prefix(self) -> str:
        return TEMPLATES[self.kind][1]

    @property
    def tokens_to_generate(self) -> int:
        return TEMPLATES[self.kind][2]

    @property
    def needles_placed(self) -> int:
        """How many needles the prompt holds (distractor needles of a needle haystack are haystack)."""
        if self.kind != "niah":
            return 0
        return max(self.args["num_needle_k"], self.args["num_needle_q"]) * self.args["num_needle_v"]

    @property
    def has_depth(self) -> bool:
        """A single needle has a depth a heatmap can show; RULER places several at random depths."""
        return self.needles_placed == 1

    @property
    def uses_text(self) -> bool:
        return self.args.get("type_haystack") == "essay"


def _niah(name: str, haystack: str, key: str, value: str, measures: str, k: int = 1, v: int = 1, q: int = 1) -> RulerTask:
    return RulerTask(
        name,
        "niah",
        measures,
        {"type_haystack": haystack, "type_needle_k": key, "type_needle_v": value, "num_needle_k": k, "num_needle_v": v, "num_needle_q": q},
    )


TASKS = {
    task.name: task
    for task in (
        _niah("niah_single_1", "noise", "words", "numbers", "one 7-digit number keyed by a word, in repeated filler"),
        _niah("niah_single_2", "essay", "words", "numbers", "one 7-digit number keyed by a word, in real prose (--text)"),
        _niah("niah_single_3", "essay", "words", "uuids", "one UUID keyed by a word, in real prose"),
        _niah("niah_multikey_1", "essay", "words", "numbers", "the number of one of 4 keyed needles in prose", k=4),
        _niah("niah_multikey_2", "needle", "words", "numbers", "one needle among a haystack made of distractor needles"),
        _niah("niah_multikey_3", "needle", "uuids", "uuids", "one UUID keyed by a UUID among distractor needles"),
        _niah("niah_multivalue", "essay", "words", "numbers", "all 4 values stored under one key", v=4),
        _niah("niah_multiquery", "essay", "words", "numbers", "the values of 4 keys asked at once", q=4),
        RulerTask(
            "vt",
            "vt",
            "variable tracking: every name bound to a value through a 4-hop chain",
            {"type_haystack": "noise", "num_chains": 1, "num_hops": 4},
        ),
        RulerTask("cwe", "cwe", "common words: the 10 words repeated most in a long numbered list", {"freq_cw": 30, "freq_ucw": 3, "num_cw": 10}),
        RulerTask("fwe", "fwe", "frequent words: the 3 most frequent coded words of a Zipf-distributed text", {"alpha": 2.0}),
    )
}


@dataclass(frozen=True)
class Sample:
    """One prompt: its text (the answer prefix included: it is what the model continues), the reference
    strings, its size in tokens (prompt and the answer budget: what RULER holds to the length) and how much
    haystack it took."""

    text: str
    outputs: list[str]
    tokens: int
    units: int
    depth: float | None = None


def postprocess(prediction: str) -> str:
    """RULER's cleaning of a prediction: control characters become newlines, whitespace stripped."""
    import re

    return re.sub(r"[\x00-\x1f]", "\n", prediction.strip()).strip()


def string_match_all(prediction: str, references: list[str]) -> float:
    """RULER's score of one prediction, in points: the share of reference strings found in it, case-insensitive."""
    text = postprocess(prediction).lower()
    return 100.0 * sum(1.0 for r in references if r.lower() in text) / len(references)


def effective_length(scores: dict[int, float], threshold: float = THRESHOLD) -> int | None:
    """RULER's effective length: the longest length up to which every score reaches ``threshold``; None when
    the shortest does not."""
    best = None
    for length in sorted(scores):
        if scores[length] < threshold:
            break
        best = length
    return best
