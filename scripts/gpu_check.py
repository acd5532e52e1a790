"""The GPU check: every GPU code path of yarn_cli once, on one CUDA device, in about 8 minutes, as one table.

    python scripts/gpu_check.py [--out DIR] [--length 10k] [--device cuda]

Steps (each its own `python -m yarn_cli ... --json` process, timed, with the device's peak memory read from
nvidia-smi while it runs): inspect and extend of SmolLM2-135M (the built-in GGUF, and the HF folder
transformers dequantizes from it; without the GGUF, a random model of its shape, which keeps parity meaningful
but not the task verdicts), verify at --length with parity on native, transformers, llama.cpp and vLLM, tune on
vLLM with a one-minute budget, and a 30-step finetune in mixed precision and in pure bf16 (their losses side by
side). A step whose package is missing (llama-cpp-python with GPU offload, vllm, peft...) is listed as not run,
with the reason; nothing is installed. `--device cpu` runs the same steps small on a CPU, to check the script.
Writes gpu_check.json (and each step's output) under --out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path


def _peak_gpu_memory(stop: threading.Event, peak: list[int]) -> None:
    """Poll nvidia-smi for the device's used memory (MiB) until ``stop``: engines run in child processes (vLLM's
    workers, llama.cpp's child), which torch's own counters in this process cannot see."""
    while not stop.is_set():
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5
            )
            used = max(int(line) for line in out.stdout.split())
            peak[0] = max(peak[0], used)
        except (OSError, ValueError, subprocess.SubprocessError):
            return
        stop.wait(0.5)


def step(name: str, args: list[str], out: Path, timeout: float) -> dict:
    """One yarn_cli command; its JSON (when it printed one), time, exit code and peak device memory."""
    started = time.perf_counter()
    stop, peak = threading.Event(), [0]
    poller = threading.Thread(target=_peak_gpu_memory, args=(stop, peak), daemon=True)
    poller.start()
    try:
        done = subprocess.run([sys.executable, "-m", "yarn_cli", *args], capture_output=True, text=True, timeout=timeout)
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        code, stdout, stderr = 124, exc.stdout or "", f"timed out after {timeout:.0f} s"
    stop.set()
    (out / f"{name}.out").write_text(str(stdout))
    (out / f"{name}.err").write_text(str(stderr))
    try:
        data = json.loads(stdout) if stdout else None
    except ValueError:
        data = None
    return {
        "step": name,
        "exit": code,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_gpu_mib": peak[0] or None,
        "result": _summary(data, str(stderr)),
    }


def _summary(data: dict | None, stderr: str) -> str:
    """The line a reader wants from a step: the parity line and verdict, tune's choice, the loss curve's ends."""
    if not isinstance(data, dict):
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        return lines[-1][:160] if lines else ""
    parts = []
    if isinstance(data.get("parity"), dict):
        parts.append(str(data["parity"].get("line", "")))
    if isinstance(data.get("verdict"), dict):
        parts.append(f"verdict {data['verdict'].get('status')}")
    if "chosen" in data and isinstance(data.get("chosen"), dict):
        parts.append(f"chose s {data['chosen'].get('scale')} m {data['chosen'].get('m'):.4f}")
    if isinstance(data.get("loss"), list) and data["loss"]:
        losses = [item["loss"] for item in data["loss"]]
        parts.append(f"{data.get('precision')}: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return "; ".join(p for p in parts if p) or "ok"


def _missing(*modules: str) -> str | None:
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"not run: {', '.join(absent)} not installed" if absent else None


def _llama_cpp_offload() -> str | None:
    reason = _missing("llama_cpp")
    if reason:
        return reason
    import llama_cpp

    return None if llama_cpp.llama_supports_gpu_offload() else "not run: llama-cpp-python was built without GPU offload"


def models(work: Path, device: str) -> tuple[Path | None, Path]:
    """(the SmolLM2 GGUF or None, an HF folder of SmolLM2's weights or of a random model of its shape)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from yarn_cli.io.default_model import default_model_path

    folder = work / "smollm2-hf"
    try:
        gguf = default_model_path(download=True)
    except Exception:  # noqa: BLE001 - offline and not cached: the random stand-in below
        gguf = None
    if gguf is not None:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # a GGUF-loaded model will not save: the same weights in a plain one
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(model.state_dict())
        plain.save_pretrained(folder)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
        return gguf, folder
    print("SmolLM2's GGUF is not cached and cannot be fetched: a random model of its shape stands in", file=sys.stderr)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(tok_models.WordLevel({f"w{i}": i for i in range(49000)} | {"[UNK]": 49000}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]", bos_token="[UNK]", eos_token="[UNK]").save_pretrained(folder)
    return None, folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-check"))
    parser.add_argument("--length", default="10k", help="verify's length (past SmolLM2's trained 8k)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    options = parser.parse_args()
    import torch

    if options.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: this script checks the GPU paths (use --device cpu to try the script itself)", file=sys.stderr)
        return 2
    small = options.device == "cpu"
    out = options.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    work = out / "models"
    work.mkdir()
    gguf, folder = models(work, options.device)
    length = "1k" if small else options.length
    device = ["--device", options.device]
    rows = []

    def run(name: str, args: list[str], timeout: float = 600, skip: str | None = None) -> None:
        if skip:
            rows.append({"step": name, "exit": None, "seconds": 0.0, "peak_gpu_mib": None, "result": skip})
        else:
            rows.append(step(name, args, out, timeout))
        print(f"{rows[-1]['step']:<28} {rows[-1]['exit']!s:>4} {rows[-1]['seconds']:>7.1f} s  {rows[-1]['result']}", flush=True)

    x2 = work / "smollm2-x2"
    run("inspect hf", ["inspect", str(folder), "--scale", "2", "--json"])
    run("extend hf x2", ["extend", str(folder), "--scale", "2", "-o", str(x2), "--json"])
    if gguf is not None:
        run("inspect gguf", ["inspect", str(gguf), "--scale", "2", "--json"])
        run("extend gguf x2", ["extend", str(gguf), "--scale", "2", "-o", str(work / "smollm2-x2.gguf"), "--json"])
    protocol = ["--lengths", length, "--depths", "0.5", "--ppl-windows", "1", "--json", *device]
    run("verify native", ["verify", str(x2), "--engine", "native", *protocol])
    run("verify transformers", ["verify", str(x2), "--engine", "transformers", *protocol], skip=_missing("transformers", "accelerate"))
    llama_skip = _missing("llama_cpp") if small else _llama_cpp_offload()  # a CPU run needs no offload
    if gguf is not None:
        run("verify llama.cpp", ["verify", str(work / "smollm2-x2.gguf"), "--engine", "llama.cpp", *protocol], skip=llama_skip)
    vllm_flags = ["--dtype", "float32", "--enforce-eager"] if small else []
    run("verify vllm", ["verify", str(x2), "--engine", "vllm", *vllm_flags, *protocol], skip=_missing("vllm"))
    tune = ["tune", str(folder), "--scale", "2", "--docs", "1", "--passkeys", "0", "--budget", "1", "--json", *device]
    run("tune vllm", [*tune, "--engine", "vllm", *vllm_flags], skip=_missing("vllm"))
    train = ["finetune", str(folder), "--scale", "2", "--steps", "3" if small else "30", "--seq-len", "512" if small else "2048"]
    train += ["--grad-accum", "1", "--warmup", "3", "--save-steps", "1000", "--json"]
    run("finetune mixed", [*train, "-o", str(work / "ft-mixed")], skip=_missing("accelerate", "datasets"))
    run("finetune pure-bf16", [*train, "--pure-bf16", "-o", str(work / "ft-bf16")], skip=_missing("accelerate", "datasets"))
    report = {
        "device": torch.cuda.get_device_name() if options.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "model": "SmolLM2-135M-Instruct" if gguf is not None else "random model of SmolLM2-135M's shape",
        "length": length,
        "steps": rows,
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    failed = [r["step"] for r in rows if r["exit"] not in (None, 0, 1)]  # 1: verify's FAIL verdict, a result
    print(f"wrote {out / 'gpu_check.json'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
