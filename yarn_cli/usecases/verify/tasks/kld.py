"""How far each variant moves the model's next-token distributions away from the original's on short inputs: at
every length up to the trained one, KL(P_original ‖ P_variant) over the whole vocabulary at every position of
``--ppl-windows`` windows of the text, with the statistics ``llama-perplexity --kl-divergence`` prints. The original
is the unextended model (the baseline variant) on the same engine and weights, so the figure isolates the RoPE
change. Perplexity averages the loss on the true next token only; the divergence sees the whole distribution, so
an extension that shifts probability between wrong answers shows up here and not there."""

from __future__ import annotations

from typing import Any

from yarn_cli.core.rope import variants
from yarn_cli.core.rope.variants import RopeVariant
from yarn_cli.core.verify import kld
from yarn_cli.core.verify import plan as verify_plan
from yarn_cli.usecases.verify.tasks.base import Cell, Column, Context, Job, TaskResult


class KldTask:
    name = "kld"
    answer_tokens = 0
    pictured = ()
    requires = "divergence"  # the engine method it runs on (protocol.prepare refuses an engine without it up front)

    def plan(self, context: Context, length: int) -> tuple[list[Job], list[str]]:
        original = context.original_context
        if length > original:
            beyond = [n for n in context.lengths if n > original]
            first = bool(beyond) and length == min(beyond)
            return [], [f"kld runs at lengths up to the trained {original:,} only: beyond it the original model is no reference"] if first else []
        taken = length - len(context.bos)
        starts = verify_plan.ppl_windows(len(context.text_ids), taken, max(context.options.ppl_windows, 1))
        if not starts:
            return [], [f"the text has {len(context.text_ids):,} tokens, fewer than {length:,}: no kld at that length"]
        text = context.text_ids
        return [Job(self.name, length, context.bos + text[start : start + taken], None, sample) for sample, start in enumerate(starts)], []

    def run(self, engine: Any, variant: RopeVariant, job: Job) -> Cell:
        reference = variants.baseline(engine.facts.rope, engine.facts.baked_attention_factor)
        if variant.name == reference.name:  # the original against itself: nothing to run
            return Cell(self.name, variant.name, job.length, None, job.sample, None, {"reference": True})
        found = engine.divergence(reference, variant, job.ids, 0)
        mean = sum(found.divergences) / len(found.divergences) if found.divergences else None
        detail = {"divergences": found.divergences, "agree": found.agree}
        return Cell(self.name, variant.name, job.length, None, job.sample, mean, detail, found.prefill_tokens, found.prefill_seconds)

    def finish(self, cells: list[Cell], context: Context) -> TaskResult:
        table: dict[str, dict[str, dict[str, float]]] = {}
        for name in context.variants:
            for length in sorted({c.length for c in cells if c.variant == name and not c.detail.get("reference")}):
                chosen = [c for c in cells if c.variant == name and c.length == length]
                pooled = [x for c in chosen for x in c.detail["divergences"]]
                stats = kld.statistics(pooled, [a for c in chosen for a in c.detail["agree"]])
                if stats is not None:
                    table.setdefault(name, {})[str(length)] = stats
        column = Column("kld", lambda v, n: table.get(v, {}).get(str(n), {}).get("mean"), lambda x: f"{x:.4f}")
        return TaskResult({"kld": {v: table.get(v, {}) for v in context.variants if v != "baseline"}}, [column], None)
