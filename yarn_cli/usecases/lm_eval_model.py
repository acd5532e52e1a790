"""Every yarn_cli engine as an lm-evaluation-harness model (``--model yarn``), under any RoPE variant.

The requests lm-eval hands a model are answered the way its own ``hf`` model answers them (the same token
encoding of context and continuation, the same rolling windows, the same stop-sequence handling), so a
benchmark number from this bridge means what the same number from ``hf`` means. A request keeps its last
``max_length`` + 1 tokens, as ``hf`` cuts it: the model runs ``max_length`` of them and the last is only
scored, so no engine runs a position past the variant's length. One deliberate difference: the engines
decode greedily (lm-eval's generation tasks ask for that; sampling settings are refused, not ignored).

Requests run one sequence at a time through the engine interface; lm-eval's ``batch_size`` is accepted
and has no effect.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from tqdm import tqdm

from yarn_cli.errors import InputError

log = logging.getLogger("yarn_cli.lm_eval")

# What lm-eval's CLI passes every model, or users carry over from the hf model, that does not apply here.
_IGNORED = {"batch_size", "max_batch_size", "trust_remote_code", "parallelize"}
FIRST_STEP = 16  # tokens decoded before the first look for a stop sequence; doubled after each look


class YarnLM(TemplateLM):
    """lm-eval's model interface over one engine and one RoPE variant.

    ``path``: the extended checkpoint (HF folder or .gguf; ``pretrained`` is taken as a synonym).
    ``variant``: ``extended`` (as declared), ``baseline`` (scaling removed), ``paper`` (YaRN with
    m = 0.1 ln s + 1) or ``m=X`` (YaRN at the declared s with attention factor X), as in ``yarn verify --variants``.
    ``max_length``: the longest sequence a request may run (default: the declared length for a YaRN variant,
    the trained length for the baseline)."""

    def __init__(
        self,
        path: str | None = None,
        pretrained: str | None = None,
        engine: str = "native",
        variant: Any = "extended",
        device: str | None = None,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        add_bos_token: bool | None = None,
        prefix_token_id: int | None = None,
        original_context: int | None = None,
        loaded: Any = None,
        progress: bool = True,
        **options: Any,
    ) -> None:
        super().__init__()
        if options.get("trust_remote_code"):
            raise InputError("trust_remote_code: yarn_cli never runs code shipped with a checkpoint; drop the flag")
        engine_options = {k: v for k, v in options.items() if k not in _IGNORED}
        _check_options(engine_options)
        self.engine = (
            loaded if loaded is not None else _load(path or pretrained, engine, device, original_context, max_length, str(variant), engine_options)
        )
        self.owns_engine = loaded is None
        facts = self.engine.facts
        from yarn_cli.core.rope import variants

        # a name from the command line, or a RopeVariant from verify's own run
        self.variant = variants.select(str(variant), facts.rope, facts.baked_attention_factor) if isinstance(variant, str) else variant
        self._max_length = int(max_length or default_length(self.variant.kind, facts.rope))
        self._max_gen_toks = int(max_gen_toks)
        self.add_bos_token = add_bos_token
        self.custom_prefix_token_id = prefix_token_id
        self.progress = progress  # our own request bars (verify shows its own progress instead)
        self.tokenizer = self.engine.tokenizer
        self.engine.reserve(self._max_length + 1)  # the last token of a full window is scored, never run
        reason = self.engine.unsupported(self.variant)
        if reason:
            raise InputError(f"--engine {self.engine.name} cannot run variant {self.variant.name!r}: {reason}")

    # --- what lm-eval reads ---------------------------------------------------------------------------------

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def eot_token_id(self) -> int:
        eos = self.tokenizer.eos_id
        return eos if eos is not None else self.prefix_token_id

    @property
    def prefix_token_id(self) -> int:
        """What an empty context is conditioned on: the tokenizer's BOS, else its EOS (as lm-eval's hf model)."""
        for candidate in (self.custom_prefix_token_id, self.tokenizer.bos_id, self.tokenizer.eos_id):
            if candidate is not None:
                return int(candidate)
        raise InputError("the tokenizer has neither a BOS nor an EOS token: give the model arg prefix_token_id=ID")

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.engine, "path", "yarn")).replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """The text's ids, with BOS in front where the tokenizer puts one (or as ``add_bos_token`` says);
        a string that already starts with the BOS text gets none added."""
        bos = (
            self.tokenizer.bos
            if self.add_bos_token is None
            else ([self.tokenizer.bos_id] if self.add_bos_token and self.tokenizer.bos_id is not None else [])
        )
        if add_special_tokens is not None:
            bos = [self.tokenizer.bos_id] if add_special_tokens and self.tokenizer.bos_id is not None else []
        if bos and add_special_tokens is None and _starts_with_token(string, self.tokenizer, bos[0]):
            bos = []
        return list(bos) + self.tokenizer.encode(string)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    # --- chat templates (lm-eval's --apply_chat_template) --------------------------------------------------------

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        """The checkpoint's own template, which lm-eval records with the results (one template per checkpoint:
        a template name is not looked up)."""
        if chat_template is False or chat_template is None:
            return None
        template = self._template()
        if template is None:
            raise InputError(f"{getattr(self.engine, 'path', 'the checkpoint')}: no chat template in the checkpoint; drop --apply_chat_template")
        return template

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The history rendered by the checkpoint's template through transformers' own renderer, as lm-eval's hf
        model renders it (also for a GGUF, whose template sits in its metadata): without a generation prompt the
        last message is continued, and a template that rejects the system role gets the history without it."""
        try:
            from jinja2.exceptions import TemplateError
            from transformers.utils.chat_template_utils import render_jinja_template
        except ImportError as exc:
            from yarn_cli.io.packages import needs

            raise InputError(needs("--apply_chat_template", "transformers")) from exc
        template = self.chat_template(True)
        names = {"bos_token": self._token_text(self.tokenizer.bos_id), "eos_token": self._token_text(self.tokenizer.eos_id)}

        def render(history):
            (text,), _ = render_jinja_template(
                conversations=[history],
                chat_template=template,
                add_generation_prompt=add_generation_prompt,
                continue_final_message=not add_generation_prompt,
                **names,
            )
            return text

        try:
            return render(chat_history)
        except TemplateError:
            log.warning("the chat template failed; removing the system role from the history, as lm-eval's hf model does")
            return render([message for message in chat_history if message["role"] != "system"])

    def _template(self) -> str | None:
        if not hasattr(self, "_cached_template"):
            from yarn_cli.io.tokenizers_io import chat_template

            path = getattr(self.engine, "path", None)
            self._cached_template = chat_template(Path(path)) if path is not None else None
        return self._cached_template

    def _token_text(self, token: int | None) -> str:
        return "" if token is None else _token_text(self.tokenizer, token) or ""

    # --- scoring ---------------------------------------------------------------------------------------------

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        results = []
        for key, context_enc, continuation_enc in tqdm(requests, desc="yarn: scoring", disable=disable_tqdm or not self.progress):
            ids = (list(context_enc) + list(continuation_enc))[-(self._max_length + 1) :]
            count = min(len(continuation_enc), len(ids) - 1)
            scored = self.engine.score(self.variant, ids, len(ids) - count - 1)
            answer = (-float(sum(scored.losses)), scored.greedy is not None and all(scored.greedy))
            results.append(answer)
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Each document in disjoint windows of at most ``max_length`` tokens, as lm-eval's hf model cuts them."""
        from lm_eval import utils

        totals = []
        for request in tqdm(requests, desc="yarn: rolling windows", disable=disable_tqdm or not self.progress):
            (string,) = request.args
            windows = map(
                utils.make_disjoint_window,
                utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id, max_seq_len=self._max_length, context_len=1
                ),
            )
            scored = self._loglikelihood_tokens([(None, context, continuation) for context, continuation in windows], disable_tqdm=True)
            total = sum(logprob for logprob, _ in scored)
            totals.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
        return totals

    # --- generation ------------------------------------------------------------------------------------------

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for request in tqdm(requests, desc="yarn: generating", disable=disable_tqdm or not self.progress):
            context, gen_kwargs = request.args
            kwargs = normalize_gen_kwargs(dict(gen_kwargs), self._max_gen_toks)
            if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0.0) > 0:
                raise InputError(
                    "an lm-eval task asks for sampling (do_sample/temperature > 0); yarn engines decode "
                    "greedily: pass --gen_kwargs do_sample=false (lm-eval) or run that task on another model"
                )
            until = handle_stop_sequences(kwargs.pop("until", None), eos=None)
            budget = int(kwargs.pop("max_gen_toks"))
            if budget >= self._max_length:
                raise InputError(f"max_gen_toks {budget} leaves no room for a prompt in max_length {self._max_length}")
            ids = self.tok_encode(context)[-(self._max_length - budget) :]
            text = postprocess_generated_text(generation=self._greedy(ids, budget, until), stop=until, think_end_token=None)
            out.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return out

    def _greedy(self, ids: list[int], budget: int, until: list[str]) -> str:
        """Greedy tokens until EOS, a stop sequence or ``budget``: decoded in growing steps, so a short answer
        does not pay for ``budget`` tokens (the engines know token stops, not text stops)."""
        tokens: list[int] = []
        step = FIRST_STEP
        while len(tokens) < budget:
            asked = min(step, budget - len(tokens))
            new = self.engine.generate(self.variant, ids + tokens, asked).tokens
            tokens += new
            text = self.tokenizer.decode(tokens)
            if len(new) < asked or any(stop and stop in text for stop in until):
                break
            step *= 2
        return self.tokenizer.decode(tokens)

    def close(self) -> None:
        if self.owns_engine:
            self.engine.close()


