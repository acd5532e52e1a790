"""Resolve a MODEL argument (HF folder, hub repo id, .safetensors, .gguf) into a ModelSummary.

Only headers and small JSON files are read; tensor data never is.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from yarn_cli.core.checkpoint import architectures, hf_config, hf_layout
from yarn_cli.core.rope.spec import ModelSummary, TensorStats
from yarn_cli.errors import FormatError, InputError, about
from yarn_cli.io.paths import kind_of, regular_file
from yarn_cli.io.safetensors_header import SafetensorsHeader, read_header

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
INDEX_NAME = "model.safetensors.index.json"
MAX_JSON_BYTES = 64 * 1024 * 1024


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a small file, with one-line errors for the usual ways it goes wrong."""
    if not os.path.lexists(path):
        raise FormatError(f"{path}: not found")
    size = regular_file(path, "it must be a JSON file").st_size
    if size > MAX_JSON_BYTES:
        raise FormatError(f"{path}: {size} bytes is too large for a config file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: not valid JSON ({exc}); fix or restore the file") from exc
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not isinstance(data, dict):
        raise FormatError(f"{path}: expected a JSON object at the top level")
    return data


def safe_member(folder: Path, relative: str, where: str) -> Path:
    """A path named inside a checkpoint (an index's shard) that must stay inside the folder."""
    if not isinstance(relative, str) or not relative or os.path.isabs(relative) or "\\" in relative:
        raise FormatError(f"{where}: shard path {relative!r} must be a relative file name")
    candidate = (folder / relative).resolve()
    if folder.resolve() not in candidate.parents:
        raise FormatError(f"{where}: shard path {relative!r} points outside the model folder")
    return folder / relative


def safetensors_files(folder: Path) -> list[Path]:
    """The weight shards of an HF folder: through the index when there is one, else every *.safetensors."""
    index_path = folder / INDEX_NAME
    if index_path.exists():
        index = read_json(index_path)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise FormatError(f"{index_path}: weight_map must be a non-empty object")
        names = sorted(set(weight_map.values()), key=str)
        files = [safe_member(folder, name, str(index_path)) for name in names]
        missing = [p.name for p in files if not p.exists()]
        if missing:
            raise FormatError(f"{index_path}: lists shard(s) {', '.join(missing[:3])} that are missing from the folder")
        return files
    return sorted(folder.glob("*.safetensors"))


def tensor_stats_from_headers(headers: list[SafetensorsHeader]) -> TensorStats:
    dtypes: Counter[str] = Counter()
    count = parameters = nbytes = 0
    for header in headers:
        for info in header.tensors.values():
            count += 1
            parameters += info.numel
            nbytes += info.nbytes
            dtypes[info.dtype] += 1
    return TensorStats(count=count, parameters=parameters, bytes=nbytes, dtypes=dict(dtypes), files=len(headers))


def _summary(
    source: str, fmt: str, architecture: str, dims: dict[str, Any], ropes, stats: TensorStats, warnings, extra: dict[str, Any]
) -> ModelSummary:
    return ModelSummary(
        source=source,
        format=fmt,
        architecture=architecture,
        layers=dims["layers"],
        attention_heads=dims["heads"],
        kv_heads=dims["kv_heads"],
        hidden_size=dims["hidden_size"],
        ropes=ropes,
        tensors=stats,
        attention=dims["attention"],
        warnings=tuple(warnings),
        extra=extra,
    )


def summarize_config(
    config: dict[str, Any],
    source: str,
    fmt: str,
    stats: TensorStats,
    original_context: int | None,
    extra: dict[str, Any],
    where: object,
) -> ModelSummary:
    """``where`` names the config in errors: its path, or the hub repo id."""
    with about(where):
        ropes, warnings = hf_config.read_rope_specs(config, original_context)
        dims = hf_layout.model_dims(config)
    model_type = hf_config.model_type(config) or None
    family = hf_config.family(config)
    extra = {"model_type": model_type, "family": family.family if family else None, **extra}
    return _summary(source, fmt, hf_config.architecture_name(config), dims, ropes, stats, warnings, extra)


def summarize_hf_folder(folder: Path, original_context: int | None = None) -> ModelSummary:
    config_path = folder / "config.json"
    if not config_path.exists():
        raise InputError(f"{folder}: no config.json; pass a Hugging Face model folder, a .gguf file or a hub repo id")
    config = read_json(config_path)
    headers = [read_header(path) for path in safetensors_files(folder)]
    extra: dict[str, Any] = {}
    if not headers:
        pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        extra["weights"] = pickled or None
    baked = {k: v for h in headers for k, v in h.metadata.items() if k.startswith("yarn_cli.")}
    if baked:
        extra["baked"] = baked
    stats = tensor_stats_from_headers(headers)
    return summarize_config(config, str(folder), "hf", stats, original_context, extra, config_path)


