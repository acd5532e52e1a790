"""The native model's spec and weights: llama-family tensors from an HF folder or a GGUF, under canonical names.

Canonical names: embed, norm, lm_head, and per layer ``layers.{i}.`` + attn_norm, q, k, v, o,
q_bias, k_bias, v_bias, q_norm, k_norm, ffn_norm, gate, up, down. q/k rows are in HF's
rotate-half order: GGUF files of "normal"-RoPE architectures (llama) store them permuted for
adjacent-pair rotation, and are permuted back here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarn_cli.core.checkpoint import architectures, gguf_meta, hf_config, hf_layout
from yarn_cli.core.checkpoint.kv_cache import AttentionLayout
from yarn_cli.core.rope.spec import RopeSpec
from yarn_cli.errors import UnsupportedError, about


def _hf_names(arch: architectures.Architecture) -> list[tuple[dict[str, str], dict[str, str], str]]:
    """(model-wide name -> role, per-layer suffix -> role, layer marker) for each of the family's layer prefixes.

    The entry names the model-wide tensors under its first prefix's head ("model."); under another prefix (a
    multimodal checkpoint's "model.language_model.") they sit under that head instead."""
    per_layer = {n: r for r, n in arch.tensors.items()}
    first_head = arch.layer_prefixes[0].split("layers.{layer}")[0]
    names = []
    for prefix in arch.layer_prefixes:
        marker = prefix.split("{layer}")[0]
        head = prefix.split("layers.{layer}")[0]
        top = {(head + n[len(first_head) :] if n.startswith(first_head) else n): r for r, n in arch.top_tensors.items()}
        names.append((top, per_layer, marker))
    return names


def _gguf_names() -> tuple[dict[str, str], dict[str, str], str]:
    facts = architectures.gguf_facts()
    marker = facts["layer_prefix"].split("{layer}")[0]
    return {n: r for r, n in facts["top_tensors"].items()}, {n: r for r, n in facts["tensors"].items()}, marker


@dataclass(frozen=True)
class NativeSpec:
    family: str  # the registry family (HF) or the GGUF architecture: what each loader names tensors by
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    rms_eps: float
    rope: RopeSpec
    attention: AttentionLayout  # what its KV cache holds; sliding layers attend within ``attention.sliding_window``
    source_format: str  # "hf" or "gguf"
    local_rope: RopeSpec | None = None  # the sliding layers' own RoPE (Gemma 3), which no variant changes
    norm_offset: float = 0.0  # RMSNorm multiplies by (offset + w): Gemma's 1 (llama.cpp's converter folds it into the GGUF)
    embed_scale: float = 1.0  # Gemma: sqrt(hidden)
    query_scale: float | None = None  # q·k scale in place of head_dim^-0.5
    mlp_activation: str = "silu"
    final_softcap: float | None = None  # logits = cap·tanh(logits / cap)

    def weight_bytes(self, value_bytes: int) -> int:
        attention = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        return int(value_bytes * (self.layers * (attention + 3 * self.hidden * 4 * self.hidden) + 2 * self.vocab * self.hidden))


def _canonical(name: str, top: dict[str, str], per_layer: dict[str, str], layer_marker: str) -> str | None:
    if name in top:
        return top[name]
    if name.startswith(layer_marker):
        index, _, rest = name[len(layer_marker) :].partition(".")
        if index.isdigit() and rest in per_layer:
            return f"layers.{index}.{per_layer[rest]}"
    return None


def _refuse_windows(where: Path, layout, local_rope: RopeSpec | None = None, arch: architectures.Architecture | None = None) -> None:
    """Sliding windows run only for a family whose every sliding rule the native pass has (Gemma 3: a window per
    sliding layer, with its own RoPE); elsewhere a windowed model would be another model."""
    if layout is not None and layout.sliding_layers and not (arch is not None and arch.sliding_window_pattern and local_rope is not None):
        raise UnsupportedError(
            f"{where}: {len(layout.sliding_layers)} layers attend through a {layout.sliding_window}-token sliding window, "
            "which the native engine does not implement: use --engine transformers (or llama.cpp for a GGUF)"
        )


