"""Parity: one fixed token sequence through the engine under test and through a float reference forward
pass under every hypothesis of :mod:`yarn_cli.core.parity`, then the diagnosis.

The reference takes its RoPE from our math core and only borrows a forward pass: our own (llama-family
models) or transformers' with the rotary module's frequencies and factor replaced. Where it can, it
shares the weights the engine already holds, so the check costs no second copy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from yarn_cli.core import parity as core_parity
from yarn_cli.core.parity import Hypothesis
from yarn_cli.engines.base import available_host_memory
from yarn_cli.errors import UnsupportedError


class Reference(Protocol):
    name: str  # "native" or "transformers": whose forward pass

    def losses(self, hypothesis: Hypothesis, ids: list[int]) -> list[float]:
        """Next-token negative log-likelihoods of ids[1:] under the hypothesis's RoPE."""
        ...


class NativeReference:
    """Our llama-family forward pass over weights already loaded (the native engine's) or loaded in float32."""

    name = "native"

    def __init__(self, spec: Any, weights: dict[str, Any], device: str, dtype: Any):
        self.spec, self.weights, self.device, self.dtype = spec, weights, device, dtype

    @classmethod
    def load(cls, path: Path, original_context: int | None) -> NativeReference:
        import torch

        from yarn_cli.io import weights

        if path.suffix.lower() == ".gguf":
            from yarn_cli.io.gguf_reader import read_gguf

            spec = weights.gguf_spec(read_gguf(path), original_context)
            _check_memory(spec.weight_bytes(4))
            loaded = weights.load_gguf_weights(path, spec, "cpu", torch.float32)
        else:
            from yarn_cli.io.checkpoint import read_json

            spec = weights.hf_spec(path, read_json(path / "config.json"), original_context)
            _check_memory(spec.weight_bytes(4))
            loaded = weights.load_hf_weights(path, spec, "cpu", torch.float32)
        return cls(spec, loaded, "cpu", torch.float32)

    def losses(self, hypothesis: Hypothesis, ids: list[int]) -> list[float]:
        import torch

        from yarn_cli.engines.native import NativeModel, Rope

        rope = Rope(torch.tensor(hypothesis.inv_freq, dtype=torch.float32), hypothesis.attention_factor)
        model = NativeModel(self.spec, self.weights, rope, self.device, self.dtype)
        _, nll = model.prefill(ids, model.new_cache(len(ids)), max(len(ids), 1), score_from=0)
        return [] if nll is None else nll.double().cpu().tolist()


def _check_memory(needed: int) -> None:
    available = available_host_memory()
    if needed > 0.8 * available:
        from yarn_cli.core.units import human_bytes

        raise UnsupportedError(f"a float32 reference of this model needs ~{human_bytes(needed)}, "
                               f"and {human_bytes(available)} is free")


def reference_for(path: Path, original_context: int | None) -> Reference:
    """A reference loaded from the checkpoint itself, for engines that hold no weights in this process
    (llama.cpp, vLLM): our forward pass where the family has one, else transformers'."""
    try:
        return NativeReference.load(path, original_context)
    except UnsupportedError as native_reason:
        if path.suffix.lower() == ".gguf":
            raise
        try:
            from yarn_cli.engines.hf_engine import TransformersReference
        except ImportError:
            raise native_reason from None
        return TransformersReference.load(path)


def independent_reference(folder: Path, float32_bytes: int) -> Reference | None:
    """transformers' forward pass over ``folder`` on the CPU, or None where transformers is missing or the
    copy would not fit."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return None
    try:
        _check_memory(float32_bytes)
    except UnsupportedError:
        return None
    from yarn_cli.engines.hf_engine import TransformersReference

    return TransformersReference.load(folder)


def run_parity(
    engine: Any, ids: list[int], hypotheses: list[Hypothesis], advance: Callable[[int], None] | None = None
) -> core_parity.Parity:
    """The engine's extended model against each hypothesis on ``ids``; ``advance`` ticks once per pass."""
    reference = engine.parity_reference()
    measured = engine.token_losses("extended", ids, 0)
    if advance:
        advance(1)
    references = {}
    for hypothesis in hypotheses:
        references[hypothesis.name] = reference.losses(hypothesis, ids)
        if advance:
            advance(1)
    return core_parity.parity(engine.name, reference.name, engine.facts.scaling, measured, references)
