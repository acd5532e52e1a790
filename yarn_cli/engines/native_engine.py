"""The native engine: our forward pass over an HF folder or a GGUF, extended and baseline RoPE from the math core."""

from __future__ import annotations

from pathlib import Path

import torch

from yarn_cli.core import analysis, hf_plan, rope, verify_plan
from yarn_cli.core.model import scaling_label
from yarn_cli.engines.base import ModelFacts, available_host_memory
from yarn_cli.engines.native import NativeModel, Rope
from yarn_cli.io import tokenizers_io, weights


class NativeEngine:
    name = "native"

    def __init__(self, model: Path, device: str, original_context: int | None = None, max_length: int = 0, progress=None, chunk: int = 16384):
        self.device, self._path = device, model
        self.dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self.chunk = chunk
        self.notes: list[str] = []
        baked = None
        if model.suffix.lower() == ".gguf":
            from yarn_cli.io.gguf_reader import read_gguf

            gguf = read_gguf(model)
            self.spec = weights.gguf_spec(gguf, original_context)
            self.tokenizer = tokenizers_io.from_gguf(gguf)
            self.weights = weights.load_gguf_weights(model, self.spec, device, self.dtype, progress)
            eos = gguf.get("tokenizer.ggml.eos_token_id")
        else:
            from yarn_cli.io.checkpoint import read_json

            config = read_json(model / "config.json")
            self.spec = weights.hf_spec(model, config, original_context)
            self.tokenizer = tokenizers_io.from_hf_folder(model)
            self.weights = weights.load_hf_weights(model, self.spec, device, self.dtype, progress)
            eos = config.get("eos_token_id")
            baked = hf_plan.baked_factor(config)
        self.stop = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        spec = self.spec.rope
        extended = analysis.existing_frequencies(spec)
        base = verify_plan.baseline(spec, baked)
        original = rope.inv_freq(base.theta, base.rotary_dim)
        if spec.scaling is None:
            self.notes.append("the checkpoint declares no RoPE scaling: 'extended' and 'baseline' are the same model")
        self.models = {
            "extended": NativeModel(self.spec, self.weights, Rope(torch.tensor(extended.inv_freq, dtype=torch.float32), extended.attention_factor), device, self.dtype),
            "baseline": NativeModel(self.spec, self.weights, Rope(torch.tensor(original, dtype=torch.float32), base.attention_factor), device, self.dtype),
        }
        value_bytes = torch.finfo(self.dtype).bits // 8
        s = self.spec
        self.facts = ModelFacts(
            original_context=spec.original_context,
            target_context=spec.max_context,
            attention=s.attention, heads=s.heads, hidden=s.hidden, vocab=s.vocab,
            weight_bytes=sum(t.numel() * t.element_size() for t in {id(t): t for t in self.weights.values()}.values()),
            value_bytes=value_bytes,
            scaling=scaling_label(spec.scaling), rope=spec, baked_attention_factor=baked,
        )
        self._last_rate = 0.0

    def greedy(self, variant: str, ids: list[int], max_new_tokens: int) -> list[int]:
        model = self.models[variant]
        out = model.greedy(ids, max_new_tokens, self.chunk, self.stop)
        self._last_rate = model.last_prefill_tokens_per_second
        return out

    def token_losses(self, variant: str, ids: list[int], score_from: int) -> list[float]:
        model = self.models[variant]
        cache = model.new_cache(len(ids))
        _, nll = model.prefill(ids, cache, self.chunk, score_from)
        self._last_rate = model.last_prefill_tokens_per_second
        return [] if nll is None else nll.double().cpu().tolist()

    def tokens_per_second(self) -> float:
        return self._last_rate

    def parity_reference(self):
        from yarn_cli.engines.parity import NativeReference, independent_reference

        # On a CPU, transformers' forward pass over an HF folder: a second implementation, so the check
        # is not our forward pass against itself. Elsewhere (or without transformers) the weights already loaded.
        if self.device == "cpu" and self.spec.source_format == "hf":
            reference = independent_reference(self._path, self.spec.weight_bytes(4))
            if reference is not None:
                return reference
        return NativeReference(self.spec, self.weights, self.device, self.dtype)

    def available_memory(self) -> int:
        if self.device.startswith("cuda"):
            free, _ = torch.cuda.mem_get_info()
            return int(free + sum(t.numel() * t.element_size() for t in self.weights.values()))
        return available_host_memory() + self.facts.weight_bytes
