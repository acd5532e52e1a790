"""verify's kld task: KL(P_original ‖ P_variant) over the whole vocabulary at every position, held to an independent
computation from transformers' own logits for the unextended and the extended folder."""

from __future__ import annotations

import json

import numpy
import pytest
from test_cli_inspect import run

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def trained_x4(trained_tiny, tmp_path_factory):
    from yarn_cli.api import apply_extend, plan_extend

    out = tmp_path_factory.mktemp("kld") / "x4"
    apply_extend(plan_extend(trained_tiny["model"], out, scale=4))
    return out


def _transformers_kld(original, extended, windows: list[list[int]]) -> dict[str, float]:
    """The statistics from transformers' logits of the two folders, in float64, with numpy's percentiles."""
    import torch
    from transformers import AutoModelForCausalLM

    models = [AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval() for folder in (original, extended)]
    divergences, agree = [], []
    with torch.no_grad():
        for ids in windows:
            p, q = (torch.log_softmax(m(torch.tensor([ids])).logits[0, :-1].double(), dim=-1) for m in models)
            divergences.append((p.exp() * (p - q)).sum(-1).numpy())
            agree.append((p.argmax(-1) == q.argmax(-1)).numpy())
    d, a = numpy.concatenate(divergences), numpy.concatenate(agree)
    return {
        "mean": float(d.mean()),
        "median": float(numpy.median(d)),
        "p99": float(numpy.percentile(d, 99)),
        "p99_9": float(numpy.percentile(d, 99.9)),
        "max": float(d.max()),
        "top1_agreement": 100.0 * float(a.mean()),
    }


def test_kld_equals_transformers_logits_of_the_two_folders(trained_tiny, trained_x4, capsys):
    from yarn_cli.core.verify import plan as verify_plan
    from yarn_cli.io.tokenizers_io import from_hf_folder
    from yarn_cli.usecases.verify.protocol import load_text

    code, out, err = run(["verify", str(trained_x4), "--tasks", "kld", "--lengths", "128,256", "--no-parity", "--json"], capsys)
    report = json.loads(out)
    assert set(report["kld"]) == {"extended"}, report["kld"]  # the baseline is the reference, not a row
    tokenizer = from_hf_folder(trained_x4)
    text = tokenizer.encode(load_text(None))
    for length in (128, 256):
        taken = length - len(tokenizer.bos)
        windows = [tokenizer.bos + text[s : s + taken] for s in verify_plan.ppl_windows(len(text), taken, 3)]
        theirs = _transformers_kld(trained_tiny["model"], trained_x4, windows)
        ours = report["kld"]["extended"][str(length)]
        assert ours.keys() == theirs.keys()
        for key, value in theirs.items():
            assert ours[key] == pytest.approx(value, rel=1e-3), (length, key, ours, theirs)
        assert ours["mean"] > 0.01 and ours["top1_agreement"] < 100  # the x4 extension really moves the short-input model


def test_an_unextended_checkpoint_against_itself_diverges_nowhere(trained_tiny, capsys):
    code, out, err = run(["verify", str(trained_tiny["model"]), "--tasks", "kld", "--lengths", "256", "--no-parity", "--json"], capsys)
    stats = json.loads(out)["kld"]["extended"]["256"]
    assert stats["max"] < 1e-9 and stats["top1_agreement"] == 100.0


def test_the_table_shows_the_mean_and_lengths_beyond_l_are_noted(trained_x4, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    code, out, err = run(["verify", str(trained_x4), "--tasks", "kld,passkey", "--lengths", "256,512", "--depths", "0.5", "--no-parity"], capsys)
    assert "kld" in out and "kld runs at lengths up to the trained 256 only" in out
    row = next(line for line in out.splitlines() if line.lstrip("│ ").startswith("256"))
    assert any(cell.strip().startswith("0.") for cell in row.split("│")), row


def test_an_engine_without_divergences_refuses_kld_before_any_work(trained_x4, tmp_path, capsys):
    code, out, err = run(
        ["verify", str(trained_x4), "--engine", "transformers", "--tasks", "kld", "--no-parity", "--report", str(tmp_path / "r")], capsys
    )
    assert code != 0 and err.strip().count("\n") == 0 and "--tasks kld: the transformers engine cannot run it" in err, err
    assert not (tmp_path / "r").exists() and "Traceback" not in err


def test_statistics_match_numpy():
    from yarn_cli.core.verify import kld

    values = list(numpy.random.default_rng(0).exponential(0.1, 1001))
    stats = kld.statistics(values, [True] * 900 + [False] * 101)
    assert stats["median"] == pytest.approx(numpy.median(values)) and stats["p99"] == pytest.approx(numpy.percentile(values, 99))
    assert stats["p99_9"] == pytest.approx(numpy.percentile(values, 99.9)) and stats["max"] == max(values)
    assert stats["top1_agreement"] == pytest.approx(100 * 900 / 1001) and kld.statistics([], []) is None


def test_the_report_lists_the_statistics(trained_x4, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    folder = tmp_path / "report"
    code, out, err = run(["verify", str(trained_x4), "--tasks", "kld", "--lengths", "256", "--no-parity", "--report", str(folder), "--json"], capsys)
    stats = json.loads(out)["kld"]["extended"]["256"]
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert "KL divergence from the unextended model" in page and f"<td>{stats['mean']:.4f}</td>" in page
    assert f"<td>{stats['top1_agreement'] / 100:.1%}</td>" in page
