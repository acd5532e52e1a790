"""The parity check: one fixed token sequence through the engine under test (its declared variant: the
checkpoint as the runtime reads it) and through an independent float32 reference under every hypothesis of
:mod:`yarn_cli.core.verify.diagnosis`, then the diagnosis.

The reference is another implementation's forward pass on the CPU, never the engine's own: the native
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
        length = diagnosis.sequence_length(facts.original_context, facts.target_context, engine.device, options.parity_length)
        available = engine.available_memory()
        while length > 256 and not _fits(facts, length, available) and not options.parity_length:
            length //= 2  # each pass holds every position's logits: halve until it fits
        ids = (engine.tokenizer.bos + text_ids)[:length]
        if len(ids) >= 2:
            return ParityPlan(ids, diagnosis.hypotheses(facts.rope, facts.baked_attention_factor, len(ids)))
        reason = "the text is too short for a parity sequence"
    return _skip(reason, options, notes)


def _skip(reason: str, options: Any, notes: list[str]) -> None:
    if options.parity_only:
        raise UnsupportedError(f"--parity-only: {reason}")
    notes.append(f"parity not checked: {reason}")
    return None


def _fits(facts: Any, length: int, available: int) -> bool:
    """A parity pass: the model at ``length`` in one chunk, plus the float32 logits of every position."""
    estimate = verify_plan.estimate_memory(
        facts.weight_bytes, facts.attention, facts.heads, facts.hidden, facts.vocab, length, length, facts.value_bytes
    )
    return verify_plan.fits(
        verify_plan.MemoryEstimate(estimate.weights, estimate.kv_cache, estimate.activations + length * facts.vocab * 4), available
    )


def run(engine: Any, planned: ParityPlan, options: Any, notes: list[str], advance: Callable[[int], None] | None = None):
    """The engine's declared variant against each hypothesis on the reference; None (with a note) where no
    independent reference can run."""
    try:
        reference, label = reference_for(engine)
    except UnsupportedError as exc:
        _skip(str(exc), options, notes)
        return None
    try:
        measured = engine.score(replace(planned.hypotheses[0], name="extended"), planned.ids, 0).losses
        if advance:
            advance(1)
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
    # a server is named by its URL (and version), an in-process engine by its name
    return diagnosis.parity(getattr(engine, "label", engine.name), label, engine.facts.scaling, measured, references)


def reference_for(engine: Any) -> tuple[Any, str]:
    """(a float32 reference engine on the CPU, its label): the first implementation other than the engine's own
    that can run this checkpoint and fits in memory. Raises UnsupportedError with every reason otherwise."""
    reasons = []
    for name in ("native", "transformers"):
        if name == engine.implementation:
            continue
        reason = _cannot_load(name, engine.path, engine.facts.original_context)
        if reason is None:
            try:
                return _load(name, engine.path, engine.facts.original_context), name
            except Exception as exc:  # noqa: BLE001 - a reference that fails to load is a reason, not a crash
                reason = f"could not load the checkpoint ({first_line(exc)})"
        reasons.append(f"{name}: {reason}")
    if engine.implementation == "transformers":
        return engine, SHARED_FORWARD
    raise UnsupportedError(
        "no independent reference can run (" + "; ".join(reasons) + f"), and the {engine.name} engine is not held against its own forward pass"
    )


def _cannot_load(name: str, path: Path, original_context: int) -> str | None:
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
    available = available_host_memory()
    if needed > 0.8 * available:
        from yarn_cli.core.units import human_bytes

        return f"a float32 copy needs ~{human_bytes(needed)} and {human_bytes(available)} is free"
    return None


def _load(name: str, path: Path, original_context: int) -> Any:
    import torch

    if name == "native":
        from yarn_cli.native.engine import NativeEngine

        return NativeEngine(path, "cpu", original_context, dtype=torch.float32)
    from yarn_cli.runtimes.transformers import TransformersEngine

    return TransformersEngine(path, "cpu", original_context, allow_gguf=True)


def _parameters(path: Path) -> int:
    from yarn_cli.io.checkpoint import summarize_gguf, summarize_hf_folder

    summary = summarize_gguf(path) if path.suffix.lower() == ".gguf" else summarize_hf_folder(path)
    return summary.tensors.parameters
