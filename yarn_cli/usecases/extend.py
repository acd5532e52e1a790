"""`extend`: one plan (what changes, where it goes), shown by --dry-run and carried out by apply_extend."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yarn_cli.core.extend.naming import extended_name, modelfile_path
from yarn_cli.core.extend.options import EXTEND, ExtendRequest
from yarn_cli.core.extend.run_hints import modelfile_text, run_hints
from yarn_cli.core.rope.lengths import check_original_context
from yarn_cli.errors import AlreadyScaledError, InputError, about
from yarn_cli.io.atomic import WrittenFile
from yarn_cli.usecases.models import Notify, is_gguf, resolve_hf_folder, resolve_model

if TYPE_CHECKING:
    from yarn_cli.core.extend.bake_plan import BakeOp
    from yarn_cli.core.extend.gguf_plan import GGUFPlan
    from yarn_cli.core.extend.hf_plan import Change, ConfigPlan
    from yarn_cli.io.gguf_reader import GGUFFile
    from yarn_cli.io.safetensors_header import SafetensorsHeader

Progress = Callable[[int], None]  # called with the bytes just written


@dataclass(frozen=True)
class ExtendPlan:
    """Everything a write needs, computed and checked before anything is written."""

    source: str
    format: str  # "gguf" or "hf"
    input_path: Path  # the .gguf (first shard) or the HF folder
    output: Path  # the path a loader opens (a GGUF's first shard, or the folder)
    outputs: tuple[Path, ...]
    rope: GGUFPlan | ConfigPlan
    notes: tuple[str, ...]
    total_bytes: int
    force: bool = False
    bake_ops: tuple[BakeOp, ...] = ()  # HF only
    length_caps: tuple[Change, ...] = ()  # in tokenizer/generation configs, HF only
    cap_files: Mapping[str, dict[str, Any]] = field(default_factory=dict)  # their new content
    parsed: GGUFFile | list[SafetensorsHeader] | None = None  # what the writer reuses: the first GGUF shard, or the safetensors headers
    modelfile: Path | None = None  # an Ollama Modelfile to write beside a GGUF (--modelfile)

    @property
    def scale(self) -> float:
        return self.rope.scale

    @property
    def target_context(self) -> int:
        return self.rope.target_context

    def to_json(self, dry_run: bool = True) -> dict[str, Any]:
        report: dict[str, Any] = {"source": self.source, "format": self.format, "output": str(self.output), "dry_run": dry_run}
        report.update(self.rope.to_json())
        report["notes"] = list(self.notes)
        if self.format == "hf":
            report.update(tensors_changed=len(self.bake_ops), baked_tensors=[op.tensor for op in self.bake_ops])
            report["length_caps"] = [c.to_json() for c in self.length_caps]
        report["run"] = run_hints(self.format, self.output, self.target_context, self.modelfile)
        report["files"] = []
        return report


@dataclass(frozen=True)
class ExtendResult:
    plan: ExtendPlan
    files: tuple[WrittenFile, ...]
    seconds: float
    workers: int
    reclaimed: tuple[str, ...] = ()  # notices about leftovers of an interrupted run that were removed
    notes: tuple[str, ...] = ()

    @property
    def bytes_written(self) -> int:
        return sum(f.bytes for f in self.files)

    def to_json(self) -> dict[str, Any]:
        report = self.plan.to_json(dry_run=False)
        report.update(
            notes=list(self.notes),
            files=[vars(f) for f in self.files],
            bytes_written=self.bytes_written,
            seconds=round(self.seconds, 3),
            reclaimed=list(self.reclaimed),
            workers=self.workers,
        )
        return report


def plan_extend(
    model: str | Path | None = None,
    out: str | Path | None = None,
    request: ExtendRequest | None = None,
    *,
    notify: Notify | None = None,
    **options: Any,
) -> ExtendPlan:
    """Plan YaRN x``scale`` (or to ``to`` tokens) for MODEL into OUT (default: a sibling named after the
    scale; for the built-in model, the current folder). Reads headers and small files only; refuses what would be wrong before anything is written.
    ``request`` holds every choice (``yarn_cli.core.extend.options.ExtendRequest``); keyword arguments change single
    ones. ``attention_factor``: the m to apply instead of the paper's 0.1·ln s + 1 (what `yarn tune` chose), written
    in the form each runtime reads (or baked into q/k with ``bake_temperature``). ``stack``: GGUF only, keep the
    file's frequency factors (llama3 in ``rope_freqs``) and add YaRN on top, as llama.cpp computes the two."""
    from yarn_cli.core.extend.hf_plan import check_attention_factor

    r = ExtendRequest.build(request, **options)
    check_original_context(r.original_context)
    check_attention_factor(r.attention_factor)
    source = resolve_model(model, notify)
    out_path = Path(out).expanduser() if out is not None else None
    if out_path is None and not model:
        out_path = Path.cwd()  # the built-in model lives in a cache: its extension goes where the user is
    if is_gguf(source):
        if r.bake_temperature:
            raise InputError(
                "--bake-temperature is for Hugging Face checkpoints: llama.cpp applies the YaRN attention factor itself "
                "for GGUF, so baking it in would apply it twice"
            )
        if r.yarn_layers == "all":
            raise InputError("--yarn-layers all is for Hugging Face folders: llama.cpp applies YaRN to a GGUF's full-attention layers only")
        plan = _plan_gguf(Path(source), out_path, r)
        return _with_modelfile(plan) if r.modelfile else plan
    if r.stack:
        raise InputError(
            "--stack is for GGUF files whose rope_freqs tensor holds a frequency scaling; a Hugging Face "
            "config names one scaling: use --replace to re-extend it"
        )
    if r.modelfile:
        raise InputError("--modelfile is for GGUF output (Ollama); a Hugging Face folder runs in vLLM, SGLang or transformers")
    return _plan_hf(source, out_path, r)


