"""Writing an extended GGUF: a rebuilt header and KV section, then the tensor infos and the data
region copied byte for byte (offsets are relative to the data start, so they stay valid).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from yarn_cli.core.extend.gguf_plan import GGUFPlan
from yarn_cli.core.extend.naming import extended_name
from yarn_cli.errors import FormatError
from yarn_cli.io import atomic, fastcopy
from yarn_cli.io.atomic import WrittenFile
from yarn_cli.io.gguf_reader import (
    ARRAY,
    GGUF_MAGIC,
    SCALAR_FORMATS,
    SPLIT_PATTERN,
    STRING,
    VALUE_TYPE_NAMES,
    GGUFFile,
    find_tensor,
    read_gguf,
    read_small_tensor,
    split_shards,
)

TYPE_IDS = {name: type_id for type_id, name in VALUE_TYPE_NAMES.items()}


def metadata_with_types(gguf: GGUFFile) -> dict[str, tuple[str, Any]]:
    """key -> (type name, value), in file order: what the planner needs."""
    return {key: (field.type_name, field.value) for key, field in gguf.fields.items()}


def encode_record(key: str, type_name: str, value: Any) -> bytes:
    type_id = TYPE_IDS[type_name]
    raw_key = key.encode("utf-8")
    head = struct.pack("<Q", len(raw_key)) + raw_key + struct.pack("<I", type_id)
    if type_id == STRING:
        raw = str(value).encode("utf-8")
        return head + struct.pack("<Q", len(raw)) + raw
    if type_id == ARRAY or type_id not in SCALAR_FORMATS:
        raise ValueError(f"cannot encode {type_name} for {key}")
    return head + struct.pack(SCALAR_FORMATS[type_id], value)


def build_kv_section(source: GGUFFile, kv_bytes: bytes, plan: GGUFPlan) -> tuple[bytes, int]:
    """The new KV section and its record count: untouched records verbatim, changed ones re-encoded."""
    sets = {c.key: c for c in plan.changes if c.action == "set"}
    removes = {c.key for c in plan.changes if c.action == "remove"}
    added = [c for c in plan.changes if c.action == "set" and c.key not in source.fields]
    parts: list[bytes] = []
    inserted = False
    for key, field in source.fields.items():
        if key in removes:
            continue
        if key in sets:
            parts.append(encode_record(key, sets[key].type, sets[key].new))
        else:
            parts.append(kv_bytes[field.start - source.kv_start : field.end - source.kv_start])
        if key == plan.insert_after:
            parts.extend(encode_record(c.key, c.type, c.new) for c in added)
            inserted = True
    if not inserted:
        parts.extend(encode_record(c.key, c.type, c.new) for c in added)
    return b"".join(parts), len(source.fields) - len(removes) + len(added)


def extended_file_plan(source: GGUFFile, plan: GGUFPlan, target: Path) -> fastcopy.FilePlan:
    """``source`` with ``plan``'s KV changes: a rebuilt head, then the tensor data copied by the kernel."""
    with open(source.path, "rb") as src:
        src.seek(source.kv_start)
        kv_bytes = src.read(source.tensor_info_start - source.kv_start)
        tensor_infos = src.read(source.tensor_info_end - source.tensor_info_start)
    if len(kv_bytes) + len(tensor_infos) != source.tensor_info_end - source.kv_start:
        raise FormatError(f"{source.path}: changed while being read")
    kv_section, n_kv = build_kv_section(source, kv_bytes, plan)
    header = GGUF_MAGIC + struct.pack("<IQQ", source.version, len(source.tensors), n_kv)
    head = header + kv_section + tensor_infos
    head += b"\0" * (-len(head) % source.alignment)
    data_length = source.file_size - source.data_start
    file_plan = fastcopy.FilePlan(target=target, size=len(head) + data_length, source=source.path)
    file_plan.add_data(0, head)
    done = 0  # bytes of the data region placed so far
    for offset, data in sorted(_tensor_rewrites(source, plan)):
        file_plan.add_copy(len(head) + done, source.data_start + done, offset - done)
        file_plan.add_data(len(head) + offset, data)
        done = offset + len(data)
    file_plan.add_copy(len(head) + done, source.data_start + done, data_length - done)
    return file_plan


