"""`tune`: fit YaRN's attention factor m (and, for --to, the factor s) to the user's model, engine and text,
choose by an objective with a guard for short inputs, and write OUT through the same plan `extend` uses.

Each candidate is a RoPE variant run on the already loaded weights: one pass per document gives its
perplexity at every length (short inputs, the tokens beyond L, the curve), and passkeys at the short and the
long length give its retrieval. The unextended model (same weights, no scaling) is the reference.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yarn_cli.core import tune_plan, variants, verify_plan
from yarn_cli.core.rope_scalars import BETA_FAST_DEFAULT, BETA_SLOW_DEFAULT, get_mscale
from yarn_cli.core.tune_plan import Decision, Lengths, LogFit, Measure, Objective
from yarn_cli.errors import InputError
from yarn_cli.usecases.models import Notify, resolve_model

Progress = Callable[[int, int, str], None]  # (candidates done, expected total, what runs now)
ANSWER_TOKENS = 10


@dataclass(frozen=True)
class TuneOptions:
    scales: tuple[float, ...]  # the factors s searched (one for --scale)
    lengths: Lengths
    objective: Objective
    docs: int = 1
    passkeys: int = 1
    refinements: int = 3
    fit: bool = False  # sweep m at every s and fit m = a·ln s + b
    beta_fast: float = BETA_FAST_DEFAULT
    beta_slow: float = BETA_SLOW_DEFAULT
    budget_seconds: float | None = None
    seed: int = 0


@dataclass
class TuneResult:
    model: str
    engine: str
    options: TuneOptions
    reference: Measure
    candidates: list[Measure]
    decision: Decision | None  # None in --fit mode
    fit: LogFit | None = None
    best_by_scale: dict[float, Measure] = field(default_factory=dict)
    written: Any = None  # the ExtendResult of OUT
    plot: str | None = None
    stopped_early: bool = False
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.fit is not None if self.options.fit else bool(self.decision and self.decision.chosen)

    def to_json(self) -> dict[str, Any]:
        decision = self.decision
        return {
            "model": self.model, "engine": self.engine, "ok": self.ok, "mode": "fit" if self.options.fit else "choose",
            "objective": Objective("long").to_json() if self.options.fit else self.options.objective.to_json(),
            "lengths": self.options.lengths.to_json(), "scales": list(self.options.scales), "docs": self.options.docs,
            "method": "perplexity from one pass per document: short = every token of an input of the short length; long = "
                      "the tokens beyond L up to the long length; curve = per chunk of L/4 tokens",
            "reference": self.reference.to_json(), "candidates": [c.to_json() for c in self.candidates],
            "chosen": decision.chosen.to_json() if decision and decision.chosen else None,
            "reason": decision.reason if decision else None,
            "neighbours": list(decision.neighbours) if decision else [],
            "indistinct": list(decision.indistinct) if decision and decision.indistinct else None,
            "paper_m": {str(s): get_mscale(s) for s in self.options.scales},
            "fit": self.fit.to_json() if self.fit else None,
            "best_by_scale": {str(s): m.to_json() for s, m in self.best_by_scale.items()},
            "output": self.written.to_json() if self.written is not None else None, "plot": self.plot,
            "stopped_early": self.stopped_early, "notes": self.notes, "seconds": round(self.seconds, 1),
        }


def tune(
    model: str | Path | None = None,
    out: str | Path | None = None,
    *,
    scale: float | None = None,
    to: str | None = None,
    engine: str = "native",
    device: str = "auto",
    text: str | Path | None = None,
    objective: str = tune_plan.DEFAULT_OBJECTIVE,
    max_short_loss: float | None = None,
    short: int | None = None,
    docs: int = 1,
    passkeys: int = 1,
    refinements: int = 3,
    fit: bool = False,
    fit_scales: str = "2,4,8",
    plot: str | Path | None = None,
    budget: float | None = None,
    beta_fast: float = BETA_FAST_DEFAULT,
    beta_slow: float = BETA_SLOW_DEFAULT,
    bake_temperature: bool = False,
    original_context: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
    notify: Notify | None = None,
) -> TuneResult:
    """Measure YaRN candidates for MODEL on ``engine`` and ``text``; choose by ``objective``; write OUT (when
    given) with the chosen s and m. ``fit``: sweep m at each of ``fit_scales`` and fit m = a·ln s + b instead."""
    started = time.perf_counter()
    goal = _check_request(engine, out, fit, scale, to, docs, passkeys, refinements, budget, objective, max_short_loss)
    path = Path(resolve_model(model, notify)).expanduser()
    if not path.exists():
        raise InputError(f"{model}: no such file or folder; tune runs a local HF folder or .gguf")
    write = _writer(path, out, beta_fast, beta_slow, bake_temperature, original_context, force, scale, to) if out else None
    if plot is not None:
        _check_plot(Path(plot), force, path)
    from yarn_cli.io.checkpoint import summarize
    from yarn_cli.runtimes.base import load_engine, pick_device
    from yarn_cli.usecases.verify.protocol import load_text

    source_text = load_text(Path(text) if text is not None else None)
    trained = summarize(str(path), None, original_context).ropes[0].original_context
    options = _options(trained, scale, to, fit, fit_scales, goal, short, docs, passkeys, refinements, beta_fast, beta_slow, budget)
    loaded = load_engine(engine, path, pick_device(device), original_context, options.lengths.long + ANSWER_TOKENS + 8)
    try:
        result = Session(loaded, options, source_text, progress).run(str(path), engine)
    finally:
        loaded.close()
    if plot is not None:
        from yarn_cli.io.plot import plot_tune

        result.plot = str(plot_tune(result.to_json(), Path(plot), force))
    if write is not None and result.ok:
        result.written = write(result.decision.chosen)
    elif write is not None:
        result.notes.append("nothing written: no candidate met the objective")
    result.seconds = time.perf_counter() - started
    return result


def _check_request(engine: str, out, fit: bool, scale, to, docs: int, passkeys: int, refinements: int, budget: float | None,
                   objective: str, max_short_loss: float | None) -> Objective:
    """Everything checkable before a file is read; the objective (--max-short-loss alone means short-guard)."""
    from yarn_cli.runtimes.base import ENGINES

    if engine not in ENGINES:
        raise InputError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}")
    if fit and out is not None:
        raise InputError("--fit reports the fitted law and writes no checkpoint: drop -o, or tune one --scale without --fit")
    if not fit and (scale is None) == (to is None):
        raise InputError("give exactly one of --scale S or --to N (or --fit)")
    _check_counts(docs, passkeys, refinements, budget)
    implied = objective if max_short_loss is None or objective != tune_plan.DEFAULT_OBJECTIVE else "short-guard"
    return Objective(implied, tune_plan.DEFAULT_MAX_SHORT_LOSS if max_short_loss is None else max_short_loss)


def _check_counts(docs: int, passkeys: int, refinements: int, budget: float | None) -> None:
    if docs < 1:
        raise InputError("--docs must be at least 1")
    if passkeys < 0 or refinements < 0:
        raise InputError("--passkeys and --refinements must be 0 or more")
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise InputError("--budget is minutes, a number above 0")


def _check_plot(path: Path, force: bool, model: Path) -> None:
    from yarn_cli.io import atomic
    from yarn_cli.io.plot import pyplot

    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise InputError(f"--plot {path}: name a .png, .svg or .pdf file")
    atomic.check_output(path, model, force)
    pyplot()  # a missing matplotlib fails now, not after the measuring


def _options(original: int, scale, to, fit: bool, fit_scales: str, goal: Objective, short: int | None, docs: int, passkeys: int,
             refinements: int, beta_fast: float, beta_slow: float, budget: float | None) -> TuneOptions:
    from yarn_cli.core import lengths as length_math

    if fit:
        scales = tune_plan.parse_scales(fit_scales)
        target = int(round(max(scales) * original))
    else:
        # the one scale rule every verb applies (checks, --to parsing), then tune's own candidates for --to
        base = length_math.resolve_scale(scale, None if to is None else str(to), original)
        target = int(round(base * original))
        scales = tune_plan.scale_candidates(target, original) if to is not None else [base]
    short = short or original // 2
    if not 0 < short <= original:
        raise InputError(f"--short {short:,} must be a length within the trained length {original:,}")
    return TuneOptions(tuple(scales), Lengths(original, short, target), goal, docs, passkeys, refinements, fit, beta_fast,
                       beta_slow, budget * 60 if budget else None)


def _writer(path: Path, out, beta_fast, beta_slow, bake: bool, original_context, force: bool, scale, to):
    """Plan OUT now with the paper's values, so a bad output or checkpoint fails before minutes of measuring;
    the returned function writes it with the chosen s and m."""
    from yarn_cli.usecases.extend import apply_extend, plan_extend

    common = dict(original_context=original_context, beta_fast=beta_fast, beta_slow=beta_slow, bake_temperature=bake, force=force)
    plan_extend(path, out, scale=scale, to=to, **common)

    def write(chosen: Measure):
        m = None if math.isclose(chosen.m, get_mscale(chosen.scale), rel_tol=0, abs_tol=1e-9) else chosen.m
        return apply_extend(plan_extend(path, out, scale=chosen.scale, attention_factor=m, **common))

    return write


class Session:
    """One tune: the documents and prompts tokenized once, the reference measured once, then the search."""

    def __init__(self, engine: Any, options: TuneOptions, text: str, progress: Progress | None) -> None:
        self.engine, self.options, self.progress = engine, options, progress
        self.spec = engine.facts.rope
        self.baked = engine.facts.baked_attention_factor
        self.started = time.perf_counter()
        self.stopped = False
        self.done = 0
        self.expected = 1 + len(options.scales) * (tune_plan.GRID_POINTS + options.refinements)
        self.notes: list[str] = []
        lengths = options.lengths
        self.docs = self._documents(engine.tokenizer.encode(text), lengths.long, options.docs)
        engine.reserve(lengths.long + ANSWER_TOKENS + 8)
        self.prompts = {n: self._prompts(n) for n in (lengths.short, lengths.long)} if options.passkeys else {}

    def _documents(self, ids: list[int], length: int, count: int) -> list[list[int]]:
        bos = self.engine.tokenizer.bos
        usable = length - len(bos)
        available = len(ids) // usable
        if available < 1:
            raise InputError(f"the tuning text has {len(ids):,} tokens, fewer than the longest length {length:,}: give a longer "
                             "--text, or a smaller --scale/--to")
        if available < count:
            self.notes.append(f"the text holds {available} document(s) of {length:,} tokens, not the {count} asked for")
        return [bos + ids[k * usable : (k + 1) * usable] for k in range(min(count, available))]

    def _prompts(self, length: int) -> list[tuple[list[int], int]]:
        count = self.options.passkeys
        keys = verify_plan.passkeys(count, self.options.seed)
        depths = [(k + 0.5) / count for k in range(count)]
        encode, bos = self.engine.tokenizer.encode, self.engine.tokenizer.bos
        try:
            return [(verify_plan.passkey_prompt(encode, length, d, key, bos).ids, key) for d, key in zip(depths, keys)]
        except InputError as exc:
            raise InputError(f"{exc}: pass a longer --short, or --passkeys 0 to tune on perplexity alone") from None

    def _over_budget(self) -> bool:
        budget = self.options.budget_seconds
        # the reference and at least one candidate always run, so there is something to decide on
        if budget is not None and self.done > 1 and time.perf_counter() - self.started > budget:
            self.stopped = True
        return self.stopped

    def measure(self, variant: variants.RopeVariant, scale: float | None, m: float | None, retrieval_long: bool = True) -> Measure:
        started = time.perf_counter()
        lengths = self.options.lengths
        if self.progress:
            self.progress(self.done, self.expected, variant.label if scale else "unextended reference")
        losses = [self.engine.score(variant, doc, 0).losses for doc in self.docs]
        short = self._retrieval(variant, lengths.short)
        long = self._retrieval(variant, lengths.long) if retrieval_long else None
        self.done += 1
        return Measure(variant.name, scale, m, tune_plan.input_perplexity(losses, lengths.short),
                       tune_plan.band(losses, lengths.original, lengths.long), tune_plan.curve(
                           losses, tune_plan.curve_points(lengths.original, lengths.long)), short, long,
                       time.perf_counter() - started,
                       tune_plan.chunk_losses(losses, lengths.original, lengths.long, tune_plan.noise_chunk(lengths)))

    def _retrieval(self, variant: variants.RopeVariant, length: int) -> float | None:
        prompts = self.prompts.get(length)
        if not prompts:
            return None
        tokenizer = self.engine.tokenizer
        hits = [verify_plan.score_answer(tokenizer.decode(self.engine.generate(variant, ids, ANSWER_TOKENS).tokens), key)
                for ids, key in prompts]
        return sum(hits) / len(hits)

    def candidate(self, scale: float, m: float) -> variants.RopeVariant:
        options = self.options
        return variants.yarn(self.spec, scale, m, beta_fast=options.beta_fast, beta_slow=options.beta_slow,
                             original_context=options.lengths.original, baked=self.baked, name=f"yarn-x{scale:g}-m{m:.4f}")

    def run(self, model: str, engine_name: str) -> TuneResult:
        options = self.options
        refusal = self.engine.unsupported(self.candidate(options.scales[0], 1.0))
        if refusal:
            raise InputError(f"--engine {engine_name} cannot run the YaRN candidates: {refusal}")
        reference = self.measure(variants.baseline(self.spec, self.baked), None, None, retrieval_long=False)
        goal = Objective("long") if options.fit else options.objective
        measured: list[Measure] = []
        best_by_scale: dict[float, Measure] = {}
        for scale in options.scales:
            if self.stopped:
                break
            here: list[Measure] = []

            def evaluate(m: float, scale: float = scale, here: list[Measure] = here) -> float:
                measure = self.measure(self.candidate(scale, m), scale, m)
                here.append(measure)
                return goal.value(measure, reference)

            tune_plan.search_m(evaluate, scale, options.refinements, self._over_budget)
            measured.extend(here)
            if here:
                best_by_scale[scale] = min(here, key=lambda c: goal.value(c, reference))
        result = TuneResult(model, engine_name, options, reference, measured, None, best_by_scale=best_by_scale,
                            stopped_early=self.stopped, notes=self.notes)
        if self.stopped:
            self.notes.append(f"--budget reached after {len(measured)} candidate(s): the best so far is reported")
        if options.fit:
            points = [(s, m.m) for s, m in best_by_scale.items()]
            result.fit = tune_plan.fit_log(points) if len(points) >= 2 else None
        else:
            result.decision = tune_plan.choose(measured, reference, options.objective)
        return result
