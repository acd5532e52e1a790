"""The Python API (yarn_cli.api): what the CLI prints as JSON, as objects; one plan for --dry-run and the write."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tree_digest
from test_cli_inspect import run, subprocess_env
from test_verify import word_tokenizer

from yarn_cli import api
from yarn_cli.errors import OutputError, UnsupportedError

ROOT = Path(__file__).resolve().parents[1]
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    from tiny_models import build_model

    folder = tmp_path_factory.mktemp("api") / "tiny-llama"
    build_model("llama").save_pretrained(folder)
    word_tokenizer(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 256}, indent=2) + "\n")
    return folder


def test_inspect_is_the_cli_json(tiny_llama, capsys):
    report = api.inspect(tiny_llama, scale=4)
    code, out, _ = run(["inspect", str(tiny_llama), "-s", "4", "--json"], capsys)
    assert code == 0 and json.loads(out) == json.loads(json.dumps(report.to_json()))
    assert report.summary.rope.original_context == 256


def test_one_plan_drives_dry_run_and_write(tiny_llama, tmp_path, capsys):
    out = tmp_path / "out"
    before = tree_digest(tiny_llama)
    plan = api.plan_extend(tiny_llama, out, scale=4, bake_temperature=True)
    assert not out.exists()  # planning writes nothing
    code, dry, _ = run(["extend", str(tiny_llama), "-s", "4", "--bake-temperature", "-o", str(out), "--dry-run", "--json"], capsys)
    assert code == 0 and json.loads(dry) == json.loads(json.dumps(plan.to_json()))

    result = api.apply_extend(plan, workers=2)
    assert json.loads((out / "config.json").read_text()) == plan.rope.config
    assert json.loads((out / "tokenizer_config.json").read_text()) == plan.cap_files["tokenizer_config.json"]
    assert [c.to_json() for c in plan.length_caps] == result.to_json()["length_caps"]
    written = result.to_json()
    assert written["dry_run"] is False and written["bytes_written"] == result.bytes_written > 0
    assert written["baked_tensors"] == [op.tensor for op in plan.bake_ops] and len(plan.bake_ops) == 4
    assert tree_digest(tiny_llama) == before


def test_plan_refuses_before_anything_is_written(tiny_llama, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep").write_text("x")
    with pytest.raises(OutputError, match="already exists"):
        api.plan_extend(tiny_llama, out, scale=4)
    with pytest.raises(OutputError, match="overlap"):
        api.plan_extend(tiny_llama, tiny_llama / "inside", scale=4)


def test_core_planner_refuses_what_the_cli_refuses(tmp_path):
    """Phi-3's refusal lives in the planner, so the API and the CLI cannot disagree."""
    from tiny_models import build_model

    folder = tmp_path / "phi3"
    build_model("phi3").save_pretrained(folder)
    with pytest.raises(UnsupportedError, match="longrope"):
        api.plan_extend(folder, tmp_path / "o", scale=4)


def test_verify_report(tiny_llama, tmp_path):
    """The API's report is the --json object: a random tiny model finds no passkey, so the verdict fails, and says so."""
    plan = api.plan_extend(tiny_llama, tmp_path / "o", scale=2)
    api.apply_extend(plan)
    report = api.verify(plan.output, lengths=[256, 512], depths=[0.5], ppl_windows=0)
    data = report.to_json()
    assert not report.ok and data["scaling"] == "yarn x2" and data["lengths"] == [256, 512] and data["schema"] == 4
    assert "passkey accuracy 0%" in data["verdict"]["reason"]
    assert set(data["accuracy"]["extended"]) == {"256", "512"} and [v["name"] for v in data["variants"]] == ["extended", "baseline"]
    assert {(c["task"], c["variant"], c["length"]) for c in data["cells"]} == {
        ("passkey", v, n) for v in ("extended", "baseline") for n in (256, 512)
    } | {("niah_single_1", v, 512) for v in ("extended", "baseline")}  # RULER's needle leaves its 128-token answer room only at 512


def _readme_python_block() -> str:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


@pytest.mark.slow
def test_readme_python_api_example_runs(smollm2_gguf, tmp_path):
    """The Python API page's example, run as written, in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", _readme_python_block()], cwd=tmp_path, capture_output=True, text=True, env=subprocess_env(), timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "smollm2-yarn2x.gguf").exists()
    assert "True {'extended': {'10240': 1.0}, 'baseline': {'10240': 0.0}}" in result.stdout  # the verdict, as the page shows it
