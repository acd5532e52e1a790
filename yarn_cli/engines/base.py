"""The engine interface verify drives: a tokenizer, and per variant ("extended", "baseline") greedy
decoding and next-token losses. Small on purpose, so a multi-GPU engine (vLLM with tensor
parallelism) is one more adapter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from yarn_cli.core.kv_cache import AttentionLayout

VARIANTS = ("extended", "baseline")
# --engine name -> (module, class); every engine takes (path, device, original_context, max_length=...).
ENGINES = {
    "native": ("yarn_cli.engines.native_engine", "NativeEngine"),
    "transformers": ("yarn_cli.engines.hf_engine", "TransformersEngine"),
    "llama.cpp": ("yarn_cli.engines.llamacpp_engine", "LlamaCppEngine"),
}


class Tokenizer(Protocol):
    bos: list[int]

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True)
class ModelFacts:
    """What the harness needs to plan: the trained and declared lengths and the sizes for memory estimates."""

    original_context: int
    target_context: int
    attention: AttentionLayout  # what the engine's KV cache holds
    heads: int
    hidden: int
    vocab: int
    weight_bytes: int
    value_bytes: int
    scaling: str  # the declared scaling's label ("yarn x4"), or "none"


class Engine(Protocol):
    name: str
    device: str
    tokenizer: Tokenizer
    facts: ModelFacts
    notes: list[str]

    def greedy(self, variant: str, ids: list[int], max_new_tokens: int) -> list[int]: ...

    def token_losses(self, variant: str, ids: list[int], score_from: int) -> list[float]:
        """Next-token negative log-likelihoods for positions score_from .. len(ids)-2."""
        ...

    def tokens_per_second(self) -> float: ...

    def available_memory(self) -> int: ...


def available_host_memory() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def pick_device(requested: str) -> str:
    import torch

    from yarn_cli.errors import InputError

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is visible to torch; use --device cpu or auto")
    if requested not in ("cpu", "cuda"):
        raise InputError(f"--device {requested!r}: use auto, cuda or cpu")
    return requested


def load_engine(name: str, path, device: str, original_context: int | None, max_length: int) -> Engine:
    """Import and build the engine ``name`` (engines are imported only when asked for: each pulls its runtime)."""
    import importlib

    from yarn_cli.errors import InputError

    if name not in ENGINES:
        raise InputError(f"--engine {name!r} is not one of {', '.join(ENGINES)}")
    module, cls = ENGINES[name]
    return getattr(importlib.import_module(module), cls)(path, device, original_context, max_length=max_length)