def hf_spec(folder: Path, config: dict[str, Any], original_context: int | None = None) -> NativeSpec:
    cfg = hf_config.text_config(config)
    model_type = str(cfg.get("model_type") or "")
    arch = architectures.for_model_type(model_type)
    if arch is None or not arch.native_engine:
        raise UnsupportedError(
            f"{folder}: the native engine runs {', '.join(architectures.native_model_types())}; this is {model_type!r}: use --engine transformers"
        )
    with about(folder / "config.json"):
        specs, _ = hf_config.read_rope_specs(config, original_context)
        dims = hf_layout.model_dims(config)
    local = specs[1] if len(specs) > 1 else None
    _refuse_windows(folder, dims["attention"], local, arch)
    if cfg.get("attn_logit_softcapping"):
        raise UnsupportedError(f"{folder}: attention logit soft-capping (Gemma 2) is not in the native engine: use --engine transformers")
    scalar = cfg.get(arch.query_scale_key) if arch.query_scale_key else None  # Gemma's query_pre_attn_scalar
    return NativeSpec(
        family=arch.family,
        layers=dims["layers"],
        hidden=dims["hidden_size"],
        heads=dims["heads"],
        kv_heads=dims["kv_heads"],
        head_dim=specs[0].head_dim,
        vocab=int(cfg["vocab_size"]),
        rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope=specs[0],
        attention=dims["attention"],
        source_format="hf",
        local_rope=local,
        norm_offset=arch.norm_offset,
        embed_scale=dims["hidden_size"] ** 0.5 if arch.embed_scale == "sqrt_hidden" else 1.0,
        query_scale=_inverse_sqrt(scalar),
        mlp_activation=arch.mlp_activation,
        final_softcap=cfg.get("final_logit_softcapping") or None,
    )


