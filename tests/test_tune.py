"""yarn tune: the search, the objectives and their guard, the fit, and OUT applied exactly by every runtime.

The trade-off is real only on a model that was trained at a short length, so most tests run on a tiny llama
pretrained at L = 256 (the ``trained_tiny`` fixture) and tune it x4; the written checkpoint is held to the
tuned candidate through transformers and llama.cpp, not through our own forward pass alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from yarn_cli.cli.app import main
from yarn_cli.core.rope.scalars import get_mscale
from yarn_cli.core.tune import fit as tune_fit
from yarn_cli.core.tune import plan as tune_plan
from yarn_cli.errors import InputError

torch = pytest.importorskip("torch")


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- the pure parts ----------------------------------------------------------------------------------------


def test_grid_brackets_the_paper_value_and_includes_one():
    for scale in (1.5, 2, 4, 8, 32):
        grid = tune_plan.m_grid(scale)
        assert grid[0] == 1.0 and any(math.isclose(m, get_mscale(scale), abs_tol=1e-6) for m in grid)
        assert grid[-1] > get_mscale(scale) and len(grid) == tune_plan.GRID_POINTS


def test_search_finds_the_minimum_of_a_smooth_function_and_widens_the_grid():
    calls = []

    def f(m):
        calls.append(m)
        return (m - 0.9) ** 2  # below the grid: the search must widen it downward

    values = tune_plan.search_m(f, 4.0, refinements=4)
    best = min(values, key=values.get)
    assert abs(best - 0.9) < 0.01 and min(values) < 1.0 and len(calls) == len(values)


def test_fit_equals_numpy_least_squares_with_its_standard_errors():
    np = pytest.importorskip("numpy")
    points = [(2.0, 1.05), (4.0, 1.16), (8.0, 1.19), (16.0, 1.30)]
    fit = tune_fit.fit_log(points)
    x = np.log([s for s, _ in points])
    y = np.array([m for _, m in points])
    (a, b), cov = np.polyfit(x, y, 1, cov="unscaled")
    residual = np.sum((y - (a * x + b)) ** 2) / (len(x) - 2)
    assert fit.a == pytest.approx(a, rel=1e-12) and fit.b == pytest.approx(b, rel=1e-12)
    assert fit.a_stderr == pytest.approx(math.sqrt(cov[0, 0] * residual), rel=1e-9)
    assert fit.b_stderr == pytest.approx(math.sqrt(cov[1, 1] * residual), rel=1e-9)
    assert tune_fit.fit_log(points[:2]).a_stderr is None  # two points: a line, no uncertainty


def test_the_beta_search_moves_beta_fast_then_beta_slow_and_keeps_slow_below_fast():
    def value(betas):  # a bowl with its floor at (16, 2)
        return (math.log2(betas[0]) - 4) ** 2 + (math.log2(betas[1]) - 1) ** 2

    seen = []
    values = tune_plan.search_betas(lambda b: seen.append(b) or value(b), (32.0, 1.0), value((32.0, 1.0)))
    assert seen == [(16.0, 1.0), (64.0, 1.0), (16.0, 0.5), (16.0, 2.0)]
    assert min(values, key=values.get) == (16.0, 2.0)
    # beta_slow never reaches beta_fast, and the stop ends the search at once
    near = tune_plan.search_betas(lambda b: value(b), (2.0, 1.0), 9.0)
    assert all(slow < fast for fast, slow in near)
    assert tune_plan.search_betas(lambda b: 0.0, (32.0, 1.0), 1.0, stop=lambda: True) == {(32.0, 1.0): 1.0}


@pytest.mark.parametrize("bad", ["1.2", "2", "a,b", "0.5,2", "2,inf"])
def test_fit_scales_are_checked(bad):
    with pytest.raises(InputError):
        tune_fit.parse_scales(bad)


def test_one_pass_gives_every_length_as_separate_passes_do(trained_tiny):
    """The curve's premise, on a real causal model: the loss at a position does not depend on what follows."""
    from yarn_cli.core.rope import variants
    from yarn_cli.runtimes.base import load_engine

    engine = load_engine("native", trained_tiny["model"], "cpu", None, 1100)
    ids = engine.tokenizer.bos + engine.tokenizer.encode(trained_tiny["tune_text"].read_text())[:1023]
    variant = variants.yarn(engine.facts.rope, 4.0)
    whole = engine.score(variant, ids, 0).losses
    for length in (128, 256, 640, 1024):
        separate = engine.score(variant, ids[:length], 0).losses
        assert tune_plan.input_perplexity([whole], length) == pytest.approx(math.exp(sum(separate) / len(separate)), rel=1e-5)
    beyond = whole[255:]  # tokens 256.. of the pass, each predicted from all before it
    assert tune_plan.band([whole], 256, 1024) == pytest.approx(math.exp(sum(beyond) / len(beyond)), rel=1e-12)


