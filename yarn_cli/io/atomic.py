"""Atomic outputs and fast copies.

Everything is written into a hidden temporary sibling of the final path and renamed into place
only when complete, so Ctrl-C, a crash or a full disk never leaves a half-written checkpoint.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from yarn_cli.errors import OutputError

CHUNK = 64 * 1024 * 1024
Progress = Callable[[int], None]


def _same_or_inside(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def check_output(out: Path, source: Path, force: bool) -> None:
    """Refuse an OUT that is, contains or lies inside the input, and an existing OUT without --force."""
    if _same_or_inside(out, source) or _same_or_inside(source, out):
        raise OutputError(f"{out}: output must not be the input {source} or overlap it; choose another -o path")
    if out.exists() or out.is_symlink():
        non_empty = out.is_file() or out.is_symlink() or any(out.iterdir())
        if non_empty and not force:
            raise OutputError(f"{out}: already exists; pass --force to replace it, or choose another -o path")


def temporary_sibling(final: Path) -> Path:
    return final.parent / f".{final.name}.yarn-tmp-{uuid.uuid4().hex[:8]}"


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


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


def publish(tmp: Path, final: Path) -> None:
    """Rename a finished temporary into place; an existing final (allowed by --force) is swapped out."""
    if final.exists() and final.is_dir() and not final.is_symlink():
        trash = temporary_sibling(final)
        os.replace(final, trash)
        try:
            os.replace(tmp, final)
        except BaseException:
            os.replace(trash, final)
            raise
        remove_path(trash)
    else:
        os.replace(tmp, final)
    fsync_path(final.parent)


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; publish it on success, remove it on any failure."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(final)
    try:
        yield tmp
        publish(tmp, final)
    except OSError as exc:
        remove_path(tmp)
        raise explain_os_error(exc, final) from exc
    except BaseException:
        remove_path(tmp)
        raise


def explain_os_error(exc: OSError, where: Path) -> OutputError:
    if exc.errno == errno.ENOSPC:
        return OutputError(f"{where}: no space left on the device; nothing was written, free space and retry")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"{where}: not writable ({exc.strerror}); choose another -o path")
    return OutputError(f"{where}: write failed ({exc.strerror or exc}); nothing was written")


@functools.cache
def _start_writeback() -> Callable[[int, int, int], None] | None:
    """Linux's sync_file_range(SYNC_FILE_RANGE_WRITE), or None where it is missing.

    Starting write-back of each chunk as soon as it lands overlaps the copy with the disk writes,
    so the fsync that makes the final rename durable finds almost nothing left to flush.
    """
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return lambda fd, offset, count: function(fd, offset, count, 2)


def copy_range(src_fd: int, dst_fd: int, offset: int, length: int, progress: Progress | None = None) -> None:
    """Copy ``length`` bytes from ``src_fd`` at ``offset`` to ``dst_fd``'s current position, in the kernel
    where it can (copy_file_range, which may reflink), else sendfile, else read/write."""
    remaining = length
    position = offset
    written_at = os.lseek(dst_fd, 0, os.SEEK_CUR)
    writeback = _start_writeback()
    for method in ("copy_file_range", "sendfile", "readwrite"):
        try:
            while remaining:
                step = min(CHUNK, remaining)
                if method == "copy_file_range":
                    done = os.copy_file_range(src_fd, dst_fd, step, offset_src=position)
                elif method == "sendfile":
                    done = os.sendfile(dst_fd, src_fd, position, step)
                else:
                    data = os.pread(src_fd, step, position)
                    done = os.write(dst_fd, data) if data else 0
                if done == 0:
                    raise OSError(errno.EIO, f"source ended {remaining} bytes early")
                position += done
                remaining -= done
                if writeback:
                    writeback(dst_fd, written_at, done)
                written_at += done
                if progress:
                    progress(done)
            return
        except (AttributeError, OSError) as exc:
            unsupported = isinstance(exc, AttributeError) or exc.errno in (
                errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF,
            )
            if not unsupported or method == "readwrite":
                raise


def link_or_copy(src: Path, dst: Path, progress: Progress | None = None) -> str:
    """Hard-link ``src`` to ``dst`` on the same filesystem, else copy it; returns "linked" or "copied"."""
    try:
        os.link(src, dst)
        if progress:
            progress(src.stat().st_size)
        return "linked"
    except OSError:
        pass
    size = src.stat().st_size
    with open(src, "rb") as source, open(dst, "wb") as target:
        copy_range(source.fileno(), target.fileno(), 0, size, progress)
        target.flush()
        os.fsync(target.fileno())
    shutil.copystat(src, dst)
    return "copied"
