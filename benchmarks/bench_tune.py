"""`yarn tune`'s costs, side by side with the way they would be paid without it.

    python benchmarks/bench_tune.py curve [--length 8192] [--engine native]   # one pass vs k passes
    python benchmarks/bench_tune.py whole [--scale 2]                         # a whole tune vs 8 verify runs

curve: the perplexity at k lengths of one candidate. tune takes it from one pass over the longest window (the
loss at a position of a causal model does not depend on what follows); the other way (the paper's own
evaluation) truncates the document at every length and runs k passes. Prints both times, the ratio of the
one-pass way to a single longest pass (target <= 1.3x), the k-pass speed-up, and the largest difference
between the two ways' perplexities (they are the same numbers).

whole: one `yarn tune` of the built-in SmolLM2-135M at --scale with default lengths (8 candidates or so;
target <= 15 minutes on a 2-core CPU), against one `yarn verify` of a candidate on the same lengths times
the number of candidates tune measured (the way a user would compare m values by hand).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path


def curve(args) -> None:
    from yarn_cli.core.rope import variants
    from yarn_cli.core.tune import plan as tune_plan
    from yarn_cli.io.default_model import default_model_path
    from yarn_cli.runtimes.base import load_engine
    from yarn_cli.usecases.verify.protocol import load_text

    model = Path(args.model) if args.model else default_model_path()
    engine = load_engine(args.engine, model, "cpu", None, args.length + 16)
    ids = (engine.tokenizer.bos + engine.tokenizer.encode(load_text(None)))[: args.length]
    variant = variants.yarn(engine.facts.rope, args.length / engine.facts.rope.original_context)
    points = [p for p in tune_plan.curve_points(engine.facts.rope.original_context, args.length) if p <= args.length]
    points = points[-args.points :]
    started = time.perf_counter()
    losses = engine.score(variant, ids, 0).losses
    one_pass = time.perf_counter() - started
    started = time.perf_counter()
    ours = {n: tune_plan.input_perplexity([losses], n) for n in points}
    arithmetic = time.perf_counter() - started
    started = time.perf_counter()
    theirs = {}
    for n in points:
        part = engine.score(variant, ids[:n], 0).losses
        theirs[n] = math.exp(sum(part) / len(part))
    k_passes = time.perf_counter() - started
    engine.close()
    worst = max(abs(ours[n] / theirs[n] - 1) for n in points)
    print(f"{model.name}, {args.engine} engine, lengths {', '.join(f'{n:,}' for n in points)}")
    print(
        f"one pass of {args.length:,} tokens + the curve: {one_pass + arithmetic:.1f} s "
        f"({(one_pass + arithmetic) / one_pass:.3f}x the single pass; target <= 1.3x)"
    )
    print(f"{len(points)} truncated passes (the paper's way): {k_passes:.1f} s; one pass is {k_passes / one_pass:.2f}x faster")
    print(f"largest relative difference between the two ways' perplexities: {worst:.1e}")


def whole(args) -> None:
    from yarn_cli.api import tune, verify
    from yarn_cli.io.default_model import default_model_path

    model = Path(args.model) if args.model else default_model_path()
    started = time.perf_counter()
    result = tune(model, scale=args.scale, device="cpu", engine=args.engine, plot=args.plot, force=True)
    tune_seconds = time.perf_counter() - started
    if args.report:
        import json

        Path(args.report).write_text(json.dumps(result.to_json(), indent=1))
    lengths = result.options.lengths
    count = len(result.candidates)
    chosen = result.decision.chosen if result.decision else None
    print(
        f"tune: {count} candidates + the unextended reference in {tune_seconds / 60:.1f} min (target <= 15 min); "
        f"chosen m {chosen.m if chosen else None}"
    )
    if args.tune_only:
        return
    with_m = Path(args.work) / "candidate"
    if not with_m.exists():
        from yarn_cli.api import apply_extend, plan_extend

        apply_extend(plan_extend(model, with_m.with_suffix(".gguf") if model.suffix == ".gguf" else with_m, scale=args.scale))
    target = with_m.with_suffix(".gguf") if model.suffix == ".gguf" else with_m
    started = time.perf_counter()
    verify(target, lengths=[lengths.short, lengths.long], depths=[0.5], trials=1, ppl_windows=1, device="cpu", engine=args.engine, parity=False)
    one_verify = time.perf_counter() - started
    print(
        f"one verify at {lengths.short:,} and {lengths.long:,} (passkey and perplexity, extended and baseline): "
        f"{one_verify / 60:.1f} min; {count} of them: {count * one_verify / 60:.1f} min; "
        f"tune is {count * one_verify / tune_seconds:.2f}x faster"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("curve", "whole"))
    parser.add_argument("--model", help="checkpoint (default: the built-in SmolLM2-135M GGUF)")
    parser.add_argument("--engine", default="native")
    parser.add_argument("--length", type=int, default=8192, help="curve: the longest window")
    parser.add_argument("--points", type=int, default=4, help="curve: how many lengths (the last of the L/4 ladder)")
    parser.add_argument("--scale", type=float, default=2.0, help="whole: the factor tuned")
    parser.add_argument("--work", default="/tmp/bench-tune", help="whole: where the verify candidate is written")
    parser.add_argument("--plot", help="whole: also write tune's plot here (.png)")
    parser.add_argument("--report", help="whole: also write tune's --json report here")
    parser.add_argument("--tune-only", action="store_true", help="whole: time the tune alone, not the verify runs beside it")
    args = parser.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    {"curve": curve, "whole": whole}[args.what](args)


if __name__ == "__main__":
    main()
