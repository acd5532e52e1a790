"""verify's tasks, by name. A new task is one module with the Task interface (tasks.base) and one line here.
RULER's tasks (``niah_single_1`` ... ``fwe``, or ``ruler`` for all) run as one task, the RULER suite."""

from __future__ import annotations

from yarn_cli.core.units import split_names
from yarn_cli.core.verify.ruler import TASKS as RULER_TASKS  # not `ruler`: the submodule tasks.ruler would shadow it
from yarn_cli.errors import InputError
from yarn_cli.usecases.verify.tasks.kld import KldTask
from yarn_cli.usecases.verify.tasks.passkey import PasskeyTask
from yarn_cli.usecases.verify.tasks.perplexity import PerplexityTask
from yarn_cli.usecases.verify.tasks.ruler import RulerSuite

TASKS = {"passkey": PasskeyTask, "perplexity": PerplexityTask, "kld": KldTask}
DEFAULT_TASKS = ("passkey", "perplexity", "niah_single_1")
GROUPS = {"ruler": tuple(RULER_TASKS)}


def known() -> str:
    return f"{', '.join(TASKS)}, {', '.join(RULER_TASKS)}, ruler (all of RULER's), or none"


def _expand(names: list[str] | tuple[str, ...]) -> list[str]:
    expanded = [part for name in names for part in GROUPS.get(name, (name,))]
    unknown = [name for name in expanded if name not in TASKS and name not in RULER_TASKS]
    if unknown:
        raise InputError(f"--tasks {','.join(names)!s}: unknown {', '.join(unknown)}; choose from {known()}")
    return list(dict.fromkeys(expanded))


def build(names: list[str] | tuple[str, ...]) -> list:
    """The tasks by name, RULER's together as one suite where the first of them stands; none at all is allowed
    here (``--tasks none``: only what else the run asks for)."""
    expanded = _expand(names)
    chosen_ruler = [name for name in expanded if name in RULER_TASKS]
    result = []
    for name in expanded:
        if name in TASKS:
            result.append(TASKS[name]())
        elif name == chosen_ruler[0]:
            result.append(RulerSuite(chosen_ruler))
    return result


def parse(text: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    if text is None:
        return DEFAULT_TASKS
    names = split_names(text)
    if names == ["none"]:
        return ()
    if not names:
        raise InputError(f"--tasks: choose from {known()}")
    return tuple(_expand(names))  # refuses an unknown name before anything loads
