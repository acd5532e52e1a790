"""The native engine: our forward pass over an HF folder or a GGUF. Any RoPE variant runs on the weights
loaded once: a variant is only a frequency table and a cos/sin factor from the math core."""

from __future__ import annotations

from pathlib import Path

import torch

from yarn_cli.core.extend import hf_plan
from yarn_cli.core.rope import variants
from yarn_cli.core.rope.spec import scaling_label
from yarn_cli.core.rope.variants import RopeVariant
from yarn_cli.native import weights
from yarn_cli.native.model import NativeModel, Rope
from yarn_cli.runtimes.base import Divergence, Generation, ModelFacts, Scored, available_host_memory, compute_dtype, stop_ids

DIVERGENCE_ROWS = 256  # positions whose two distributions are compared at once: 256 x vocabulary float64s, twice


class NativeEngine:
    name = implementation = "native"

    def __init__(
        self,
        model: Path,
        device: str,
        original_context: int | None = None,
        max_length: int = 0,
        progress=None,
        chunk: int = 16384,
        dtype: torch.dtype | None = None,
    ):
        self.device, self.path = device, model
        self.dtype = dtype or compute_dtype(device)
        self.chunk = chunk
        self.notes: list[str] = []
        self.spec, self.tokenizer, self.weights, eos, baked = _load(model, device, self.dtype, original_context, progress)
        self.stop = stop_ids(eos)
        spec = self.spec.rope
        if spec.scaling is None:
            self.notes.append("the checkpoint declares no RoPE scaling: 'extended' and 'baseline' are the same model")
        s = self.spec
        self.facts = ModelFacts(
            original_context=spec.original_context,
            target_context=spec.max_context,
            attention=s.attention,
            heads=s.heads,
            hidden=s.hidden,
            vocab=s.vocab,
            weight_bytes=sum(t.numel() * t.element_size() for t in {id(t): t for t in self.weights.values()}.values()),
            value_bytes=torch.finfo(self.dtype).bits // 8,
            scaling=scaling_label(spec.scaling),
            rope=spec,
            baked_attention_factor=baked,
        )
        self._models: dict[tuple, NativeModel] = {}
        self._local = None
        if self.spec.local_rope is not None:  # sliding layers: their own base, unscaled, the same under every variant
            local = variants.declared(self.spec.local_rope)
            self._local = Rope(torch.tensor(local.inv_freq, dtype=torch.float32), local.attention_factor)

    def model(self, variant: RopeVariant) -> NativeModel:
        """The forward pass under ``variant``: shares the weights with every other variant."""
        key = (variant.inv_freq, variant.attention_factor)
        if key not in self._models:
            rope = Rope(torch.tensor(variant.inv_freq, dtype=torch.float32), variant.attention_factor)
            self._models[key] = NativeModel(self.spec, self.weights, rope, self.device, self.dtype, self._local)
        return self._models[key]

    def unsupported(self, variant: RopeVariant) -> str | None:
        if len(variant.inv_freq) != self.spec.rope.rotary_dim // 2:
            return f"the variant has {len(variant.inv_freq)} frequencies; this model rotates {self.spec.rope.rotary_dim // 2} pairs"
        return None

    def reserve(self, tokens: int) -> None:
        """Caches are allocated per call, at the call's own length."""

    def generate(self, variant: RopeVariant, ids: list[int], max_new_tokens: int) -> Generation:
        model = self.model(variant)
        out = model.greedy(ids, max_new_tokens, self.chunk, self.stop)
        return Generation(out, len(ids), model.last_prefill_seconds, model.last_decode_seconds, model.last_decode_steps)

    def score(self, variant: RopeVariant, ids: list[int], score_from: int) -> Scored:
        model = self.model(variant)
        _, nll = model.prefill(ids, model.new_cache(len(ids)), self.chunk, score_from)
        return Scored([] if nll is None else nll.double().cpu().tolist(), len(ids), model.last_prefill_seconds, model.last_greedy)

    def divergence(self, reference: RopeVariant, variant: RopeVariant, ids: list[int], score_from: int) -> Divergence:
        """KL(P_reference ‖ P_variant) at each position of ids[score_from:-1]: both passes keep only their final hidden
        states, and the logits are taken DIVERGENCE_ROWS positions at a time, so no positions x vocabulary tensor is
        ever held whole."""
        import torch.nn.functional as F

        first, second = self.model(reference), self.model(variant)
        theirs = first.hidden_states(ids, self.chunk, score_from)
        seconds = first.last_prefill_seconds
        ours = second.hidden_states(ids, self.chunk, score_from)
        seconds += second.last_prefill_seconds
        divergences, agree = [], []
        for row in range(0, theirs.shape[0], DIVERGENCE_ROWS):
            p = F.log_softmax(first.logits(theirs[row : row + DIVERGENCE_ROWS]).double(), dim=-1)
            q = F.log_softmax(second.logits(ours[row : row + DIVERGENCE_ROWS]).double(), dim=-1)
            divergences.append((p.exp() * (p - q)).sum(-1))
            agree.append(p.argmax(-1) == q.argmax(-1))
        if not divergences:
            return Divergence([], [], 0, 0.0)
        return Divergence(torch.cat(divergences).cpu().tolist(), torch.cat(agree).cpu().tolist(), 2 * len(ids), seconds)

    def available_memory(self) -> int:
        if self.device.startswith("cuda"):
            free, _ = torch.cuda.mem_get_info()
            return int(free + self.facts.weight_bytes)
        return available_host_memory() + self.facts.weight_bytes

    def close(self) -> None:
        self._models.clear()


def _load(model: Path, device: str, dtype, original_context: int | None, progress):
    """(spec, tokenizer, weights, eos ids, baked m) from a GGUF or an HF folder."""
    from yarn_cli.io import tokenizers_io

    if model.suffix.lower() == ".gguf":
        from yarn_cli.io.gguf_reader import read_gguf

        gguf = read_gguf(model)
        spec = weights.gguf_spec(gguf, original_context)
        loaded = weights.load_gguf_weights(model, spec, device, dtype, progress)
        return spec, tokenizers_io.from_gguf(gguf), loaded, gguf.get("tokenizer.ggml.eos_token_id"), None
    from yarn_cli.io.checkpoint import read_json

    config = read_json(model / "config.json")
    spec = weights.hf_spec(model, config, original_context)
    loaded = weights.load_hf_weights(model, spec, device, dtype, progress)
    return spec, tokenizers_io.from_hf_folder(model), loaded, config.get("eos_token_id"), hf_plan.baked_factor(config)
