"""Writing an extended HF checkpoint folder, streamed and atomic.

The new folder is built as a hidden sibling and renamed into place at the end. config.json (and the
length caps in tokenizer/generation configs) are rewritten; shards without baked tensors are
hard-linked (or copied across filesystems); shards with baked tensors are rewritten row range by row
range, so memory stays bounded by a chunk, and every byte outside the scaled rows is copied as is.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yarn_cli.core.bake_plan import BakeOp
from yarn_cli.core.hf_plan import ConfigPlan, Change, plan_length_caps
from yarn_cli.errors import FormatError
from yarn_cli.io import atomic, fastcopy
from yarn_cli.io.checkpoint import read_json, safetensors_files
from yarn_cli.io.safetensors_header import DTYPE_BYTES, SafetensorsHeader, TensorInfo, read_header

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5", ".ckpt")
LENGTH_CAP_FILES = ("tokenizer_config.json", "generation_config.json")
CHUNK_BYTES = 32 * 1024 * 1024
METADATA_PREFIX = "yarn_cli."


@dataclass(frozen=True)
class WrittenFile:
    path: str
    action: str  # "rewritten", "baked", "reflinked", "linked", "copied"
    bytes: int


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
        if relative.parts[0] in (".cache", ".git") or ".yarn-tmp-" in relative.parts[0]:
            continue
        if path.is_file():
            files.append(relative)
    return files


def _to_float(raw: bytes, dtype: str) -> np.ndarray:
    """Decode F16/BF16/F32/F64 bytes to float32 (float64 stays float64), without torch.

    bf16 is the top half of a float32, so widening is a shift.
    """
    if dtype == "BF16":
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    if dtype == "F64":
        return np.frombuffer(raw, dtype="<f8").copy()
    return np.frombuffer(raw, dtype={"F16": "<f2", "F32": "<f4"}[dtype]).astype(np.float32)


def _from_float(values: np.ndarray, dtype: str) -> bytes:
    """Encode back with round-to-nearest-even, as torch's casts do; NaNs stay NaN."""
    if dtype == "BF16":
        bits = values.astype(np.float32).view(np.uint32)
        rounded = ((bits + (((bits >> 16) & 1) + 0x7FFF)) >> 16).astype("<u2")
        rounded[np.isnan(values)] = 0x7FC0
        return rounded.tobytes()
    return values.astype({"F16": "<f2", "F32": "<f4", "F64": "<f8"}[dtype]).tobytes()


def _scaled_rows(raw: bytes, dtype: str, op: BakeOp) -> bytes:
    """Apply one op to a block of whole rows in float32 (float64 stays float64) and cast back."""
    values = _to_float(raw, dtype)
    factor, offset = values.dtype.type(op.factor), values.dtype.type(op.norm_offset)
    with np.errstate(over="ignore"):  # overflow to inf is what torch's cast gives too
        values = factor * (offset + values) - offset if op.norm_offset else values * factor
    return _from_float(values, dtype)


