"""The transformers engine (optional extra): AutoModelForCausalLM on the folder, proving the written config
works in the runtime most people use. The declared variant runs the rotary module transformers built from
the config itself; any other variant swaps in a rotary module computing exactly that variant's frequencies
and factor, so the weights are loaded once.

The rotary module is found through the model's decoder (``get_decoder()``), whatever the family calls its
attribute: ``model.rotary_emb`` (llama), ``gpt_neox.rotary_emb``, a multimodal model's language model.
"""

from __future__ import annotations

import contextlib
import copy
import time
from pathlib import Path
from typing import Any

from yarn_cli.core.rope.variants import RopeVariant
from yarn_cli.core.verify.plan import HEAD_ROWS
from yarn_cli.errors import InputError, UnsupportedError
from yarn_cli.io.tokenizers_io import prompt_prefix
from yarn_cli.runtimes.base import Generation, ModelFacts, Scored, available_host_memory, compute_dtype, stop_ids

LOGITS_BYTES = 1 << 30  # scored positions x vocabulary x 4 bytes above which the head runs HEAD_ROWS at a time


def _with_hidden(output: Any, hidden: Any) -> Any:
    """The decoder's output with ``hidden`` as its final hidden states (a slice of rows)."""
    changed = copy.copy(output)
    changed.last_hidden_state = hidden
    return changed


