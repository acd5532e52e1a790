"""When a signal may unwind the main thread.

The command line turns SIGINT, SIGTERM and SIGHUP into :class:`~yarn_cli.errors.Interrupted`, raised by
the signal handler wherever the main thread happens to be. That is safe in plain code, but not while
other threads share locks with it: the exception can land between a lock's acquire and the ``with``
block meant to release it (``concurrent.futures``' conditions are one such place), and a worker then
waits on that lock forever, so the process hangs instead of stopping.

Code that waits on threads runs inside :func:`deferred`. There the handler only records the signal, and
the code raises it at a point of its own choosing with :func:`check`, or when the block ends.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

from yarn_cli.errors import Interrupted

_depth = 0
_pending: int | None = None


def deliver(signum: int) -> None:
    """Called from the signal handler: raise now, or, inside :func:`deferred`, remember for later."""
    global _pending
    if _depth > 0:
        _pending = signum
        return
    raise interrupted(signum)


def interrupted(signum: int) -> Interrupted:
    return Interrupted(signum, signal.Signals(signum).name)


def pending() -> bool:
    return _pending is not None


def check() -> None:
    """Raise the signal that arrived inside :func:`deferred`, if one did."""
    global _pending
    if _pending is not None:
        signum, _pending = _pending, None
        raise interrupted(signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            check()  # a signal wins over an error already on its way out: the user asked to stop
