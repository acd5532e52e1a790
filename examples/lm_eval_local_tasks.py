"""Three small lm-eval tasks over local files, so lm-eval runs with no network and no hub cache: the README's
example of `yarn verify --lm-eval`, and the tests' tasks.

    python examples/lm_eval_local_tasks.py DIR [TEXT]   # writes DIR/yarn_{mc,gen,rolling}.yaml and their JSONL
    yarn verify OUT --lm-eval yarn_mc,yarn_gen,yarn_rolling --lm-eval-args include_path=DIR

TEXT defaults to the held-out tenth of Python's documentation topics (the text the tiny demo model never
trains on). Each task YAML is the pattern for your own data: ``dataset_path: json`` and
``dataset_kwargs.data_files`` pointing at a local JSONL file.

- ``yarn_mc`` (multiple choice): the start of a sentence of held-out Python documentation, and four
  continuations, one of them the real one (a model that learned the text beats chance);
- ``yarn_gen`` (generate_until): the same starts, answered greedily until a newline, scored by exact match;
- ``yarn_rolling`` (loglikelihood_rolling): whole documents, one of them longer than the extended length,
  scored as perplexity the way lm-eval's wikitext task does.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

MC = """task: yarn_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder}/mc.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
GEN = """task: yarn_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder}/gen.jsonl
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 12
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""
ROLLING = """task: yarn_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder}/rolling.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: byte_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
"""


def sentences(text: str) -> list[list[str]]:
    """Sentences of 12 or more words, as word lists."""
    found = [s.split() for s in re.split(r"(?<=[.!?])\s+", text)]
    return [words for words in found if 12 <= len(words) <= 40]


def write_tasks(folder: Path, text: str, docs: int = 16, seed: int = 0) -> Path:
    """The three tasks over ``text``; returns the folder to give lm-eval as include_path."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    pool = sentences(text)
    rng.shuffle(pool)
    chosen, others = pool[:docs], pool[docs:]
    mc, gen = [], []
    for words in chosen:
        question, truth = " ".join(words[:8]), " " + " ".join(words[8:12])
        wrong = [" " + " ".join(rng.choice(others)[8:12]) for _ in range(3)]
        answer = rng.randrange(4)
        choices = wrong[:answer] + [truth] + wrong[answer:]
        mc.append({"question": question, "choices": choices, "answer": answer})
        gen.append({"question": question, "answer": truth})
    paragraphs = [p for p in text.split("\n\n") if len(p.split()) > 40]
    rolling = [{"text": paragraphs[0]}, {"text": paragraphs[1]}, {"text": "\n\n".join(paragraphs[2:40])}]
    for name, rows in (("mc", mc), ("gen", gen), ("rolling", rolling)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    for name, template in (("mc", MC), ("gen", GEN), ("rolling", ROLLING)):
        (folder / f"yarn_{name}.yaml").write_text(template.format(folder=folder.resolve()), encoding="utf-8")
    return folder


def held_out_text() -> str:
    from yarn_cli.io.corpus import default_documents

    docs = default_documents()
    return "\n\n".join(docs[len(docs) * 9 // 10 :])


if __name__ == "__main__":
    import sys

    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python examples/lm_eval_local_tasks.py DIR [TEXT]")
    text = Path(sys.argv[2]).read_text(encoding="utf-8") if len(sys.argv) == 3 else held_out_text()
    print(write_tasks(Path(sys.argv[1]), text))
