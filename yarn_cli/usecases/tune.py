"""`tune`: fit YaRN's attention factor m (and, for --to, the factor s) to the user's model, engine and text,
choose by an objective with a guard for short inputs, and write OUT through the same plan `extend` uses.

Each candidate is a RoPE variant run on the already loaded weights. One pass per document gives its
perplexity at every length (short inputs, the tokens beyond L, the curve) and its retrieval, read from pass
keys hidden in the document (core.tune_probe). The unextended model (same weights, no scaling) is the
reference, up to L.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from yarn_cli.core.rope import lengths as length_math
from yarn_cli.core.rope import variants
from yarn_cli.core.rope.scalars import BETA_FAST_DEFAULT, BETA_SLOW_DEFAULT, get_mscale
from yarn_cli.core.tune import plan as tune_plan
from yarn_cli.core.tune import probe as tune_probe
from yarn_cli.core.tune.budget import Budget
from yarn_cli.core.tune.fit import LogFit, fit_log, parse_scales
from yarn_cli.core.tune.options import TuneRequest
from yarn_cli.core.tune.plan import Decision, Lengths, Measure, Objective
from yarn_cli.errors import InputError
from yarn_cli.usecases.models import Notify, resolve_local_model

Progress = Callable[[int, int, str], None]  # (candidates done, expected total, what runs now)


@dataclass(frozen=True)
class TuneOptions:
    scales: tuple[float, ...]  # the factors s searched (one for --scale)
    lengths: Lengths
    objective: Objective
    docs: int = 1
    passkeys: int = 1
    refinements: int = 3
    fit: bool = False  # sweep m at every s and fit m = a·ln s + b
    search_betas: bool = False  # after m, a coordinate search over beta_fast and beta_slow at the best m
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
            "model": self.model,
            "engine": self.engine,
            "ok": self.ok,
            "mode": "fit" if self.options.fit else "choose",
            "objective": Objective("long").to_json() if self.options.fit else self.options.objective.to_json(),
            "lengths": self.options.lengths.to_json(),
            "scales": list(self.options.scales),
            "docs": self.options.docs,
            "method": "one pass per document (the unextended reference's stops at L). Perplexity of the text tokens: short = "
            "an input of the short length; long = the tokens beyond L up to the long length (--fit: up to s·L for "
            "each s); curve = per chunk of "
            "L/4 tokens. Retrieval: named pass keys hidden in the text, each question answered where its input "
            "length ends (short, long); a hit when every digit token of the key is the model's top choice, the "
            "answer's lead-in given (teacher-forced); probe tokens are left out of the perplexity",
            "search_betas": self.options.search_betas,
            "reference": self.reference.to_json(),
            "candidates": [c.to_json() for c in self.candidates],
            "chosen": decision.chosen.to_json() if decision and decision.chosen else None,
            "reason": decision.reason if decision else None,
            "neighbours": list(decision.neighbours) if decision else [],
            "indistinct": list(decision.indistinct) if decision and decision.indistinct else None,
            "paper_m": {str(s): get_mscale(s) for s in self.options.scales},
            "fit": self.fit.to_json() if self.fit else None,
            "best_by_scale": {str(s): m.to_json() for s, m in self.best_by_scale.items()},
            "output": self.written.to_json() if self.written is not None else None,
            "plot": self.plot,
            "stopped_early": self.stopped_early,
            "notes": self.notes,
            "seconds": round(self.seconds, 1),
        }


def tune(
    model: str | Path | None = None,
    out: str | Path | None = None,
    request: TuneRequest | None = None,
    *,
    progress: Progress | None = None,
    notify: Notify | None = None,
    **options: Any,
) -> TuneResult:
    """Measure YaRN candidates for MODEL on the request's engine and text; choose by its objective; write OUT (when
    given) with the chosen s and m. ``fit``: sweep m at each of ``fit_scales`` and fit m = a·ln s + b instead.
    ``search_betas``: then search beta_fast and beta_slow at the best m (HF output only: a GGUF cannot carry them).
    ``request`` holds every choice (``yarn_cli.core.tune.options.TuneRequest``); keyword arguments change single ones."""
    started = time.perf_counter()
    r = TuneRequest.build(request, **options)
    goal = _check_request(r, out)
    _check_packages(r)
    path = resolve_local_model(model, "tune", notify)
    write = None if out is None else _writer(path, out, r)
    if r.plot is not None:
        _check_plot(Path(r.plot), r.force, path)
    from yarn_cli.io.checkpoint import summarize
    from yarn_cli.runtimes.base import load_engine, pick_device
    from yarn_cli.usecases.verify.protocol import load_text

    source_text = load_text(Path(r.text) if r.text is not None else None)
    trained = summarize(str(path), None, r.original_context).ropes[0].original_context
    checked = _options(trained, r, goal)
    loaded = load_engine(r.engine, path, pick_device(r.device), r.original_context, checked.lengths.long, r.engine_options.to_dict())
    try:
        result = Session(loaded, checked, source_text, progress, notify).run(str(path), r.engine)
    finally:
        loaded.close()
    _finish(result, write, r.plot, r.force)
    result.seconds = time.perf_counter() - started
    return result


def _finish(result: TuneResult, write, plot, force: bool) -> None:
    """The plot, then OUT: written only when a candidate met the objective."""
    if plot is not None:
        from yarn_cli.report.plots import plot_tune

        result.plot = str(plot_tune(result.to_json(), Path(plot), force))
    if write is not None and result.ok:
        result.written = write(result.decision.chosen)
    elif write is not None:
        result.notes.append("nothing written: no candidate met the objective")


def _check_request(r: TuneRequest, out: str | Path | None) -> Objective:
    """Everything checkable before a file is read; the objective (--max-short-loss alone means short-guard)."""
    from yarn_cli.runtimes.base import ENGINES

    if r.engine not in ENGINES:
        raise InputError(f"--engine {r.engine!r} is not one of {', '.join(ENGINES)}")
    if r.search_betas and r.fit:
        raise InputError("--fit fits m alone; --search-betas refines one chosen configuration: drop one of them")
    if r.fit and out is not None:
        raise InputError("--fit reports the fitted law and writes no checkpoint: drop -o, or tune one --scale without --fit")
    if not r.fit and (r.scale is None) == (r.to is None):
        raise InputError("give exactly one of --scale S or --to N (or --fit)")
    _check_counts(r.docs, r.passkeys, r.refinements, r.budget)
    implied = r.objective if r.max_short_loss is None or r.objective != tune_plan.DEFAULT_OBJECTIVE else "short-guard"
    return Objective(implied, tune_plan.DEFAULT_MAX_SHORT_LOSS if r.max_short_loss is None else r.max_short_loss)


def _check_counts(docs: int, passkeys: int, refinements: int, budget: float | None) -> None:
    if docs < 1:
        raise InputError("--docs must be at least 1")
    if passkeys < 0 or refinements < 0:
        raise InputError("--passkeys and --refinements must be 0 or more")
    tune_probe.check_count(passkeys)
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise InputError("--budget is minutes, a number above 0")


def _check_packages(r: TuneRequest) -> None:
    """What the engine and --plot need, before the model is resolved (a missing package fails now, not after the measuring)."""
    from yarn_cli.io import packages
    from yarn_cli.runtimes.base import check_engine

    check_engine(r.engine, "tune")
    if r.plot is not None:
        packages.require("--plot", "plot")


def _check_plot(path: Path, force: bool, model: Path) -> None:
    from yarn_cli.io import atomic

    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise InputError(f"--plot {path}: name a .png, .svg or .pdf file")
    atomic.check_output(path, model, force)


def _options(original: int, r: TuneRequest, goal: Objective) -> TuneOptions:
    if r.fit:
        scales = parse_scales(r.fit_scales)
        target = length_math.target_length(original, max(scales))
    else:
        # the one scale rule every verb applies (checks, --to parsing), then tune's own candidates for --to
        base = length_math.resolve_scale(r.scale, None if r.to is None else str(r.to), original)
        target = length_math.target_length(original, base)
        scales = tune_plan.scale_candidates(target, original) if r.to is not None else [base]
    short = r.short or original // 2
    if not 0 < short <= original:
        raise InputError(f"--short {short:,} must be a length within the trained length {original:,}")
    return TuneOptions(
        tuple(scales),
        Lengths(original, short, target),
        goal,
        docs=r.docs,
        passkeys=r.passkeys,
        refinements=r.refinements,
        fit=r.fit,
        search_betas=r.search_betas,
        beta_fast=r.beta_fast,
        beta_slow=r.beta_slow,
        budget_seconds=r.budget * 60 if r.budget else None,
    )


def _writer(path: Path, out: str | Path, r: TuneRequest):
    """Plan OUT now with the paper's values, so a bad output or checkpoint fails before minutes of measuring;
    the returned function writes it with the chosen s, m and betas."""
    from yarn_cli.usecases.extend import apply_extend, plan_extend

    if r.search_betas and path.suffix.lower() == ".gguf":
        raise InputError("--search-betas: a GGUF cannot carry YaRN's betas (llama.cpp applies 32 and 1); tune the HF folder, or drop --search-betas")

    common = dict(
        original_context=r.original_context, beta_fast=r.beta_fast, beta_slow=r.beta_slow, bake_temperature=r.bake_temperature, force=r.force
    )
    plan_extend(path, out, scale=r.scale, to=r.to, **common)

    def write(chosen: Measure):
        m = None if math.isclose(chosen.m, get_mscale(chosen.scale), rel_tol=0, abs_tol=1e-9) else chosen.m
        betas = dict(zip(("beta_fast", "beta_slow"), chosen.betas)) if chosen.betas else {}
        return apply_extend(plan_extend(path, out, scale=chosen.scale, attention_factor=m, **{**common, **betas}))

    return write


class Session:
    """One tune: the documents and their probes built once, the reference measured once, then the search."""

    def __init__(self, engine: Any, options: TuneOptions, text: str, progress: Progress | None, notify: Notify | None = None) -> None:
        self.engine, self.options, self.progress, self.notify = engine, options, progress, notify
        self.spec = engine.facts.rope
        self.baked = engine.facts.baked_attention_factor
        self.budget = Budget(options.budget_seconds, time.perf_counter())
        self.done = 0
        betas = len(tune_plan.BETA_FAST_STEPS) + len(tune_plan.BETA_SLOW_STEPS) if options.search_betas else 0
        self.expected = 1 + len(options.scales) * (tune_plan.GRID_POINTS + options.refinements + betas)
        self.notes: list[str] = []
        lengths = options.lengths
        self.docs = self._documents(engine.tokenizer, text, lengths, options)
        engine.reserve(lengths.long)  # documents are scored whole, nothing generated after them

    def _documents(self, tokenizer: Any, text: str, lengths: Lengths, options: TuneOptions) -> list[tune_probe.ProbeDocument]:
        """The tuning text cut into documents of the long length, each with its retrieval probes."""
        ids = tokenizer.encode(text)
        if len(ids) + len(tokenizer.bos) < lengths.long:
            raise InputError(
                f"the tuning text has {len(ids):,} tokens, fewer than the longest length {lengths.long:,}: give a "
                "longer --text, or a smaller --scale/--to"
            )
        plan = tune_probe.plan_probes(options.passkeys, (lengths.short, lengths.long), options.seed) if options.passkeys else []
        docs: list[tune_probe.ProbeDocument] = []
        used = 0
        while len(docs) < options.docs:
            try:
                doc, taken = tune_probe.build(ids[used:], tokenizer.bos, tokenizer.encode, tokenizer.decode, lengths.long, plan)
            except tune_probe.TextRanOut:
                break
            docs.append(doc)
            used += taken
        if not docs:
            raise InputError(
                f"the tuning text has {len(ids):,} tokens, too few for one document of {lengths.long:,} with its "
                "retrieval probes: give a longer --text, or --passkeys 0"
            )
        if len(docs) < options.docs:
            self.notes.append(f"the text holds {len(docs)} document(s) of {lengths.long:,} tokens, not the {options.docs} asked for")
        return docs

    def _over_budget(self) -> bool:
        return self.budget.over(time.perf_counter())

    def _announce_budget(self, reference: Measure) -> None:
        line = self.budget.plan(reference.seconds, self.reach(None), self.reach(self.options.scales[0]), time.perf_counter(), self.expected - 1)
        if line:
            self.notes.append(line)
            if self.notify:
                self.notify(line)

    def measure(self, variant: variants.RopeVariant, scale: float | None, m: float | None, betas: tuple[float, float] | None = None) -> Measure:
        """One pass per document, up to ``reach(scale)``."""
        started = time.perf_counter()
        lengths = self.options.lengths
        if self.progress:
            self.progress(self.done, self.expected, variant.label if scale else "unextended reference")
        upto = self.reach(scale)
        losses, hits = [], {}
        for doc in self.docs:
            scored = self.engine.score(variant, doc.ids[:upto], 0)
            losses.append(doc.text_losses(scored.losses))
            for length, found in doc.hits(scored.greedy or [], upto).items():
                hits.setdefault(length, []).extend(found)
        self.done += 1

        def share(length: int) -> float | None:
            found = hits.get(length)
            return sum(found) / len(found) if found else None

        return Measure(
            variant.name,
            scale,
            m,
            tune_plan.input_perplexity(losses, lengths.short),
            tune_plan.band(losses, lengths.original, upto),
            tune_plan.curve(losses, tune_plan.curve_points(lengths.original, upto)),
            share(lengths.short),
            share(lengths.long),
            time.perf_counter() - started,
            tune_plan.chunk_losses(losses, lengths.original, upto, tune_plan.noise_chunk(lengths)),
            betas,
        )

    def reach(self, scale: float | None) -> int:
        """How far a pass goes. The reference stops at L, beyond which it serves nothing. In --fit mode each s is
        judged on the range it extends to, L..s·L (the paper's s = 8 on 16k documents for L = 2k): a smaller s
        measured past s·L would be fitted on how it fails there."""
        lengths = self.options.lengths
        if scale is None:
            return lengths.original
        return min(lengths.long, length_math.target_length(lengths.original, scale)) if self.options.fit else lengths.long

    def candidate(self, scale: float, m: float, betas: tuple[float, float] | None = None) -> variants.RopeVariant:
        options = self.options
        fast, slow = betas or (options.beta_fast, options.beta_slow)
        name = f"yarn-x{scale:g}-m{m:.4f}" + (f"-b{fast:g}-{slow:g}" if betas else "")
        return variants.yarn(
            self.spec, scale, m, beta_fast=fast, beta_slow=slow, original_context=options.lengths.original, baked=self.baked, name=name
        )

    def evaluate(
        self, goal: Objective, reference: Measure, here: list[Measure], scale: float, m: float, betas: tuple[float, float] | None = None
    ) -> float:
        betas_used = betas or (self.options.beta_fast, self.options.beta_slow)
        here.append(self.measure(self.candidate(scale, m, betas), scale, m, betas_used))
        self.budget.timed.append(here[-1].seconds)
        return goal.value(here[-1], reference)

    def run(self, model: str, engine_name: str) -> TuneResult:
        options = self.options
        refusal = self.engine.unsupported(self.candidate(options.scales[0], 1.0))
        if refusal:
            raise InputError(f"--engine {engine_name} cannot run the YaRN candidates: {refusal}")
        reference = self.measure(variants.baseline(self.spec, self.baked), None, None)
        self._announce_budget(reference)
        goal = Objective("long") if options.fit else options.objective
        measured: list[Measure] = []
        best_by_scale: dict[float, Measure] = {}
        for index, scale in enumerate(options.scales):
            if self.budget.stopped:
                break
            here: list[Measure] = []
            # the first s (what `extend` would write: --scale, or N/L) always gets the paper's m and 1.0
            required = 2 if index == 0 else 0
            tune_plan.search_m(partial(self.evaluate, goal, reference, here, scale), scale, options.refinements, self._over_budget, required)
            if options.search_betas and here and not self.budget.stopped:
                best = min(here, key=lambda c: goal.value(c, reference))
                tune_plan.search_betas(
                    partial(self.evaluate, goal, reference, here, scale, best.m), best.betas, goal.value(best, reference), self._over_budget
                )
            measured.extend(here)
            if here:
                best_by_scale[scale] = min(here, key=lambda c: goal.value(c, reference))
        result = TuneResult(
            model, engine_name, options, reference, measured, None, best_by_scale=best_by_scale, stopped_early=self.budget.stopped, notes=self.notes
        )
        if self.budget.stopped:
            self.notes.append(f"--budget reached after {len(measured)} candidate(s): the best so far is reported")
        if options.fit:
            points = [(s, m.m) for s, m in best_by_scale.items()]
            result.fit = fit_log(points) if len(points) >= 2 else None
        else:
            result.decision = tune_plan.choose(measured, reference, options.objective)
        return result
