"""Training text for `finetune`: local .txt, .jsonl (a ``text`` field) and .parquet files, or a hub dataset.

Structured files go through the `datasets` library; plain text is read as one document per file. The
offline default is the text of Python's own documentation topics (``pydoc_data.topics``), the same text
`verify` scores perplexity on: about 0.9 MB, enough for demos, not for a real fine-tune.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from yarn_cli.errors import FetchError, FormatError, InputError
from yarn_cli.io.paths import regular_file

STRUCTURED = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
DEFAULT_CORPUS = "pydoc_data.topics (Python's documentation topics; offline, for demos)"


def default_documents() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def _structured(path: Path, kind: str) -> Iterator[str]:
    try:
        import datasets
    except ImportError as exc:
        from yarn_cli.io.packages import needs

        raise InputError(needs(f"{path}: reading {path.suffix}", "datasets")) from exc
    try:
        table = datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as exc:  # datasets raises many types for a malformed file
        first = (str(exc).splitlines() or [""])[0][:200]
        raise FormatError(f"{path}: cannot read as {path.suffix} ({type(exc).__name__}: {first})") from exc
    if "text" not in table.column_names:
        raise FormatError(f"{path}: no 'text' field (fields: {', '.join(table.column_names)}); each record needs one")
    for value in table["text"]:
        if isinstance(value, str) and value:
            yield value


def _hub(name: str) -> Iterator[str]:
    try:
        import datasets

        table = datasets.load_dataset(name, split="train")
    except ImportError as exc:
        from yarn_cli.io.packages import needs

        raise InputError(needs(f"--data {name}: a hub dataset", "datasets")) from exc
    except Exception as exc:
        raise FetchError(f"--data {name}: not a local file, and the hub dataset could not be loaded ({type(exc).__name__})") from exc
    if "text" not in table.column_names:
        raise FormatError(f"--data {name}: the dataset has no 'text' column ({', '.join(table.column_names)})")
    yield from (v for v in table["text"] if isinstance(v, str) and v)


def _is_hub_id(source: str | Path, path: Path) -> bool:
    return not path.exists() and "/" in str(source) and not str(source).startswith((".", "/", "~"))


def check_sources(sources: Sequence[str | Path]) -> None:
    """Before any loading: each --data is a readable regular file (or a hub dataset id)."""
    for source in sources:
        path = Path(source).expanduser()
        if _is_hub_id(source, path):
            continue
        if not path.exists():
            raise InputError(f"--data {source}: no such file")
        regular_file(path, "--data takes .txt, .jsonl or .parquet files")
        if not os.access(path, os.R_OK):
            raise InputError(f"--data {source}: not readable (check its permissions)")


def documents(sources: Sequence[str | Path]) -> Iterator[str]:
    """Every document of every source, in order."""
    for source in sources:
        path = Path(source).expanduser()
        if _is_hub_id(source, path):
            yield from _hub(str(source))
            continue
        if not path.exists():
            raise InputError(f"--data {source}: no such file")
        regular_file(path, "--data takes .txt, .jsonl or .parquet files")
        kind = STRUCTURED.get(path.suffix.lower())
        if kind:
            yield from _structured(path, kind)
            continue
        try:
            yield path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"{path}: not UTF-8 text; --data takes .txt, .jsonl or .parquet files") from exc
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
