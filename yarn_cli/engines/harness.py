"""Runs the verification protocol on an engine: passkey ladder and sliding-window perplexity, for the
extended model and the baseline on the same prompts. Pure orchestration; engines do the compute.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yarn_cli.core import parity as core_parity
from yarn_cli.core import verify_plan
from yarn_cli.engines.base import VARIANTS, Engine
from yarn_cli.engines.parity import run_parity
from yarn_cli.errors import InputError, UnsupportedError


@dataclass
class VerifyOptions:
    lengths: list[int] | None = None
    max_length: int | None = None
    depths: list[float] = field(default_factory=lambda: list(verify_plan.DEFAULT_DEPTHS))
    trials: int = 1
    text: Path | None = None
    ppl_windows: int = 2
    max_new_tokens: int = 10
    min_accuracy: float = 0.8
    ppl_margin: float = verify_plan.DEFAULT_PPL_MARGIN
    seed: int = 0
    parity: bool = True
    parity_only: bool = False
    parity_length: int | None = None


def load_text(path: Path | None) -> str:
    """--text FILE, or the text of Python's own pydoc_data.topics (offline, ships with every Python)."""
    if path is not None:
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise InputError(f"--text {path}: cannot read ({exc.strerror or exc})") from exc
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def plan_lengths(engine: Engine, options: VerifyOptions) -> tuple[list[int], list[dict[str, Any]]]:
    """The lengths to run, and those skipped because their memory estimate does not fit."""
    facts = engine.facts
    lengths = options.lengths or verify_plan.length_ladder(facts.original_context, facts.target_context, options.max_length)
    if options.max_length:
        lengths = [n for n in lengths if n <= options.max_length] or [options.max_length]
    available = engine.available_memory()
    runnable, skipped = [], []
    for length in lengths:
        estimate = verify_plan.estimate_memory(
            facts.weight_bytes, facts.attention, facts.heads, facts.hidden, facts.vocab, length + options.max_new_tokens, min(length, 2048), facts.value_bytes,
        )
        if estimate.total > 0.9 * available:
            skipped.append({"length": length, "needs_bytes": estimate.total, "available_bytes": available})
        else:
            runnable.append(length)
    return runnable, skipped


@dataclass(frozen=True)
class Prepared:
    """What a run needs before it starts: the lengths that fit, those skipped, the tokenized text and the
    parity check's sequence and hypotheses (none when it is off or cannot run, with the reason).

    Computed once, so the caller can size a progress bar without tokenizing the text a second time."""

    lengths: list[int]
    skipped: list[dict[str, Any]]
    text_ids: list[int]
    parity_ids: list[int] = field(default_factory=list)
    hypotheses: list[core_parity.Hypothesis] = field(default_factory=list)
    parity_skipped: str | None = None

    def total_steps(self, options: VerifyOptions) -> int:
        checks = len(self.hypotheses) + 1 if self.hypotheses else 0
        if options.parity_only:
            return checks
        per_length = len(options.depths) * options.trials
        windows = sum(len(verify_plan.ppl_windows(len(self.text_ids), n, options.ppl_windows)) for n in self.lengths)
        return checks + len(VARIANTS) * (per_length * len(self.lengths) + windows)


def prepare(engine: Engine, options: VerifyOptions) -> Prepared:
    lengths, skipped = plan_lengths(engine, options)
    text_ids = engine.tokenizer.encode(load_text(options.text))
    if not options.parity:
        return Prepared(lengths, skipped, text_ids)
    ids, hypotheses, reason = _plan_parity(engine, options, text_ids)
    if reason and options.parity_only:
        raise UnsupportedError(f"--parity-only: {reason}")
    return Prepared(lengths, skipped, text_ids, ids, hypotheses, reason)


