"""Architecture knowledge, loaded from the JSON entries in ``yarn_cli/architectures/`` (one per family).

Each entry says where a family's q and k live (separate projections, fused qkv, qk-norm), whether
they carry biases, and in which layout the rotary dims sit, so baking needs no per-model branches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

_PACKAGE = "yarn_cli.architectures"


@dataclass(frozen=True)
class Architecture:
    family: str
    model_types: tuple[str, ...]
    gguf_architectures: tuple[str, ...]
    rope_layout: str
    layer_prefixes: tuple[str, ...]
    attention: dict[str, Any]
    notes: str = ""
    yarn_layers: str = "all"  # or "global_only": sliding-window layers have their own unscaled RoPE
    hf_yarn_unsupported: str = ""  # why a YaRN config.json would not be honoured for this family, if so
    # transformers 4.x names for values 5.x keeps inside rope_parameters ("partial_rotary_factor", "local_rope_theta")
    hf4_keys: dict[str, str] = field(default_factory=dict)

    @property
    def attention_kind(self) -> str:
        """"separate" (q_proj/k_proj), "fused" (one qkv tensor) or "qk_norm" (norm weights carry the scale)."""
        if "qkv_weight" in self.attention:
            return "fused"
        if "q_norm" in self.attention:
            return "qk_norm"
        return "separate"


def _read_json(name: str) -> dict[str, Any]:
    return json.loads(resources.files(_PACKAGE).joinpath(name).read_text(encoding="utf-8"))


@cache
def registry() -> dict[str, Architecture]:
    """Every family entry, keyed by family name."""
    entries = {}
    for item in sorted(resources.files(_PACKAGE).iterdir(), key=lambda p: p.name):
        if not item.name.endswith(".json") or item.name.startswith("_"):
            continue
        data = json.loads(item.read_text(encoding="utf-8"))
        entries[data["family"]] = Architecture(
            family=data["family"],
            model_types=tuple(data["model_types"]),
            gguf_architectures=tuple(data.get("gguf_architectures", ())),
            rope_layout=data["rope_layout"],
            layer_prefixes=tuple(data["layer_prefixes"]),
            attention=dict(data["attention"]),
            notes=data.get("notes", ""),
            yarn_layers=data.get("yarn_layers", "all"),
            hf_yarn_unsupported=data.get("hf_yarn_unsupported", ""),
            hf4_keys=dict(data.get("hf4_keys", {})),
        )
    return entries


def for_model_type(model_type: str) -> Architecture | None:
    for arch in registry().values():
        if model_type in arch.model_types:
            return arch
    return None


def supported_model_types() -> list[str]:
    return sorted(t for arch in registry().values() for t in arch.model_types)


@cache
def _non_rope_hf() -> dict[str, str]:
    return dict(_read_json("_non_rope.json")["model_types"])


@cache
def _gguf() -> dict[str, Any]:
    return _read_json("_gguf.json")


def hf_non_rope_reason(model_type: str) -> str | None:
    """How a transformers model_type encodes positions when it is not RoPE, else None."""
    return _non_rope_hf().get(model_type)


def gguf_non_rope_reason(architecture: str) -> str | None:
    return _gguf()["non_rope_architectures"].get(architecture)


def gguf_rope_layout(architecture: str) -> str:
    """llama.cpp's layout for an architecture: NEOX is rotate-half, NORM is interleaved pairs."""
    return "rotate_half" if architecture in _gguf()["neox_architectures"] else "interleaved"
