"""What `finetune` leaves in OUT: the weights in the source's dtype, the YaRN config marked fine-tuned, the
tokenizer, raised length caps, and the training record (yarn_finetune.json)."""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from yarn_cli.core.extend import hf_plan

if TYPE_CHECKING:
    from yarn_cli.usecases.finetune import FinetunePlan

RECORD_NAME = "yarn_finetune.json"


def training_record(
    plan: FinetunePlan, steps: int, tokens: int, corpus_tokens: int, windows: int, log: Any, seconds: float, ranks: list[dict[str, Any]]
) -> dict[str, Any]:
    import importlib.metadata as metadata

    versions = {}
    for name in ("yarn-cli", "torch", "transformers", "accelerate", "peft", "datasets"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {
        **plan.to_json(),
        "steps": steps,
        "tokens_seen": tokens,
        "corpus_tokens": corpus_tokens,
        "windows": windows,
        "processes": plan.batching.world,
        "per_device_batch": plan.batching.per_device,
        "grad_accum": plan.batching.grad_accum,
        "global_batch_windows": plan.batching.global_windows,
        "loss": log.losses,
        "seconds": round(seconds, 3),
        "versions": versions,
        "ranks": ranks,
    }


def write_output(plan: FinetunePlan, lm: Any, state: dict[str, Any] | None, tokenizer: Any, record: dict[str, Any]) -> None:
    """OUT, atomically: weights in the source's dtype, the YaRN config (4.x and 5.x forms) marked fine-tuned,
    tokenizer files, raised length caps and the training record."""
    import torch

    from yarn_cli.io import atomic, hf_writer

    source_dtype = plan.config.get("torch_dtype") or plan.config.get("dtype")
    if isinstance(source_dtype, str) and isinstance(getattr(torch, source_dtype, None), torch.dtype):
        dtype = getattr(torch, source_dtype)
        lm = lm.to(dtype)
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()} if state else state
    config = copy.deepcopy(plan.config)
    scaling = config.get("rope_scaling") if isinstance(config.get("rope_scaling"), dict) else None
    if scaling is not None:
        scaling["finetuned"] = True  # informational, as the paper's checkpoints record it
    with atomic.atomic_path(plan.output, plan.force) as tmp:
        tmp.mkdir()
        lm.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        _, caps = hf_plan.plan_cap_files(hf_writer.read_cap_files(tmp), plan.target_context)
        for name, data in caps.items():
            (tmp / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        (tmp / RECORD_NAME).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
        atomic.fsync_tree(tmp)
