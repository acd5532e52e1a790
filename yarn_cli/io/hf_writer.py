"""Writing an extended HF checkpoint folder, streamed and atomic.

The new folder is built as a hidden sibling and renamed into place at the end. config.json (and the
length caps in tokenizer/generation configs) are rewritten; shards without baked tensors are
hard-linked (or copied across filesystems); shards with baked tensors are rewritten row range by row
range, so memory stays bounded by a chunk, and every byte outside the scaled rows is copied as is.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from yarn_cli.core.extend.bake_plan import BakeOp
from yarn_cli.core.extend.hf_plan import LENGTH_CAP_FILES, ConfigPlan
from yarn_cli.errors import FormatError
from yarn_cli.io import atomic, fastcopy
from yarn_cli.io.atomic import WrittenFile
from yarn_cli.io.checkpoint import read_json, safetensors_files
from yarn_cli.io.safetensors_header import DTYPE_BYTES, SafetensorsHeader, read_header

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5", ".ckpt")
# Bytes of q/k rows read, scaled and written per piece: the unit of work one worker takes at a time.
BAKE_PIECE_BYTES = 4 * 1024 * 1024
METADATA_PREFIX = "yarn_cli."


def json_text(original_text: str, data: dict[str, Any]) -> str:
    """Serialise like the file was: its indent (HF writes 2) and its trailing newline."""
    stripped = original_text.lstrip("{").lstrip("\r\n")
    indent = len(stripped) - len(stripped.lstrip(" ")) if original_text.startswith("{\n") else None
    text = json.dumps(data, indent=indent or None, ensure_ascii=False)
    return text + ("\n" if original_text.endswith("\n") else "")


def source_files(folder: Path) -> list[Path]:
    """Every file of the checkpoint, relative; hub download caches (.cache/) are left behind."""
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if relative.parts[0] in (".cache", ".git") or atomic.TMP_MARK in relative.parts[0]:
            continue
        if path.is_file():
            files.append(relative)
    return files


def _new_header(header: SafetensorsHeader, metadata: dict[str, str]) -> bytes:
    """The shard's header with the bake recorded in ``__metadata__``; tensors and offsets unchanged."""
    with open(header.path, "rb") as src:
        src.seek(8)
        original = json.loads(src.read(header.header_size).decode("utf-8"))
    merged = {**(original.get("__metadata__") or {}), **metadata}
    new_header = {"__metadata__": merged, **{k: v for k, v in original.items() if k != "__metadata__"}}
    raw = json.dumps(new_header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


def baked_shard_plan(header: SafetensorsHeader, ops: list[BakeOp], target: Path, metadata: dict[str, str]) -> fastcopy.FilePlan:
    """One shard rewritten: same tensors, offsets and bytes, except the scaled rows, which are the only
    bytes read into Python; everything between them is a kernel copy. Metadata records the bake."""
    from yarn_cli.io import bake_cast  # here, not at the top: config-only extends never import numpy

    head = _new_header(header, metadata)
    old_start, new_start = header.data_start, len(head)
    data_end = header.file_size - header.data_start
    plan = fastcopy.FilePlan(target=target, size=new_start + data_end, source=header.path)
    plan.add_data(0, head)
    segments = []
    for op in ops:
        info = header.tensors[op.tensor]
        row_bytes = int(math.prod(info.shape[1:]) * DTYPE_BYTES[info.dtype])
        segments += [(info.begin + begin * row_bytes, info.begin + end * row_bytes, row_bytes, info, op) for begin, end in op.rows]
    cursor = 0
    for begin, end, row_bytes, info, op in sorted(segments, key=lambda segment: segment[0]):
        if begin < cursor:
            raise FormatError(f"{info.name}: overlapping bake ranges (a bug; nothing was published)")
        plan.add_copy(new_start + cursor, old_start + cursor, begin - cursor)
        rows_per_piece = max(1, BAKE_PIECE_BYTES // max(row_bytes, 1))
        transform = functools.partial(bake_cast.scaled_rows, dtype=info.dtype, op=op)
        for start in range(begin, end, rows_per_piece * row_bytes):
            length = min(end, start + rows_per_piece * row_bytes) - start
            plan.pieces.append(fastcopy.Piece(new_start + start, length, source_offset=old_start + start, transform=transform))
        cursor = end
    plan.add_copy(new_start + cursor, old_start + cursor, data_end - cursor)
    return plan


def read_shards(folder: Path) -> list[SafetensorsHeader]:
    return [read_header(path) for path in safetensors_files(folder)]


def total_bytes(folder: Path) -> int:
    return sum((folder / relative).stat().st_size for relative in source_files(folder))


def write_extension(
    folder: Path,
    plan: ConfigPlan,
    ops: list[BakeOp],
    out: Path,
    progress=None,
    shards: list[SafetensorsHeader] | None = None,
    force: bool = False,
    notify: atomic.Notify | None = None,
    hardlink: bool = True,
    workers: int = 1,
    cap_files: Mapping[str, dict[str, Any]] | None = None,
) -> list[WrittenFile]:
    """Build OUT from ``folder`` atomically; returns the files written.

    Small files are written at once; baked shards and whole-file copies become file plans that run on
    ``workers`` threads together. ``shards`` are the headers the caller already read (read_shards(folder)
    when omitted); ``cap_files`` the planned new content of length-cap files (hf_plan.plan_cap_files), none
    when omitted."""
    cap_files = cap_files or {}
    headers = {h.path.resolve(): h for h in (read_shards(folder) if shards is None else shards)}
    ops_by_shard = _ops_by_shard(headers, ops)
    metadata = bake_metadata(plan)
    written: list[WrittenFile] = []
    plans: list[fastcopy.FilePlan] = []
    copies: list[tuple[Path, Path]] = []
    with atomic.atomic_path(out, force, notify) as tmp:
        tmp.mkdir()
        for relative in source_files(folder):
            source, target = folder / relative, tmp / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            resolved = source.resolve()
            if resolved in ops_by_shard:
                plans.append(baked_shard_plan(headers[resolved], ops_by_shard[resolved], target, metadata))
                action, size = "baked", plans[-1].size
            elif relative.suffix in WEIGHT_SUFFIXES:
                action, size = fastcopy.clone(resolved, target, hardlink), resolved.stat().st_size
                if action is None:
                    plans.append(fastcopy.whole_file_copy(resolved, target))
                    copies.append((resolved, target))
                    action = "copied"
                elif progress:
                    progress(size)
            else:
                action = _write_small_file(relative, resolved, target, plan, cap_files)
                size = target.stat().st_size
                if progress:
                    progress(resolved.stat().st_size)
            written.append(WrittenFile(str(out / relative), action, size))
        fastcopy.write_files(plans, workers, progress)
        for resolved, target in copies:
            shutil.copystat(resolved, target)
        atomic.fsync_tree(tmp, already={file_plan.target for file_plan in plans})  # write_files fsynced those
    return written


def _ops_by_shard(headers: dict[Path, SafetensorsHeader], ops: list[BakeOp]) -> dict[Path, list[BakeOp]]:
    tensor_home = {name: path for path, h in headers.items() for name in h.tensors}
    by_shard: dict[Path, list[BakeOp]] = defaultdict(list)
    for op in ops:
        by_shard[tensor_home[op.tensor]].append(op)
    return by_shard


def bake_metadata(plan: ConfigPlan) -> dict[str, str]:
    """What a baked shard's safetensors metadata records (so a second bake is refused)."""
    if plan.bake_factor is None:
        return {}
    return {
        METADATA_PREFIX + "baked_attention_factor": repr(plan.bake_factor),
        METADATA_PREFIX + "scale": repr(plan.scale),
        METADATA_PREFIX + "original_context": str(plan.original_context),
    }


def _write_small_file(relative: Path, source: Path, target: Path, plan: ConfigPlan, cap_files: Mapping[str, dict[str, Any]]) -> str:
    """config.json rewritten, planned length caps raised, anything else copied; returns the action."""
    if relative == Path("config.json"):
        target.write_text(json_text(source.read_text(encoding="utf-8"), plan.config), encoding="utf-8")
        return "rewritten"
    if len(relative.parts) == 1 and relative.name in cap_files:
        target.write_text(json_text(source.read_text(encoding="utf-8"), cap_files[relative.name]), encoding="utf-8")
        return "rewritten"
    shutil.copy2(source, target)
    return "copied"


def read_cap_files(folder: Path) -> dict[str, dict[str, Any]]:
    """The parsed length-cap files the folder has (hf_plan.LENGTH_CAP_FILES), for the planner."""
    return {name: read_json(folder / name) for name in LENGTH_CAP_FILES if (folder / name).exists()}
