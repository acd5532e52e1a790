"""The small things a new user meets in the first hour: error lines that name the flag typed, usage lines that
name the command typed, help that lists every command, labels that say which RoPE is which, and outputs that
land where the user is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_config
from real_configs import GEMMA3_4B

from yarn_cli.cli.app import main


def run(args, capsys, monkeypatch=None):
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--lengths", "abc"], "--lengths 'abc' is not a length"),
        (["--lengths", "4k,0"], "--lengths '0' must be a whole, positive number"),
        (["--parity-length", "lots"], "--parity-length 'lots' is not a length"),
        (["--max-length", "big"], "--max-length 'big' is not a length"),
    ],
)
def test_a_bad_length_names_the_flag_it_came_from(args, named, smollm2_gguf, capsys):
    code, _, err = run(["verify", str(smollm2_gguf), *args], capsys)
    assert code == 2 and named in err and "--to" not in err, err


def test_usage_names_the_command_the_user_typed():
    script = Path(sys.executable).parent / "yarn-cli"
    if not script.exists():
        pytest.fail(f"{script}: the yarn-cli entry point is not installed in this environment")
    result = subprocess.run([str(script), "inspect", "--no-such-flag"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Usage: yarn-cli inspect" in result.stderr and "Try 'yarn-cli inspect --help'" in result.stderr


def test_top_level_help_lists_every_command(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    summary = out.split("Options:")[0]
    for verb in ("inspect", "extend", "verify", "tune", "finetune", "report"):
        assert verb in summary


def test_two_rope_blocks_are_labelled_global_and_sliding(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    write_config(tmp_path / "gemma3", GEMMA3_4B)
    code, out, err = run(["inspect", str(tmp_path / "gemma3")], capsys)
    assert code == 0, err
    labels = [line.split("  ")[0] for line in out.splitlines() if line.startswith("RoPE")]
    assert labels == ["RoPE (global)", "RoPE (sliding)"]


def test_method_all_says_why_yarn_and_by_parts_agree(smollm2_gguf, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run(["inspect", str(smollm2_gguf), "--scale", "4", "--method", "all"], capsys)
    assert code == 0, err
    assert "yarn and by-parts share every wavelength" in " ".join(out.split())


def test_extend_of_the_built_in_model_writes_where_the_user_is(smollm2_gguf, tmp_path, capsys, monkeypatch):
    """Without -o, the built-in model's extension lands in the current folder, not in the download cache."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["extend", "--scale", "2", "--dry-run", "--json"], capsys)
    assert code == 0, err
    assert Path(json.loads(out)["output"]) == tmp_path / "SmolLM2-135M-Instruct.Q4_1-yarn2x.gguf"
    assert not list(tmp_path.iterdir())


def test_verify_says_how_long_its_tasks_will_take_before_they_start(tmp_path, capsys):
    """A short generation is timed after loading and every planned task call priced from it: the line comes before
    the run (stderr), and --json keeps the estimate beside what the run then took."""
    from test_verify import word_tokenizer
    from tiny_models import build_model

    folder = tmp_path / "llama"
    build_model("llama", seed=4).save_pretrained(folder)
    word_tokenizer(folder)
    args = ["verify", str(folder), "--lengths", "300", "--depths", "0.5", "--ppl-windows", "1", "--no-parity"]
    code, out, err = run(args, capsys)
    assert code in (0, 1) and "estimated time for the tasks: about " in err and " tokens)" in err, err
    assert "estimated" not in out  # the table and verdict stay on stdout alone
    code, out, err = run([*args, "--json"], capsys)
    report = json.loads(out)
    estimate = report["estimate"]
    shortest = min(c["length"] for c in report["cells"])
    assert estimate["seconds"] > 0 and 200 < estimate["measured_tokens"] <= shortest and estimate["prefill_tokens_per_second"] > 0
    assert "estimated" not in err
    code, out, _ = run(["verify", str(folder), "--parity-only", "--json"], capsys)
    assert json.loads(out)["estimate"] is None  # no task runs: nothing to estimate


def test_the_estimate_prices_prefill_and_decoding_by_length():
    from yarn_cli.core.verify import timing

    measured = timing.Measured(tokens=1024, prefill_seconds=2.0, decode_tokens=8, decode_seconds=0.4, hidden=512)
    assert measured.prefill(1024) == pytest.approx(2.0) and measured.decode(1024, 8) == pytest.approx(0.4)
    # attention makes a longer prefill cost more than its share of tokens: 1 + n/(12h) per token
    assert measured.prefill(8192) == pytest.approx(2.0 * 8 * (1 + 8192 / 6144) / (1 + 1024 / 6144))
    assert measured.decode(8192, 8) == pytest.approx(0.4 * (1 + 8192 / 3072) / (1 + 1024 / 3072)) and measured.decode(8192, 0) == 0
    assert timing.Measured(1024, 2.0, 0, 0.0, 512).decode(8192, 8) == 0  # no decoding step timed: none priced
    total = timing.estimate(measured, [(1024, 8), (8192, 0)])
    assert total.seconds == pytest.approx(2.4 + measured.prefill(8192))
    assert total.to_json()["prefill_tokens_per_second"] == pytest.approx(512) and total.to_json()["decode_tokens_per_second"] == pytest.approx(20)
    assert [timing.spoken(s) for s in (0.2, 45, 360, 5100)] == ["1 s", "45 s", "6 min", "1 h 25 min"]