def gguf_spec(gguf, original_context: int | None = None) -> NativeSpec:
    arch = gguf.architecture
    if arch not in architectures.native_gguf_architectures():
        raise UnsupportedError(
            f"{gguf.path}: the native engine runs GGUF architectures {', '.join(architectures.native_gguf_architectures())}; "
            f"this is {arch!r}: use --engine llama.cpp"
        )
    from yarn_cli.io.checkpoint import gguf_factor_values, gguf_metadata
    from yarn_cli.io.gguf_reader import ArrayInfo, read_gguf, split_shards

    meta = gguf_metadata(gguf)
    with about(gguf.path):
        factors = gguf_factor_values([gguf] + [read_gguf(p) for p in split_shards(gguf.path)[1:]])
        specs, _ = gguf_meta.read_rope_specs(meta, original_context, factors)
        dims = gguf_meta.model_dims(meta)
    family = architectures.for_gguf(arch)
    local = specs[1] if len(specs) > 1 else None
    _refuse_windows(gguf.path, dims["attention"], local, family)
    tokens = meta.get("tokenizer.ggml.tokens")
    # a long vocabulary is only measured (an ArrayInfo with its count); a short one (under 1,024) is a list
    vocab = int(meta.get(f"{arch}.vocab_size") or (tokens.count if isinstance(tokens, ArrayInfo) else len(tokens or [])))
    return NativeSpec(
        family=arch,
        layers=dims["layers"],
        hidden=dims["hidden_size"],
        heads=dims["heads"],
        kv_heads=dims["kv_heads"],
        head_dim=specs[0].head_dim,
        vocab=vocab,
        rms_eps=float(meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        rope=specs[0],
        attention=dims["attention"],
        source_format="gguf",
        local_rope=local,
        # llama.cpp's converter writes Gemma's norms with the 1 added, so the GGUF's norms multiply by w alone
        embed_scale=dims["hidden_size"] ** 0.5 if family is not None and family.embed_scale == "sqrt_hidden" else 1.0,
        query_scale=_inverse_sqrt(gguf_meta.query_pre_attn_scalar(meta)),
        mlp_activation=family.mlp_activation if family is not None else "silu",
        final_softcap=meta.get(f"{arch}.final_logit_softcapping") or None,
    )


def _inverse_sqrt(value: float | None) -> float | None:
    return float(value) ** -0.5 if value else None


def spec_of(path: Path, original_context: int | None = None) -> NativeSpec:
    """The spec of a GGUF or an HF folder, from its header alone (UnsupportedError for a family the native pass lacks)."""
    if path.suffix.lower() == ".gguf":
        from yarn_cli.io.gguf_reader import read_gguf

        return gguf_spec(read_gguf(path), original_context)
    from yarn_cli.io.checkpoint import read_json

    return hf_spec(path, read_json(path / "config.json"), original_context)


def load_hf_weights(folder: Path, spec: NativeSpec, device: str, dtype, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Tensors straight from the safetensors shards to the device, cast to ``dtype``."""
    from safetensors import safe_open

    from yarn_cli.io.checkpoint import safetensors_files

    layouts = _hf_names(architectures.registry()[spec.family])
    weights = {}
    for shard in safetensors_files(folder):
        with safe_open(str(shard), framework="pt", device=str(device)) as handle:
            for name in handle.keys():
                canonical = next((c for c in (_canonical(name, *layout) for layout in layouts) if c is not None), None)
                if canonical is not None:
                    tensor = handle.get_tensor(name)
                    weights[canonical] = tensor.to(dtype)
                    if progress:
                        progress(tensor.numel() * tensor.element_size())
    weights.setdefault("lm_head", weights.get("embed"))
    _check_complete(weights, spec, folder)
    return weights


def _check_complete(weights: dict[str, Any], spec: NativeSpec, where: Path) -> None:
    """Every tensor the forward pass reads is there: a layout the entry does not know is refused in words."""
    needed = ["embed", "norm", "lm_head"] + [f"layers.{i}.{role}" for i in range(spec.layers) for role in architectures.NATIVE_ROLES]
    missing = [name for name in needed if weights.get(name) is None]
    if missing:
        raise UnsupportedError(
            f"{where}: the native engine found no tensor for {missing[0]} ({len(missing)} missing) under the names its "
            f"{spec.family} entry knows: use --engine transformers"
        )


def _unpermute(weight, n_heads: int):
    """Undo llama.cpp's convert-time permutation of q/k rows (rotate-half -> adjacent pairs)."""
    rows = weight.shape[0]
    return weight.reshape(n_heads, rows // n_heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _gguf_tensors(path: Path) -> Iterator[tuple[str, Any]]:
    import gguf
    from gguf import quants

    reader = gguf.GGUFReader(path)
    for tensor in reader.tensors:
        yield tensor.name, quants.dequantize(tensor.data, tensor.tensor_type)


def load_gguf_weights(path: Path, spec: NativeSpec, device: str, dtype, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Dequantize every tensor with gguf-py and put it on the device, q/k rows in rotate-half order."""
    import numpy as np
    import torch

    from yarn_cli.io.gguf_reader import split_shards

    interleaved = architectures.gguf_rope_layout(spec.family) == "interleaved"
    top, per_layer, marker = _gguf_names()
    weights = {}
    for shard in split_shards(path):
        for name, array in _gguf_tensors(shard):
            canonical = _canonical(name, top, per_layer, marker)
            if canonical is None:
                continue
            array = np.array(array, dtype=np.float32)  # a writable copy: dequantize may return a read-only view
            if interleaved and canonical.rsplit(".", 1)[-1] in ("q", "k", "q_bias", "k_bias"):
                array = _unpermute(array, spec.heads if canonical.endswith(("q", "q_bias")) else spec.kv_heads)
            weights[canonical] = torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=dtype)
            if progress:
                progress(array.nbytes)
    weights.setdefault("lm_head", weights.get("embed"))
    _check_complete(weights, spec, path)
    return weights
