"""Atomic outputs: one transaction per OUT, under a lock, with every temporary on record.

Everything is written into hidden temporary siblings of the final paths and renamed into place only
when complete, so Ctrl-C, SIGTERM, a crash or a full disk never leaves a half-written checkpoint.

A transaction holds an exclusive ``flock`` on ``.OUT.yarn-lock`` beside OUT for as long as it writes,
and appends the name of each temporary to that file *before* creating it. So:
- a second writer to the same OUT finds the lock held and fails at once with one line (it never
  mixes its files with the first writer's);
- a run killed with SIGKILL (OOM killer, preempted node) leaves its lock file behind with the list
  of what it created; the kernel releases the flock with the process, so the next run that targets
  the same OUT takes the lock, removes exactly the temporaries listed there, and says so. Nothing
  that is not on such a list is ever removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from yarn_cli.errors import OutputError


@dataclass(frozen=True)
class WrittenFile:
    """One file an output transaction wrote, as --json lists it."""

    path: str
    action: str  # "rewritten", "baked", "written", "reflinked", "linked" or "copied"
    bytes: int


TMP_MARK = ".yarn-tmp-"
LOCK_SUFFIX = ".yarn-lock"
_TOOL = "yarn_cli"
# What temporary_sibling makes: a hidden name in OUT's own folder (no "/"), so nothing else can match.
_TMP_NAME = re.compile(r"^\.[^/]+" + re.escape(TMP_MARK) + r"[0-9a-f]{8}$")
Notify = Callable[[str], None]


def _same_or_inside(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def check_output(out: Path, source: Path, force: bool) -> None:
    """Refuse an OUT that is, contains or lies inside the input, and an existing OUT without --force."""
    if _same_or_inside(out, source) or _same_or_inside(source, out):
        raise OutputError(f"{out}: output must not be the input {source} or overlap it; choose another -o path")
    _check_exists(out, force)


def _check_exists(out: Path, force: bool) -> None:
    if force or not (out.exists() or out.is_symlink()):
        return
    non_empty = not out.is_dir() or out.is_symlink() or any(out.iterdir())
    if non_empty:
        raise OutputError(f"{out}: already exists; pass --force to replace it, or choose another -o path")


def temporary_sibling(final: Path) -> Path:
    return final.parent / f".{final.name}{TMP_MARK}{uuid.uuid4().hex[:8]}"


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}{LOCK_SUFFIX}"


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def path_bytes(path: Path) -> int:
    """Bytes stored under ``path`` (a file, or a folder's files); symlinks are not followed."""
    if path.is_symlink() or not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def fsync_path(path: Path) -> None:
    """fsync a file, or a directory's entries, where the platform allows it."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: Path, already: frozenset[Path] | set[Path] = frozenset()) -> None:
    """Make a new folder durable before it is renamed into place: every file in it (but those in
    ``already``, synced by their writer, and hard links, which share a durable source inode), then the folder."""
    for entry in folder.rglob("*"):
        if entry.is_file() and entry not in already and entry.stat().st_nlink == 1:
            fsync_path(entry)
    fsync_path(folder)


def explain_os_error(exc: OSError, where: Path) -> OutputError:
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return OutputError(f"{where}: no space left on the device; nothing was written, free space and retry")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"{where}: not writable ({exc.strerror}); nothing was written, choose another -o path")
    return OutputError(f"{where}: write failed ({exc.strerror or exc}); nothing was written")


@functools.cache
def _renameat2() -> Callable[[Path, Path], None] | None:
    """Linux's renameat2(RENAME_EXCHANGE): swaps two paths in one step, or None where libc lacks it."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2

    def exchange(a: Path, b: Path) -> None:
        if function(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return exchange


class _Lock:
    """The flock on ``.OUT.yarn-lock``; its file is the owner record and the list of temporaries."""

    def __init__(self, out: Path):
        self.path = lock_path(out)
        self.fd = -1

    def acquire(self, out: Path) -> str:
        """Take the lock; returns the previous (dead) owner's record text, "" when there was none."""
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _owner_line(self.path)
                os.close(fd)
                raise OutputError(
                    f"{out}: another yarn_cli process{owner} is writing it now; wait for it to finish or choose another -o path"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous owner unlinked the file we locked: lock the new one
                os.close(fd)
                continue
            self.fd = fd
            previous = os.pread(fd, 1 << 20, 0).decode("utf-8", "replace")
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)  # record() appends from here
            record = {"tool": _TOOL, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
            os.write(fd, (json.dumps(record) + "\n").encode())
            return previous
        raise OutputError(f"{self.path}: could not take the output lock; retry")

    def record(self, temporary: Path) -> None:
        """Append before creating: a crash between the two leaves a name that does not exist, harmless."""
        os.write(self.fd, (temporary.name + "\n").encode())

    def release(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = -1


def _owner_line(path: Path) -> str:
    try:
        first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
        return f" (pid {int(first['pid'])} on {first['host']})"
    except (OSError, ValueError, IndexError, KeyError, TypeError):
        return ""


def _stale_temporaries(previous: str, parent: Path) -> list[Path]:
    """Temporaries a dead run recorded: only names of our own pattern, only in OUT's folder."""
    lines = previous.splitlines()
    try:
        if json.loads(lines[0]).get("tool") != _TOOL:
            return []
    except (ValueError, IndexError, AttributeError):
        return []
    found = []
    for name in lines[1:]:
        if _TMP_NAME.match(name):
            candidate = parent / name
            if candidate.exists() or candidate.is_symlink():
                found.append(candidate)
    return found


class Transaction:
    """Temporaries for the final paths of one output, published together or not at all."""

    def __init__(self, lock: _Lock):
        self._lock = lock
        self._pending: list[tuple[Path, Path]] = []  # (temporary, final), in creation order
        self._discard: list[Path] = []

    def temporary(self, final: Path) -> Path:
        """A recorded temporary sibling for ``final`` (not created: the caller writes it)."""
        tmp = self._new_name(final)
        self._pending.append((tmp, final))
        return tmp

    def _new_name(self, final: Path) -> Path:
        tmp = temporary_sibling(final)
        self._lock.record(tmp)
        self._discard.append(tmp)
        return tmp

    def publish(self) -> None:
        """Rename every temporary into place, the first-created last (the file loaders open first)."""
        for tmp, final in reversed(self._pending):
            self._publish_one(tmp, final)
        for final in {final.parent for _, final in self._pending}:
            fsync_path(final)

    def _publish_one(self, tmp: Path, final: Path) -> None:
        if final.is_dir() and not final.is_symlink():
            exchange = _renameat2()
            try:
                if exchange is None:
                    raise OSError(errno.ENOSYS, "no renameat2")
                # One step: readers see the old folder or the new one, never neither. The old one now
                # sits at the temporary's recorded name, so cleanup (or the next run) removes it.
                exchange(tmp, final)
            except OSError as exc:
                if exc.errno not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                os.replace(final, self._new_name(final))
                os.replace(tmp, final)
        else:
            os.replace(tmp, final)

    def cleanup(self) -> None:
        for path in self._discard:
            remove_path(path)


@contextlib.contextmanager
def output_transaction(out: Path, force: bool, notify: Notify | None = None) -> Iterator[Transaction]:
    """Lock OUT, reclaim what a killed run left, yield a Transaction; publish on success, else remove all.

    Any OSError (full disk, read-only folder) becomes one OutputError naming OUT.
    """
    created = _missing_parents(out.parent)
    lock = _Lock(out)
    transaction = Transaction(lock)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        previous = lock.acquire(out)
        _reclaim(previous, out, notify)
        _check_exists(out, force)  # again, under the lock: another run may have published meanwhile
        yield transaction
        transaction.publish()
    except OSError as exc:
        _abandon(transaction, lock, created)
        raise explain_os_error(exc, out) from exc
    except BaseException:
        _abandon(transaction, lock, created)
        raise
    transaction.cleanup()
    lock.release()


def _abandon(transaction: Transaction, lock: _Lock, created: list[Path]) -> None:
    transaction.cleanup()
    lock.release()
    for folder in created:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _missing_parents(folder: Path) -> list[Path]:
    """Folders mkdir(parents=True) would create, innermost first (removed again if the write fails)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _reclaim(previous: str, out: Path, notify: Notify | None) -> None:
    stale = _stale_temporaries(previous, out.parent)
    if not stale:
        return
    size = sum(path_bytes(p) for p in stale)
    for path in stale:
        remove_path(path)
    if notify:
        names = ", ".join(p.name for p in stale)
        notify(f"reclaimed {size:,} bytes left by an interrupted run for {out.name}: {names}")


@contextlib.contextmanager
def atomic_path(final: Path, force: bool = True, notify: Notify | None = None) -> Iterator[Path]:
    """One temporary path for ``final`` inside an output transaction."""
    with output_transaction(final, force, notify) as transaction:
        yield transaction.temporary(final)
