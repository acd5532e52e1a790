"""The llama.cpp engine (optional extra, llama-cpp-python) for GGUF.

The declared variant loads the file with default context parameters, so the metadata alone has to switch
YaRN on. Other variants use llama.cpp's parametric RoPE: the scaling type, base, 1/s, YaRN's original
length and betas as context parameters, and the attention factor through the ``rope.scaling.attn_factor``
metadata key overridden at load (llama.cpp multiplies its own 0.1·ln s + 1 by it; its context parameter of
the same name is recomputed whenever YaRN is on). One model is held at a time; its context is sized to the
longest sequence the run needs, and logits are taken only at the positions a task scores.
"""

from __future__ import annotations

import time
from pathlib import Path

from yarn_cli.core.rope.scalars import get_mscale
from yarn_cli.core.rope.variants import RopeVariant
from yarn_cli.errors import InputError
from yarn_cli.runtimes.base import Generation, ModelFacts, Scored, available_host_memory

# llama.cpp's LLAMA_ROPE_SCALING_TYPE_* values
SCALING_TYPES = {"none": 0, "linear": 1, "yarn": 2}
N_BATCH = 512


def _check_offload(device: str) -> None:
    """pip's default llama-cpp-python wheel has no GPU backend: n_gpu_layers would be ignored and the run labelled cuda
    would happen on the CPU, so --device cuda is refused on such a build."""
    import llama_cpp

    if device.startswith("cuda") and not llama_cpp.llama_supports_gpu_offload():
        raise InputError(
            "--device cuda: this llama-cpp-python was built without GPU offload, so llama.cpp would run on the CPU; "
            "rebuild it with CUDA (CMAKE_ARGS=-DGGML_CUDA=on ./scripts/install_llama_cpp.sh, which keeps the build portable) "
            "or pass --device cpu"
        )


