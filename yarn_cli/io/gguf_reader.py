"""A minimal, validating GGUF header reader.

Reads the KV records and tensor infos through an mmap with every length checked against the file
size, so a hostile file gives a FormatError rather than a hang or an out-of-memory. Large arrays
(the 49k-entry vocabulary, merges, scores) are skipped by length, never built into Python objects.
Each KV record keeps its byte span so a writer can copy untouched records verbatim.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarn_cli.errors import FormatError
from yarn_cli.io.paths import regular_file

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
GGML_MAX_DIMS = 4
# Arrays up to this many elements are decoded; longer ones are only measured.
SMALL_ARRAY = 1024
MAX_KEY_BYTES = 65536

# GGUF value types (gguf-py's GGUFValueType).
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
VALUE_TYPE_NAMES = dict(
    enumerate(("UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"))
)
SCALAR_FORMATS = {
    UINT8: "<B",
    INT8: "<b",
    UINT16: "<H",
    INT16: "<h",
    UINT32: "<I",
    INT32: "<i",
    FLOAT32: "<f",
    BOOL: "<?",
    UINT64: "<Q",
    INT64: "<q",
    FLOAT64: "<d",
}

# ggml type id -> (name, elements per block, bytes per block), as gguf-py's GGML_QUANT_SIZES.
GGML_TYPES = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

SPLIT_PATTERN = re.compile(r"^(?P<stem>.*)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True)
class ArrayInfo:
    """A large array that was measured but not decoded."""

    element_type: int
    count: int

    def __repr__(self) -> str:
        return f"<{VALUE_TYPE_NAMES.get(self.element_type, self.element_type)}[{self.count}]>"


@dataclass(frozen=True)
class GGUFField:
    key: str
    type: int
    value: Any  # int/float/bool/str, a list for small arrays, ArrayInfo for large ones
    start: int  # byte span of the whole record (key length .. end of value)
    end: int
    element_type: int | None = None

    @property
    def type_name(self) -> str:
        if self.type == ARRAY:
            return f"ARRAY[{VALUE_TYPE_NAMES.get(self.element_type, self.element_type)}]"
        return VALUE_TYPE_NAMES[self.type]


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    dims: tuple[int, ...]  # ggml order: dims[0] is the contiguous one
    ggml_type: int
    offset: int  # relative to the data region

    @property
    def type_name(self) -> str:
        return GGML_TYPES[self.ggml_type][0]

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.dims:
            count *= dim
        return count

    @property
    def nbytes(self) -> int:
        _, block, size = GGML_TYPES[self.ggml_type]
        return self.numel // block * size


@dataclass(frozen=True)
class GGUFFile:
    path: Path
    version: int
    fields: dict[str, GGUFField]  # in file order
    tensors: tuple[GGUFTensorInfo, ...]
    kv_start: int  # first KV record
    tensor_info_start: int  # == end of the KV section
    tensor_info_end: int
    data_start: int
    alignment: int
    file_size: int

    def get(self, key: str, default: Any = None) -> Any:
        field = self.fields.get(key)
        return default if field is None else field.value

    @property
    def architecture(self) -> str:
        return str(self.get("general.architecture", "unknown"))


class _Cursor:
    """Bounds-checked reads over a buffer; every overrun is a FormatError naming the file and offset."""

    def __init__(self, buffer: Any, size: int, path: Path):
        self.buffer, self.size, self.path, self.pos = buffer, size, path, 0

    def fail(self, what: str) -> FormatError:
        return FormatError(f"{self.path}: {what} at byte {self.pos} (truncated or corrupt GGUF)")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"{what} needs {n} bytes but the file ends")

    def unpack(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        (value,) = struct.unpack_from(fmt, self.buffer, self.pos)
        self.pos += n
        return value

    def string(self, what: str, limit: int | None = None) -> str:
        length = self.unpack("<Q", f"{what} length")
        if limit is not None and length > limit:
            raise self.fail(f"{what} claims {length} bytes (limit {limit})")
        self.need(length, what)
        raw = bytes(self.buffer[self.pos : self.pos + length])
        self.pos += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"{what} is not UTF-8") from exc


_U64 = struct.Struct("<Q")


def _skip_strings(cur: _Cursor, count: int, key: str) -> None:
    """Walk ``count`` length-prefixed strings (a 128k vocabulary) in a tight loop: each length is checked
    before it is read and the end once, with the same errors as a string-by-string walk."""
    buffer, size, pos, unpack = cur.buffer, cur.size, cur.pos, _U64.unpack_from
    for _ in range(count):
        if pos + 8 > size:
            cur.pos = pos
            raise cur.fail(f"element of {key!r} length needs 8 bytes but the file ends")
        pos += 8 + unpack(buffer, pos)[0]
    if pos > size:
        raise cur.fail(f"element of {key!r} runs past the end of the file")
    cur.pos = pos


def _read_value(cur: _Cursor, value_type: int, key: str, depth: int = 0, small: int = SMALL_ARRAY) -> tuple[Any, int | None]:
    if value_type in SCALAR_FORMATS:
        return cur.unpack(SCALAR_FORMATS[value_type], f"value of {key!r}"), None
    if value_type == STRING:
        return cur.string(f"string value of {key!r}"), None
    if value_type != ARRAY:
        raise cur.fail(f"key {key!r} has unknown value type {value_type}")
    if depth > 4:
        raise cur.fail(f"key {key!r} nests arrays too deeply")
    element_type = cur.unpack("<I", f"array type of {key!r}")
    count = cur.unpack("<Q", f"array length of {key!r}")
    if element_type in SCALAR_FORMATS:
        width = struct.calcsize(SCALAR_FORMATS[element_type])
        cur.need(count * width, f"array {key!r} of {count} elements")
        if count <= small:
            values = list(struct.unpack_from(f"<{count}{SCALAR_FORMATS[element_type][1]}", cur.buffer, cur.pos))
            cur.pos += count * width
            return values, element_type
        cur.pos += count * width
        return ArrayInfo(element_type, count), element_type
    if element_type == STRING:
        # Each string needs at least its 8-byte length: bounds the count before walking.
        cur.need(count * 8, f"array {key!r} of {count} strings")
        if count <= small:
            return [cur.string(f"element of {key!r}") for _ in range(count)], element_type
        _skip_strings(cur, count, key)
        return ArrayInfo(element_type, count), element_type
    if element_type == ARRAY:
        cur.need(count * 12, f"array {key!r} of {count} arrays")
        for _ in range(count):
            _read_value(cur, ARRAY, key, depth + 1)
        return ArrayInfo(element_type, count), element_type
    raise cur.fail(f"array {key!r} has unknown element type {element_type}")


def read_gguf(path: str | os.PathLike) -> GGUFFile:
    """Parse a GGUF file's header, KV records and tensor infos, validating every length and offset."""
    path = Path(path)
    size = regular_file(path, "pass a .gguf model file").st_size
    try:
        if size < 24:
            raise FormatError(f"{path}: {size} bytes is too short to be a GGUF file")
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            return _parse(buffer, size, path)
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _read_fields(cur: _Cursor, n_kv: int, path: Path) -> dict[str, GGUFField]:
    fields: dict[str, GGUFField] = {}
    for _ in range(n_kv):
        start = cur.pos
        key = cur.string("key", limit=MAX_KEY_BYTES)
        if key in fields:
            raise FormatError(f"{path}: duplicate key {key!r} (llama.cpp refuses such a file)")
        value_type = cur.unpack("<I", f"type of {key!r}")
        value, element_type = _read_value(cur, value_type, key)
        fields[key] = GGUFField(key, value_type, value, start, cur.pos, element_type)
    return fields