def _plan_parity(engine: Engine, options: VerifyOptions, text_ids: list[int]) -> tuple[list[int], list, str | None]:
    """The parity sequence (BOS and the text's first tokens) and the hypotheses, or why there are none."""
    facts = engine.facts
    if facts.rope is None:
        return [], [], f"the {engine.name} engine does not report its RoPE, so there is nothing to hold it to"
    if facts.rope.scaling is not None and facts.rope.scaling.type == "dynamic":
        return [], [], "dynamic scaling changes with every length, so no one reference fits it"
    length = core_parity.sequence_length(facts.original_context, facts.target_context, engine.device, options.parity_length)
    available = engine.available_memory()
    while length > 256 and _parity_memory(facts, length) > 0.9 * available and not options.parity_length:
        length //= 2  # each pass holds every position's logits: halve until it fits
    ids = (engine.tokenizer.bos + text_ids)[:length]
    if len(ids) < 2:
        return [], [], "the text is too short for a parity sequence"
    return ids, core_parity.hypotheses(facts.rope, facts.baked_attention_factor, len(ids)), None


def _parity_memory(facts, length: int) -> int:
    """A parity pass: the model at ``length`` in one chunk, plus the float32 logits of every position."""
    estimate = verify_plan.estimate_memory(facts.weight_bytes, facts.attention, facts.heads, facts.hidden, facts.vocab,
                                           length, length, facts.value_bytes)
    return estimate.total + length * facts.vocab * 4


@dataclass
class _Tally:
    """What the run gathers, per variant and length."""

    passkey: list[dict[str, Any]] = field(default_factory=list)
    accuracy: dict[str, dict[int, float]] = field(default_factory=lambda: {v: {} for v in VARIANTS})
    perplexity: dict[str, dict[int, float]] = field(default_factory=lambda: {v: {} for v in VARIANTS})
    speed: dict[str, dict[int, float]] = field(default_factory=lambda: {v: {} for v in VARIANTS})
    nonfinite: dict[str, list[int]] = field(default_factory=lambda: {v: [] for v in VARIANTS})
    notes: list[str] = field(default_factory=list)


def _passkeys(engine: Engine, variant: str, prompts: list, options: VerifyOptions, tally: _Tally, advance) -> list[float]:
    """Greedy answers to every prompt at one length; records hits and returns the prefill rates."""
    hits, rates = 0, []
    for prompt in prompts:
        answer_ids = engine.greedy(variant, prompt.ids, options.max_new_tokens)
        rates.append(engine.tokens_per_second())
        answer = engine.tokenizer.decode(answer_ids)
        hit = verify_plan.score_answer(answer, prompt.key)
        hits += hit
        tally.passkey.append({"length": prompt.length, "depth": prompt.depth, "key": prompt.key, "answer": answer.strip(),
                              "hit": hit, "variant": variant, "tokens": len(prompt.ids)})
        if advance:
            advance(1)
    tally.accuracy[variant][prompts[0].length] = hits / len(prompts)
    return rates


def _perplexity(engine: Engine, variant: str, windows: list[list[int]], length: int, tally: _Tally, advance) -> list[float]:
    """Sliding-window perplexity (each window scores its last PPL_STRIDE tokens); returns the prefill rates."""
    losses: list[float] = []
    rates = []
    for window in windows:
        losses += engine.token_losses(variant, window, max(len(window) - 1 - verify_plan.PPL_STRIDE, 0))
        rates.append(engine.tokens_per_second())
        if advance:
            advance(1)
    if losses and not all(math.isfinite(loss) for loss in losses):
        tally.nonfinite[variant].append(length)
        tally.notes.append(f"{variant} model: NaN/infinite log-probabilities at {length:,} tokens; no perplexity there")
    elif losses:
        tally.perplexity[variant][length] = math.exp(sum(losses) / len(losses))
    return rates


def run(
    engine: Engine, options: VerifyOptions, advance: Callable[[int], None] | None = None, prepared: Prepared | None = None
) -> dict[str, Any]:
    prepared = prepared or prepare(engine, options)
    tally = _Tally(notes=list(engine.notes))
    started = time.perf_counter()
    checked = _parity(engine, prepared, options, tally, advance)
    timings = {"parity_seconds": time.perf_counter() - started}
    if options.parity_only:
        return {**_parity_report(engine, checked, tally), "timings": _timings(engine, timings)}
    started = time.perf_counter()
    report = _protocol(engine, options, prepared, tally, advance)
    timings["protocol_seconds"] = time.perf_counter() - started
    report["parity"] = checked.to_json() if checked else None
    report["timings"] = _timings(engine, timings)
    if checked and not checked.ok:
        report["verdict"] = {"ok": False, "reason": checked.line}
    return report