def _write_baked_tensor(src_fd: int, dst_fd: int, data_start: int, info: TensorInfo, ops: list[BakeOp], progress) -> None:
    row_shape = tuple(info.shape[1:])
    row_bytes = int(math.prod(row_shape) * DTYPE_BYTES[info.dtype])
    rows_per_chunk = max(1, CHUNK_BYTES // max(row_bytes, 1))
    segments = sorted((begin, end, op) for op in ops for begin, end in op.rows)
    cursor = 0
    for begin, end, op in segments:
        if begin < cursor:
            raise FormatError(f"{info.name}: overlapping bake ranges (a bug; nothing was published)")
        fastcopy.copy_range(src_fd, dst_fd, data_start + info.begin + cursor * row_bytes, (begin - cursor) * row_bytes, progress)
        for start in range(begin, end, rows_per_chunk):
            stop = min(end, start + rows_per_chunk)
            raw = os.pread(src_fd, (stop - start) * row_bytes, data_start + info.begin + start * row_bytes)
            out = _scaled_rows(raw, info.dtype, op)
            os.write(dst_fd, out)
            if progress:
                progress(len(out))
        cursor = end
    total_rows = info.shape[0] if info.shape else 1
    fastcopy.copy_range(src_fd, dst_fd, data_start + info.begin + cursor * row_bytes, (total_rows - cursor) * row_bytes, progress)


def bake_shard(header: SafetensorsHeader, ops: list[BakeOp], target: Path, metadata: dict[str, str], progress) -> int:
    """Rewrite one shard: same tensors, offsets and bytes, except the scaled rows; metadata records the bake."""
    with open(header.path, "rb") as src:
        src.seek(8)
        original = json.loads(src.read(header.header_size).decode("utf-8"))
    merged = {**(original.get("__metadata__") or {}), **metadata}
    new_header = {"__metadata__": merged, **{k: v for k, v in original.items() if k != "__metadata__"}}
    raw = json.dumps(new_header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    by_tensor: dict[str, list[BakeOp]] = defaultdict(list)
    for op in ops:
        by_tensor[op.tensor].append(op)
    ordered = sorted(header.tensors.values(), key=lambda t: t.begin)
    data_end = header.file_size - header.data_start
    with open(header.path, "rb") as src, open(target, "wb") as dst:
        dst.write(len(raw).to_bytes(8, "little") + raw)
        dst.flush()
        src_fd, dst_fd = src.fileno(), dst.fileno()
        cursor = 0
        for info in ordered:
            fastcopy.copy_range(src_fd, dst_fd, header.data_start + cursor, info.begin - cursor, progress)
            if info.name in by_tensor:
                _write_baked_tensor(src_fd, dst_fd, header.data_start, info, by_tensor[info.name], progress)
            else:
                fastcopy.copy_range(src_fd, dst_fd, header.data_start + info.begin, info.nbytes, progress)
            cursor = info.end
        fastcopy.copy_range(src_fd, dst_fd, header.data_start + cursor, data_end - cursor, progress)
        os.fsync(dst_fd)
    return 8 + len(raw) + data_end


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
) -> tuple[list[WrittenFile], list[Change]]:
    """Build OUT from ``folder`` atomically; returns the files written and the length-cap changes.

    ``shards`` are the headers the caller already read (read_shards(folder) when omitted)."""
    headers = {h.path.resolve(): h for h in (read_shards(folder) if shards is None else shards)}
    ops_by_shard: dict[Path, list[BakeOp]] = defaultdict(list)
    tensor_home = {name: path for path, h in headers.items() for name in h.tensors}
    for op in ops:
        ops_by_shard[tensor_home[op.tensor]].append(op)
    metadata = {}
    if plan.bake_factor is not None:
        metadata = {
            METADATA_PREFIX + "baked_attention_factor": repr(plan.bake_factor),
            METADATA_PREFIX + "scale": repr(plan.scale),
            METADATA_PREFIX + "original_context": str(plan.original_context),
        }
    written: list[WrittenFile] = []
    cap_changes: list[Change] = []
    with atomic.atomic_path(out, force, notify) as tmp:
        tmp.mkdir()
        for relative in source_files(folder):
            source, target = folder / relative, tmp / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            final = str(out / relative)
            resolved = source.resolve()
            if relative == Path("config.json"):
                text = source.read_text(encoding="utf-8")
                target.write_text(json_text(text, plan.config), encoding="utf-8")
                written.append(WrittenFile(final, "rewritten", target.stat().st_size))
            elif len(relative.parts) == 1 and relative.name in LENGTH_CAP_FILES:
                data = read_json(source)
                changes = _cap_changes(relative.name, data, plan.target_context)
                if changes:
                    target.write_text(json_text(source.read_text(encoding="utf-8"), data), encoding="utf-8")
                    cap_changes.extend(changes)
                    written.append(WrittenFile(final, "rewritten", target.stat().st_size))
                else:
                    shutil.copy2(resolved, target)
                    written.append(WrittenFile(final, "copied", target.stat().st_size))
            elif resolved in ops_by_shard:
                size = bake_shard(headers[resolved], ops_by_shard[resolved], target, metadata, progress)
                written.append(WrittenFile(final, "baked", size))
                continue
            elif relative.suffix in WEIGHT_SUFFIXES:
                action = fastcopy.link_or_copy(resolved, target, progress, hardlink)
                written.append(WrittenFile(final, action, target.stat().st_size))
                continue
            else:
                shutil.copy2(resolved, target)
                written.append(WrittenFile(final, "copied", target.stat().st_size))
            if progress:
                progress(source.stat().st_size)
        for entry in tmp.rglob("*"):
            if entry.is_file() and entry.stat().st_nlink == 1:  # hard links share the durable source inode
                atomic.fsync_path(entry)
        atomic.fsync_path(tmp)
    return written, cap_changes


def _cap_changes(file_name: str, data: dict[str, Any], target_context: int) -> list[Change]:
    """Raise the caps in ``data`` (in place); the changes are named "file:key"."""
    return [Change(f"{file_name}:{c.path}", c.old, c.new) for c in plan_length_caps(file_name, data, target_context)]


def planned_cap_changes(folder: Path, target_context: int) -> list[Change]:
    """What write_extension would change in the length-cap files (for --dry-run)."""
    return [
        change
        for name in LENGTH_CAP_FILES
        if (folder / name).exists()
        for change in _cap_changes(name, read_json(folder / name), target_context)
    ]
