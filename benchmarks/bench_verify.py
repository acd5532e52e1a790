"""Native engine prefill vs transformers (sdpa) on the same model, device and length: tokens/s and
peak memory, side by side, with the ratios. Random weights in a real architecture's shape.

    python benchmarks/bench_verify.py --shape smollm2-135m --length 4096            # CPU here
    python benchmarks/bench_verify.py --shape llama3-8b --length 32768 --device cuda  # on a GPU

Target: native at least as fast as transformers, and no more memory.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SHAPES = {
    "smollm2-135m": dict(
        model_type="llama",
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        rope_theta=100000.0,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    ),
    "llama3-8b": dict(
        model_type="llama",
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        rope_theta=500000.0,
        max_position_embeddings=8192,
    ),
    "qwen2.5-7b": dict(
        model_type="qwen2",
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        rope_theta=1000000.0,
        max_position_embeddings=32768,
    ),
}


def peak_memory(device: str) -> int:
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def make_checkpoint(folder: Path, shape: str, dtype) -> None:
    from tokenizers import Tokenizer, models
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    params = dict(SHAPES[shape])
    config = CONFIG_MAPPING[params.pop("model_type")](**params)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model = model.to_empty(device="cpu")
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    model.save_pretrained(folder, max_shard_size="2GB")
    Tokenizer(models.WordLevel({"a": 0}, unk_token="a")).save(str(folder / "tokenizer.json"))


def measure(args) -> dict:
    """One engine in this process: prefill tokens/s (best of N after a warm-up) and peak memory."""
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    ids = torch.randint(0, SHAPES[args.shape]["vocab_size"], (args.length,), generator=torch.Generator().manual_seed(0)).tolist()
    folder = Path(args.checkpoint)
    reset_peak(args.device)
    if args.engines == "native":
        from yarn_cli.core.rope import variants
        from yarn_cli.native.engine import NativeEngine

        native = NativeEngine(folder, args.device)
        model = native.model(variants.declared(native.facts.rope))

        def prefill():
            model.prefill(ids, model.new_cache(len(ids)), native.chunk)
    else:
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa").to(args.device).eval()
        inputs = torch.tensor([ids], device=args.device)

        def prefill():
            with torch.inference_mode():
                hf(inputs, logits_to_keep=1, use_cache=True)

    prefill()  # warm-up
    best = float("inf")
    for _ in range(args.repeat):
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        prefill()
        if args.device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return {"tokens_per_second": args.length / best, "peak_bytes": peak_memory(args.device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m")
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--engines", default="native,transformers")
    parser.add_argument("--checkpoint", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.checkpoint:  # child: one engine, one process, so peak memory is its own
        print(json.dumps(measure(args)))
        return
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / args.shape
        make_checkpoint(folder, args.shape, dtype)
        for engine in args.engines.split(","):
            command = [
                sys.executable,
                __file__,
                "--shape",
                args.shape,
                "--length",
                str(args.length),
                "--device",
                args.device,
                "--repeat",
                str(args.repeat),
                "--engines",
                engine,
                "--checkpoint",
                str(folder),
            ]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[engine] = json.loads(out.strip().splitlines()[-1])
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.shape}, {args.length:,} tokens, {device_name}, {str(dtype).replace('torch.', '')}; best of {args.repeat}, one process per engine")
    for engine, r in results.items():
        print(f"{engine:13s} prefill {r['tokens_per_second']:10,.0f} tok/s   peak memory {r['peak_bytes'] / 2**30:6.2f} GiB")
    if {"native", "transformers"} <= set(results):
        n, t = results["native"], results["transformers"]
        print(f"speed ratio native/transformers : {n['tokens_per_second'] / t['tokens_per_second']:.2f}x (target >= 1)")
        print(f"memory ratio native/transformers: {n['peak_bytes'] / t['peak_bytes']:.2f}x (target <= 1)")
    print(json.dumps({"shape": args.shape, "length": args.length, "device": device_name, "results": results}))


if __name__ == "__main__":
    main()