def summarize_safetensors_file(path: Path, original_context: int | None = None) -> ModelSummary:
    header = read_header(path)
    config_path = path.parent / "config.json"
    if not config_path.exists():
        raise InputError(
            f"{path}: a .safetensors file carries no RoPE settings and there is no config.json beside it; "
            "pass the model folder (with config.json) instead"
        )
    config = read_json(config_path)
    extra = {"safetensors_metadata": header.metadata}
    stats = tensor_stats_from_headers([header])
    return summarize_config(config, str(path), "safetensors", stats, original_context, extra, config_path)


def gguf_metadata(gguf) -> dict[str, Any]:
    return {key: field.value for key, field in gguf.fields.items()}


def gguf_factor_values(shards: list) -> tuple[float, ...] | None:
    """The ``rope_freqs`` per-pair factors llama.cpp divides θ by, from whichever shard holds them."""
    from yarn_cli.core.rope.freq_factors import TENSOR
    from yarn_cli.io.gguf_reader import read_small_tensor

    for shard in shards:
        values = read_small_tensor(shard, TENSOR)
        if values is not None:
            return values
    return None


def gguf_longrope_values(shards: list) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """A Phi-3-style file's (long, short) ``rope_factors_*`` tensors, from whichever shard holds them."""
    from yarn_cli.core.checkpoint.gguf_meta import LONGROPE_TENSORS
    from yarn_cli.io.gguf_reader import read_small_tensor

    found = [next((v for shard in shards if (v := read_small_tensor(shard, name)) is not None), None) for name in LONGROPE_TENSORS]
    long, short = found
    if long is None and short is None:
        return None
    if long is None or short is None:
        have, lack = (LONGROPE_TENSORS[1], LONGROPE_TENSORS[0]) if long is None else LONGROPE_TENSORS
        raise FormatError(f"GGUF has {have} but not {lack}; llama.cpp needs both for longrope")
    return long, short


def summarize_gguf(path: Path, original_context: int | None = None) -> ModelSummary:
    from yarn_cli.core.checkpoint import gguf_meta
    from yarn_cli.io.gguf_reader import read_gguf, split_shards

    shards = [read_gguf(p) for p in split_shards(path)]
    meta = gguf_metadata(shards[0])
    with about(path):
        ropes, warnings = gguf_meta.read_rope_specs(meta, original_context, gguf_factor_values(shards), gguf_longrope_values(shards))
        dims = gguf_meta.model_dims(meta)
    dtypes: Counter[str] = Counter(t.type_name for shard in shards for t in shard.tensors)
    stats = TensorStats(
        count=sum(len(s.tensors) for s in shards),
        parameters=sum(t.numel for s in shards for t in s.tensors),
        bytes=sum(t.nbytes for s in shards for t in s.tensors),
        dtypes=dict(dtypes),
        files=len(shards),
    )
    family = architectures.for_gguf(shards[0].architecture)
    extra = {"gguf_version": shards[0].version, "name": meta.get("general.name"), "family": family.family if family else None}
    return _summary(str(path), "gguf", shards[0].architecture, dims, ropes, stats, warnings, extra)


def summarize_hub(repo_id: str, revision: str | None, original_context: int | None = None) -> ModelSummary:
    """A hub repo, from config.json and the safetensors headers (range requests), no weights downloaded."""
    from yarn_cli.io import hub

    config = hub.fetch_config(repo_id, revision)
    stats = hub.fetch_tensor_stats(repo_id, revision)
    return summarize_config(config, repo_id, "hub", stats, original_context, {"revision": revision}, repo_id)


def summarize(model: str, revision: str | None = None, original_context: int | None = None) -> ModelSummary:
    """Dispatch on what MODEL is: folder, .safetensors, .gguf, or a hub repo id."""
    path = Path(model).expanduser()
    if path.is_dir():
        if path.suffix.lower() in (".gguf", ".safetensors") and not (path / "config.json").exists():
            raise InputError(f"{path}: is a folder, not a {path.suffix.lower()} file; pass the file itself")
        return summarize_hf_folder(path, original_context)
    if path.exists() and not path.is_file():
        raise InputError(f"{path}: is {kind_of(path.stat().st_mode)}, not a model file or folder")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".gguf":
            return summarize_gguf(path, original_context)
        if suffix == ".safetensors":
            return summarize_safetensors_file(path, original_context)
        if path.name == "config.json":
            return summarize_hf_folder(path.parent, original_context)
        raise InputError(f"{path}: unsupported file type {suffix or '(none)'}; pass a model folder, .safetensors or .gguf")
    if REPO_ID.match(model) and not model.startswith((".", "/", "~")):
        return summarize_hub(model, revision, original_context)
    raise InputError(f"{model}: no such file or folder, and not a hub repo id of the form org/name")
