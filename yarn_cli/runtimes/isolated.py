"""An engine run in a child process, so that a crash in its native code cannot take yarn_cli down with it.

llama.cpp is C++: a bad build dies with SIGSEGV or SIGILL (llama-cpp-python compiled with ``-march=native`` on an
AMX-capable Xeon crashes on quantized weights in its AMX path), and in-process that kills the whole run without a
word. Here the engine lives in a spawned child; the parent keeps every result so far, and a dead child becomes an
:class:`~yarn_cli.errors.EngineCrashed` that names the engine, the signal, the likely cause and the fix.

The child ignores Ctrl-C (the parent handles it and ends the child), and dies with its parent (``PR_SET_PDEATHSIG``),
so no engine process outlives a run.
"""

from __future__ import annotations

import importlib
import multiprocessing
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarn_cli.errors import EngineCrashed, YarnError

JOIN_SECONDS = 10.0
PORTABLE_BUILD = (
    'reinstall it portable: ./scripts/install_llama_cpp.sh from a yarn_cli clone, or CMAKE_ARGS="-DGGML_NATIVE=OFF '
    '-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" pip install --force-reinstall --no-cache-dir llama-cpp-python==0.3.36'
)


def _cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            return any(line.startswith("flags") and " amx_tile" in line for line in handle)
    except OSError:
        return False


def _hint(engine: str, how: str) -> str:
    """The likely cause and the fix of a crash, where the engine and the signal say something (llama.cpp's crashes
    are build problems more often than model problems)."""
    if engine == "llama.cpp" and how == "SIGSEGV":
        if _cpu_has_amx():
            cause = "llama-cpp-python built with -march=native crashes on quantized weights on this AMX-capable CPU (its AMX path)"
        else:
            cause = "a llama-cpp-python build that does not fit this machine, or a file llama.cpp misreads"
        return f": likely {cause}; {PORTABLE_BUILD}"
    if engine == "llama.cpp" and how == "SIGILL":
        return (
            ": likely llama-cpp-python was built for another CPU (an instruction set this one lacks); rebuild it on this "
            "machine: ./scripts/install_llama_cpp.sh"
        )
    return "; run with --debug, or try another --engine on the same checkpoint"


def crashed(engine: str, exitcode: int | None, doing: str) -> EngineCrashed:
    """The one line for a child engine that died: the engine, the signal (or exit code), what it was doing, and why."""
    if exitcode is not None and exitcode < 0:
        try:
            how = signal.Signals(-exitcode).name
        except ValueError:
            how = f"signal {-exitcode}"
    else:
        how = f"exit code {exitcode}" if exitcode is not None else "no exit code"
    return EngineCrashed(f"the {engine} engine crashed ({how}) while {doing}{_hint(engine, how)}")


@dataclass(frozen=True)
class _Failure:
    """An exception the child's engine raised, sent back to be raised again in the parent."""

    kind: str  # "yarn": one of ours (type name and message kept); "other": anything else, as its first line
    type_name: str
    message: str


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the parent's close() still ends the child


