"""`yarn verify --endpoint` through vLLM's OpenAI server, at concurrency 1 and 8, against the in-process vLLM engine.

    .venv-vllm/bin/python benchmarks/bench_endpoint.py [--model FOLDER] [--length 800] [--samples 8]

Starts vLLM's server (the one `vllm serve` runs; through its module, as vLLM's CPU package cannot start its `vllm`
command) on 127.0.0.1 for an extended HF folder (default: the tests' tiny llama, extended x4), runs the default task
set with --samples N at one length through it at --concurrency 1 and 8, then the same with --engine vllm
in-process, and prints the tasks' seconds and the ratios. The server is stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

YARN = str(Path(sys.executable).with_name("yarn"))
FAST = ["--dtype", "float32", "--enforce-eager"]


def _tiny(work: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_verify import word_tokenizer
    from tiny_models import build_model

    from yarn_cli.api import apply_extend, plan_extend

    build_model("llama", seed=3, initializer_range=0.2, hidden_size=128, num_attention_heads=2, num_key_value_heads=1).save_pretrained(work / "llama")
    word_tokenizer(work / "llama")
    apply_extend(plan_extend(work / "llama", work / "llama-x4", scale=4))
    return work / "llama-x4"


def _serve(model: Path, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [*command, *FAST, "--gpu-memory-utilization", "0.2"], stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(300):
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/models", timeout=2):
                return process, url
        except OSError:
            time.sleep(1)
    raise SystemExit("the server did not answer in 300 s")


def _verify(model: Path, *args: str) -> dict:
    result = subprocess.run([YARN, "verify", str(model), *args, "--json"], capture_output=True, text=True)
    if not result.stdout.strip():
        raise SystemExit(result.stderr)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--length", default="800")  # the tiny model serves 1,024 tokens, answers included
    parser.add_argument("--samples", default="8")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        model = args.model or _tiny(Path(work))
        # the baseline runs in-process on the native engine in the two server runs: on the tiny model it takes
        # milliseconds, so the times compare the extended model's requests
        protocol = ["--lengths", args.length, "--depths", "0.5", "--samples", args.samples, "--ppl-windows", "1", "--no-parity"]
        process, url = _serve(model, Path(work) / "server.log")
        try:
            seconds = {}
            for width in (1, 8):
                report = _verify(model, "--endpoint", url, "--concurrency", str(width), *protocol)
                seconds[f"server, concurrency {width}"] = report["timings"]["protocol_seconds"]
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
        report = _verify(model, "--engine", "vllm", *FAST, *protocol)
        # it starts vLLM again for each variant inside the run (the server started before the clock): said beside it
        seconds["in-process vllm engine (a start per variant)"] = report["timings"]["protocol_seconds"]
    base = seconds["server, concurrency 1"]
    for name, value in seconds.items():
        print(f"{name:44s} {value:8.1f} s  {value / base:5.2f}x of concurrency 1")


if __name__ == "__main__":
    main()
