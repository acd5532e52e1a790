"""RULER's synthetic tasks: yarn_cli's generators against RULER's own scripts (tests/reference/ruler, run as
RULER's prepare.py runs them), answers parsed back out of the prompts, the token budget with each engine's
tokenizer, RULER's scoring, and verify's RULER report."""

from __future__ import annotations

import collections
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from yarn_cli.core.verify import ruler
from yarn_cli.core.verify.ruler import build, niah

REFERENCE = Path(__file__).parent / "reference" / "ruler"
SCRIPTS = {"niah": "niah.py", "vt": "variable_tracking.py", "cwe": "common_words_extraction.py", "fwe": "freq_words_extraction.py"}
# RULER's scripts import nltk's punkt splitter; it needs a download, so both sides split sentences the same way
RUNNER = """
import runpy, sys
import nltk.tokenize
from yarn_cli.core.verify.ruler.niah import split_sentences
nltk.tokenize.sent_tokenize = split_sentences
script = sys.argv[1]
sys.path.insert(0, script.rsplit('/', 1)[0])
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name='__main__')
"""


def essay_text() -> str:
    from yarn_cli.usecases.verify.protocol import load_text

    return load_text(None)


def ruler_reference(work: Path, task: ruler.RulerTask, tokenizer: Path, length: int, seed: int, n: int) -> list[dict]:
    """RULER's JSONL for ``task``: the script prepare.py would call, with its arguments."""
    for module in ("nltk", "wonderwords", "numpy", "scipy", "tqdm"):
        pytest.importorskip(module)
    shutil.copytree(REFERENCE, work / "data")
    data = work / "data" / "synthetic" / "json"
    data.mkdir()
    (data / "english_words.json").write_text("{}")  # RULER's own list, read only past wonderwords' 8k words
    (data / "PaulGrahamEssays.json").write_text(json.dumps({"text": essay_text()}))
    command = [
        sys.executable,
        "-c",
        RUNNER,
        str(work / "data" / "synthetic" / SCRIPTS[task.kind]),
        "--save_dir",
        str(work / "out"),
        "--save_name",
        task.name,
        "--tokenizer_path",
        str(tokenizer),
        "--tokenizer_type",
        "hf",
        "--max_seq_length",
        str(length),
        "--tokens_to_generate",
        str(task.tokens_to_generate),
        "--num_samples",
        str(n),
        "--random_seed",
        str(seed),
        "--template",
        task.template,
    ]
    for key, value in task.args.items():
        command += [f"--{key}", str(value)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in (work / "out" / task.name / "validation.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def smollm2_counter(smollm2_gguf):
    from yarn_cli.io import tokenizers_io
    from yarn_cli.io.gguf_reader import read_gguf

    tokenizer = tokenizers_io.from_gguf(read_gguf(smollm2_gguf))
    return lambda text: len(tokenizer.bos) + len(tokenizer.encode(text))


@pytest.fixture(scope="module")
def lists():
    pytest.importorskip("wonderwords")
    from yarn_cli.io import ruler_words

    return ruler_words.load()


CASES = [(name, 2048, 42) for name in ruler.TASKS] + [(name, 4096, 7) for name in ("niah_multikey_2", "vt", "cwe", "fwe")]


@pytest.mark.parametrize("name,length,seed", CASES, ids=[f"{n}-{length}" for n, length, _ in CASES])
def test_generators_write_rulers_own_prompts(name, length, seed, smollm2_gguf, smollm2_counter, lists, tmp_path):
    """Same seed, length and tokenizer: RULER's script and ours write the same prompts (template, haystack size,
    needles and their places, answer prefix), the same references and the same token counts."""
    task = ruler.TASKS[name]
    theirs = ruler_reference(tmp_path, task, smollm2_gguf, length, seed, 2)
    ours = build.samples(task, smollm2_counter, length, 2, seed, lists, niah.essay_words(essay_text()))
    assert len(theirs) == len(ours) == 2
    for reference, sample in zip(theirs, ours):
        assert sample.text == reference["input"] + reference["answer_prefix"]
        assert sample.outputs == reference["outputs"]
        assert sample.tokens == reference["length"] <= length


def test_word_pairs_equal_rulers_sorted_list(lists):
    """The needle keys without six million strings: every entry RULER's sorted(set(...)) has, in its order."""
    from wonderwords import random_word

    nouns = random_word._get_words_from_text_file("nounlist.txt")
    adjectives = random_word._get_words_from_text_file("adjectivelist.txt")
    full = sorted({f"{a}-{n}" for a in adjectives for n in nouns})
    assert len(lists.pairs) == len(full)
    import random

    picks = random.Random(0).sample(range(len(full)), 20000) + [0, len(full) - 1]
    # the families whose strings interleave ("blue-..." and "blue-eyed-...") are checked whole
    families = [i for i, entry in enumerate(full) if entry.startswith(("blue-", "high-", "old-", "teeny-", "wide-"))]
    assert [lists.pairs[i] for i in picks + families] == [full[i] for i in picks + families]


def test_depths_and_constants_are_rulers():
    np = pytest.importorskip("numpy")
    assert niah.DEPTHS == [int(x) for x in np.round(np.linspace(0, 100, num=40, endpoint=True)).astype(int)]
    scipy_special = pytest.importorskip("scipy.special")
    from yarn_cli.core.verify.ruler.words import ZETA_2

    assert ZETA_2 == scipy_special.zeta(2.0)
    sys.path.insert(0, str(REFERENCE / "synthetic"))
    try:
        import constants as theirs  # RULER's scripts/data/synthetic/constants.py
    finally:
        sys.path.pop(0)
    names = {"niah": "niah", "vt": "variable_tracking", "cwe": "common_words_extraction", "fwe": "freq_words_extraction"}
    for kind, (template, prefix, budget) in ruler.TEMPLATES.items():
        entry = theirs.TASKS[names[kind]]
        assert (template, prefix, budget) == (entry["template"], entry["answer_prefix"], entry["tokens_to_generate"])


def _needles(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = collections.defaultdict(list)
    for key, value in re.findall(r"One of the special magic \w+ for (.+?) is: (\S+)\.", text):
        found[key].append(value)
    return found


@pytest.mark.parametrize("name", [n for n, t in ruler.TASKS.items() if t.kind == "niah"])
def test_niah_answers_are_recoverable_and_depth_places_the_needle(name, smollm2_counter, lists):
    task = ruler.TASKS[name]
    essay = niah.essay_words(essay_text())
    for depth in [0.0, 0.5, 1.0] if task.has_depth else [None]:
        sample = build.samples(task, smollm2_counter, 3000, 1, 3, lists, essay, depth)[0]
        question = sample.text.rsplit("\n", 1)[1]
        keys = re.search(r"for (.+?) mentioned", question).group(1).replace(", and ", ", ").split(", ")
        needles = _needles(sample.text)
        assert sorted(v for k in keys for v in needles[k]) == sorted(sample.outputs)  # RULER shuffles the needles
        if depth is not None:
            place = sample.text.index(f"for {keys[0]} is: {sample.outputs[0]}.")
            body = sample.text.split("\n", 1)[1].rsplit("\n", 1)[0]
            share = (place - len(sample.text.split("\n", 1)[0])) / len(body)
            assert abs(share - depth) < 0.05, (depth, share)


def test_vt_cwe_fwe_answers_are_recoverable(smollm2_counter, lists):
    vt = build.samples(ruler.TASKS["vt"], smollm2_counter, 3000, 1, 5, lists)[0]
    question = vt.text.rsplit("Question:", 1)[1]
    value = re.search(r"assigned the value (\d+)", question).group(1)
    body = vt.text.rsplit("Memorize and track", 1)[1]
    bound = {value}
    names = []
    for left, right in re.findall(r"VAR (\w+) = (?:VAR )?(\w+)", body):
        if right in bound:
            bound.add(left)
            names.append(left)
    assert names == vt.outputs
    cwe = build.samples(ruler.TASKS["cwe"], smollm2_counter, 3000, 1, 5, lists)[0]
    listed = re.findall(r"\d+\. (\S+)", cwe.text.rsplit("Below is a numbered list", 1)[1].split("\nQuestion")[0])
    assert {w for w, _ in collections.Counter(listed).most_common(10)} == set(cwe.outputs)
    fwe = build.samples(ruler.TASKS["fwe"], smollm2_counter, 3000, 1, 5, lists)[0]
    coded = fwe.text.split("coded words. ", 1)[1].split("\nQuestion")[0].split()
    ranked = [w for w, _ in collections.Counter(w for w in coded if w != "...").most_common(3)]
    assert ranked == fwe.outputs


def test_scoring_is_rulers():
    sys.path.insert(0, str(REFERENCE))
    try:
        import eval_constants as theirs  # RULER's scripts/eval/synthetic/constants.py
    finally:
        sys.path.pop(0)
    cases = [
        ("The numbers are 1234567 and 7654321.", ["1234567", "7654321"]),
        ("  \x01ABC-def and\tmore", ["abc-DEF", "x"]),
        ("nothing", ["1"]),
        ("", ["a", "b", "c"]),
    ]
    for prediction, references in cases:
        cleaned = ruler.postprocess(prediction)
        assert ruler.string_match_all(prediction, references) == pytest.approx(theirs.string_match_all([cleaned], [references]))
    assert ruler.effective_length({4096: 90.0, 8192: 86.0, 16384: 80.0, 32768: 88.0}) == 8192
    assert ruler.effective_length({4096: 85.6}) == 4096
    assert ruler.effective_length({4096: 50.0, 8192: 99.0}) is None


@pytest.fixture(scope="module")
def tiny_x4(trained_tiny, tmp_path_factory):
    from yarn_cli.api import apply_extend, plan_extend

    out = tmp_path_factory.mktemp("ruler") / "x4"
    apply_extend(plan_extend(trained_tiny["model"], out, scale=4))
    return out


def test_verify_reports_every_cell_the_heatmap_and_effective_length(tiny_x4):
    """--json carries every cell; the per-task scores, the heatmap and the average are means of those cells,
    and the effective length follows from the average."""
    from yarn_cli.api import verify

    report = verify(tiny_x4, tasks="perplexity,niah_single_1,vt", lengths=[1024, 1536], depths="0.25,0.75", samples=2, parity=False).to_json()
    section = report["ruler"]
    assert report["tasks"] == ["perplexity", "niah_single_1", "vt"] and section["tasks"] == ["niah_single_1", "vt"]
    cells = [c for c in report["cells"] if c["task"] in section["tasks"]]
    assert {tuple(sorted(c)) for c in cells} == {("depth", "length", "sample", "score", "task", "variant")}
    for variant in ("extended", "baseline"):
        mine = [c for c in cells if c["variant"] == variant]
        assert len([c for c in mine if c["task"] == "niah_single_1"]) == 2 * 2 * 2  # lengths x depths x samples
        assert len([c for c in mine if c["task"] == "vt"]) == 2 * 2 and all(c["depth"] is None for c in mine if c["task"] == "vt")
        for task in section["tasks"]:
            for length in ("1024", "1536"):
                at = [c["score"] for c in mine if c["task"] == task and str(c["length"]) == length]
                assert section["scores"][variant][task][length] == pytest.approx(sum(at) / len(at))
                for depth, value in report["heatmaps"][task][variant][length].items():
                    here = [
                        c["score"]
                        for c in mine
                        if c["task"] == task
                        and str(c["length"]) == length
                        and (c["depth"] is None if depth == "random" else c["depth"] == float(depth))
                    ]
                    assert value == pytest.approx(sum(here) / len(here))
                assert len(report["heatmaps"][task][variant][length]) == (2 if task == "niah_single_1" else 1)
        average = {int(n): x for n, x in section["average"][variant].items()}
        assert average == pytest.approx(
            {n: (section["scores"][variant]["niah_single_1"][str(n)] + section["scores"][variant]["vt"][str(n)]) / 2 for n in (1024, 1536)}
        )
        assert section["effective_length"][variant]["average"] == ruler.effective_length(average, 85.6)
    assert "RULER effective length" in report["verdict"]["reason"]


@pytest.mark.parametrize("engine", ["native", "llama.cpp", "transformers"])
def test_prompts_fill_the_budget_with_the_running_engines_tokenizer(engine, smollm2_gguf, tiny_x4):
    """Sized with the tokenizer of the engine that runs them: prompt + answer budget within the length, and
    within 15% of it, as RULER sizes by whole haystack increments (vLLM's: tests/test_vllm.py)."""
    pytest.importorskip({"llama.cpp": "llama_cpp", "transformers": "transformers"}.get(engine, "torch"))
    from yarn_cli.usecases.verify import prepare_verify

    model = tiny_x4 if engine == "transformers" else smollm2_gguf  # transformers runs HF folders
    run = prepare_verify(model, engine=engine, device="cpu", tasks="niah_single_1,niah_multikey_3,vt,fwe", lengths=[2048], depths="0.5", parity=False)
    try:
        jobs = run.prepared.jobs["ruler"]
        tokenizer = run.engine.tokenizer
        assert {job.expected[0] for job in jobs} == {"niah_single_1", "niah_multikey_3", "vt", "fwe"}
        for job in jobs:
            budget = ruler.TASKS[job.expected[0]].tokens_to_generate
            assert 0.85 * 2048 <= len(job.ids) + budget <= 2048  # RULER shrinks by whole haystack increments
            assert job.ids[: len(tokenizer.bos)] == tokenizer.bos
    finally:
        run.engine.close()
