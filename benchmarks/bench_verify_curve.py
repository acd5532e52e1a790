"""`yarn verify`'s perplexity curve against one pass per length, side by side.

    python benchmarks/bench_verify_curve.py [--model M] [--length 8192] [--engine native]

verify reads the curve (every quarter of the trained length up to --length, for the extended model and its
baseline) from one pass per document: the loss of a causal model at a position does not depend on what follows.
The other way runs one pass per length. Prints the curve's time against the two single passes it is made of
(target <= 1.3x), the k-pass way's time, and the largest relative difference between the two ways' numbers.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="an extended checkpoint (default: the built-in SmolLM2 GGUF, extended x2)")
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--engine", default="native")
    args = parser.parse_args()

    import tempfile

    from yarn_cli.api import apply_extend, plan_extend, prepare_verify
    from yarn_cli.core.verify import plan as verify_plan
    from yarn_cli.io.default_model import default_model_path

    with tempfile.TemporaryDirectory() as work:
        model = Path(args.model) if args.model else None
        if model is None:
            model = Path(work) / "smol-x2.gguf"
            apply_extend(plan_extend(default_model_path(), model, scale=2))
        run = prepare_verify(model, engine=args.engine, device="cpu", tasks="perplexity", lengths=[args.length], ppl_windows=1, parity=False)
        engine, prepared = run.engine, run.prepared
        ids = prepared.context.text_ids[: args.length]
        variants = prepared.variants
        started = time.perf_counter()
        report = run.run().to_json()  # closes the engine
        curve_seconds = time.perf_counter() - started
        engine = type(engine)(model, "cpu", None, max_length=args.length + 16)
        single = 0.0
        for variant in variants:
            started = time.perf_counter()
            engine.score(variant, ids, 0)
            single += time.perf_counter() - started
        lengths = report["perplexity_curve"]["lengths"]
        separate, worst = 0.0, 0.0
        for variant in variants:
            for n in lengths:
                started = time.perf_counter()
                losses = engine.score(variant, ids[:n], n - 1 - verify_plan.PPL_STRIDE).losses
                separate += time.perf_counter() - started
                theirs = math.exp(sum(losses) / len(losses))
                ours = report["perplexity_curve"]["last_tokens"][variant.name][str(n)]
                worst = max(worst, abs(ours - theirs) / theirs)
        engine.close()
    print(f"{model.name}, {args.engine} engine, curve at {len(lengths)} lengths ({lengths[0]:,} .. {lengths[-1]:,}) for {len(variants)} variants")
    print(
        f"one pass per document: {curve_seconds:.1f} s = {curve_seconds / single:.2f}x the {len(variants)} single passes "
        f"({single:.1f} s; target <= 1.3x)"
    )
    print(f"one pass per length:   {separate:.1f} s ({separate / curve_seconds:.2f}x the curve's time)")
    print(f"largest relative difference between the two ways: {worst:.1e}")


if __name__ == "__main__":
    main()
