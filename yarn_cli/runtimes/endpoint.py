"""Verify through the server a user deploys: any OpenAI-compatible ``/v1/completions`` endpoint (vLLM's
``vllm serve``, llama.cpp's servers, SGLang, TGI...).

The server runs one model: the checkpoint as it reads it, which is the ``declared`` variant. Every other variant
(the baseline: the same weights with the scaling removed) runs in-process on a local engine over the same
checkpoint, which also gives the tokenizer and the facts the protocol plans from. The checkpoint stays the source
of truth: prompts are sized with its tokenizer, and every response's ``usage.prompt_tokens`` must equal that count
(another number means the server runs another model or tokenizer, or cut the prompt).

Prompts go as token ids where the server takes them (vLLM, SGLang), so they are exact; as the decoded text
otherwise (llama-cpp-python's server takes strings only). Scores come from the prompt's log-probabilities (``echo``
with ``logprobs``); before trusting them the engine compares a short prompt's with the local engine's, because
some servers return none (llama.cpp's ``llama-server``) and some shift them by one position (llama-cpp-python's).

The API key is read from the environment variable the user names, sent in the Authorization header, and never
printed, logged or stored.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from yarn_cli.core.rope.variants import RopeVariant
from yarn_cli.errors import FetchError, InputError, UnsupportedError
from yarn_cli.runtimes.base import Generation, Scored

RETRIED = (429, 502, 503, 504)  # a busy or restarting server: try again after a pause
RETRIES = 4
PROBE_TOKENS = 32  # the prompt whose log-probabilities are compared with the local engine's before trusting them
PROBE_NATS = 1.0  # mean |Δ logprob| above which the server's prompt scores are not those of this checkpoint


@dataclass
class Server:
    """One OpenAI-compatible server: its base URL (ending in /v1), the model it serves, and the key to send."""

    url: str
    model: str
    key: str | None = field(default=None, repr=False)
    timeout: float = 600.0
    label: str = ""  # "vllm 0.32.0", or the URL alone where the server does not say what it is
    max_length: int | None = None  # from /v1/models, where the server says

    def request(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET (no body) or POST JSON to url + path; retries a busy server and a dropped connection with back-off.
        Raises FetchError for a server that cannot be reached, InputError for a refusal (its own words)."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        for attempt in range(RETRIES + 1):
            request = urllib.request.Request(self.url + path, data=data, headers=headers, method="GET" if data is None else "POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                if exc.code in RETRIED and attempt < RETRIES:
                    time.sleep(0.5 * 2**attempt)
                    continue
                raise Refused(exc.code, _said(exc)) from None
            except (ConnectionResetError, http.client.RemoteDisconnected) as exc:
                if attempt < RETRIES:
                    time.sleep(0.5 * 2**attempt)
                    continue
                raise FetchError(f"--endpoint {self.url}: the connection dropped {RETRIES + 1} times ({type(exc).__name__})") from None
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise FetchError(f"--endpoint {self.url}: cannot reach the server ({reason}); is it running, and is the URL its /v1 base?") from None
            except json.JSONDecodeError:
                raise UnsupportedError(f"--endpoint {self.url}{path}: the answer is not JSON; is this an OpenAI-compatible server?") from None
        raise AssertionError("unreachable")  # the loop returns or raises


class Refused(InputError):
    """The server answered with an error status."""

    def __init__(self, status: int, said: str):
        super().__init__(f"HTTP {status}: {said}")
        self.status = status


def _said(exc: urllib.error.HTTPError) -> str:
    """The server's own error message, one line, short."""
    try:
        body = json.loads(exc.read().decode("utf-8", "replace"))
        said = body.get("error", body.get("detail", body)) if isinstance(body, dict) else body
        said = said.get("message", said) if isinstance(said, dict) else said
    except (ValueError, OSError):
        said = exc.reason
    return " ".join(str(said).split())[:300]


