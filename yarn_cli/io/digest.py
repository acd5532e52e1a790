"""A checkpoint's sha256, for the provenance of a verify report: which bytes were tested.

Every file of the checkpoint counts (a GGUF's shards, an HF folder's weights, configs and tokenizer), except what
``verify --card`` itself writes beside it (README.md, the heatmap PNG), so a card does not change the hash of
the model it describes. Past FULL_LIMIT bytes, reading everything would cost minutes on a large model: the hash
then covers each file's name, size and first and last MiB, and says so.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from yarn_cli.io.gguf_reader import split_shards

FULL_LIMIT = 8 * 2**30
EDGE = 2**20
BLOCK = 16 * 2**20
WRITTEN_BY_CARD = {"README.md", "yarn_verify_heatmap.png"}


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return split_shards(path) if path.suffix.lower() == ".gguf" else [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name not in WRITTEN_BY_CARD and not p.name.startswith("."))


def checkpoint_digest(path: Path) -> dict[str, Any]:
    """{name, sha256, covers, bytes, files} of the checkpoint at ``path`` (a file, its shards, or a folder)."""
    files = _files(path)
    total = sum(f.stat().st_size for f in files)
    full = total <= FULL_LIMIT
    digest = hashlib.sha256()
    root = path if path.is_dir() else path.parent
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(root).as_posix()}\0{size}\0".encode())
        with open(file, "rb") as handle:
            if full or size <= 2 * EDGE:
                for block in iter(lambda: handle.read(BLOCK), b""):
                    digest.update(block)
            else:
                digest.update(handle.read(EDGE))
                handle.seek(size - EDGE)
                digest.update(handle.read(EDGE))
    covers = "every byte" if full else f"names, sizes and the first and last MiB of each file (over {FULL_LIMIT // 2**30} GiB in all)"
    return {"name": path.name, "sha256": digest.hexdigest(), "covers": covers, "bytes": total, "files": len(files)}
