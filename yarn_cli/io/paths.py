"""Judging a path before opening it: only regular files are read as checkpoint files.

Opening a FIFO blocks until a writer appears and a character device such as /dev/zero reads
forever, so both are refused from their stat, before any open. Symlinks are ordinary input (the
Hugging Face cache is made of them): they are followed, and the file they reach is judged.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from yarn_cli.errors import InputError

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def regular_file(path: Path, hint: str = "pass the checkpoint file itself") -> os.stat_result:
    """The stat of ``path`` if it is (or links to) a regular file; else one InputError saying what it is."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise InputError(f"{path}: a symlink to {os.readlink(path)}, which does not exist") from None
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if stat.S_ISREG(info.st_mode):
        return info
    via = f" (the symlink leads to {os.path.realpath(path)})" if os.path.islink(path) else ""
    raise InputError(f"{path}: is {kind_of(info.st_mode)}{via}, not a regular file; {hint}")