class LlamaCppEngine:
    name = implementation = "llama.cpp"
    isolated = True  # load_engine runs it in a child process (runtimes/isolated.py): a native crash is reported, not fatal

    def __init__(self, model: Path, device: str, original_context: int | None = None, max_length: int = 0, progress=None):
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            from yarn_cli.io.packages import needs

            raise InputError(needs("--engine llama.cpp", "llama.cpp")) from exc
        if model.suffix.lower() != ".gguf":
            raise InputError("--engine llama.cpp runs .gguf files; for a Hugging Face folder use --engine native or transformers")
        _check_offload(device)
        from yarn_cli.core.checkpoint.kv_cache import AttentionLayout
        from yarn_cli.core.rope.spec import scaling_label
        from yarn_cli.io.checkpoint import gguf_metadata, summarize_gguf
        from yarn_cli.io.gguf_reader import read_gguf

        summary = summarize_gguf(model, original_context)
        spec = summary.rope
        self.path, self.device, self.notes = model, device, []
        self.architecture = summary.architecture
        self._vocab = Llama(str(model), vocab_only=True, verbose=False)  # the tokenizer, without the weights
        self.tokenizer = _Tokenizer(self._vocab)
        self._eos = self._vocab.token_eos()
        self.facts = ModelFacts(
            original_context=spec.original_context,
            target_context=spec.max_context,
            attention=summary.attention or AttentionLayout(summary.layers or 0, 0),
            heads=summary.attention_heads or 0,
            hidden=summary.hidden_size or 0,
            vocab=self._vocab.n_vocab(),
            weight_bytes=summary.tensors.bytes,
            value_bytes=2,
            scaling=scaling_label(spec.scaling),
            rope=spec,
        )
        self._log_multiplier = bool(gguf_metadata(read_gguf(model)).get(f"{self.architecture}.rope.scaling.yarn_log_multiplier"))
        self._n_ctx = max(max_length, 256) + 64
        self._llm, self._key = None, None
        self._cached: list[int] = []  # the ids whose keys and values the context holds, in order

    # --- variants ---------------------------------------------------------------------------------------------

    def unsupported(self, variant: RopeVariant) -> str | None:
        if variant.kind == "declared":
            return None
        if variant.kind == "custom":
            return "llama.cpp takes RoPE as parameters (type, base, scale, YaRN's betas), not as a frequency table"
        if variant.kind == "yarn" and not variant.truncate:
            return "llama.cpp always rounds YaRN's ramp bounds (truncate), so a ramp without rounding cannot run there"
        if variant.softmax_mscale != 1.0:
            return "llama.cpp's deepseek2 derives its softmax factor from the file's keys; it takes none as a parameter"
        if variant.kind == "yarn" and self._log_multiplier:
            return "this GGUF sets rope.scaling.yarn_log_multiplier, which makes llama.cpp compute its own attention factor"
        return None

    def _parameters(self, variant: RopeVariant) -> tuple[dict, dict]:
        """(context parameters, metadata overrides) that make llama.cpp compute ``variant``."""
        if variant.kind == "declared":
            return {}, {}
        params = dict(rope_scaling_type=SCALING_TYPES[variant.kind], rope_freq_base=variant.base, rope_freq_scale=1.0 / variant.factor)
        factor = variant.attention_factor
        if variant.kind == "yarn":
            params.update(
                yarn_ext_factor=1.0, yarn_beta_fast=variant.beta_fast, yarn_beta_slow=variant.beta_slow, yarn_orig_ctx=variant.original_context
            )
            factor /= get_mscale(variant.factor)  # llama.cpp multiplies its own m by this key
        return params, {f"{self.architecture}.rope.scaling.attn_factor": float(factor)}

    def reserve(self, tokens: int) -> None:
        self._n_ctx = tokens + 16
        self._release()

    def _model(self, variant: RopeVariant):
        from llama_cpp import Llama

        params, overrides = self._parameters(variant)
        key = (tuple(sorted(params.items())), tuple(sorted(overrides.items())), self._n_ctx)
        if key != self._key:
            self._release()
            self._llm = Llama(
                str(self.path),
                n_ctx=self._n_ctx,
                n_batch=N_BATCH,
                logits_all=False,
                verbose=False,
                n_gpu_layers=-1 if self.device.startswith("cuda") else 0,
                kv_overrides=overrides or None,
                **params,
            )
            self._key = key
        return self._llm

    def _release(self) -> None:
        if self._llm is not None:
            self._llm.close()
        self._llm, self._key = None, None
        self._cached = []

    def _reuse(self, llm, ids: list[int], limit: int) -> int:
        """Keep the KV cache of the prefix ``ids`` shares with what the cache holds (at most ``limit`` tokens: a
        position whose logits are wanted is run again) and drop the rest; returns where the run resumes.
        Prompts that share a haystack up to their needle (RULER's depths, lm-eval's choices) run it once."""
        common = 0
        for held, new in zip(self._cached, ids[:limit]):
            if held != new:
                break
            common += 1
        llm._ctx.kv_cache_seq_rm(-1, common, -1)
        self._cached = list(ids)
        return common

    # --- evaluation -------------------------------------------------------------------------------------------

    def _decode(self, llm, ids: list[int], start: int, wanted: range, reduce=None):
        """Run ``ids`` at positions start.. and return the logits at the positions in ``wanted`` (absolute), or
        what ``reduce`` makes of each batch's rows (so a long pass never holds every position's logits)."""
        import numpy as np

        rows = []
        for offset in range(0, len(ids), N_BATCH):
            chunk = ids[offset : offset + N_BATCH]
            first = start + offset
            llm._batch.set_batch(chunk, n_past=first, logits_all=False)
            flags = [first + j in wanted for j in range(len(chunk))]
            for j, flag in enumerate(flags):
                llm._batch.batch.logits[j] = flag
            llm._ctx.decode(llm._batch)
            batch = [np.ctypeslib.as_array(llm._ctx.get_logits_ith(j), shape=(self.facts.vocab,)).copy() for j, flag in enumerate(flags) if flag]
            if reduce is None:
                rows += batch
            elif batch:
                rows.append(reduce(batch, [first + j for j, flag in enumerate(flags) if flag]))
        return rows

    def generate(self, variant: RopeVariant, ids: list[int], max_new_tokens: int) -> Generation:
        llm = self._model(variant)
        start = self._reuse(llm, ids, len(ids) - 1)
        started = time.perf_counter()
        (logits,) = self._decode(llm, ids[start:], start, range(len(ids) - 1, len(ids)))
        prefill = time.perf_counter() - started
        out, position, eos = [], len(ids), self._eos
        started = time.perf_counter()
        for step in range(max_new_tokens):
            token = int(logits.argmax())
            if token == eos:
                break
            out.append(token)
            if step + 1 < max_new_tokens:
                (logits,) = self._decode(llm, [token], position, range(position, position + 1))
                self._cached.append(token)
                position += 1
        return Generation(out, len(ids) - start, prefill, time.perf_counter() - started, position - len(ids))

    def score(self, variant: RopeVariant, ids: list[int], score_from: int) -> Scored:
        import numpy as np

        llm = self._model(variant)
        start = self._reuse(llm, ids, min(score_from, len(ids) - 1))

        def reduce(rows, positions):
            logits = np.asarray(rows, dtype=np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            log_z = np.log(np.exp(logits).sum(axis=1))
            targets = np.asarray([ids[p + 1] for p in positions])
            return (log_z - logits[np.arange(len(targets)), targets]).tolist(), (logits.argmax(axis=1) == targets).tolist()

        started = time.perf_counter()
        parts = self._decode(llm, ids[start:], start, range(score_from, len(ids) - 1), reduce)
        seconds = time.perf_counter() - started
        return Scored([x for losses, _ in parts for x in losses], len(ids) - start, seconds, [g for _, hits in parts for g in hits])

    def available_memory(self) -> int:
        return available_host_memory() + self.facts.weight_bytes

    def close(self) -> None:
        """Free the model and the tokenizer's vocabulary now: llama-cpp-python's own finalizers fail in interpreter teardown."""
        self._release()
        if self._vocab is not None:
            self._vocab.close()
            self._vocab = None


class _Tokenizer:
    def __init__(self, model):
        self.model = model
        self.bos = [model.token_bos()] if model._model.add_bos_token() else []
        self.bos_id, self.eos_id = (x if x >= 0 else None for x in (model.token_bos(), model.token_eos()))

    def encode(self, text: str) -> list[int]:
        # special=True: a special token written in the text ("<|im_start|>" in a chat prompt) is that token, as
        # the tokenizers library reads it for the native and transformers engines
        return self.model.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def decode(self, ids: list[int]) -> str:
        return self.model.detokenize(ids).decode("utf-8", errors="replace")
