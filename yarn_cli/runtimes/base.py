"""The engine interface verify drives: a tokenizer, and for any RoPE variant (core.variants) greedy
decoding and next-token losses, each with its own timing. Small on purpose, so a multi-GPU engine
(vLLM with tensor parallelism) is one more adapter.

An engine says which variants it cannot express (``unsupported``) instead of substituting another.
The variant of kind "declared" is the checkpoint as the runtime itself reads it: that is what parity tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from yarn_cli.core.checkpoint.kv_cache import AttentionLayout
from yarn_cli.core.options import ENGINE, EngineOptions
from yarn_cli.core.rope.spec import RopeSpec
from yarn_cli.core.rope.variants import RopeVariant

# --engine name -> (module, class); every engine takes (path, device, original_context, max_length=...).
ENGINES = {
    "native": ("yarn_cli.native.engine", "NativeEngine"),
    "transformers": ("yarn_cli.runtimes.transformers", "TransformersEngine"),
    "llama.cpp": ("yarn_cli.runtimes.llamacpp", "LlamaCppEngine"),
    "vllm": ("yarn_cli.runtimes.vllm", "VllmEngine"),
}
# --engine name -> the optional packages it runs on (yarn_cli.io.packages.FEATURES)
ENGINE_FEATURES = {"native": "torch", "transformers": "transformers", "llama.cpp": "llama.cpp", "vllm": "vllm"}
# The vLLM-only options and their defaults (a value other than these, given to another engine, is refused).
ENGINE_OPTION_DEFAULTS = ENGINE.to_dict()


def stop_ids(eos: object) -> frozenset[int]:
    """A config's ``eos_token_id`` (one id, a list, or none) as the ids that end a generation: the one reading of it
    for every engine that takes it from the config."""
    ids = eos if isinstance(eos, list) else [eos]
    return frozenset(e for e in ids if isinstance(e, int) and not isinstance(e, bool))


def compute_dtype(device: str):
    """bfloat16 on a GPU, float32 on a CPU: the one rule for the dtype every torch engine (and the fine-tune) runs in."""
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


class Tokenizer(Protocol):
    bos: list[int]  # what a prompt starts with (empty where the tokenizer adds no BOS)
    bos_id: int | None  # the special tokens themselves
    eos_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True)
class ModelFacts:
    """What the protocol needs to plan: the trained and declared lengths and the sizes for memory estimates."""

    original_context: int
    target_context: int
    attention: AttentionLayout  # what the engine's KV cache holds
    heads: int
    hidden: int
    vocab: int
    weight_bytes: int
    value_bytes: int
    scaling: str  # the declared scaling's label ("yarn x4"), or "none"
    rope: RopeSpec | None = None  # the declared RoPE (global family): what parity holds the engine to
    baked_attention_factor: float | None = None  # m already in the q/k weights, for a baked checkpoint


@dataclass(frozen=True)
class Generation:
    """Greedy tokens, with the prefill and the decoding timed apart (the same two figures on every engine).
    The first token comes out of the prefill; ``decode_tokens`` counts the one-token steps after it."""

    tokens: list[int]
    prefill_tokens: int
    prefill_seconds: float
    decode_seconds: float
    decode_tokens: int


@dataclass(frozen=True)
class Scored:
    """Next-token negative log-likelihoods of ids[score_from+1:], and the prefill that produced them.
    ``greedy``: whether each of those tokens was the engine's most likely next token (lm-eval's is_greedy)."""

    losses: list[float]
    prefill_tokens: int
    prefill_seconds: float
    greedy: list[bool] | None = None


@dataclass(frozen=True)
class Divergence:
    """Per position of ids[score_from:-1]: KL(P_reference ‖ P_variant) of the next-token distributions over the whole
    vocabulary (nats), and whether both put the same token first; the two prefills timed together."""

    divergences: list[float]
    agree: list[bool]
    prefill_tokens: int
    prefill_seconds: float


class Engine(Protocol):
    name: str  # the --engine name
    implementation: str  # whose forward pass computes: parity never holds an engine against its own
    device: str
    tokenizer: Tokenizer
    facts: ModelFacts
    notes: list[str]

    def unsupported(self, variant: RopeVariant) -> str | None:
        """Why this engine cannot run ``variant`` exactly, or None when it can."""
        ...

    def reserve(self, tokens: int) -> None:
        """The longest sequence (prompt and answer) any later call will run: engines that size a context up
        front (llama.cpp) size it to this instead of the model's whole length."""
        ...

    def generate(self, variant: RopeVariant, ids: list[int], max_new_tokens: int) -> Generation: ...

    def score(self, variant: RopeVariant, ids: list[int], score_from: int) -> Scored:
        """Losses of ids[score_from+1:]. The last id is only a target: ``ids`` may be one longer than the
        length the engine was sized for (lm-eval's windows are), and no engine runs a position past it."""
        ...

    def available_memory(self) -> int: ...

    def close(self) -> None: ...


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


def check_engine(name: str, verb: str) -> None:
    """The engine's name, and the packages it runs on (torch for every verb that loads weights), checked before any
    work: one line for an unknown name or a missing package."""
    from yarn_cli.errors import InputError
    from yarn_cli.io import packages

    if name not in ENGINES:
        raise InputError(f"--engine {name!r} is not one of {', '.join(ENGINES)}")
    packages.require(verb, "torch")
    packages.require(f"--engine {name}", ENGINE_FEATURES[name])


def load_engine(name: str, path, device: str, original_context: int | None, max_length: int, options: dict | None = None) -> Engine:
    """Import and build the engine ``name`` (engines are imported only when asked for: each pulls its runtime).

    ``options`` go to engines that take them (vllm); the others refuse any set away from its default. An engine
    class marked ``isolated`` (llama.cpp) runs in a child process, so its native crash is reported in words."""
    import importlib

    from yarn_cli.errors import InputError

    check_engine(name, "the engine")
    module, cls = ENGINES[name]
    engine_class = getattr(importlib.import_module(module), cls)
    given = {k: v for k, v in (options or {}).items() if v != ENGINE_OPTION_DEFAULTS.get(k)}
    if getattr(engine_class, "isolated", False) and not given:
        from yarn_cli.runtimes.isolated import IsolatedEngine

        return IsolatedEngine(name, module, cls, path, device, original_context, max_length)
    if getattr(engine_class, "takes_options", False):
        return engine_class(path, device, original_context, max_length=max_length, options=EngineOptions.of(given))
    if given:
        flags = ", ".join("--" + key.replace("_", "-") for key in given)
        raise InputError(f"{flags}: only --engine vllm takes {'this option' if len(given) == 1 else 'these options'}")
    return engine_class(path, device, original_context, max_length=max_length)
