"""The parity check: one fixed token sequence through the engine under test (its declared variant: the
checkpoint as the runtime reads it) and through an independent float32 reference under every hypothesis of
:mod:`yarn_cli.core.verify.diagnosis`, then the diagnosis.

The reference is another implementation's float32 forward pass, never the engine's own: on a GPU where torch sees
one with room for it (at about 1.5·L), else on the CPU with the sequence capped at 1,024 tokens, so the check
stays a small share of a run on any machine. It runs before the engine's own pass and is released after it, so
an engine that takes most of the GPU at start-up (vLLM) finds it free. Which implementation: the native
engine is held against transformers (an HF folder, or the GGUF through transformers' ``gguf_file``),
llama.cpp and vLLM against the native forward pass (transformers' where the native one lacks the family).
Only the transformers engine on a family the native pass lacks is held against transformers itself, with
its rotary module replaced by the math core's: the forward pass is shared there, the RoPE is not, and the
report says so. Where no reference can run, the check is reported as not done, never as exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from yarn_cli.core.rope.variants import RopeVariant
from yarn_cli.core.verify import diagnosis
from yarn_cli.core.verify import plan as verify_plan
from yarn_cli.errors import UnsupportedError, first_line
from yarn_cli.runtimes.base import available_host_memory

SHARED_FORWARD = "transformers (same forward pass, RoPE from yarn_cli's math)"


@dataclass(frozen=True)
class ParityPlan:
    ids: list[int]
    hypotheses: list[RopeVariant]
    device: str = "cpu"  # where the float32 reference runs

    @property
    def steps(self) -> int:
        return len(self.hypotheses) + 1


def plan(engine: Any, options: Any, text_ids: list[int], notes: list[str]) -> ParityPlan | None:
    """The parity sequence (BOS and the text's first tokens) and the hypotheses; None, with a note (or, for
    --parity-only, an error), where there is nothing to hold the engine to."""
    facts = engine.facts
    reason = None
    if facts.rope is None:
        reason = f"the {engine.name} engine does not report its RoPE, so there is nothing to hold it to"
    elif "score" in getattr(engine, "cannot", {}):
        reason = engine.cannot["score"]
    elif facts.rope.scaling is not None and facts.rope.scaling.type == "dynamic":
        reason = "dynamic scaling changes with every length, so no one reference fits it"
    if reason is None:
        reference_weights = _float32_bytes(engine.path)
        device, length = placement(facts, options.parity_length, reference_weights)
        engine_memory, reference_memory = engine.available_memory(), _reference_memory(device)

        def both_fit(n: int) -> bool:
            return _fits(facts, n, engine_memory, facts.value_bytes, facts.weight_bytes) and _fits(facts, n, reference_memory, 4, reference_weights)

        while length > 256 and not options.parity_length and not both_fit(length):
            length //= 2  # halve until the engine's pass and the reference's both fit
        ids = (engine.tokenizer.bos + text_ids)[:length]
        if len(ids) >= 2:
            return ParityPlan(ids, diagnosis.hypotheses(facts.rope, facts.baked_attention_factor, len(ids)), device)
        reason = "the text is too short for a parity sequence"
    return _skip(reason, options, notes)


def placement(facts: Any, requested: int | None, reference_weights: int) -> tuple[str, int]:
    """(where the reference runs, the parity sequence's length): the GPU where torch sees one whose free memory
    holds the float32 reference at the uncapped length, else the CPU at a length capped for the CPU. Keyed on
    the reference, never on the engine: a GPU engine held against a CPU reference at 1.5·L = 49k tokens would
    take hours."""
    free = _gpu_free()
    if free is not None:
        length = diagnosis.sequence_length(facts.original_context, facts.target_context, "cuda", requested)
        if _fits(facts, length, free, 4, reference_weights):
            return "cuda", length
    return "cpu", diagnosis.sequence_length(facts.original_context, facts.target_context, "cpu", requested)


def _gpu_free() -> int | None:
    """Free memory on the GPU torch would use, or None without one (or without torch)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.mem_get_info()[0])


def _reference_memory(device: str) -> int:
    free = _gpu_free() if device == "cuda" else None
    return free if free is not None else available_host_memory()


def _float32_bytes(path: Path) -> int:
    return 4 * (_parameters(path) or 0)


def _skip(reason: str, options: Any, notes: list[str]) -> None:
    if options.parity_only:
        raise UnsupportedError(f"--parity-only: {reason}")
    notes.append(f"parity not checked: {reason}")
    return None


