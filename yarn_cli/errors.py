"""The error hierarchy. Core and io raise these; only the CLI turns them into messages and exit codes.

Every message is one line that says what went wrong, where, and what to do about it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class YarnError(Exception):
    """Base class: a problem we can explain to the user in one line."""

    exit_code = 1

    def at(self, where: object) -> YarnError:
        """The same error naming the file it is about: core reads dicts and names keys, io knows the path."""
        message, where = str(self), str(where)
        if where in message:
            return self
        if message.startswith("config.json: "):
            message = message[len("config.json: ") :]
        return type(self)(f"{where}: {message}")


class InputError(YarnError):
    """The user asked for something that cannot be done as asked (bad flag value, missing path)."""

    exit_code = 2


class FormatError(YarnError):
    """A file is malformed, truncated, hostile or not what its name says."""

    exit_code = 3


class UnsupportedError(YarnError):
    """A valid model that this tool cannot handle (no RoPE, unknown family for baking, quantized tensors)."""

    exit_code = 4


class AlreadyScaledError(YarnError):
    """The checkpoint already carries a RoPE scaling; stacking a second one silently would be wrong."""

    exit_code = 5


class OutputError(YarnError):
    """The output location is unusable (exists, equals the input, not writable)."""

    exit_code = 6


class FetchError(YarnError):
    """A download (the Hugging Face Hub, the default model) failed or is impossible offline."""

    exit_code = 7


class EngineCrashed(YarnError):
    """An engine's native code died (SIGSEGV, SIGILL...) in its own process; yarn_cli lives on to say so."""

    exit_code = 8


def first_line(exc: BaseException, limit: int = 200) -> str:
    """A third-party exception quoted inside one of our one-line messages: its first line, or its type's name."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived. A BaseException, like KeyboardInterrupt, so no ``except
    Exception`` swallows it and every cleanup on the way out runs: temporaries are removed."""

    def __init__(self, signum: int, name: str):
        super().__init__(name)
        self.signum = signum
        self.name = name


@contextlib.contextmanager
def about(where: object) -> Iterator[None]:
    """Errors about a file's content raised inside name that file (flag errors pass unchanged)."""
    try:
        yield
    except (FormatError, UnsupportedError, AlreadyScaledError) as exc:
        raise exc.at(where) from exc