def _check_options(options: dict[str, Any]) -> None:
    """A model arg that is neither ours nor an engine option is a typo: refused, with the accepted ones."""
    from yarn_cli.runtimes.base import ENGINE_OPTION_DEFAULTS

    unknown = sorted(set(options) - set(ENGINE_OPTION_DEFAULTS))
    if unknown:
        ours = "path, engine, variant, device, max_length, max_gen_toks, add_bos_token, prefix_token_id, original_context"
        raise InputError(f"model arg {unknown[0]!r} is not known: use {ours}, or for vllm {', '.join(ENGINE_OPTION_DEFAULTS)}")


def _starts_with_token(string: str, tokenizer: Any, token: int) -> bool:
    """Whether ``string`` already begins with the special token's text ("<s>"), as lm-eval's hf model checks."""
    text = _token_text(tokenizer, token)
    return bool(text) and string.startswith(text)


def _token_text(tokenizer: Any, token: int) -> str | None:
    """A special token's text ("<s>", "<|im_start|>"), from whichever tokenizer the engine holds."""
    backend = getattr(tokenizer, "backend", None)  # the `tokenizers` object of HF folders and rebuilt GGUF vocabularies
    inner = getattr(tokenizer, "inner", None)  # a transformers tokenizer
    llama = getattr(tokenizer, "model", None)  # llama.cpp's vocabulary
    if backend is not None:
        text = backend.id_to_token(token)
    elif inner is not None:
        text = inner.convert_ids_to_tokens(token)
    else:
        text = llama.detokenize([token], special=True).decode("utf-8", errors="replace") if llama is not None else None
    return text