def connect(url: str, served_model: str | None, api_key_env: str | None) -> Server:
    """The server at ``url``, checked before anything loads: an http(s) URL without credentials in it, the key's
    variable set, the server reachable, and the model it serves (``served_model`` where it serves several)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InputError(f"--endpoint {url!r}: give the server's http(s) base URL, e.g. http://127.0.0.1:8000/v1")
    if parsed.username or parsed.password:
        raise InputError("--endpoint: the URL carries credentials; put the key in an environment variable and name it with --api-key-env")
    key = None
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise InputError(f"--api-key-env {api_key_env}: that environment variable is not set (or empty)")
    base = url.rstrip("/")
    server = Server(base, served_model or "", key)
    try:
        listed = server.request("/models")
    except Refused as exc:
        raise InputError(f"--endpoint {base}: GET /models was refused ({exc}); check the URL (the /v1 base) and the key") from None
    models = [m for m in listed.get("data", []) if isinstance(m, dict) and isinstance(m.get("id"), str)]
    names = [m["id"] for m in models]
    if not names:
        raise UnsupportedError(f"--endpoint {base}: the server lists no model at /models")
    if served_model is None and len(names) > 1:
        raise InputError(f"--endpoint {base} serves {len(names)} models ({', '.join(names)}): name one with --served-model")
    if served_model is not None and served_model not in names:
        raise InputError(f"--served-model {served_model}: {base} serves {', '.join(names)}")
    chosen = next(m for m in models if m["id"] == (served_model or names[0]))
    server.model = chosen["id"]
    length = chosen.get("max_model_len")
    server.max_length = length if isinstance(length, int) and length > 0 else None
    server.label = _label(server)
    return server


def _label(server: Server) -> str:
    """ "vllm 0.32.0 at URL" where the server says its version (vLLM's /version), else the URL."""
    root = server.url[: -len("/v1")] if server.url.endswith("/v1") else server.url
    try:
        version = Server(root, server.model, server.key, timeout=10).request("/version")
    except (InputError, FetchError, UnsupportedError):
        return server.url
    found = version.get("version") if isinstance(version, dict) else None
    return f"{server.url} (vllm {found})" if isinstance(found, str) else server.url


class _Locked:
    """A tokenizer that one thread uses at a time: requests run concurrently, and a local engine's tokenizer may
    talk to a child process (llama.cpp's) over one pipe."""

    def __init__(self, tokenizer: Any):
        self._tokenizer, self._lock = tokenizer, threading.Lock()
        self.bos, self.bos_id, self.eos_id = tokenizer.bos, tokenizer.bos_id, tokenizer.eos_id

    def encode(self, text: str) -> list[int]:
        with self._lock:
            return self._tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        with self._lock:
            return self._tokenizer.decode(ids)


class EndpointEngine:
    """The declared variant through the server, every other one on ``local``; tokenizer and facts from ``local``."""

    name = implementation = "endpoint"

    def __init__(self, server: Server, local: Any, concurrency: int = 8):
        self.server, self.local, self.concurrency = server, local, concurrency
        self.path = local.path
        self.device = self.label = server.label
        self.tokenizer, self.facts = _Locked(local.tokenizer), local.facts
        self.notes = list(local.notes) + [
            f"the server runs the checkpoint as it reads it; the other variants run in-process on the {local.name} engine over the same file"
        ]
        self.cannot: dict[str, str] = {}  # engine method -> why the server cannot serve it (tasks needing it are left out)
        self._probed = False
        self.ids = self._takes_ids()
        self._probe_scores()
        self._probed = True

    # --- what the server can do ---------------------------------------------------------------------------------

    def _takes_ids(self) -> bool:
        """Whether the server takes a prompt as token ids (exact), or only as text."""
        ids = (self.tokenizer.bos + self.tokenizer.encode("The grass is green."))[:8]
        try:
            self._complete(ids, 1)
        except Refused:
            pass  # servers word (and number: llama-cpp-python's is a 500) a prompt of ids they refuse differently
        else:
            return True
        try:
            self._complete(self._text(ids), 1)
        except Refused as exc:
            raise InputError(f"--endpoint {self.server.url}: POST /completions was refused ({exc}); the server needs the completions API") from None
        return False

    def _probe_scores(self) -> None:
        """The server's prompt log-probabilities of a short text against the local engine's (where RoPE scaling barely
        matters): none, or far apart, and nothing that needs them can run through it."""
        from yarn_cli.core.rope import variants

        ids = (self.tokenizer.bos + self.tokenizer.encode(" ".join(["The grass is green. The sky is blue."] * 8)))[:PROBE_TOKENS]
        try:
            theirs = self._prompt_logprobs(ids)
        except Refused as exc:
            self.cannot["score"] = f"the server refuses prompt log-probabilities ({exc})"
            return
        if theirs is None:
            self.cannot["score"] = "the server returns no prompt log-probabilities"
            return
        ours = self.local.score(variants.declared(self.facts.rope, self.facts.baked_attention_factor), ids, 0).losses
        gap = sum(abs(t + o) for t, o in zip(theirs, ours)) / len(ours)
        if gap > PROBE_NATS:
            self.cannot["score"] = (
                f"the server's prompt log-probabilities are {gap:.1f} nats per token from this checkpoint's on a "
                f"{len(ids)}-token prompt, where RoPE scaling barely matters: it scores prompts differently (llama-cpp-python's "
                "server shifts them by one position), so no perplexity or parity can be read from them"
            )

    # --- the engine interface -----------------------------------------------------------------------------------

    def remote(self, variant: RopeVariant) -> bool:
        return variant.kind == "declared"

    def unsupported(self, variant: RopeVariant) -> str | None:
        return None if self.remote(variant) else self.local.unsupported(variant)

    def reserve(self, tokens: int) -> None:
        self.local.reserve(tokens)

    def generate(self, variant: RopeVariant, ids: list[int], max_new_tokens: int) -> Generation:
        if not self.remote(variant):
            return self.local.generate(variant, ids, max_new_tokens)
        started = time.perf_counter()
        prompt, count = self._prompt(ids)
        answer = self._complete(prompt, max_new_tokens, expected=count)
        seconds = time.perf_counter() - started
        text = answer["choices"][0].get("text") or ""
        # the server times nothing apart: the whole request counts as the prefill, and no decoding speed is claimed
        return Generation(self.tokenizer.encode(text), len(ids), seconds, 0.0, 0)

    def score(self, variant: RopeVariant, ids: list[int], score_from: int) -> Scored:
        if not self.remote(variant):
            return self.local.score(variant, ids, score_from)
        if "score" in self.cannot:
            raise UnsupportedError(f"--endpoint {self.server.url}: {self.cannot['score']}")
        started = time.perf_counter()
        logprobs = self._prompt_logprobs(ids)
        if logprobs is None:
            raise UnsupportedError(f"--endpoint {self.server.url}: the server returned no prompt log-probabilities")
        return Scored([-x for x in logprobs[score_from:]], len(ids), time.perf_counter() - started)

    def available_memory(self) -> int:
        return self.local.available_memory()

    def close(self) -> None:
        self.local.close()

    # --- requests -----------------------------------------------------------------------------------------------

    def _text(self, ids: list[int]) -> str:
        """A prompt as text, for a server that takes no ids: without the BOS, which the server's tokenizer adds."""
        bos = self.tokenizer.bos
        return self.tokenizer.decode(ids[len(bos) :] if bos and ids[: len(bos)] == bos else ids)

    def _prompt(self, ids: list[int]) -> tuple[list[int] | str, int]:
        """What to send for ``ids`` (the ids, or their text), and the prompt tokens the server must count for it: the
        ids, or what this checkpoint's tokenizer makes of that text (decoded and encoded once per request)."""
        if self.ids:
            return ids, len(ids)
        text = self._text(ids)
        return text, len(self.tokenizer.bos) + len(self.tokenizer.encode(text))

    def _complete(self, prompt: list[int] | str, max_tokens: int, expected: int | None = None, **extra: Any) -> dict[str, Any]:
        body = {"model": self.server.model, "prompt": prompt, "max_tokens": max(max_tokens, 1), "temperature": 0.0, **extra}
        try:
            answer = self.server.request("/completions", body)
        except Refused as exc:
            if not self._probed:
                raise  # the first requests probe what the server takes: their refusals are read there
            hint = ""
            if "Out of range float" in str(exc):
                hint = (
                    ": it cannot send a -inf log-probability as JSON, so the served model gives some prompt token zero "
                    "probability (a model run past the length it handles, as one served without its scaling is); "
                    "a shorter --parity-length or --lengths stays within it"
                )
            size = f"{len(prompt):,}-token " if isinstance(prompt, list) else ""
            raise InputError(f"--endpoint {self.server.url}: the server refused a {size}prompt ({exc}){hint}") from None
        if not answer.get("choices"):
            raise UnsupportedError(f"--endpoint {self.server.url}: /completions answered without choices")
        counted = (answer.get("usage") or {}).get("prompt_tokens")
        if expected is not None and isinstance(counted, int) and counted != expected:
            raise InputError(
                f"--endpoint {self.server.url} counted {counted:,} prompt tokens where the checkpoint's tokenizer gives "
                f"{expected:,}: the server runs another model or tokenizer, or cut the prompt (--served-model, its --max-model-len)"
            )
        return answer

    def _prompt_logprobs(self, ids: list[int]) -> list[float] | None:
        """log p(ids[i+1] | ids[:i+1]) for every i, from the server's echo; None where it returns none."""
        prompt, count = self._prompt(ids)
        answer = self._complete(prompt, 1, expected=count, echo=True, logprobs=1)
        found = (answer["choices"][0].get("logprobs") or {}).get("token_logprobs")
        if not isinstance(found, list) or len(found) < count or any(x is None for x in found[1:count]):
            return None
        if count != len(ids):
            raise InputError(
                f"--endpoint {self.server.url}: the text of this prompt tokenizes to {count:,} tokens, not the {len(ids):,} "
                "scored; the server takes no token ids, so this sequence cannot be scored exactly through it"
            )
        return [float(x) for x in found[1:count]]
