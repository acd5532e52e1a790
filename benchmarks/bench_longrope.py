"""Should extend offer YaRN in the `longrope` form (YaRN's per-pair divisors as `long_factor`, ones as `short_factor`)?

    python benchmarks/bench_longrope.py [--scale 2] [--short 4096] [--cross 256] [--after 1024]

transformers switches a `longrope` scaling per forward call: positions up to the original length L run the short
factors, beyond it the long ones, and one `attention_factor` multiplies cos/sin in both. So the form would give short
inputs their original frequencies, at a price: the attention factor still applies to them, and a prompt that grows
past L while generating keeps the keys it cached with the short factors. vLLM (0.32) decides once, at start-up: a
server whose max_model_len exceeds L runs the long factors for every request, short ones included.

This measures, on the built-in SmolLM2-135M (L = 8192) and the default text:
1. short-input perplexity (the first --short tokens): unextended, static YaRN, and the longrope form as transformers
   runs short inputs (original frequencies with YaRN's m), each with the native engine;
2. the cost of crossing L: transformers with the longrope config, the prompt ending --cross tokens before L and the
   next --after tokens fed in 128-token steps with the cache, against the same tokens in one pass (all long factors,
   which must equal static YaRN: checked), as NLL per token of the tokens past L.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def short_inputs(args, model: Path) -> None:
    from yarn_cli.core.rope import variants
    from yarn_cli.runtimes.base import load_engine
    from yarn_cli.usecases.verify.protocol import load_text

    engine = load_engine("native", model, "cpu", None, args.short + 16)
    spec = engine.facts.rope
    ids = (engine.tokenizer.bos + engine.tokenizer.encode(load_text(None)))[: args.short]
    yarn = variants.yarn(spec, args.scale)
    plain = variants.baseline(spec)
    short_form = variants.renamed(plain, "longrope-short", kind="custom", attention_factor=yarn.attention_factor)
    print(f"short input: the first {len(ids):,} tokens (L = {spec.original_context:,}), native engine")
    for label, variant in (
        ("unextended", plain),
        (f"static YaRN x{args.scale:g} (m {yarn.attention_factor:.4f})", yarn),
        ("longrope form in transformers (original θ, same m)", short_form),
    ):
        losses = engine.score(variant, ids, 0).losses
        print(f"  {label:<55} perplexity {math.exp(sum(losses) / len(losses)):.3f}")
    engine.close()


def _hf_model(model: Path, rope_parameters: dict, max_positions: int):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model.parent, gguf_file=model.name)
    config.rope_parameters = rope_parameters
    config.max_position_embeddings = max_positions
    return AutoModelForCausalLM.from_pretrained(model.parent, gguf_file=model.name, config=config, dtype=torch.float32).eval()


def _nll(logits, ids, start: int) -> list[float]:
    import torch

    scores = torch.log_softmax(logits[0].double(), -1)
    return [-float(scores[i - 1, ids[i]]) for i in range(start, len(ids))]


def _stepped(model, ids: list[int], prompt: int, skip: int) -> list[float]:
    """NLL of the tokens after ``prompt + skip``, fed after the prompt in 128-token steps with the cache."""
    import torch

    out = model(torch.tensor([ids[:prompt]]), use_cache=True)
    cache, logits = out.past_key_values, [out.logits[:, -1:]]
    for begin in range(prompt, len(ids) - 1, 128):
        out = model(torch.tensor([ids[begin : min(begin + 128, len(ids) - 1)]]), past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        logits.append(out.logits)
    return _nll(torch.cat(logits, dim=1), [ids[prompt - 1]] + ids[prompt:], 1 + skip)


def crossing(args, model: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    from yarn_cli.api import inspect
    from yarn_cli.core.rope import frequencies as rope
    from yarn_cli.core.rope import scalars as rope_scalars
    from yarn_cli.usecases.verify.protocol import load_text

    spec = inspect(model).summary.rope
    length = spec.original_context
    yarn = rope.yarn(spec.base, spec.rotary_dim, length, args.scale)
    plain = rope.inv_freq_values(spec.base, spec.rotary_dim)
    m = rope_scalars.get_mscale(args.scale)
    common = {"rope_theta": spec.base, "original_max_position_embeddings": length, "factor": args.scale, "attention_factor": m}
    longrope = {
        "rope_type": "longrope",
        "short_factor": [1.0] * len(plain),
        "long_factor": [a / b for a, b in zip(plain, yarn.inv_freq_values)],
        **common,
    }
    static = {"rope_type": "yarn", **common}
    tokenizer = AutoTokenizer.from_pretrained(model.parent, gguf_file=model.name)
    ids = tokenizer(load_text(None))["input_ids"][: length + args.after]
    ids = ([tokenizer.bos_token_id] + ids)[: length + args.after]
    prompt = length - args.cross
    positions = int(args.scale * length)
    with torch.no_grad():
        one_pass = _nll(_hf_model(model, longrope, positions)(torch.tensor([ids])).logits, ids, length)
        reference = _nll(_hf_model(model, static, positions)(torch.tensor([ids])).logits, ids, length)
        crossed = _stepped(_hf_model(model, longrope, positions), ids, prompt, args.cross)
        control = _stepped(_hf_model(model, static, positions), ids, prompt, args.cross)
    print(
        f"crossing L = {length:,}: prompt of {prompt:,} tokens, then {len(ids) - prompt:,} more in 128-token steps "
        f"(transformers, cached keys kept); NLL per token of the {len(ids) - length:,} tokens past L"
    )
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    print(f"  static YaRN, one pass                               {mean(reference):.4f}")
    print(
        f"  longrope form, one pass (long factors throughout)   {mean(one_pass):.4f} "
        f"(max |diff| to static YaRN {max(abs(a - b) for a, b in zip(one_pass, reference)):.1e})"
    )
    print(f"  static YaRN, the same 128-token steps (a control)    {mean(control):.4f}")
    print(
        f"  longrope form, crossing L while generating          {mean(crossed):.4f} "
        f"({(math.exp(mean(crossed) - mean(reference)) - 1) * 100:+.1f}% perplexity against static YaRN)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a GGUF (default: the built-in SmolLM2-135M)")
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--short", type=int, default=4096)
    parser.add_argument("--cross", type=int, default=256, help="prompt tokens before L")
    parser.add_argument("--after", type=int, default=1024, help="tokens scored past L")
    args = parser.parse_args()
    from yarn_cli.io.default_model import default_model_path

    model = Path(args.model) if args.model else default_model_path()
    short_inputs(args, model)
    crossing(args, model)


if __name__ == "__main__":
    main()