class TransformersEngine:
    name = implementation = "transformers"

    def __init__(
        self, path: Path, device: str, original_context: int | None = None, max_length: int = 0, progress=None, allow_gguf: bool = False, dtype=None
    ):
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError as exc:
            from yarn_cli.io.packages import needs

            raise InputError(needs("--engine transformers", "transformers")) from exc
        is_gguf = path.suffix.lower() == ".gguf"
        if is_gguf and not allow_gguf:
            raise InputError("--engine transformers runs Hugging Face folders; for a GGUF use --engine native or llama.cpp")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # verify shows its own progress; stderr keeps to one line per message
        self.torch, self.device, self.path, self.notes = torch, device, path, []
        dtype = dtype or compute_dtype(device)
        where = dict(pretrained_model_name_or_path=path.parent, gguf_file=path.name) if is_gguf else dict(pretrained_model_name_or_path=path)
        with _quiet_gguf_loading(is_gguf):
            config = _gguf_config(path, where) if is_gguf else None
            extra = {"config": config} if config is not None else {}
            # straight onto the GPU (no whole copy in host RAM first); spread over every GPU where there are several
            placed = {"device_map": "auto" if torch.cuda.device_count() > 1 else device} if device.startswith("cuda") else {}
            self.model = AutoModelForCausalLM.from_pretrained(**where, **extra, dtype=dtype, attn_implementation="sdpa", **placed)
            self.model = (self.model if placed else self.model.to(device)).eval()
        self.decoder = self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model
        self._slots = rotary_slots(self.decoder)
        if not self._slots:
            raise UnsupportedError(f"transformers' {type(self.model).__name__} has no rotary module yarn_cli can find")
        self.facts = _facts(path, original_context, self.model, dtype)
        self.tokenizer = None if is_gguf else _tokenizer(path)
        self._modules: dict[tuple, Any] = {}
        self._softmax = _softmax_slots(self.decoder, self.facts.rope)

    # --- variants ---------------------------------------------------------------------------------------------

    def unsupported(self, variant: RopeVariant) -> str | None:
        module = self._slots[0][2]
        count = getattr(module, _prefix(module) + "inv_freq").shape[0]
        if variant.kind != "declared" and len(variant.inv_freq) != count:
            return f"transformers' rotary module has {count} frequencies where the variant has {len(variant.inv_freq)}"
        return None

    def _rotary(self, variant: RopeVariant):
        """The module computing ``variant``: transformers' own for the declared one, else one built from the
        config with the scaling removed and the variant's frequencies and factor written in."""
        if variant.kind == "declared":
            return None
        key = (variant.inv_freq, variant.attention_factor)
        if key not in self._modules:
            original = self._slots[0][2]
            config = copy.deepcopy(self.decoder.config)
            config.rope_parameters = _plain_parameters(getattr(config, "rope_parameters", None), variant.base)
            module = type(original)(config=config).to(self.device)
            prefix = _prefix(module)
            current = getattr(module, prefix + "inv_freq")
            current.copy_(self.torch.tensor(variant.inv_freq, dtype=current.dtype))
            setattr(module, prefix + "attention_scaling", variant.attention_factor)
            self._modules[key] = module
        return self._modules[key]

    def _use(self, variant: RopeVariant | None) -> None:
        """Put ``variant``'s rotary module in every slot (None: transformers' own modules back), and MLA's softmax
        factor into every attention module's scale."""
        replacement = None if variant is None else self._rotary(variant)
        for parent, attr, original in self._slots:
            setattr(parent, attr, replacement if replacement is not None else original)
        for module, declared, plain in self._softmax:
            module.scaling = declared if replacement is None else plain * variant.softmax_mscale**2

    # --- evaluation -------------------------------------------------------------------------------------------

    def generate(self, variant: RopeVariant, ids: list[int], max_new_tokens: int) -> Generation:
        """Greedy decoding with transformers' own cache, the prefill and each decoding step timed apart."""
        torch = self.torch
        self._use(variant)
        inputs = torch.tensor([ids], device=self.device)
        out: list[int] = []
        steps = 0
        with torch.inference_mode():
            started = time.perf_counter()
            result = self.model(inputs, use_cache=True, logits_to_keep=1)
            prefill = self._elapsed(started)
            started = time.perf_counter()
            for _ in range(max_new_tokens):
                token = int(result.logits[0, -1].argmax())
                if token in self._stop:
                    break
                out.append(token)
                if len(out) == max_new_tokens:
                    break
                result = self.model(torch.tensor([[token]], device=self.device), **_cache_of(result), use_cache=True, logits_to_keep=1)
                steps += 1
            decode = self._elapsed(started)
        return Generation(out, len(ids), prefill, decode, steps)

    def score(self, variant: RopeVariant, ids: list[int], score_from: int) -> Scored:
        """One forward pass over ``ids``. Where the scored positions' float32 logits would pass LOGITS_BYTES (49k
        positions of a 152k vocabulary are 30 GB), the decoder runs once and the model's own head (its
        soft-capping or logit scale included) is applied to its hidden states HEAD_ROWS positions at a time."""
        torch = self.torch
        self._use(variant)
        inputs = torch.tensor([ids], device=self.device)
        kept = len(ids) - score_from
        targets = inputs[0, score_from + 1 :]
        with torch.inference_mode():
            started = time.perf_counter()
            if kept * self.facts.vocab * 4 <= LOGITS_BYTES:
                logits = self.model(inputs, logits_to_keep=kept).logits[0].float()[: targets.shape[0]]
                losses, hits = torch.nn.functional.cross_entropy(logits, targets, reduction="none"), logits.argmax(-1) == targets
            else:
                losses, hits = self._score_by_rows(inputs, score_from, targets)
            seconds = self._elapsed(started)
        return Scored(losses.double().cpu().tolist(), len(ids), seconds, hits.tolist())

    def _score_by_rows(self, inputs: Any, score_from: int, targets: Any) -> tuple[Any, Any]:
        """The decoder's final hidden states from one pass (the model computes one position's logits), then the
        model's forward again per slice of rows with its decoder answering from those states, so every family's
        head, whatever it multiplies or caps, is the one that runs."""
        torch = self.torch
        captured: list[Any] = []
        hook = self.decoder.register_forward_hook(lambda module, args, output: captured.append(output))
        try:
            self.model(inputs, logits_to_keep=1)
        finally:
            hook.remove()
        output = captured[-1]
        hidden = output.last_hidden_state
        losses, hits = [], []
        try:
            for row in range(score_from, score_from + targets.shape[0], HEAD_ROWS):
                end = min(row + HEAD_ROWS, score_from + targets.shape[0])
                self.decoder.forward = lambda *args, _rows=slice(row, end), **kwargs: _with_hidden(output, hidden[:, _rows])
                logits = self.model(inputs[:, row:end], logits_to_keep=0).logits[0].float()
                part = targets[row - score_from : end - score_from]
                losses.append(torch.nn.functional.cross_entropy(logits, part, reduction="none"))
                hits.append(logits.argmax(-1) == part)
        finally:
            del self.decoder.forward  # the class's own forward again
        return torch.cat(losses), torch.cat(hits)

    def _elapsed(self, started: float) -> float:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()
        return time.perf_counter() - started

    @property
    def _stop(self) -> frozenset[int]:
        return stop_ids(self.model.config.eos_token_id)

    def reserve(self, tokens: int) -> None:
        """transformers' cache grows with the sequence: nothing to size up front."""

    def available_memory(self) -> int:
        if self.device.startswith("cuda"):
            free, _ = self.torch.cuda.mem_get_info()
            return int(free + self.facts.weight_bytes)
        return available_host_memory() + self.facts.weight_bytes

    def close(self) -> None:
        self._use(None)
        self._modules.clear()


@contextlib.contextmanager
def _quiet_gguf_loading(active: bool):
    """transformers' GGUF loader draws its own tqdm bar, which disable_progress_bar() does not reach; verify
    has its own progress, and stderr keeps to one line per message."""
    if not active:
        yield
        return
    import functools

    from transformers import modeling_gguf_pytorch_utils as loader

    original = loader.tqdm
    loader.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        loader.tqdm = original


def _cache_of(output) -> dict[str, Any]:
    """The cache to pass back: transformers 5.2x names it ``cache``, earlier versions ``past_key_values``."""
    name = "cache" if "cache" in output.keys() else "past_key_values"
    return {name: output[name]}


