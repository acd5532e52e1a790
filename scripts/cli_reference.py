"""Write docs/cli.md from the commands' own --help, so the reference cannot drift from the code.

python scripts/cli_reference.py          # rewrite docs/cli.md
python scripts/cli_reference.py --check  # exit 1 when docs/cli.md is stale (tests/test_docs.py runs this)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "cli.md"


def commands() -> list[list[str]]:
    """The top level, then every command the app registers, in its order: a new command cannot be left out."""
    sys.path.insert(0, str(ROOT))
    from yarn_cli.cli.app import app

    return [[]] + [[command.name or command.callback.__name__] for command in app.registered_commands]


def help_text(command: list[str]) -> str:
    env = dict(os.environ, COLUMNS="100", NO_COLOR="1", TERM="dumb", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "yarn_cli", *command, "--help"], capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    return "\n".join(line.rstrip() for line in result.stdout.strip().splitlines())


def render() -> str:
    parts = [
        "# Command-line reference",
        "",
        "Generated from each command's `--help` by `python scripts/cli_reference.py`; a test fails when it is stale.",
        "The installed command is both `yarn` and `yarn-cli` (and `python -m yarn_cli`).",
    ]
    for command in commands():
        title = " ".join(["yarn", *command])
        parts += ["", f"## `{title}`", "", "```text", help_text(command), "```"]
    return "\n".join(parts) + "\n"


def main() -> int:
    from generated import write_or_check

    return write_or_check(TARGET, render(), "cli_reference.py")


if __name__ == "__main__":
    sys.exit(main())