def _tensor_rewrites(source: GGUFFile, plan: GGUFPlan) -> list[tuple[int, bytes]]:
    """(offset in the data region, new bytes) of each planned tensor rewrite: same type, same size, in place."""
    rewrites = []
    for change in plan.tensor_changes:
        info = find_tensor(source, change.name)
        if info is None or info.type_name not in ("F32", "F16") or info.numel != len(change.values):
            raise FormatError(f"{source.path}: tensor {change.name} is not the F32/F16 vector of {len(change.values)} values the plan rewrites")
        code = "f" if info.type_name == "F32" else "e"
        rewrites.append((info.offset, struct.pack(f"<{info.numel}{code}", *change.values)))
    return rewrites


def output_shard_paths(out: Path, count: int) -> list[Path]:
    """Names for a split output: OUT may be given as name.gguf or as name-00001-of-0000N.gguf."""
    if count == 1:
        return [out]
    match = SPLIT_PATTERN.match(out.name)
    stem = match["stem"] if match else (out.name[:-5] if out.name.endswith(".gguf") else out.name)
    return [out.with_name(f"{stem}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def extend_gguf(
    first: GGUFFile,
    plan: GGUFPlan,
    out: Path,
    progress: fastcopy.Progress | None = None,
    force: bool = False,
    notify: atomic.Notify | None = None,
    hardlink: bool = True,
    workers: int = 1,
) -> list[WrittenFile]:
    """Write every shard of the extended model atomically: all into temporaries, then renamed with the
    first shard (the one loaders open) last, so an interruption never leaves a loadable half.

    ``first`` is the parsed first shard (the planner read it), so its header is not read twice."""
    shards = split_shards(first.path)
    finals = output_shard_paths(out, len(shards))
    with atomic.output_transaction(finals[0], force, notify) as transaction:
        temporaries = [transaction.temporary(final) for final in finals]
        plans = [extended_file_plan(first, plan, temporaries[0])]
        actions = ["rewritten"]
        for shard, tmp in zip(shards[1:], temporaries[1:], strict=True):
            action = fastcopy.clone(shard, tmp, hardlink)
            if action is None:
                plans.append(fastcopy.whole_file_copy(shard, tmp))
            elif progress:
                progress(shard.stat().st_size)
            actions.append(action or "copied")
        fastcopy.write_files(plans, workers, progress)
        check_written(temporaries[0], first, plan)
    sizes = [plans[0].size] + [shard.stat().st_size for shard in shards[1:]]
    return [WrittenFile(str(f), a, n) for f, a, n in zip(finals, actions, sizes, strict=True)]


def check_written(path: Path, source: GGUFFile, plan: GGUFPlan) -> None:
    """Re-read the new header: every planned key with its type, same tensors, same data length."""
    result = read_gguf(path)
    for change in plan.changes:
        field = result.fields.get(change.key)
        if change.action == "remove":
            ok = field is None
        else:
            ok = field is not None and field.type_name == change.type
        if not ok:
            raise FormatError(f"{path}: written header lacks {change.key} as planned (a bug; nothing was published)")
    if result.tensors != source.tensors or result.file_size - result.data_start != source.file_size - source.data_start:
        raise FormatError(f"{path}: tensor infos or data length differ from the source (a bug; nothing was published)")
    for change in plan.tensor_changes:
        if read_small_tensor(result, change.name) != tuple(change.values):
            raise FormatError(f"{path}: tensor {change.name} was not rewritten as planned (a bug; nothing was published)")


def default_output(source_path: Path, scale: float) -> Path:
    match = SPLIT_PATTERN.match(source_path.name)
    stem = match["stem"] if match else source_path.name.removesuffix(".gguf")
    return source_path.with_name(extended_name(stem, scale) + ".gguf")
