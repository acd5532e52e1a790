"""The llama.cpp engine (optional extra, llama-cpp-python) for GGUF: the extended model with default
context parameters, so the metadata alone has to do the job; the baseline forces RoPE scaling off.
"""

from __future__ import annotations

import time
from pathlib import Path

from yarn_cli.engines.base import ModelFacts, available_host_memory
from yarn_cli.errors import InputError

ROPE_SCALING_NONE = 0  # llama.cpp's LLAMA_ROPE_SCALING_TYPE_NONE


class LlamaCppEngine:
    name = "llama.cpp"

    def __init__(self, model: Path, device: str, original_context: int | None = None, max_length: int = 0, progress=None):
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise InputError("--engine llama.cpp needs llama-cpp-python: pip install 'yarn-cli[llama-cpp]'") from exc
        if model.suffix.lower() != ".gguf":
            raise InputError("--engine llama.cpp runs .gguf files; for a Hugging Face folder use --engine native or transformers")
        from yarn_cli.core import verify_plan
        from yarn_cli.core.kv_cache import AttentionLayout
        from yarn_cli.core.model import scaling_label
        from yarn_cli.io.checkpoint import summarize_gguf

        summary = summarize_gguf(model, original_context)
        spec = summary.rope
        n_ctx = max(max_length, spec.max_context) + 64
        gpu_layers = -1 if device.startswith("cuda") else 0
        common = dict(n_ctx=n_ctx, logits_all=True, verbose=False, n_gpu_layers=gpu_layers)
        self.models = {
            "extended": Llama(str(model), **common),
            "baseline": Llama(str(model), rope_scaling_type=ROPE_SCALING_NONE, rope_freq_scale=1.0,
                              rope_freq_base=verify_plan.baseline(spec, None).theta, **common),
        }
        self.device = device
        self.tokenizer = _Tokenizer(self.models["extended"])
        self.notes: list[str] = []
        self.facts = ModelFacts(
            original_context=spec.original_context, target_context=spec.max_context,
            attention=summary.attention or AttentionLayout(summary.layers or 0, 0),
            heads=summary.attention_heads or 0, hidden=summary.hidden_size or 0, vocab=self.models["extended"].n_vocab(),
            weight_bytes=summary.tensors.bytes, value_bytes=2, scaling=scaling_label(spec.scaling), rope=spec,
        )
        self._path, self._original_context = model, original_context
        self._rate = 0.0

    def _eval(self, variant: str, ids: list[int]):
        model = self.models[variant]
        model.reset()
        started = time.perf_counter()
        model.eval(ids)
        self._rate = len(ids) / max(time.perf_counter() - started, 1e-9)
        return model

    def greedy(self, variant: str, ids: list[int], max_new_tokens: int) -> list[int]:
        model = self._eval(variant, ids)
        out = []
        for _ in range(max_new_tokens):
            token = int(model.scores[model.n_tokens - 1].argmax())
            if token == model.token_eos():
                break
            out.append(token)
            model.eval([token])
        return out

    def token_losses(self, variant: str, ids: list[int], score_from: int) -> list[float]:
        import numpy as np

        model = self._eval(variant, ids)
        logits = np.asarray(model.scores[score_from : len(ids) - 1], dtype=np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        log_z = np.log(np.exp(logits).sum(axis=1))
        targets = np.asarray(ids[score_from + 1 :])
        return (log_z - logits[np.arange(len(targets)), targets]).tolist()

    def tokens_per_second(self) -> float:
        return self._rate

    def parity_reference(self):
        from yarn_cli.engines.parity import reference_for

        return reference_for(self._path, self._original_context)  # a float32 copy: llama.cpp's weights stay in C

    def available_memory(self) -> int:
        return available_host_memory() + self.facts.weight_bytes


class _Tokenizer:
    def __init__(self, model):
        self.model = model
        self.bos = [model.token_bos()] if model._model.add_bos_token() else []

    def encode(self, text: str) -> list[int]:
        return self.model.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def decode(self, ids: list[int]) -> str:
        return self.model.detokenize(ids).decode("utf-8", errors="replace")


