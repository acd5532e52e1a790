"""The transformers engine (optional extra): AutoModelForCausalLM on the folder, proving the written
config works in the runtime most people use. The baseline swaps in a rotary module built from the
same config with the scaling removed, so the weights are loaded once.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

from yarn_cli.engines.base import ModelFacts, available_host_memory
from yarn_cli.errors import InputError, UnsupportedError


class TransformersEngine:
    name = "transformers"

    def __init__(self, folder: Path, device: str, original_context: int | None = None, max_length: int = 0, progress=None):
        try:
            import torch
            from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise InputError("--engine transformers needs transformers: pip install 'yarn-cli[transformers]'") from exc
        if folder.suffix.lower() == ".gguf":
            raise InputError("--engine transformers runs Hugging Face folders; for a GGUF use --engine native or llama.cpp")
        from yarn_cli.core import hf_config, hf_plan, verify_plan
        from yarn_cli.core.model import scaling_label
        from yarn_cli.io.checkpoint import read_json

        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # verify shows its own progress; stderr keeps to one line per message
        self.torch, self.device = torch, device
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        config = AutoConfig.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa").to(device).eval()
        raw = read_json(folder / "config.json")
        specs, _ = hf_config.read_rope_specs(raw, original_context)
        spec = specs[0]
        baked = hf_plan.baked_factor(raw)
        base = verify_plan.baseline(spec, baked)
        self._plain_config = copy.deepcopy(config)
        self._plain_config.rope_parameters = _baseline_parameters(getattr(config, "rope_parameters", None), base)
        self._owner = self.model.model if hasattr(self.model, "model") else self.model
        self.rotary = {"extended": self._owner.rotary_emb, "baseline": self._plain_rotary(base.attention_factor)}
        # The same tokenizer.json the native engine reads, so both engines see identical prompts.
        if (folder / "tokenizer.json").exists():
            from yarn_cli.io.tokenizers_io import from_hf_folder

            self.tokenizer = from_hf_folder(folder)
        else:
            self.tokenizer = _Wrapped(AutoTokenizer.from_pretrained(folder))
        self._pad_id = getattr(self.tokenizer, "pad_id", None)
        if self._pad_id is None:
            eos = config.eos_token_id
            self._pad_id = (eos[0] if isinstance(eos, list) else eos) if eos is not None else 0
        self.notes: list[str] = []
        value_bytes = torch.finfo(dtype).bits // 8
        dims = hf_config.model_dims(raw)
        self.facts = ModelFacts(
            original_context=spec.original_context, target_context=spec.max_context, attention=dims["attention"],
            heads=dims["heads"], hidden=dims["hidden_size"],
            vocab=int(hf_config.text_config(raw).get("vocab_size", 0)),
            weight_bytes=sum(p.numel() * p.element_size() for p in self.model.parameters()), value_bytes=value_bytes,
            scaling=scaling_label(spec.scaling), rope=spec, baked_attention_factor=baked,
        )
        self._rate = 0.0

    def _plain_rotary(self, attention_factor: float):
        """A rotary module built from the config with the scaling removed, cos/sin multiplied by ``attention_factor``."""
        module = type(self._owner.rotary_emb)(config=self._plain_config).to(self.device)
        setattr(module, _prefix(module) + "attention_scaling", attention_factor)
        return module

    def rotary_with(self, inv_freq, attention_factor: float):
        """A rotary module computing exactly these frequencies and factor (a parity hypothesis)."""
        module = self._plain_rotary(attention_factor)
        current = getattr(module, _prefix(module) + "inv_freq")
        if current.shape[0] != len(inv_freq):
            raise UnsupportedError(f"transformers' rotary module has {current.shape[0]} frequencies where the reference has {len(inv_freq)}")
        current.copy_(self.torch.tensor(inv_freq, dtype=current.dtype))
        return module

    def parity_reference(self) -> TransformersReference:
        return TransformersReference(self)

    def _use(self, variant: str) -> None:
        self._owner.rotary_emb = self.rotary[variant]

    def greedy(self, variant: str, ids: list[int], max_new_tokens: int) -> list[int]:
        torch = self.torch
        self._use(variant)
        inputs = torch.tensor([ids], device=self.device)
        started = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=max_new_tokens,
                                      do_sample=False, pad_token_id=self._pad_id)
        self._rate = len(ids) / max(time.perf_counter() - started, 1e-9)
        return out[0, len(ids):].tolist()

    def token_losses(self, variant: str, ids: list[int], score_from: int) -> list[float]:
        self._use(variant)
        return self.losses(ids, score_from)

    def losses(self, ids: list[int], score_from: int) -> list[float]:
        """Next-token NLL of ids[score_from+1:] with whichever rotary module is in place."""
        torch = self.torch
        keep = len(ids) - score_from
        inputs = torch.tensor([ids], device=self.device)
        started = time.perf_counter()
        with torch.inference_mode():
            logits = self.model(inputs, logits_to_keep=keep).logits[0].float()
        self._rate = len(ids) / max(time.perf_counter() - started, 1e-9)
        targets = inputs[0, score_from + 1 :]
        return torch.nn.functional.cross_entropy(logits[: targets.shape[0]], targets, reduction="none").double().cpu().tolist()

    def tokens_per_second(self) -> float:
        return self._rate

    def available_memory(self) -> int:
        if self.device.startswith("cuda"):
            free, _ = self.torch.cuda.mem_get_info()
            return int(free + self.facts.weight_bytes)
        return available_host_memory() + self.facts.weight_bytes


def _prefix(module) -> str:
    """Per-layer-type rotary modules (Gemma 3) keep one set of buffers per type; the scaling sits on the global one."""
    return "full_attention_" if hasattr(module, "full_attention_inv_freq") else ""


class TransformersReference:
    """The parity reference on transformers' forward pass: the loaded model, each hypothesis's rotary module swapped in."""

    name = "transformers"

    def __init__(self, engine: TransformersEngine):
        self.engine = engine

    @classmethod
    def load(cls, folder: Path) -> TransformersReference:
        return cls(TransformersEngine(folder, "cpu"))

    def losses(self, hypothesis, ids: list[int]) -> list[float]:
        engine = self.engine
        engine._owner.rotary_emb = engine.rotary_with(hypothesis.inv_freq, hypothesis.attention_factor)
        try:
            return engine.losses(ids, 0)
        finally:
            engine._owner.rotary_emb = engine.rotary["extended"]


def _baseline_parameters(parameters: dict | None, base) -> dict:
    """The loaded config's rope_parameters with the scaling removed (global block only, for per-layer-type
    configs), at the baseline's base: what transformers builds the baseline's rotary module from."""
    parameters = copy.deepcopy(parameters or {})
    plain = {"rope_type": "default", "rope_theta": base.theta}
    if "full_attention" in parameters:
        parameters["full_attention"] = plain
        return parameters
    return {**{k: v for k, v in parameters.items() if k == "partial_rotary_factor"}, **plain}


class _Wrapped:
    def __init__(self, tokenizer):
        self.inner = tokenizer
        self.bos = [tokenizer.bos_token_id] if getattr(tokenizer, "add_bos_token", False) and tokenizer.bos_token_id is not None else []
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.inner.decode(ids, skip_special_tokens=True)