def _plan_gguf(path: Path, out: Path | None, r: ExtendRequest) -> ExtendPlan:
    from yarn_cli.core.extend.gguf_plan import longrope_route, plan_extension
    from yarn_cli.io import atomic, gguf_writer
    from yarn_cli.io.gguf_reader import read_gguf, split_shards
    from yarn_cli.io.gguf_writer import metadata_with_types

    shards = split_shards(path)
    parsed = [read_gguf(shard) for shard in shards]  # validate every shard before writing anything
    first = parsed[0]
    with about(path):
        factors = _freq_factors(parsed)
        meta = metadata_with_types(first)
        longrope = _longrope(parsed)
        original, rewrites = longrope_route(longrope, meta, r.replace, r.original_context) if longrope else (r.original_context, ())
        rope = plan_extension(meta, r.scale, r.to, original, r.replace, r.attention_factor, factors, r.stack)
        rope = dataclasses.replace(rope, tensor_changes=rope.tensor_changes + rewrites)
    notes = list(rope.notes)
    if r.betas != EXTEND.betas:
        notes.append("--beta-fast/--beta-slow are not written to GGUF: llama.cpp uses 32 and 1 for most architectures")
    out = out or gguf_writer.default_output(path, rope.scale)
    if out.is_dir():
        out = out / gguf_writer.default_output(path, rope.scale).name
    finals = tuple(gguf_writer.output_shard_paths(out, len(shards)))
    for final in finals:
        for shard in shards:
            atomic.check_output(final, shard, r.force)
    return ExtendPlan(
        source=str(path),
        format="gguf",
        input_path=path,
        output=finals[0],
        outputs=finals,
        rope=rope,
        notes=tuple(notes),
        total_bytes=sum(s.stat().st_size for s in shards),
        force=r.force,
        parsed=first,
    )


def _longrope(shards: list) -> Any:
    """A Phi-3-style file's longrope factor tensors, in the first shard (the writer rewrites only its tensors)."""
    from yarn_cli.core.checkpoint.gguf_meta import LONGROPE_TENSORS
    from yarn_cli.errors import UnsupportedError
    from yarn_cli.io.checkpoint import gguf_longrope_values
    from yarn_cli.io.gguf_reader import find_tensor

    values = gguf_longrope_values(shards)
    if values is not None and any(find_tensor(shards[0], name) is None for name in LONGROPE_TENSORS):
        raise UnsupportedError("the longrope factors are in a later shard of this split GGUF; merge it (llama-gguf-split --merge) first")
    return values


def _freq_factors(shards: list) -> Any:
    """The first shard's ``rope_freqs`` as a model fact (the writer rewrites only the first shard's tensors)."""
    from yarn_cli.core.checkpoint import gguf_meta
    from yarn_cli.core.rope.freq_factors import TENSOR
    from yarn_cli.errors import UnsupportedError
    from yarn_cli.io.checkpoint import gguf_factor_values, gguf_metadata
    from yarn_cli.io.gguf_reader import find_tensor

    values = gguf_factor_values(shards)
    if values is None:
        return None
    if find_tensor(shards[0], TENSOR) is None:
        raise UnsupportedError(f"{TENSOR} is in a later shard of this split GGUF; merge it (llama-gguf-split --merge) first")
    return gguf_meta.read_rope_specs(gguf_metadata(shards[0]), None, values)[0][0].freq_factors


def _with_modelfile(plan: ExtendPlan) -> ExtendPlan:
    from dataclasses import replace

    from yarn_cli.io import atomic

    path = modelfile_path(plan.output)
    atomic.check_output(path, plan.input_path, plan.force)
    return replace(plan, modelfile=path)


