"""One `yarn finetune` training step against a plain transformers `Trainer` step, same model and length.

The model is SmolLM2-135M's shape with random weights (30 layers, hidden 576, 9 heads, 3 KV heads, 49,152
vocabulary, tied embeddings). Each side runs in its own process for two optimizer steps at batch 1; the
second step is timed (the first warms the allocator), and the peak is the process's maximum resident memory.
"ours" is what `yarn finetune` builds: gradient checkpointing, the chunked loss (no sequence x vocabulary
logits), our Trainer arguments. "plain" is `Trainer(model, TrainingArguments(...))` with its defaults and
the model's own loss. Target: ours at most half the peak memory, at no worse than 0.8x the tokens/s.

    python benchmarks/bench_finetune.py [--length 8192]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMOLLM2_135M = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=8192,
    rope_theta=100000.0,
    tie_word_embeddings=True,
    rms_norm_eps=1e-5,
)


def child(mode: str, length: int, work: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Trainer, TrainerCallback, TrainingArguments

    from yarn_cli.core.finetune.plan import Batching, Recipe
    from yarn_cli.training import trainer as engine

    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(LlamaConfig(**SMOLLM2_135M), attn_implementation="sdpa")
    windows = torch.randint(0, SMOLLM2_135M["vocab_size"], (2, length))
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

        def on_step_begin(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    if mode == "ours":
        engine.enable_checkpointing(lm)
        lm.config.use_cache = False
        recipe = Recipe(steps=2, warmup=0, save_steps=10**6)
        args = engine.training_arguments(recipe, Batching(1, 1, 1), work, on_gpu=False)
        trainer = Trainer(model=engine.LossModel(lm), args=args, train_dataset=engine.Windows(windows), callbacks=[Clock()])
        engine.quiet(trainer)
    else:
        args = TrainingArguments(
            output_dir=str(work), max_steps=2, per_device_train_batch_size=1, use_cpu=True, report_to=[], save_strategy="no", disable_tqdm=True
        )
        trainer = Trainer(model=lm, args=args, train_dataset=engine.Windows(windows), callbacks=[Clock()])
    trainer.train()
    step_seconds = stamps[3] - stamps[2]
    return {
        "mode": mode,
        "length": length,
        "step_seconds": step_seconds,
        "tokens_per_second": length / step_seconds,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--child", choices=("ours", "plain"))
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(child(args.child, args.length, Path(tmp))))
        return
    results = {}
    for mode in ("ours", "plain"):
        done = subprocess.run([sys.executable, __file__, "--child", mode, "--length", str(args.length)], capture_output=True, text=True, check=True)
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    ours, plain = results["ours"], results["plain"]
    gib = 1024**3
    print(f"SmolLM2-135M shape, {args.length:,}-token window, batch 1, CPU, second optimizer step")
    for name, r in (("yarn finetune", ours), ("plain Trainer", plain)):
        print(f"{name:14}: {r['step_seconds']:7.1f} s/step, {r['tokens_per_second']:7.1f} tok/s, peak {r['peak_rss_bytes'] / gib:5.2f} GiB")
    memory = ours["peak_rss_bytes"] / plain["peak_rss_bytes"]
    speed = ours["tokens_per_second"] / plain["tokens_per_second"]
    print(f"peak memory ratio (ours / plain): {memory:.2f} (target <= 0.5: {'met' if memory <= 0.5 else 'MISSED'})")
    print(f"throughput ratio  (ours / plain): {speed:.2f} (target >= 0.8: {'met' if speed >= 0.8 else 'MISSED'})")


if __name__ == "__main__":
    main()