def _serve(conn: Any, module: str, cls: str, args: tuple, kwargs: dict[str, Any]) -> None:
    """The child: build the engine, then answer calls until "close" or the pipe ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    try:
        engine = getattr(importlib.import_module(module), cls)(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent, in words
        conn.send(("error", _failure(exc)))
        return
    tokenizer = engine.tokenizer
    conn.send(("ready", (engine.facts, list(engine.notes), tokenizer.bos, tokenizer.bos_id, tokenizer.eos_id)))
    while True:
        try:
            name, call_args = conn.recv()
        except EOFError:
            break
        target = tokenizer if name in ("encode", "decode") else engine
        try:
            result = getattr(target, name)(*call_args)
        except BaseException as exc:  # noqa: BLE001
            conn.send(("error", _failure(exc)))
            continue
        conn.send(("ok", (result, list(engine.notes))))
        if name == "close":
            break


def _failure(exc: BaseException) -> _Failure:
    from yarn_cli.errors import first_line

    if isinstance(exc, YarnError):
        return _Failure("yarn", type(exc).__name__, str(exc))
    return _Failure("other", type(exc).__name__, first_line(exc))


def _raise(failure: _Failure, engine: str) -> None:
    from yarn_cli import errors

    if failure.kind == "yarn":
        cls = getattr(errors, failure.type_name, errors.YarnError)
        raise cls(failure.message)
    raise errors.UnsupportedError(f"the {engine} engine failed: {failure.type_name}: {failure.message}")


class _RemoteTokenizer:
    def __init__(self, engine: IsolatedEngine, bos: list[int], bos_id: int | None, eos_id: int | None):
        self._engine, self.bos, self.bos_id, self.eos_id = engine, bos, bos_id, eos_id

    def encode(self, text: str) -> list[int]:
        return self._engine._call("encode", text)

    def decode(self, ids: list[int]) -> str:
        return self._engine._call("decode", ids)


class IsolatedEngine:
    """The engine ``name`` (its class ``module.cls``) in a child process, behind the same interface."""

    def __init__(self, name: str, module: str, cls: str, path: Path, device: str, original_context: int | None, max_length: int):
        engine_class = getattr(importlib.import_module(module), cls)
        self.name, self.implementation = name, getattr(engine_class, "implementation", name)
        self.path, self.device = path, device
        context = multiprocessing.get_context("spawn")  # never fork a process that may hold torch's threads
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, module, cls, (path, device, original_context), {"max_length": max_length}), daemon=True
        )
        self._process.start()
        child.close()
        self._doing, self._busy = "loading the model", True
        try:
            facts, notes, bos, bos_id, eos_id = self._receive()
        except BaseException:
            self.close()
            raise
        self.facts, self.notes, self._busy = facts, notes, False
        self.tokenizer = _RemoteTokenizer(self, bos, bos_id, eos_id)

    def _receive(self) -> Any:
        try:
            status, payload = self._conn.recv()
        except (EOFError, ConnectionError, OSError):
            self._process.join(JOIN_SECONDS)
            raise crashed(self.name, self._process.exitcode, self._doing) from None
        if status == "error":
            _raise(payload, self.name)
        return payload

    def _call(self, name: str, *args: Any, doing: str = "") -> Any:
        if not self._process.is_alive() and self._process.exitcode is not None:
            raise crashed(self.name, self._process.exitcode, "an earlier call")
        self._doing = doing or name
        self._busy = True
        try:
            self._conn.send((name, args))
        except (BrokenPipeError, ConnectionError, OSError):
            self._process.join(JOIN_SECONDS)
            raise crashed(self.name, self._process.exitcode, self._doing) from None
        value, notes = self._receive()
        self._busy = False
        self.notes[:] = notes
        return value

    def unsupported(self, variant: Any) -> str | None:
        return self._call("unsupported", variant)

    def reserve(self, tokens: int) -> None:
        self._call("reserve", tokens)

    def generate(self, variant: Any, ids: list[int], max_new_tokens: int) -> Any:
        return self._call("generate", variant, ids, max_new_tokens, doing=f"generating after {len(ids):,} tokens ({variant.name})")

    def score(self, variant: Any, ids: list[int], score_from: int) -> Any:
        return self._call("score", variant, ids, score_from, doing=f"scoring {len(ids):,} tokens ({variant.name})")

    def available_memory(self) -> int:
        return self._call("available_memory")

    def close(self) -> None:
        """End the child: ask it to close its engine, then terminate and kill it if it does not go."""
        process = getattr(self, "_process", None)
        if process is None:
            return
        if self._busy:  # interrupted mid-call: the child is computing and would not read "close" until it is done
            process.terminate()
        try:
            if process.is_alive():
                self._conn.send(("close", ()))
                if self._conn.poll(JOIN_SECONDS):
                    self._conn.recv()
        except (EOFError, OSError, ValueError):
            pass
        process.join(JOIN_SECONDS)
        if process.is_alive():
            process.terminate()
            process.join(JOIN_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()
        self._conn.close()
        self._process = None
