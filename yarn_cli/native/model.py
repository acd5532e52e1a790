"""The native forward pass: a compact llama-family model (llama, mistral, qwen2 biases, qwen3 qk-norm; GQA) for verify,
and Gemma 3 (sandwich norms that multiply by 1 + w, GeGLU, scaled embeddings, its own q·k scale, and sliding-window
layers with their own unscaled RoPE).

RoPE frequencies and the attention factor come from our math core, so the model runs exactly the
scaling the checkpoint declares (or none, for the baseline). Attention goes through
scaled_dot_product_attention (flash kernels on CUDA); long prompts are prefilled in chunks into a
preallocated KV cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from yarn_cli.core.verify.plan import HEAD_ROWS
from yarn_cli.native.weights import NativeSpec


@dataclass
class Rope:
    inv_freq: torch.Tensor  # float32, D/2
    attention_factor: float


class NativeModel:
    def __init__(self, spec: NativeSpec, weights: dict[str, torch.Tensor], rope: Rope, device: str, dtype: torch.dtype, local: Rope | None = None):
        self.spec, self.w, self.device, self.dtype = spec, weights, device, dtype
        self.ropes = {"global": rope, "local": local or rope}  # sliding layers keep their own RoPE, whatever the variant
        self._tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.sliding = frozenset(spec.attention.sliding_layers) if spec.attention else frozenset()
        self.last_prefill_seconds = self.last_decode_seconds = 0.0
        self.last_decode_steps = 0
        self.last_greedy: list[bool] = []

    @property
    def rope(self) -> Rope:
        return self.ropes["global"]

    @rope.setter
    def rope(self, rope: Rope) -> None:
        """Another global RoPE (the parity tests inject faults so); its cos/sin table is rebuilt on the next pass."""
        self.ropes["global"] = rope
        self._tables.pop("global", None)

    # RoPE, computed as transformers does: float32 positions x float32 inv_freq, cos/sin x m
    def _cos_sin(self, length: int, which: str = "global") -> tuple[torch.Tensor, torch.Tensor]:
        cached = self._tables.get(which)
        if cached is None or cached[0].shape[0] < length:
            size = max(length, 2 * (0 if cached is None else cached[0].shape[0]))
            rope = self.ropes[which]
            positions = torch.arange(size, device=self.device, dtype=torch.float32)
            freqs = torch.outer(positions, rope.inv_freq.to(self.device))
            emb = torch.cat((freqs, freqs), dim=-1)
            self._tables[which] = ((emb.cos() * rope.attention_factor).to(self.dtype), (emb.sin() * rope.attention_factor).to(self.dtype))
        return self._tables[which]

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    def _apply_rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        rotary = cos.shape[-1]
        if rotary == x.shape[-1]:
            return x * cos + self._rotate_half(x) * sin
        head, rest = x[..., :rotary], x[..., rotary:]
        return torch.cat((head * cos + self._rotate_half(head) * sin, rest), dim=-1)

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.spec.rms_eps)
        if self.spec.norm_offset:  # Gemma: (x * (1 + w)) in float32, then the dtype (llama casts before multiplying)
            return (x * (self.spec.norm_offset + weight.float())).to(dtype)
        return weight * x.to(dtype)

    def new_cache(self, length: int) -> torch.Tensor:
        s = self.spec
        return torch.empty((s.layers, 2, 1, s.kv_heads, length, s.head_dim), device=self.device, dtype=self.dtype)

    def _layer(self, i: int, x: torch.Tensor, start: int, cache: torch.Tensor, tables: dict) -> torch.Tensor:
        s, w, p = self.spec, self.w, f"layers.{i}."
        cos, sin = tables["local" if i in self.sliding else "global"]
        batch, steps, _ = x.shape
        h = self._rms(x, w[p + "attn_norm"])
        q = F.linear(h, w[p + "q"], w.get(p + "q_bias")).view(batch, steps, s.heads, s.head_dim)
        k = F.linear(h, w[p + "k"], w.get(p + "k_bias")).view(batch, steps, s.kv_heads, s.head_dim)
        v = F.linear(h, w[p + "v"], w.get(p + "v_bias")).view(batch, steps, s.kv_heads, s.head_dim)
        if p + "q_norm" in w:  # qwen3: per-head RMSNorm before RoPE
            q, k = self._rms(q, w[p + "q_norm"]), self._rms(k, w[p + "k_norm"])
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        c, n = cos[start : start + steps], sin[start : start + steps]
        q, k = self._apply_rope(q, c, n), self._apply_rope(k, c, n)
        cache[i, 0, :, :, start : start + steps] = k
        cache[i, 1, :, :, start : start + steps] = v
        keys, values = cache[i, 0, :, :, : start + steps], cache[i, 1, :, :, : start + steps]
        if i in self.sliding:
            attn = self._windowed(q, keys, values, start)
        elif start == 0:
            attn = F.scaled_dot_product_attention(q, keys, values, is_causal=True, enable_gqa=True, scale=s.query_scale)
        else:
            mask = torch.arange(start + steps, device=x.device)[None, :] <= (start + torch.arange(steps, device=x.device))[:, None]
            attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True, scale=s.query_scale)
        out = F.linear(attn.transpose(1, 2).reshape(batch, steps, s.heads * s.head_dim), w[p + "o"])
        if p + "post_attn_norm" in w:  # Gemma's sandwich: the attention's output is normed before the residual
            out = self._rms(out, w[p + "post_attn_norm"])
        x = x + out
        h = self._rms(x, w[p + "ffn_norm"])
        gate = F.linear(h, w[p + "gate"])
        gate = F.gelu(gate, approximate="tanh") if s.mlp_activation == "gelu_tanh" else F.silu(gate)
        out = F.linear(gate * F.linear(h, w[p + "up"]), w[p + "down"])
        if p + "post_ffn_norm" in w:
            out = self._rms(out, w[p + "post_ffn_norm"])
        return x + out

    def _windowed(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, start: int) -> torch.Tensor:
        """A sliding layer: each query at position t sees keys t-window+1..t (transformers' and llama.cpp's rule).
        Queries go a window at a time against only the keys their window reaches, so the scores stay
        heads x window x 2·window whatever the length."""
        window, steps = self.spec.attention.sliding_window, q.shape[2]
        outputs = []
        for first in range(0, steps, window):
            last = min(steps, first + window)
            positions = start + torch.arange(first, last, device=q.device)
            low = max(0, start + first - window + 1)
            seen = torch.arange(low, start + last, device=q.device)
            mask = (seen[None, :] <= positions[:, None]) & (seen[None, :] > positions[:, None] - window)
            seen_keys, seen_values = keys[:, :, low : start + last], values[:, :, low : start + last]
            attended = F.scaled_dot_product_attention(
                q[:, :, first:last], seen_keys, seen_values, attn_mask=mask, enable_gqa=True, scale=self.spec.query_scale
            )
            outputs.append(attended)
        return torch.cat(outputs, dim=2)

    @torch.inference_mode()
    def forward(self, ids: list[int], cache: torch.Tensor, start: int, logits_from: int | None = None, head: bool = True) -> torch.Tensor | None:
        """Run ``ids`` at positions start.. into ``cache``; return float32 logits for positions >= logits_from
        (relative to ``ids``), or None when ``logits_from`` is None. ``head=False``: the final hidden states
        instead, for the caller to take the logits a slice at a time."""
        tables = {which: self._cos_sin(start + len(ids), which) for which in (("global", "local") if self.sliding else ("global",))}
        x = self.w["embed"][torch.tensor(ids, device=self.device)][None]
        if self.spec.embed_scale != 1.0:
            x = x * torch.tensor(self.spec.embed_scale, dtype=x.dtype)  # as transformers: the scale in the weights' dtype
        for i in range(self.spec.layers):
            x = self._layer(i, x, start, cache, tables)
        if logits_from is None or logits_from >= len(ids):
            return None
        x = self._rms(x[:, logits_from:], self.w["norm"])
        return self.logits(x[0]) if head else x[0]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = F.linear(hidden, self.w["lm_head"]).float()
        cap = self.spec.final_softcap
        return torch.tanh(logits / cap) * cap if cap else logits

    def _chunks(self, total: int, first_chunk: int, score_budget: int) -> list[tuple[int, int]]:
        """The first chunk runs causal SDPA (fused kernels, no score matrix); later chunks need a mask,
        which on CPU materialises heads x chunk x length scores, so they are sized to ``score_budget``."""
        spans, start = [], 0
        size = min(total, first_chunk)
        while start < total:
            spans.append((start, min(total, start + size)))
            start = spans[-1][1]
            size = max(64, min(first_chunk, score_budget // max(self.spec.heads * total * 4, 1)))
        return spans

    def prefill(self, ids: list[int], cache: torch.Tensor, chunk: int, score_from: int | None = None, score_budget: int = 512 << 20):
        """Chunked prefill; returns (last-position logits, per-token NLL of ids[score_from+1:]) as needed, and
        leaves in ``last_greedy`` whether each of those tokens was the argmax."""
        nll, hits, last = [], [], None
        started = time.perf_counter()
        for start, end in self._chunks(len(ids), chunk, score_budget):
            part = ids[start:end]
            want = None
            if score_from is not None and end > score_from:
                want = max(score_from - start, 0)
            if end == len(ids) and want is None:
                want = len(part) - 1  # generation needs only the last position's logits
            hidden = self.forward(part, cache, start, want, head=False)
            if hidden is None:
                continue
            first = start + want
            if score_from is not None:
                targets = torch.tensor(ids[first + 1 : end + 1], device=hidden.device)
                # the logits a slice of rows at a time: a 16k-token pass never holds positions x vocabulary floats
                for row in range(0, targets.shape[0], HEAD_ROWS):
                    logits = self.logits(hidden[row : row + HEAD_ROWS])[: targets.shape[0] - row]
                    nll.append(F.cross_entropy(logits, targets[row : row + HEAD_ROWS], reduction="none"))
                    hits.append(logits.argmax(-1) == targets[row : row + HEAD_ROWS])
            if end == len(ids):
                last = self.logits(hidden[-1:])[0]
        self._sync()
        self.last_prefill_seconds = time.perf_counter() - started
        self.last_greedy = torch.cat(hits).tolist() if hits else []
        return last, (torch.cat(nll) if nll else None)

    def hidden_states(self, ids: list[int], chunk: int, score_from: int, score_budget: int = 512 << 20) -> torch.Tensor:
        """The final hidden states of positions score_from .. len(ids) - 2 (each predicts the next id), for a caller
        that takes their logits a slice at a time; times the pass into ``last_prefill_seconds``."""
        cache = self.new_cache(len(ids))
        parts = []
        started = time.perf_counter()
        for start, end in self._chunks(len(ids), chunk, score_budget):
            want = max(score_from - start, 0) if end > score_from else None
            hidden = self.forward(ids[start:end], cache, start, want, head=False)
            if hidden is not None:
                parts.append(hidden)
        self._sync()
        self.last_prefill_seconds = time.perf_counter() - started
        return torch.cat(parts)[: len(ids) - 1 - score_from]

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def greedy(self, ids: list[int], max_new_tokens: int, chunk: int, stop: frozenset[int] = frozenset()) -> list[int]:
        cache = self.new_cache(len(ids) + max_new_tokens)
        logits, _ = self.prefill(ids, cache, chunk)
        out: list[int] = []
        position = len(ids)
        started = time.perf_counter()
        for _ in range(max_new_tokens):
            token = int(torch.argmax(logits))
            if token in stop:
                break
            out.append(token)
            if len(out) == max_new_tokens:
                break
            logits = self.forward([token], cache, position, 0)[-1]
            position += 1
        self._sync()
        self.last_decode_seconds = time.perf_counter() - started
        self.last_decode_steps = position - len(ids)
        return out