def _timings(engine: Engine, timings: dict[str, float]) -> dict[str, float]:
    """Where the time went; ``engine_startup_seconds`` for engines that start servers of their own (vLLM),
    which the other figures include."""
    startup = getattr(engine, "startup_seconds", None)
    return {**timings, **({"engine_startup_seconds": startup} if startup is not None else {})}


def _parity(engine: Engine, prepared: Prepared, options: VerifyOptions, tally: _Tally, advance) -> core_parity.Parity | None:
    if not options.parity:
        return None
    reason = prepared.parity_skipped
    if not reason:
        try:
            return run_parity(engine, prepared.parity_ids, prepared.hypotheses, advance)
        except UnsupportedError as exc:
            if options.parity_only:
                raise UnsupportedError(f"--parity-only: {exc}") from exc
            reason = str(exc)
    tally.notes.append(f"parity check skipped: {reason}")
    return None


def _header(engine: Engine) -> dict[str, Any]:
    """The keys every verify report opens with."""
    return {
        "engine": engine.name,
        "device": engine.device,
        "scaling": engine.facts.scaling,
        "original_context": engine.facts.original_context,
        "target_context": engine.facts.target_context,
    }


def _parity_report(engine: Engine, checked: core_parity.Parity, tally: _Tally) -> dict[str, Any]:
    return {
        **_header(engine),
        "parity": checked.to_json(),
        "verdict": {"ok": checked.ok, "reason": checked.line},
        "notes": tally.notes,
    }


def _protocol(engine: Engine, options: VerifyOptions, prepared: Prepared, tally: _Tally, advance) -> dict[str, Any]:
    lengths, skipped, text_ids = prepared.lengths, prepared.skipped, prepared.text_ids
    keys = verify_plan.passkeys(options.trials, options.seed)
    work = {}
    for length in lengths:
        prompts = [
            verify_plan.passkey_prompt(engine.tokenizer.encode, length, depth, key, engine.tokenizer.bos)
            for depth in options.depths
            for key in keys
        ]
        windows = [text_ids[start : start + length] for start in verify_plan.ppl_windows(len(text_ids), length, options.ppl_windows)]
        if not windows:
            tally.notes.append(f"the text has {len(text_ids):,} tokens, fewer than {length:,}: no perplexity at that length")
        work[length] = prompts, windows
    # Variant by variant: an engine that holds one model at a time (vLLM) switches once, not at every length.
    for variant in VARIANTS:
        for length, (prompts, windows) in work.items():
            rates = _passkeys(engine, variant, prompts, options, tally, advance)
            rates += _perplexity(engine, variant, windows, length, tally, advance)
            tally.speed[variant][length] = sum(rates) / len(rates)
    return _report(engine, options, lengths, skipped, tally)


def _report(engine: Engine, options: VerifyOptions, lengths: list[int], skipped: list[dict[str, Any]], tally: _Tally) -> dict[str, Any]:
    result = verify_plan.verdict(tally.accuracy, tally.perplexity, engine.facts.original_context, options.min_accuracy,
                                 options.ppl_margin, [s["length"] for s in skipped], tally.nonfinite["extended"])
    if skipped:
        largest = max(lengths) if lengths else None
        skipped_text = ", ".join(f"{item['length']:,}" for item in skipped)
        tally.notes.append(
            f"skipped {skipped_text} tokens: the memory estimate exceeds what the device has"
            + (f"; the largest length that fits is {largest:,}" if largest else "")
        )
    return {
        **_header(engine),
        "lengths": lengths,
        "skipped": skipped,
        "passkey": tally.passkey,
        "accuracy": {v: {str(n): a for n, a in tally.accuracy[v].items()} for v in VARIANTS},
        "perplexity": {v: {str(n): p for n, p in tally.perplexity[v].items()} for v in VARIANTS},
        "tokens_per_second": {v: {str(n): r for n, r in tally.speed[v].items()} for v in VARIANTS},
        "verdict": {"ok": result.ok, "reason": result.reason},
        "notes": tally.notes,
    }