def _alignment(fields: dict[str, GGUFField], path: Path) -> int:
    if "general.alignment" not in fields:
        return DEFAULT_ALIGNMENT
    alignment = fields["general.alignment"].value
    if fields["general.alignment"].type != UINT32 or alignment <= 0 or alignment & (alignment - 1):
        raise FormatError(f"{path}: general.alignment must be a UINT32 power of two, got {alignment!r}")
    return alignment


def _read_tensor_infos(cur: _Cursor, n_tensors: int) -> list[GGUFTensorInfo]:
    infos = []
    for _ in range(n_tensors):
        name = cur.string("tensor name", limit=MAX_KEY_BYTES)
        n_dims = cur.unpack("<I", f"dimension count of {name!r}")
        if not 1 <= n_dims <= GGML_MAX_DIMS:
            raise cur.fail(f"tensor {name!r} has {n_dims} dimensions (ggml allows 1..{GGML_MAX_DIMS})")
        dims = tuple(cur.unpack("<Q", f"dimension of {name!r}") for _ in range(n_dims))
        ggml_type = cur.unpack("<I", f"type of {name!r}")
        if ggml_type not in GGML_TYPES:
            raise cur.fail(f"tensor {name!r} has unknown ggml type {ggml_type}")
        offset = cur.unpack("<Q", f"offset of {name!r}")
        info = GGUFTensorInfo(name, dims, ggml_type, offset)
        if dims[0] % GGML_TYPES[ggml_type][1]:
            raise cur.fail(f"tensor {name!r}: row of {dims[0]} is not a whole number of {info.type_name} blocks")
        infos.append(info)
    return infos