def rotary_slots(decoder) -> list[tuple[Any, str, Any]]:
    """(parent, attribute, module) of every rotary module inside the decoder: one per model in most families,
    one per layer in a few. A rotary module is one that holds an ``inv_freq`` buffer (or Gemma 3's per-layer-type
    ``full_attention_inv_freq``)."""
    slots = []
    for parent in decoder.modules():
        for attr, child in parent.named_children():
            if "Rotary" in type(child).__name__ and hasattr(child, _prefix(child) + "inv_freq"):
                slots.append((parent, attr, child))
    return slots


def _softmax_slots(decoder, spec) -> list[tuple[Any, float, float]]:
    """MLA only: (attention module, its loaded softmax scale, that scale without the declared factor M²). transformers
    bakes M² into each attention module's ``scaling`` when it loads the config, so a variant must set it there."""
    declared = spec.softmax_mscale() if spec is not None else None
    if declared is None:
        return []
    return [
        (module, module.scaling, module.scaling / declared**2)
        for module in decoder.modules()
        if type(module).__name__.endswith("Attention") and isinstance(getattr(module, "scaling", None), float)
    ]


def _prefix(module) -> str:
    """Per-layer-type rotary modules (Gemma 3) keep one set of buffers per type; the scaling sits on the global one."""
    return "full_attention_" if hasattr(module, "full_attention_inv_freq") else ""


def _plain_parameters(parameters: dict | None, theta: float) -> dict:
    """The loaded config's rope_parameters with the scaling removed (global block only, for per-layer-type
    configs), at ``theta``: what a replacement rotary module is built from before its frequencies are set."""
    parameters = copy.deepcopy(parameters or {})
    plain = {"rope_type": "default", "rope_theta": theta}
    if "full_attention" in parameters:
        parameters["full_attention"] = {**{k: v for k, v in parameters["full_attention"].items() if k == "partial_rotary_factor"}, **plain}
        return parameters
    return {**{k: v for k, v in parameters.items() if k == "partial_rotary_factor"}, **plain}


def _facts(path: Path, original_context: int | None, model, dtype) -> ModelFacts:
    """The declared RoPE and the sizes, read from the checkpoint's own header (config.json or GGUF metadata)."""
    import torch

    from yarn_cli.core.checkpoint import hf_config, hf_layout
    from yarn_cli.core.extend import hf_plan
    from yarn_cli.core.rope.spec import scaling_label
    from yarn_cli.io.checkpoint import read_json, summarize_gguf

    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    value_bytes = torch.finfo(dtype).bits // 8
    if path.suffix.lower() == ".gguf":
        summary = summarize_gguf(path, original_context)
        spec = summary.rope
        return ModelFacts(
            spec.original_context,
            spec.max_context,
            summary.attention,
            summary.attention_heads or 0,
            summary.hidden_size or 0,
            int(model.config.vocab_size),
            weight_bytes,
            value_bytes,
            scaling_label(spec.scaling),
            spec,
        )
    raw = read_json(path / "config.json")
    specs, _ = hf_config.read_rope_specs(raw, original_context)
    dims = hf_layout.model_dims(raw)
    return ModelFacts(
        specs[0].original_context,
        specs[0].max_context,
        dims["attention"],
        dims["heads"],
        dims["hidden_size"],
        int(hf_config.text_config(raw).get("vocab_size", 0)),
        weight_bytes,
        value_bytes,
        scaling_label(specs[0].scaling),
        specs[0],
        hf_plan.baked_factor(raw),
    )


def _tokenizer(folder: Path):
    """The same tokenizer.json the native engine reads, so both engines see identical prompts."""
    if (folder / "tokenizer.json").exists():
        from yarn_cli.io.tokenizers_io import from_hf_folder

        return from_hf_folder(folder)
    from transformers import AutoTokenizer

    return _Wrapped(AutoTokenizer.from_pretrained(folder))


class _Wrapped:
    def __init__(self, tokenizer):
        self.inner = tokenizer
        self.bos = prompt_prefix(
            lambda text: tokenizer.encode(text, add_special_tokens=True), lambda text: tokenizer.encode(text, add_special_tokens=False)
        )
        self.bos_id, self.eos_id = tokenizer.bos_token_id, tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.inner.decode(ids, skip_special_tokens=True)


def _gguf_config(path: Path, where: dict[str, Any]) -> Any:
    """transformers' config for a GGUF, with what its GGUF reader leaves at a default that llama.cpp does not use:
    Gemma 3's query_pre_attn_scalar (the GGUF stores none; transformers takes 256, llama.cpp head_dim or 168)."""
    from transformers import AutoConfig

    from yarn_cli.core.checkpoint import gguf_meta
    from yarn_cli.io.checkpoint import gguf_metadata
    from yarn_cli.io.gguf_reader import read_gguf

    config = AutoConfig.from_pretrained(**where)
    scalar = gguf_meta.query_pre_attn_scalar(gguf_metadata(read_gguf(path)))
    text = getattr(config, "text_config", None) or config
    if scalar is not None and hasattr(text, "query_pre_attn_scalar"):
        text.query_pre_attn_scalar = int(scalar) if float(scalar).is_integer() else scalar  # the config field is typed int
    return config