def default_length(kind: str, rope) -> int:
    """A variant's max_length unless given: the trained length for the baseline (scaling removed), else the declared one."""
    return rope.original_context if kind == "none" else rope.max_context


def _load(
    path: str | None, engine: str, device: str | None, original_context: int | None, max_length: int | None, variant: str, options: dict[str, Any]
):
    """The engine, sized before it starts (vLLM fixes its length at start-up) to the variant's length plus the
    one scored-only token of a full window, from the checkpoint's header."""
    from yarn_cli.core.rope import variants
    from yarn_cli.io.checkpoint import summarize
    from yarn_cli.runtimes.base import load_engine, pick_device
    from yarn_cli.usecases.models import resolve_local_model

    if path is None:
        raise InputError("--model yarn needs the checkpoint: --model_args path=FOLDER_OR_GGUF")
    where = resolve_local_model(str(path), "--model yarn")
    form, _ = variants.parse_name(variant)
    rope = summarize(str(where), original_context=original_context).rope
    longest = int(max_length or default_length("none" if form == "baseline" else "yarn", rope))
    return load_engine(engine, where, pick_device(_device(device)), original_context, longest + 1, options)


def _device(device: str | None) -> str:
    """lm-eval passes its --device through ('cuda:0', 'cpu', or its own default 'cuda'): the engines take auto,
    cuda or cpu. Like lm-eval's hf model, an unavailable CUDA falls back to the CPU with a warning."""
    if not device:
        return "auto"
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            log.warning("device %s: no CUDA device is visible, running on the CPU", device)
            return "cpu"
        return "cuda"
    return str(device)