def _parse(buffer: Any, size: int, path: Path) -> GGUFFile:
    cur = _Cursor(buffer, size, path)
    if bytes(buffer[:4]) != GGUF_MAGIC:
        raise FormatError(f"{path}: not a GGUF file (magic {bytes(buffer[:4])!r}, expected b'GGUF')")
    cur.pos = 4
    version = cur.unpack("<I", "version")
    if version not in SUPPORTED_VERSIONS:
        hint = " (big-endian files are not supported)" if version > 0xFFFF else ""
        raise FormatError(f"{path}: GGUF version {version} is not supported (need 2 or 3){hint}")
    n_tensors = cur.unpack("<Q", "tensor count")
    n_kv = cur.unpack("<Q", "KV count")
    # The smallest KV record is 13 bytes and the smallest tensor info 29: absurd counts fail now.
    if n_kv * 13 > size or n_tensors * 29 > size:
        raise FormatError(f"{path}: header claims {n_kv} KV records and {n_tensors} tensors, more than {size} bytes can hold")
    kv_start = cur.pos
    fields = _read_fields(cur, n_kv, path)
    alignment = _alignment(fields, path)
    tensor_info_start = cur.pos
    infos = _read_tensor_infos(cur, n_tensors)
    tensor_info_end = cur.pos
    data_start = -(-tensor_info_end // alignment) * alignment
    data_size = size - data_start
    for info in infos:
        if info.offset % alignment or info.offset + info.nbytes > data_size:
            raise FormatError(
                f"{path}: tensor {info.name!r} at offset {info.offset} (+{info.nbytes} bytes) lies outside "
                f"the {max(data_size, 0)}-byte data region or off its {alignment}-byte alignment"
            )
    return GGUFFile(
        path=path,
        version=version,
        fields=fields,
        tensors=tuple(infos),
        kv_start=kv_start,
        tensor_info_start=tensor_info_start,
        tensor_info_end=tensor_info_end,
        data_start=data_start,
        alignment=alignment,
        file_size=size,
    )


def read_array(gguf: GGUFFile, key: str) -> list[Any]:
    """Decode one array in full (the vocabulary, for a tokenizer): only when asked for."""
    field = gguf.fields.get(key)
    if field is None or field.type != ARRAY:
        raise FormatError(f"{gguf.path}: no array {key!r}")
    if isinstance(field.value, list):
        return field.value
    with open(gguf.path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
        cur = _Cursor(buffer, gguf.file_size, gguf.path)
        cur.pos = field.start
        cur.string("key", limit=MAX_KEY_BYTES)
        cur.unpack("<I", "type")
        value, _ = _read_value(cur, ARRAY, key, small=1 << 62)
    return value


def split_shards(path: str | os.PathLike) -> list[Path]:
    """All shards of a split GGUF (``name-00001-of-00003.gguf``) in order, or just [path]."""
    path = Path(path)
    match = SPLIT_PATTERN.match(path.name)
    if not match:
        return [path]
    count = int(match["count"])
    shards = [path.with_name(f"{match['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [p.name for p in shards if not p.exists()]
    if missing:
        raise FormatError(f"{path}: split GGUF is missing shard(s) {', '.join(missing)} next to it")
    return shards


def find_tensor(gguf: GGUFFile, name: str) -> GGUFTensorInfo | None:
    return next((t for t in gguf.tensors if t.name == name), None)


def read_small_tensor(gguf: GGUFFile, name: str, limit: int = 1 << 16) -> tuple[float, ...] | None:
    """The values of a small F32/F16 tensor (per-pair factors), read with struct, so no torch or numpy is
    imported; None when the file has no such tensor."""
    info = find_tensor(gguf, name)
    if info is None:
        return None
    if info.type_name not in ("F32", "F16") or info.numel > limit:
        raise FormatError(
            f"{gguf.path}: tensor {name} is {info.type_name} with {info.numel} values; llama.cpp's converter writes it as a short F32 vector"
        )
    start = gguf.data_start + info.offset
    if start + info.nbytes > gguf.file_size:
        raise FormatError(f"{gguf.path}: tensor {name} runs past the end of the file (truncated GGUF)")
    with open(gguf.path, "rb") as handle:
        handle.seek(start)
        raw = handle.read(info.nbytes)
    code = "f" if info.type_name == "F32" else "e"
    return struct.unpack(f"<{info.numel}{code}", raw)
