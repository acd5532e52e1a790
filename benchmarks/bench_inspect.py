"""`yarn inspect` on a 70B-style sharded folder vs transformers' AutoConfig on the same folder.

Both run as fresh processes (what a user waits for). The folder's data is sparse: inspect must
never read it, so its size on disk does not matter. Prints seconds and the ratio.

    python benchmarks/bench_inspect.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import LLAMA2_70B, llama_tensor_shapes, write_checkpoint  # noqa: E402

TARGET = 25.0  # inspect at least this many times faster than AutoConfig on the same folder


def best_of(command: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_checkpoint(Path(tmp) / "llama-70b", LLAMA2_70B, shard_bytes=10 * 1024**3)
        shards = len(list(folder.glob("*.safetensors")))
        ours = best_of([sys.executable, "-m", "yarn_cli", "inspect", str(folder), "--scale", "8", "--json"], args.repeat)
        peer = best_of(
            [sys.executable, "-c", f"from transformers import AutoConfig; AutoConfig.from_pretrained({str(folder)!r})"],
            args.repeat,
        )
    shapes = llama_tensor_shapes(LLAMA2_70B)
    nbytes = sum(2 * __import__("math").prod(shape) for _, shape in shapes)
    print(f"70B-style folder: {shards} shards, {len(shapes)} tensors, {nbytes / 1e9:.0f} GB of (sparse) bf16 data")
    print(f"yarn inspect --scale 8 --json : best {ours[0]:.3f} s, median {ours[1]:.3f} s (headers + per-pair table)")
    print(f"transformers AutoConfig       : best {peer[0]:.3f} s, median {peer[1]:.3f} s (config only)")
    ratio = peer[0] / ours[0]
    print(f"ratio (AutoConfig / inspect)  : {ratio:.2f}x (target >= {TARGET:g}x: {'met' if ratio >= TARGET else 'MISSED'})")


if __name__ == "__main__":
    main()
