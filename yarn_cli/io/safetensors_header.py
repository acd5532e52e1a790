"""safetensors header reading: names, dtypes, shapes and offsets, validated, without touching tensor data.

Layout: u64 little-endian header length N, N bytes of JSON, then the data region. Every tensor's
``data_offsets`` are relative to the data region and must lie inside the file.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from yarn_cli.errors import FormatError
from yarn_cli.io.paths import regular_file

# safetensors itself refuses headers over 100 MB.
MAX_HEADER_BYTES = 100 * 1024 * 1024

DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "F4": 0.5,
    "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # relative to the data region
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    header_size: int  # N, the JSON length
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)
    file_size: int = 0

    @property
    def data_start(self) -> int:
        return 8 + self.header_size


def read_header(path: str | os.PathLike) -> SafetensorsHeader:
    """Parse and validate a .safetensors header; never reads the data region."""
    path = Path(path)
    size = regular_file(path, "pass a .safetensors weight file").st_size
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise FormatError(f"{path}: too short to be a safetensors file ({size} bytes)")
            (header_size,) = struct.unpack("<Q", prefix)
            if header_size > MAX_HEADER_BYTES or header_size > size - 8:
                raise FormatError(
                    f"{path}: safetensors header claims {header_size} bytes but the file has {size} (truncated or not a safetensors file)"
                )
            raw = handle.read(header_size)
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: safetensors header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise FormatError(f"{path}: safetensors header must be a JSON object")

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError(f"{path}: safetensors __metadata__ must map strings to strings")
    data_size = size - 8 - header_size
    tensors = {}
    for name, entry in header.items():
        tensors[name] = _tensor_info(path, name, entry, data_size)
    _check_layout(path, tensors, data_size)
    return SafetensorsHeader(path=path, header_size=header_size, tensors=tensors, metadata=metadata, file_size=size)


def _tensor_info(path: Path, name: str, entry: object, data_size: int) -> TensorInfo:
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict):
        raise FormatError(f"{where}: entry must be an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise FormatError(f"{where}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise FormatError(f"{where}: shape must be a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets):
        raise FormatError(f"{where}: data_offsets must be two integers")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise FormatError(f"{where}: data offsets [{begin}, {end}] fall outside the file's {data_size}-byte data region")
    expected = math.ceil(math.prod(shape) * DTYPE_BYTES[dtype])
    if end - begin != expected:
        raise FormatError(f"{where}: {end - begin} bytes stored but shape {shape} of {dtype} needs {expected}")
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape), begin=begin, end=end)


def _check_layout(path: Path, tensors: dict[str, TensorInfo], data_size: int) -> None:
    """Tensors must tile the data region exactly, as the safetensors library requires to load a file:
    no overlaps (a bake would scale shared bytes twice), no gaps, nothing after the last tensor."""
    cursor = 0
    for info in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if info.begin != cursor:
            problem = "overlaps the tensor before it" if info.begin < cursor else f"leaves a gap of {info.begin - cursor} bytes before it"
            raise FormatError(
                f"{path}: tensor {info.name!r} at data offset {info.begin} {problem}; the safetensors library refuses such a file too (re-save it)"
            )
        cursor = info.end
    if cursor != data_size:
        raise FormatError(
            f"{path}: tensors cover {cursor} of the {data_size}-byte data region; "
            "the safetensors library refuses such a file too (truncated or padded: re-save it)"
        )
