"""verify's tasks, by name. A new task is one module with the Task interface (tasks.base) and one line here."""

from __future__ import annotations

from yarn_cli.core.units import split_names
from yarn_cli.errors import InputError
from yarn_cli.usecases.verify.tasks.passkey import PasskeyTask
from yarn_cli.usecases.verify.tasks.perplexity import PerplexityTask

TASKS = {"passkey": PasskeyTask, "perplexity": PerplexityTask}
DEFAULT_TASKS = ("passkey", "perplexity")


def build(names: list[str] | tuple[str, ...]) -> list:
    """The tasks by name; none at all is allowed here (``--tasks none``: only what else the run asks for)."""
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        raise InputError(f"--tasks {','.join(names)!s}: choose from {', '.join(TASKS)}, or none")
    return [TASKS[name]() for name in dict.fromkeys(names)]


def parse(text: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    if text is None:
        return DEFAULT_TASKS
    names = split_names(text)
    if names == ["none"]:
        return ()
    if not names:
        raise InputError(f"--tasks: choose from {', '.join(TASKS)}, or none")
    build(names)  # refuse an unknown name before anything loads
    return tuple(dict.fromkeys(names))