# --- the search on a model with a real trade-off --------------------------------------------------------------


@pytest.fixture(scope="module")
def tuned(trained_tiny, tmp_path_factory):
    from yarn_cli.usecases.tune import tune

    out = tmp_path_factory.mktemp("tuned") / "tiny-tuned"
    result = tune(trained_tiny["model"], out, scale=4, text=trained_tiny["tune_text"], docs=12, passkeys=0, short=256, objective="long", device="cpu")
    return result, out


def _long_ppl(engine, check_text: Path, scale: float, m: float) -> float:
    from yarn_cli.core.rope import variants

    ids = engine.tokenizer.encode(check_text.read_text())
    docs = [engine.tokenizer.bos + ids[k * 1023 : (k + 1) * 1023] for k in range(len(ids) // 1023)]
    variant = variants.yarn(engine.facts.rope, scale, m)
    return tune_plan.band([engine.score(variant, doc, 0).losses for doc in docs], 256, 1024)


def test_the_chosen_m_beats_both_neighbours_on_held_out_text(tuned, trained_tiny):
    from yarn_cli.runtimes.base import load_engine

    result, _ = tuned
    chosen = result.decision.chosen
    assert result.ok and len(result.decision.neighbours) == 2, result.decision
    engine = load_engine("native", trained_tiny["model"], "cpu", None, 1100)
    ppl = _long_ppl(engine, trained_tiny["check_text"], 4.0, chosen.m)
    for neighbour in result.decision.neighbours:
        assert ppl < _long_ppl(engine, trained_tiny["check_text"], 4.0, neighbour), (chosen.m, neighbour)
    # the trade-off the guard exists for: every candidate loses perplexity on short inputs
    assert all(c.short_ppl > result.reference.short_ppl for c in result.candidates)


def test_the_written_config_gives_the_tuned_candidates_log_probabilities_in_transformers(tuned, trained_tiny):
    from transformers import AutoModelForCausalLM

    from yarn_cli.core.rope import variants
    from yarn_cli.runtimes.base import load_engine

    result, out = tuned
    chosen = result.decision.chosen
    config = json.loads((out / "config.json").read_text())
    assert config["rope_scaling"]["attention_factor"] == pytest.approx(chosen.m) and config["max_position_embeddings"] == 1024
    engine = load_engine("native", trained_tiny["model"], "cpu", None, 1100)
    ids = engine.tokenizer.bos + engine.tokenizer.encode(trained_tiny["check_text"].read_text())[:899]
    ours = torch.tensor(engine.score(variants.yarn(engine.facts.rope, 4.0, chosen.m), ids, 0).losses)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1]
    theirs = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none").double()
    assert (ours - theirs).abs().max().item() < 1e-4
    paper = torch.tensor(engine.score(variants.yarn(engine.facts.rope, 4.0), ids, 0).losses)
    assert (paper - theirs).abs().max().item() > 1e-3  # the tuned m is not the paper's: the check can fail


@pytest.mark.parametrize("engine", ["native", "transformers"])
def test_verify_parity_is_exact_on_the_tuned_checkpoint(tuned, engine, capsys):
    _, out = tuned
    code, stdout, _ = run(["verify", str(out), "--engine", engine, "--parity-only", "--device", "cpu", "--json"], capsys)
    parity = json.loads(stdout)["parity"]
    assert code == 0 and parity["diagnosis"] == "exact" and parity["max_abs_diff"] < 1e-4, parity["line"]
    assert parity["hypotheses_mean"]["no-attention-factor"] > 20 * max(parity["mean_abs_diff"], 1e-7)


def test_a_baked_tune_is_exact_too(trained_tiny, tmp_path, capsys):
    out = tmp_path / "baked"
    code, stdout, err = run(
        [
            "tune",
            str(trained_tiny["model"]),
            "--scale",
            "4",
            "--text",
            str(trained_tiny["tune_text"]),
            "--short",
            "256",
            "--passkeys",
            "0",
            "--refinements",
            "0",
            "--bake-temperature",
            "-o",
            str(out),
            "--device",
            "cpu",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    chosen = json.loads(stdout)["chosen"]
    config = json.loads((out / "config.json").read_text())
    assert config["rope_scaling"]["attention_factor"] == 1.0
    assert config["yarn_cli"]["baked_attention_factor"] == pytest.approx(chosen["m"])
    code, stdout, _ = run(["verify", str(out), "--parity-only", "--device", "cpu", "--json"], capsys)
    assert code == 0 and json.loads(stdout)["parity"]["diagnosis"] == "exact"


def test_the_guard_binds_and_refuses(trained_tiny, tmp_path, capsys):
    from yarn_cli.usecases.tune import tune

    common = dict(scale=4, text=trained_tiny["tune_text"], docs=2, passkeys=0, short=256, device="cpu", refinements=1)
    free = tune(trained_tiny["model"], objective="long", **common)
    losses = [c.short_ppl / free.reference.short_ppl - 1 for c in free.candidates]
    free_loss = free.decision.chosen.short_ppl / free.reference.short_ppl - 1
    assert min(losses) < free_loss  # a lower short-input loss exists, at a cost beyond L
    allowed = round((min(losses) + free_loss) / 2, 5)
    guarded = tune(trained_tiny["model"], objective="short-guard", max_short_loss=allowed, **common)
    chosen = guarded.decision.chosen
    assert chosen is not None and chosen.short_ppl / guarded.reference.short_ppl - 1 <= allowed
    assert chosen.m != free.decision.chosen.m and chosen.long_ppl > free.decision.chosen.long_ppl
    # 2% is more than any static YaRN x4 of this model can keep: one line naming the options, nothing written
    out = tmp_path / "refused"
    code, stdout, err = run(
        [
            "tune",
            str(trained_tiny["model"]),
            "--scale",
            "4",
            "--text",
            str(trained_tiny["tune_text"]),
            "--short",
            "256",
            "--passkeys",
            "0",
            "--refinements",
            "0",
            "--max-short-loss",
            "0.02",
            "-o",
            str(out),
            "--device",
            "cpu",
        ],
        capsys,
    )
    stdout = " ".join(stdout.split())
    assert code == 1 and "no static YaRN configuration meets the short-guard guard" in stdout
    assert "smaller --scale" in stdout and "yarn finetune" in stdout and "unextended model" in stdout
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name != "refused"]


def test_to_searches_the_factor_too_and_the_budget_stops_early(trained_tiny):
    from yarn_cli.usecases.tune import tune

    result = tune(
        trained_tiny["model"], to="768", text=trained_tiny["tune_text"], docs=1, passkeys=0, short=256, device="cpu", refinements=0, budget=1e-6
    )
    # a budget too small for anything still measures the paper's m at s = N/L (what extend writes) and m = 1.0,
    # announced before the search, and chooses among them: never worse than the paper's default
    assert result.stopped_early and result.decision.chosen is not None
    paper = tune_plan.get_mscale(3.0)
    assert [(c.scale, c.m) for c in result.candidates] == [(3.0, pytest.approx(paper, abs=1e-6)), (3.0, 1.0)]
    notes = " ".join(result.notes)
    assert "--budget reached after 2 candidate(s)" in notes and "the paper's m and m = 1.0 are measured whatever the budget" in notes
    assert result.decision.chosen.long_ppl <= result.candidates[0].long_ppl
    full = tune(trained_tiny["model"], to="768", text=trained_tiny["tune_text"], docs=1, passkeys=0, short=256, device="cpu", refinements=0)
    assert sorted({c.scale for c in full.candidates}) == [3.0, 4.5, 6.0]  # N/L (Qwen's advice), and larger


def test_the_budget_stops_before_a_candidate_that_would_overrun_it(trained_tiny, monkeypatch):
    """On a clock where every pass costs 10 s, a 45 s budget holds the reference and three candidates (the next one
    would end at 50 s): the search stops within the budget, not one candidate past it."""
    from yarn_cli.native.engine import NativeEngine
    from yarn_cli.usecases import tune as tune_usecase

    clock = [0.0]
    score = NativeEngine.score

    def timed_score(self, *args, **kwargs):
        clock[0] += 10.0
        return score(self, *args, **kwargs)

    monkeypatch.setattr(NativeEngine, "score", timed_score)
    monkeypatch.setattr(tune_usecase.time, "perf_counter", lambda: clock[0])
    result = tune_usecase.tune(
        trained_tiny["model"], scale=3, text=trained_tiny["tune_text"], docs=1, passkeys=0, short=256, device="cpu", budget=0.75
    )
    assert result.stopped_early and len(result.candidates) == 3 and clock[0] == 40.0
    assert result.candidates[0].m == pytest.approx(tune_plan.get_mscale(3.0), abs=1e-6) and result.candidates[1].m == 1.0


def test_fit_and_plot(trained_tiny, tmp_path, capsys):
    np = pytest.importorskip("numpy")
    from PIL import Image

    plot = tmp_path / "fit.png"
    code, stdout, err = run(
        [
            "tune",
            str(trained_tiny["model"]),
            "--fit",
            "--fit-scales",
            "2,3,4",
            "--text",
            str(trained_tiny["tune_text"]),
            "--short",
            "256",
            "--passkeys",
            "0",
            "--refinements",
            "1",
            "--plot",
            str(plot),
            "--device",
            "cpu",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    report = json.loads(stdout)
    best = {float(s): m["m"] for s, m in report["best_by_scale"].items()}
    a, b = np.polyfit(np.log(list(best)), list(best.values()), 1)
    assert report["fit"]["a"] == pytest.approx(a) and report["fit"]["b"] == pytest.approx(b)
    assert report["fit"]["a_stderr"] is not None and report["output"] is None
    # each s is judged on L..s·L, its own range, though the documents are as long as the largest s needs
    original = report["lengths"]["original"]
    for c in report["candidates"]:
        assert max(int(n) for n in c["curve"]) == round(c["scale"] * original)
    assert report["lengths"]["long"] == 4 * original
    with Image.open(plot) as image:
        assert image.size == (1440, 540)  # 12 x 4.5 inches at 120 dpi: the sweep and the fit side by side


def test_the_beta_search_writes_the_chosen_betas_that_transformers_then_applies(trained_tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    from yarn_cli.core.rope import variants
    from yarn_cli.core.tune.options import TuneRequest
    from yarn_cli.core.tune.plan import Measure
    from yarn_cli.runtimes.base import load_engine
    from yarn_cli.usecases.tune import _writer, tune

    result = tune(
        trained_tiny["model"],
        scale=4,
        text=trained_tiny["tune_text"],
        docs=2,
        passkeys=0,
        short=256,
        objective="long",
        device="cpu",
        refinements=0,
        search_betas=True,
    )
    chosen = result.decision.chosen
    at_best = [c for c in result.candidates if c.betas != (32.0, 1.0)]
    assert len(at_best) == 4 and {c.m for c in at_best} == {min(result.candidates[:5], key=lambda c: c.long_ppl).m}
    assert chosen.long_ppl == min(c.long_ppl for c in result.candidates)
    # the writer puts a candidate's betas and m into the config, and transformers runs exactly that candidate
    out = tmp_path / "betas"
    picked = Measure("x", 4.0, 1.2, None, 9.0, betas=(16.0, 2.0))
    _writer(Path(trained_tiny["model"]), out, TuneRequest(scale=4.0))(picked)
    scaling = json.loads((out / "config.json").read_text())["rope_scaling"]
    assert (scaling["beta_fast"], scaling["beta_slow"], scaling["attention_factor"]) == (16.0, 2.0, 1.2)
    engine = load_engine("native", trained_tiny["model"], "cpu", None, 1100)
    ids = engine.tokenizer.bos + engine.tokenizer.encode(trained_tiny["check_text"].read_text())[:899]
    ours = torch.tensor(engine.score(variants.yarn(engine.facts.rope, 4.0, 1.2, beta_fast=16, beta_slow=2), ids, 0).losses)
    default = torch.tensor(engine.score(variants.yarn(engine.facts.rope, 4.0, 1.2), ids, 0).losses)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1]
    theirs = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none").double()
    assert (ours - theirs).abs().max().item() < 1e-4 and (default - theirs).abs().max().item() > 1e-3


def test_interrupting_leaves_no_output(trained_tiny, tmp_path):
    from yarn_cli.usecases.tune import tune

    def interrupt(done, expected, label):
        if done == 2:
            raise KeyboardInterrupt

    out = tmp_path / "never"
    with pytest.raises(KeyboardInterrupt):
        tune(trained_tiny["model"], out, scale=4, text=trained_tiny["tune_text"], passkeys=0, short=256, device="cpu", progress=interrupt)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scale", "1"], "--scale must be a finite number > 1"),
        (["--to", "200"], "is not longer than the trained length 256"),
        (["--scale", "4", "--max-short-loss", "1.5"], "--max-short-loss must be between 0% and 100%"),
        (["--scale", "4", "--objective", "fast"], "--objective 'fast' is not one of"),
        (["--scale", "1000"], "fewer than the longest length 256,000"),
        (["--scale", "4", "--passkeys", "1"], "pass a longer --short, or --passkeys 0"),
        (["--fit", "-o", "OUT"], "--fit reports the fitted law"),
        (["--scale", "4", "--to", "1k"], "exactly one of --scale S or --to N"),
        (["--fit", "--search-betas", "--passkeys", "0"], "--fit fits m alone"),
        (["--scale", "4", "--passkeys", "13"], "--passkeys 13 asks for 26 probes; at most 12 per length"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(trained_tiny, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    argv = [
        "tune",
        str(trained_tiny["model"]),
        "--text",
        str(trained_tiny["tune_text"]),
        "--short",
        "64",
        "--device",
        "cpu",
        *[str(out) if a == "OUT" else a for a in args],
    ]
    if "-o" not in argv:
        argv += ["-o", str(out)]
    code, stdout, err = run(argv, capsys)
    assert code != 0 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_an_engine_that_cannot_run_the_candidates_is_refused(trained_tiny, monkeypatch, capsys):
    from yarn_cli.native.engine import NativeEngine

    monkeypatch.setattr(NativeEngine, "unsupported", lambda self, variant: "no YaRN here")
    code, _, err = run(
        [
            "tune",
            str(trained_tiny["model"]),
            "--scale",
            "4",
            "--text",
            str(trained_tiny["tune_text"]),
            "--short",
            "256",
            "--passkeys",
            "0",
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 2 and "--engine native cannot run the YaRN candidates: no YaRN here" in err


# --- the GGUF route: llama.cpp's own attention-factor key ---------------------------------------------------


def test_a_gguf_written_with_a_chosen_m_runs_that_m_in_llama_cpp_and_natively(smollm2_gguf, tmp_path, capsys):
    pytest.importorskip("llama_cpp")
    from yarn_cli.core.rope import variants
    from yarn_cli.runtimes.base import load_engine

    out = tmp_path / "smol-m.gguf"
    code, _, err = run(["extend", str(smollm2_gguf), "--scale", "2", "--attention-factor", "1.25", "-o", str(out)], capsys)
    assert code == 0, err
    ids = None
    for name in ("native", "llama.cpp"):
        source = load_engine(name, smollm2_gguf, "cpu", None, 1100)
        ids = ids or source.tokenizer.bos + source.tokenizer.encode(Path(__file__).read_text())[:1000]
        candidate = torch.tensor(source.score(variants.yarn(source.facts.rope, 2.0, 1.25), ids, 0).losses)
        paper = torch.tensor(source.score(variants.yarn(source.facts.rope, 2.0), ids, 0).losses)
        source.close()
        written = load_engine(name, out, "cpu", None, 1100)
        declared = written.facts.rope
        assert variants.declared(declared).attention_factor == pytest.approx(1.25, rel=1e-6)
        got = torch.tensor(written.score(variants.declared(declared), ids, 0).losses)
        written.close()
        assert (got - candidate).abs().max().item() < 1e-4, name  # the file gives the candidate the tune measured
        assert (got - paper).abs().mean().item() > 1e-3, name
    code, stdout, _ = run(["verify", str(out), "--engine", "llama.cpp", "--parity-only", "--json"], capsys)
    parity = json.loads(stdout)["parity"]
    assert code == 0 and parity["diagnosis"] == "exact", parity["line"]


def test_a_beta_search_is_refused_where_the_output_cannot_carry_betas(smollm2_gguf, tmp_path, capsys):
    out = tmp_path / "out.gguf"
    code, _, err = run(["tune", str(smollm2_gguf), "--scale", "2", "--search-betas", "-o", str(out)], capsys)
    assert code == 2 and "a GGUF cannot carry YaRN's betas" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_extend_attention_factor_is_checked_and_refused_where_llama_cpp_ignores_it(tmp_path, capsys):
    from gguf_factory import write_tiny_gguf

    plain = write_tiny_gguf(tmp_path / "d.gguf", arch="deepseek2")
    code, _, err = run(["extend", str(plain), "--scale", "2", "--attention-factor", "1.1", "-o", str(tmp_path / "o.gguf")], capsys)
    assert code == 2 and "yarn_log_multiplier" in err and not (tmp_path / "o.gguf").exists()
    code, _, err = run(["extend", str(plain), "--scale", "2", "--attention-factor", "-1", "--dry-run"], capsys)
    assert code == 2 and "--attention-factor must be a number between 0 and 10" in err


@pytest.mark.slow
def test_tuning_the_real_smollm2_reports_what_its_text_can_tell_apart(smollm2_gguf):
    """SmolLM2-135M x1.25 (10,240 tokens), tuned on one 10k-token document. The grid's m values lie 0.011 apart;
    one document cannot separate most of them, and the decision must say so rather than claim a winner.
    Any m it does call worse must be worse on the next 10k tokens of the text too."""
    from yarn_cli.core.rope import variants
    from yarn_cli.runtimes.base import load_engine
    from yarn_cli.usecases.tune import tune
    from yarn_cli.usecases.verify.protocol import load_text

    result = tune(smollm2_gguf, scale=1.25, passkeys=0, refinements=0, device="cpu")
    decision = result.decision
    chosen = decision.chosen
    assert result.ok and decision.indistinct[0] <= chosen.m <= decision.indistinct[1]
    if decision.indistinct[0] < decision.indistinct[1]:
        assert "cannot tell m" in decision.reason
    assert all(c.short_ppl > result.reference.short_ppl for c in result.candidates)  # the trade-off is real
    engine = load_engine("native", smollm2_gguf, "cpu", None, 10300)
    ids = engine.tokenizer.encode(load_text(None))
    held_out = engine.tokenizer.bos + ids[10239 : 2 * 10239]  # the text after the tuning document

    def long_ppl(m):
        return tune_plan.band([engine.score(variants.yarn(engine.facts.rope, 1.25, m), held_out, 0).losses], 8192, 10240)

    if decision.neighbours:
        ppl = long_ppl(chosen.m)
        for neighbour in decision.neighbours:
            assert ppl < long_ppl(neighbour), (chosen.m, neighbour)
