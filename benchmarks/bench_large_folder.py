"""`yarn extend` on a 160-shard folder shaped like a 400B-class llama (Llama-3.1-405B: 126 layers, 810 GB of
bf16, stored sparse so it costs no disk): config-only extend against Python's start-up, and a bake that
rewrites only the shards holding q/k, in parallel.

    python benchmarks/bench_large_folder.py [--dir /path] [--shards 160] [--repeat 3]

Targets: config-only extend under 1 s beyond start-up (`yarn --version`); the bake rewrites exactly the
shards with q/k tensors (the rest are linked), and more workers make it faster. The bake runs on the same
160-shard layout at 1/16 of the width (126 layers, hidden 1024), because baking 405B's 68 GB of q/k would
only measure the disk.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import LLAMA31_405B, write_fixed_shards  # noqa: E402

YARN = [sys.executable, "-m", "yarn_cli"]


def best(command: list[str], repeat: int, cleanup: Path | None = None) -> tuple[float, dict | None]:
    times, report = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        times.append(time.perf_counter() - start)
        report = json.loads(out) if out.strip().startswith("{") else None
        if cleanup is not None:
            subprocess.run(["rm", "-rf", str(cleanup)], check=True)
    return min(times), report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--shards", type=int, default=160)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        big = write_fixed_shards(work / "big", LLAMA31_405B, args.shards)
        size = sum(p.stat().st_size for p in big.glob("*.safetensors"))
        startup, _ = best([*YARN, "--version"], args.repeat)
        config_only, report = best([*YARN, "extend", str(big), "-s", "4", "-o", str(work / "big-x4"), "--json"], args.repeat, work / "big-x4")
        actions = {}
        for item in report["files"]:
            actions[item["action"]] = actions.get(item["action"], 0) + 1
        print(f"405B-shaped folder: {len(list(big.glob('*.safetensors')))} shards, {size / 1e9:.0f} GB (sparse)")
        print(f"start-up (yarn --version)     {startup:6.2f} s")
        print(
            f"config-only extend            {config_only:6.2f} s  = start-up + {config_only - startup:.2f} s  "
            f"(target: < 1 s beyond start-up)  files: {actions}"
        )

        narrow = dict(LLAMA31_405B, hidden_size=1024, intermediate_size=3328, num_attention_heads=8, num_key_value_heads=1, vocab_size=32000)
        small = write_fixed_shards(work / "narrow", narrow, args.shards)
        small_size = sum(p.stat().st_size for p in small.glob("*.safetensors"))
        results = {}
        for workers in (1, 2, 4):
            seconds, report = best(
                [*YARN, "extend", str(small), "-s", "4", "--bake-temperature", "--workers", str(workers), "-o", str(work / "baked"), "--json"],
                args.repeat,
                work / "baked",
            )
            results[workers] = seconds
        baked = [f for f in report["files"] if f["action"] == "baked"]
        linked = [f for f in report["files"] if f["action"] in ("linked", "reflinked")]
        holding = {
            m for m, s in json.loads((small / "model.safetensors.index.json").read_text())["weight_map"].items() if "q_proj" in m or "k_proj" in m
        }
        shards_with_qk = {json.loads((small / "model.safetensors.index.json").read_text())["weight_map"][m] for m in holding}
        n_shards = len(list(small.glob("*.safetensors")))
        print(f"narrow 405B layout: {n_shards} shards, {small_size / 1e9:.2f} GB; {len(shards_with_qk)} shards hold q/k")
        print(
            f"bake: {len(baked)} shards rewritten, {len(linked)} linked "
            f"({'exactly the q/k shards' if {Path(f['path']).name for f in baked} == shards_with_qk else 'MISMATCH'})"
        )
        for workers, seconds in results.items():
            print(f"bake --workers {workers}              {seconds:6.2f} s  ({results[1] / seconds:.2f}x vs 1 worker)")


if __name__ == "__main__":
    main()