def _fits(facts: Any, length: int, available: int, value_bytes: int, weight_bytes: int) -> bool:
    """A parity pass: the model at ``length`` in one chunk and the logits a slice of rows at a time (as the native
    and transformers passes score; llama.cpp and vLLM hold a prefill chunk's at most), ``value_bytes`` per value."""
    estimate = verify_plan.estimate_memory(weight_bytes, facts.attention, facts.heads, facts.hidden, facts.vocab, length, length, value_bytes)
    return verify_plan.fits(estimate, available)


def run(engine: Any, planned: ParityPlan, options: Any, notes: list[str], advance: Callable[[int], None] | None = None):
    """The engine's declared variant against each hypothesis on the reference; None (with a note) where no
    independent reference can run."""
    try:
        reference, label = reference_for(engine, planned.device)
    except UnsupportedError as exc:
        _skip(str(exc), options, notes)
        return None
    try:
        references = {}
        for hypothesis in planned.hypotheses:
            # the reference computes each hypothesis from the math core's frequencies, never from its own config reading
            explicit = replace(hypothesis, kind="custom") if hypothesis.kind == "declared" else hypothesis
            references[hypothesis.name] = reference.score(explicit, planned.ids, 0).losses
            if advance:
                advance(1)
    finally:
        if reference is not engine:
            reference.close()
            reference = None  # the last hold on its weights, dropped before the engine's own pass
            _free_gpu(planned.device)
    measured = engine.score(replace(planned.hypotheses[0], name="extended"), planned.ids, 0).losses
    if advance:
        advance(1)
    # a server is named by its URL (and version), an in-process engine by its name
    return diagnosis.parity(getattr(engine, "label", engine.name), label, engine.facts.scaling, measured, references)


def _free_gpu(device: str) -> None:
    """On a GPU, the memory of what was just dropped handed back to the device, for the engine that runs next."""
    if device == "cuda":
        import gc

        import torch

        gc.collect()
        torch.cuda.empty_cache()


def reference_for(engine: Any, device: str = "cpu") -> tuple[Any, str]:
    """(a float32 reference engine on ``device``, its label): the first implementation other than the engine's
    own that can run this checkpoint and fits in memory. Raises UnsupportedError with every reason otherwise."""
    reasons = []
    for name in ("native", "transformers"):
        if name == engine.implementation:
            continue
        reason = _cannot_load(name, engine.path, engine.facts.original_context, device)
        if reason is None:
            try:
                return _load(name, engine.path, engine.facts.original_context, device), name if device == "cpu" else f"{name} on {device}"
            except Exception as exc:  # noqa: BLE001 - a reference that fails to load is a reason, not a crash
                reason = f"could not load the checkpoint ({first_line(exc)})"
        reasons.append(f"{name}: {reason}")
    if engine.implementation == "transformers":
        return engine, SHARED_FORWARD
    raise UnsupportedError(
        "no independent reference can run (" + "; ".join(reasons) + f"), and the {engine.name} engine is not held against its own forward pass"
    )


def _cannot_load(name: str, path: Path, original_context: int, device: str = "cpu") -> str | None:
    """Why ``name``'s forward pass cannot serve as the reference here, or None."""
    if name == "native":
        from yarn_cli.native.weights import spec_of

        try:
            needed = spec_of(path, original_context).weight_bytes(4)
        except UnsupportedError:
            return "our forward pass does not run this family"
    else:
        from yarn_cli.io import packages

        if packages.missing("transformers"):
            return packages.needs("the reference", "transformers")
        needed = 4 * _parameters(path)
    available = _reference_memory(device)
    if needed > 0.8 * available:
        from yarn_cli.core.units import human_bytes

        return f"a float32 copy needs ~{human_bytes(needed)} and {human_bytes(available)} is free"
    return None


def _load(name: str, path: Path, original_context: int, device: str = "cpu") -> Any:
    import torch

    if name == "native":
        from yarn_cli.native.engine import NativeEngine

        return NativeEngine(path, device, original_context, dtype=torch.float32)
    from yarn_cli.runtimes.transformers import TransformersEngine

    return TransformersEngine(path, device, original_context, allow_gguf=True, dtype=torch.float32)


def _parameters(path: Path) -> int:
    from yarn_cli.io.checkpoint import summarize_gguf, summarize_hf_folder

    summary = summarize_gguf(path) if path.suffix.lower() == ".gguf" else summarize_hf_folder(path)
    return summary.tensors.parameters