def _plan_hf(source: str, out: Path | None, r: ExtendRequest) -> ExtendPlan:
    from yarn_cli.core.extend.hf_plan import plan_cap_files, plan_config
    from yarn_cli.io import atomic, hf_writer
    from yarn_cli.io.checkpoint import read_json

    folder, name = resolve_hf_folder(source, r.revision)
    config = read_json(folder / "config.json")
    with about(folder / "config.json"):
        rope = plan_config(config, r)
    headers = hf_writer.read_shards(folder)
    # the planned config: it says which layers' RoPE carries the scaling (--yarn-layers all: the sliding ones too)
    ops = _bake_ops(folder, rope.config, headers, rope.bake_factor, rope.softmax_mscale) if r.bake_temperature else []
    out = out or _default_hf_output(source, folder, name, rope.scale)
    atomic.check_output(out, folder, r.force)
    caps, cap_files = plan_cap_files(hf_writer.read_cap_files(folder), rope.target_context)
    return ExtendPlan(
        source=str(source),
        format="hf",
        input_path=folder,
        output=out,
        outputs=(out,),
        rope=rope,
        notes=tuple(rope.notes),
        total_bytes=hf_writer.total_bytes(folder),
        force=r.force,
        bake_ops=tuple(ops),
        length_caps=tuple(caps),
        cap_files=cap_files,
        parsed=headers,
    )


def _bake_ops(folder: Path, config: dict[str, Any], headers: list, factor: float, softmax_mscale: float | None = None) -> list:
    """The q/k rows that carry m, after the checks a bake needs: safetensors weights, not baked before."""
    from yarn_cli.core.extend.bake_plan import plan_bake
    from yarn_cli.io.hf_writer import METADATA_PREFIX

    if not headers:
        raise InputError(f"{folder}: no .safetensors weights; baking reads safetensors only (pickled weights are never loaded)")
    already = {k: v for h in headers for k, v in h.metadata.items() if k.startswith(METADATA_PREFIX)}
    if already:
        raise AlreadyScaledError(f"{folder}: safetensors metadata records an earlier bake ({already}); extend the original checkpoint")
    tensors = {name: (info.dtype, info.shape) for h in headers for name, info in h.tensors.items()}
    with about(folder / "config.json"):
        return plan_bake(config, tensors, factor, softmax_mscale)


def _default_hf_output(source: str, folder: Path, name: str, scale: float) -> Path:
    """A sibling of a local folder; for a hub repo, a folder in the current directory."""
    if Path(source).expanduser().exists():
        return folder.with_name(extended_name(folder.name, scale))
    return Path.cwd() / extended_name(name, scale)


def apply_extend(
    plan: ExtendPlan,
    *,
    progress: Progress | None = None,
    copy: bool = False,
    workers: int | None = None,
    notify: Notify | None = None,
) -> ExtendResult:
    """Write ``plan`` atomically: OUT appears whole or not at all. ``copy``: never hard-link unchanged
    files (they are reflinked where the filesystem can, else copied); ``workers``: parallel writers."""
    from yarn_cli.io import gguf_writer, hf_writer
    from yarn_cli.io.fastcopy import default_workers

    reclaimed: list[str] = []

    def heard(message: str) -> None:
        reclaimed.append(message)
        if notify:
            notify(message)

    workers = workers or default_workers()
    hooks = {"force": plan.force, "notify": heard, "hardlink": not copy, "workers": workers}
    started = time.perf_counter()
    if plan.format == "gguf":
        files = gguf_writer.extend_gguf(plan.parsed, plan.rope, plan.output, progress, **hooks)
    else:
        files = hf_writer.write_extension(
            plan.input_path, plan.rope, list(plan.bake_ops), plan.output, progress, plan.parsed, cap_files=plan.cap_files, **hooks
        )
    if plan.modelfile is not None:
        files = [*files, _write_modelfile(plan, heard)]
    seconds = time.perf_counter() - started
    return ExtendResult(plan, tuple(files), seconds, workers, tuple(reclaimed), tuple(plan.notes) + tuple(_link_notes(files)))


def _write_modelfile(plan: ExtendPlan, notify: Notify) -> Any:
    from yarn_cli.io.atomic import atomic_path

    text = modelfile_text(plan.output.name, plan.target_context)
    with atomic_path(plan.modelfile, plan.force, notify) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return WrittenFile(str(plan.modelfile), "written", len(text.encode()))


def _link_notes(files) -> list[str]:
    """What a user must know about hard-linked files in OUT: nothing, or one note."""
    linked = sum(1 for item in files if item.action == "linked")
    if not linked:
        return []
    return [
        f"{linked} unchanged weight file(s) in OUT are hard links to the input (this filesystem has no reflinks): "
        "a tool that rewrites such a file in place would change the input too; --copy writes independent files"
    ]
