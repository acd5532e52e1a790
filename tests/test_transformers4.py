"""The dual-written config loads identically in transformers 4.57 (4.x readers) and the installed 5.x.

scripts/test.sh installs transformers 4.57 beside the main one (--target) and points
YARN_CLI_TRANSFORMERS4 at it; without that the test is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_inspect import run
from tiny_models import build_model

torch = pytest.importorskip("torch")
LEGACY = os.environ.get("YARN_CLI_TRANSFORMERS4")
pytestmark = pytest.mark.skipif(not LEGACY or not Path(LEGACY).is_dir(), reason="transformers 4.x side install not present")
TYPES = ["llama", "mistral", "qwen2", "qwen3", "gpt_neox", "gemma3_text", "phi"]

PROBE = """
import json, sys, warnings
import torch, transformers
from transformers import AutoModelForCausalLM
torch.manual_seed(0)
ids = torch.randint(0, 128, (1, 700))
result = {"version": transformers.__version__, "logits": {}}
for folder in sys.argv[2:]:
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        result["logits"][folder] = model(ids).logits[0, -8:].tolist()
json.dump(result, open(sys.argv[1], "w"))
"""


def probe(tmp_path: Path, folders: list[Path], legacy: bool) -> tuple[dict, str]:
    env = dict(os.environ)
    if legacy:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(LEGACY).resolve()), env.get("PYTHONPATH", "")])
    out = tmp_path / ("v4.json" if legacy else "v5.json")
    result = subprocess.run([sys.executable, "-c", PROBE, str(out), *map(str, folders)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(out.read_text()), result.stderr


def test_same_logits_in_transformers_4_and_5(tmp_path, capsys):
    folders = []
    for model_type in TYPES:
        source = tmp_path / model_type
        build_model(model_type, seed=2).save_pretrained(source)
        out = tmp_path / f"{model_type}-x4"
        assert run(["extend", str(source), "-s", "4", "-o", str(out)], capsys)[0] == 0
        folders.append(out)
    v4, v4_log = probe(tmp_path, folders, legacy=True)
    v5, _ = probe(tmp_path, folders, legacy=False)
    assert v4["version"].startswith("4.") and v5["version"].startswith("5.")
    assert "Unrecognized keys" not in v4_log and "does not match" not in v4_log
    for folder in map(str, folders):
        diff = (torch.tensor(v4["logits"][folder]) - torch.tensor(v5["logits"][folder])).abs().max().item()
        assert diff <= 1e-5, f"{folder}: 4.x and 5.x disagree by {diff}"
