"""`yarn extend --bake-temperature` on a multi-GB synthetic bf16 checkpoint vs `cp -r` of the same
folder on the same disk: throughput and peak RSS.

    python benchmarks/bench_bake.py [--size-gb 2] [--dir /path/on/target/disk]

Every shard holds q/k projections, so every shard is rewritten (the worst case: nothing is hard-linked).
Targets: >= 0.8x cp's throughput; peak RSS <= largest tensor + 300 MB.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import llama_tensor_shapes, write_checkpoint  # noqa: E402

RSS_WRAPPER = (
    "import resource,subprocess,sys;subprocess.run(sys.argv[1:],check=True,capture_output=True);"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def config_for(size_gb: float) -> dict:
    layers = max(2, int(size_gb * 1e9 / 2 / 51.4e6))  # ~51M params per layer at hidden 2048
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "max_position_embeddings": 4096,
        "num_attention_heads": 16,
        "num_hidden_layers": layers,
        "num_key_value_heads": 4,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": 32000,
        "torch_dtype": "bfloat16",
    }


def run(command: list[str]) -> tuple[float, int]:
    os.sync()
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", RSS_WRAPPER, *command], check=True, capture_output=True, text=True).stdout
    os.sync()  # durable time for both: yarn fsyncs, cp does not
    return time.perf_counter() - start, int(out.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    config = config_for(args.size_gb)
    shapes = llama_tensor_shapes(config)
    largest = max(2 * math.prod(s) for _, s in shapes)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        source = write_checkpoint(work / "model", config, shard_bytes=512 * 1024**2, fill="weights")
        size = sum(p.stat().st_size for p in source.iterdir())
        subprocess.run(["sh", "-c", f"cat {source}/* > /dev/null"], check=True)
        best: dict[str, tuple[float, int]] = {}
        for _ in range(args.repeat):
            for name, command in (
                ("cp -r", ["cp", "-r", str(source), str(work / "copy")]),
                (
                    "yarn extend --bake-temperature",
                    [sys.executable, "-m", "yarn_cli", "extend", str(source), "-s", "8", "--bake-temperature", "-o", str(work / "baked"), "--json"],
                ),
            ):
                seconds, rss = run(command)
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, rss)
                subprocess.run(["rm", "-rf", str(work / "copy"), str(work / "baked")], check=True)
        shards = len(list(source.glob("*.safetensors")))
    print(
        f"synthetic bf16 llama: {size / 1e9:.2f} GB in {shards} shards, {config['num_hidden_layers']} layers; "
        f"largest tensor {largest / 1e6:.0f} MB; best of {args.repeat}, durable (command + sync)"
    )
    for name, (seconds, rss) in best.items():
        print(f"{name:32s} {seconds:6.2f} s  {size / seconds / 1e9:5.2f} GB/s  peak RSS {rss / 1024:7.1f} MiB")
    ours, cp = best["yarn extend --bake-temperature"], best["cp -r"]
    print(f"throughput vs cp -r : {cp[0] / ours[0]:.2f}x  (target >= 0.8)")
    budget = (largest + 300e6) / 1024**2
    print(
        f"peak RSS            : {ours[1] / 1024:.0f} MiB vs budget largest tensor + 300 MB = {budget:.0f} MiB "
        f"({'within' if ours[1] / 1024 <= budget else 'OVER'})"
    )


if __name__ == "__main__":
    main()
