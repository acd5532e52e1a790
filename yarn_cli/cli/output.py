"""Machine output, kept free of rich so a --json run imports none of it."""

from __future__ import annotations

import json
import re
import sys
from typing import Any


def print_json(data: Any) -> None:
    """The one way every command prints --json: strict JSON (NaN is a bug), on stdout only."""
    sys.stdout.write(json.dumps(data, indent=2, allow_nan=False, default=str) + "\n")


# An argument whose name says it holds a credential (lm-eval's model args may carry an API key) is never stored.
_SECRET = re.compile(r"(?i)(^|[-_])(key|token|secret|password)$")


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed, for a report's provenance, with the value of every credential-like ``name=value``
    (or of the argument after a credential-like flag) replaced by ***."""
    import shlex
    from pathlib import Path

    argv = list(sys.argv if argv is None else argv)
    shown = [Path(argv[0]).name if argv else "yarn"]
    hide_next = False
    for arg in argv[1:]:
        if hide_next:
            shown.append("***")
            hide_next = False
            continue
        if arg.startswith("--") and _SECRET.search(arg) and "=" not in arg:
            hide_next = True
            shown.append(arg)
            continue
        pairs = (part.partition("=") for part in arg.split(","))
        parts = [f"{name}=***" if sep and _SECRET.search(name) else f"{name}{sep}{value}" for name, sep, value in pairs]
        shown.append(",".join(parts))
    return shlex.join(shown)
