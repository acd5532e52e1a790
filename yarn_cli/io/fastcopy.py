"""Moving bytes without passing them through Python: reflinks, kernel copies, hard links.

An unchanged weight file in OUT costs no disk where it can: a reflink (copy-on-write clone: btrfs,
XFS, bcachefs, ZFS 2.2+) is an independent file that shares blocks until one side is written, so it is
always preferred. Where the filesystem has no reflinks, a hard link is the default (the same inode:
a tool that later rewrites that file of OUT in place, rather than writing a new file and renaming it,
would change the input too); ``--copy`` asks for independent files there at the cost of the disk space.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
import shutil
from collections.abc import Callable
from pathlib import Path

CHUNK = 64 * 1024 * 1024
Progress = Callable[[int], None]
# <linux/fs.h>: _IOW(0x94, 9, int)
FICLONE = 0x40049409


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




def reflink(src_fd: int, dst_fd: int) -> bool:
    """Clone the whole of ``src_fd`` into ``dst_fd`` copy-on-write; False where the filesystem cannot."""
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
        return True
    except OSError:
        return False


def link_or_copy(src: Path, dst: Path, progress: Progress | None = None, hardlink: bool = True) -> str:
    """Give ``dst`` the content of ``src`` at the least cost; returns "reflinked", "linked" or "copied".

    A reflink first (independent, free); then a hard link when ``hardlink`` (free, shares the inode);
    else a kernel copy, fsynced.
    """
    size = src.stat().st_size
    with open(src, "rb") as source, open(dst, "wb") as target:
        if reflink(source.fileno(), target.fileno()):
            shutil.copystat(src, dst)
            if progress:
                progress(size)
            return "reflinked"
    if hardlink:
        os.unlink(dst)
        try:
            os.link(src, dst)
            if progress:
                progress(size)
            return "linked"
        except OSError:
            pass
    with open(src, "rb") as source, open(dst, "wb") as target:
        copy_range(source.fileno(), target.fileno(), 0, size, progress)
        target.flush()
        os.fsync(target.fileno())
    shutil.copystat(src, dst)
    return "copied"
