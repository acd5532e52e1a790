"""tune's retrieval probes inside the perplexity documents: where they sit, what the perplexity skips, and
that the teacher-forced hit is what greedy generation on the real model says."""

from __future__ import annotations

import pytest

from yarn_cli.core.tune import plan as tune_plan
from yarn_cli.core.tune import probe as tune_probe
from yarn_cli.errors import InputError


def encode(text: str) -> list[int]:  # one token a character: every offset is easy to read back
    return [ord(c) for c in text]


def decode(ids: list[int]) -> str:
    return "".join(map(chr, ids))


TEXT = encode("".join(f"word{k} " for k in range(5000)))
BOS = [1]


def test_probes_end_at_their_lengths_and_the_text_runs_on_in_order():
    plan = tune_probe.plan_probes(2, (1500, 4000), seed=3)
    assert len({name for _, name, _, _ in plan}) == 4 and [depth for _, _, _, depth in plan] == [0.25, 0.75] * 2
    doc, used = tune_probe.build(TEXT, BOS, encode, decode, 4000, plan)
    assert len(doc.ids) == 4000 and doc.ids[0] == 1 and 0 not in doc.excluded
    by_length = {}
    for probe in doc.probes:
        by_length.setdefault(probe.length, []).append(probe)
        assert decode([doc.ids[p] for p in probe.checked]) == str(probe.key)
        asked = decode(doc.ids[probe.checked[0] - 60 : probe.checked[0]])
        assert asked.endswith(f"The pass key for {probe.name} is "), asked
        needle = decode(doc.ids).index(tune_probe.needle(probe.name, probe.key))
        assert needle < probe.checked[0] - 60  # the needle comes before its question
    # the last answer of each length ends right at it: the question is asked at that input length
    assert {length: max(p.checked[-1] for p in probes) for length, probes in by_length.items()} == {1500: 1499, 4000: 3999}
    text = [doc.ids[p] for p in range(1, 4000) if p not in doc.excluded]
    assert text == TEXT[:used]  # every other token is the text, in order, none lost or repeated


def test_hits_read_the_greedy_flags_of_the_key_digits_only():
    plan = tune_probe.plan_probes(1, (600, 2000), seed=0)
    doc, _ = tune_probe.build(TEXT, BOS, encode, decode, 2000, plan)
    greedy = [True] * 1999
    short, long = sorted(doc.probes, key=lambda p: p.length)
    assert doc.hits(greedy, 2000) == {600: [True], 2000: [True]}
    assert doc.hits(greedy, 1000) == {600: [True]}  # the reference's pass stops at L
    greedy[long.checked[2] - 1] = False
    assert doc.hits(greedy, 2000) == {600: [True], 2000: [False]}
    greedy[short.checked[0] - 2] = False  # the lead-in space before the key is given, not judged
    assert doc.hits(greedy, 2000)[600] == [True]


def test_the_perplexity_skips_probe_tokens():
    plan = tune_probe.plan_probes(1, (600, 2000), seed=0)
    doc, _ = tune_probe.build(TEXT, BOS, encode, decode, 2000, plan)
    losses = [1.0 if j + 1 not in doc.excluded else 50.0 for j in range(1999)]
    masked = doc.text_losses(losses)
    assert sum(x is None for x in masked) == len(doc.excluded)
    assert tune_plan.band([masked], 1, 2000) == pytest.approx(2.718281828)  # e^1: the 50s are gone
    assert tune_plan.chunk_losses([masked], 1000, 2000, 100) == (1.0,) * 10


def test_no_probes_is_the_plain_text():
    doc, used = tune_probe.build(TEXT, BOS, encode, decode, 500, [])
    assert doc.ids == BOS + TEXT[:499] and used == 499 and not doc.probes and not doc.excluded


def test_too_short_a_length_or_text_or_too_many_probes_is_refused():
    with pytest.raises(InputError, match="too few for the retrieval probes: pass a longer --short, or --passkeys 0"):
        tune_probe.build(TEXT, BOS, encode, decode, 2000, tune_probe.plan_probes(1, (150, 2000), 0))
    with pytest.raises(tune_probe.TextRanOut):
        tune_probe.build(TEXT[:900], BOS, encode, decode, 2000, tune_probe.plan_probes(1, (600, 2000), 0))
    with pytest.raises(InputError, match="at most 12 per length"):
        tune_probe.plan_probes(13, (600, 2000), 0)


def test_a_teacher_forced_hit_is_what_greedy_generation_answers(smollm2_gguf):
    """On the real model: when the probe's lead-in is given, greedy decoding writes the key exactly when every
    checked flag of the pass says so, probe by probe."""
    from yarn_cli.core.rope import variants
    from yarn_cli.runtimes.base import load_engine
    from yarn_cli.usecases.verify.protocol import load_text

    engine = load_engine("native", smollm2_gguf, "cpu", None, 1600)
    tok = engine.tokenizer
    try:
        plan = tune_probe.plan_probes(3, (700, 1500), seed=1)
        doc, _ = tune_probe.build(tok.encode(load_text(None)), tok.bos, tok.encode, tok.decode, 1500, plan)
        baseline = variants.baseline(engine.facts.rope, None)
        scored = engine.score(baseline, doc.ids, 0)
        flags = doc.hits(scored.greedy, 1500)
        generated: dict[int, list[bool]] = {}
        for probe in doc.probes:
            first = probe.checked[0]
            tokens = engine.generate(baseline, doc.ids[:first], len(probe.checked)).tokens
            generated.setdefault(probe.length, []).append(tokens == doc.ids[first : probe.checked[-1] + 1])
        assert generated == flags
        assert any(any(hits) for hits in generated.values())  # the model does retrieve some: not an all-miss check
    finally:
        engine.close()


def test_tune_reads_each_lengths_probes_out_of_its_one_pass(smollm2_gguf):
    """End to end on the real model, its trained length taken as 1,024 so the passes stay short: the short
    probes answer for the short length, the long ones for the long length, and the reference stops at L."""
    from yarn_cli.usecases.tune import tune

    result = tune(smollm2_gguf, scale=2, original_context=1024, short=512, passkeys=2, refinements=0, device="cpu")
    reference = result.reference
    assert reference.short_retrieval == 1.0 and reference.long_retrieval is None and reference.long_ppl is None
    assert max(reference.curve) == 1024  # the unextended pass ends at L
    assert all(c.short_retrieval is not None and c.long_retrieval is not None for c in result.candidates)
    assert any(c.long_retrieval for c in result.candidates)  # the long probes are read, not all missed
    assert max(result.candidates[0].curve) == 2048 and result.decision.chosen is not None
