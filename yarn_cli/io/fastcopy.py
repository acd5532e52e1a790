"""Moving bytes at the speed of the storage: file plans run by a bounded pool of workers.

A writer describes each output file as a :class:`FilePlan`: byte ranges (:class:`Piece`) that are literal
bytes (a new header), kernel copies from the source (``copy_file_range``: no byte passes through Python,
and filesystems with reflinks share the blocks), or source rows transformed by a function (the q/k rows a
bake scales). Every piece names its offset in the output, so pieces of one file, and whole files, are
written in parallel without any shared file position. Each output is fsynced once, at the end.

An unchanged weight file in OUT costs no disk where it can: a reflink (copy-on-write clone: btrfs, XFS,
bcachefs, ZFS 2.2+) is an independent file that shares blocks until one side is written, so it is always
preferred. Where the filesystem has no reflinks, a hard link is the default (the same inode: a tool that
later rewrites that file of OUT in place, rather than writing a new file and renaming it, would change the
input too); ``--copy`` asks for independent files there at the cost of the disk space.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import errno
import fcntl
import functools
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from yarn_cli.io import interrupts

# Pieces are split to this size: big enough that syscalls cost nothing, small enough that workers share a file.
CHUNK = 64 * 1024 * 1024
Progress = Callable[[int], None]
# How long a signal can wait while workers run: short next to any piece, long next to the poll's cost.
POLL_SECONDS = 0.05
# <linux/fs.h>: _IOW(0x94, 9, int)
FICLONE = 0x40049409
_UNSUPPORTED = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF)


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class Piece:
    """``length`` bytes of an output at ``offset``: ``data`` as given, else the source's bytes at
    ``source_offset``, passed through ``transform`` (same length out as in) when there is one."""

    offset: int
    length: int
    source_offset: int | None = None
    data: bytes | None = None
    transform: Callable[[bytes], bytes] | None = None


@dataclass
class FilePlan:
    target: Path
    size: int
    source: Path | None = None
    pieces: list[Piece] = field(default_factory=list)

    def add_data(self, offset: int, data: bytes) -> None:
        self.pieces.append(Piece(offset, len(data), data=data))

    def add_copy(self, offset: int, source_offset: int, length: int) -> None:
        """A kernel copy, merged with the previous piece when the two ranges continue each other."""
        if length <= 0:
            return
        last = self.pieces[-1] if self.pieces else None
        if (
            last is not None
            and last.data is None
            and last.transform is None
            and last.source_offset is not None
            and last.offset + last.length == offset
            and last.source_offset + last.length == source_offset
        ):
            self.pieces[-1] = Piece(last.offset, last.length + length, source_offset=last.source_offset)
        else:
            self.pieces.append(Piece(offset, length, source_offset=source_offset))


class Cancelled(Exception):
    """Raised in workers once another worker failed or the run was interrupted."""


@functools.cache
def _start_writeback() -> Callable[[int, int, int], None] | None:
    """Linux's sync_file_range(SYNC_FILE_RANGE_WRITE), or None where it is missing.

    Starting write-back of each piece as soon as it lands overlaps the copy with the disk writes, so
    the one fsync per file before the rename finds almost nothing left to flush.
    """
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return lambda fd, offset, count: function(fd, offset, count, 2)


def copy_bytes(src_fd: int, dst_fd: int, src_offset: int, dst_offset: int, length: int) -> None:
    """Copy a byte range between explicit offsets: in the kernel where it can, else pread/pwrite."""
    done = 0
    use_kernel = hasattr(os, "copy_file_range")
    while done < length:
        step = min(CHUNK, length - done)
        if use_kernel:
            try:
                moved = os.copy_file_range(src_fd, dst_fd, step, src_offset + done, dst_offset + done)
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                use_kernel = False
                continue
        else:
            data = os.pread(src_fd, step, src_offset + done)
            moved = _pwrite_all(dst_fd, data, dst_offset + done) if data else 0
        if moved == 0:
            raise OSError(errno.EIO, f"source ended {length - done} bytes early")
        done += moved


def _pwrite_all(fd: int, data: bytes, offset: int) -> int:
    view = memoryview(data)
    written = 0
    while written < len(view):
        written += os.pwrite(fd, view[written:], offset + written)
    return written


def _read_exact(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    while len(data) < length:
        more = os.pread(fd, length - len(data), offset + len(data))
        if not more:
            raise OSError(errno.EIO, f"source ended {length - len(data)} bytes early")
        data += more
    return data


def _split(piece: Piece) -> list[Piece]:
    if piece.data is not None or piece.transform is not None or piece.length <= CHUNK:
        return [piece]
    return [
        Piece(piece.offset + start, min(CHUNK, piece.length - start), source_offset=piece.source_offset + start)
        for start in range(0, piece.length, CHUNK)
    ]


def _write_piece(piece: Piece, src_fd: int | None, dst_fd: int) -> None:
    if piece.data is not None:
        _pwrite_all(dst_fd, piece.data, piece.offset)
    elif piece.transform is not None:
        out = piece.transform(_read_exact(src_fd, piece.length, piece.source_offset))
        if len(out) != piece.length:
            raise ValueError(f"a transform returned {len(out)} bytes for a {piece.length}-byte range")
        _pwrite_all(dst_fd, out, piece.offset)
    else:
        copy_bytes(src_fd, dst_fd, piece.source_offset, piece.offset, piece.length)
    writeback = _start_writeback()
    if writeback:
        writeback(dst_fd, piece.offset, piece.length)


def write_files(plans: Sequence[FilePlan], workers: int = 1, progress: Progress | None = None) -> None:
    """Create every plan's target (a fresh path), write all pieces, fsync each target once.

    With ``workers`` > 1 the pieces run on a thread pool (copy_file_range, pread/pwrite and numpy release
    the GIL). On any failure, or an interrupt in the main thread, the other workers stop at their next
    piece and the error is raised once every worker has stopped, so the caller can remove the targets
    knowing nothing writes to them any more.
    """
    opened: dict[Path, int] = {}
    stop = threading.Event()

    def fd_of(path: Path, flags: int) -> int:
        if path not in opened:
            opened[path] = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
        return opened[path]

    try:
        jobs = []
        for plan in plans:
            dst_fd = fd_of(plan.target, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            os.ftruncate(dst_fd, plan.size)
            src_fd = fd_of(plan.source, os.O_RDONLY) if plan.source is not None else None
            jobs += [(piece, src_fd, dst_fd) for whole in plan.pieces for piece in _split(whole)]

        def run(job: tuple[Piece, int | None, int]) -> None:
            if stop.is_set():
                raise Cancelled()
            _write_piece(*job)
            if progress:
                progress(job[0].length)

        targets = [opened[plan.target] for plan in plans]
        _run_all(run, jobs, workers, stop)
        _run_all(os.fsync, targets, workers, stop)
    finally:
        for fd in opened.values():
            os.close(fd)


def _run_all(function: Callable, items: list, workers: int, stop: threading.Event) -> None:
    # Signals are taken between items, never inside a thread pool's locks (see io.interrupts).
    with interrupts.deferred():
        if workers <= 1 or len(items) <= 1:
            for item in items:
                interrupts.check()
                function(item)
            return
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="yarn-write") as pool:
            futures = [pool.submit(function, item) for item in items]
            try:
                _wait_all(futures)
            except BaseException:
                stop.set()
                for future in futures:
                    future.cancel()
                concurrent.futures.wait(futures)
                raise


def _wait_all(futures: list[concurrent.futures.Future]) -> None:
    """Return when every future is done; raise the first failure, or a signal, as soon as it comes.

    Until this raises, no worker has seen ``stop``, so a failure here is a real error, not a Cancelled.
    """
    waiting = set(futures)
    while waiting:
        done, waiting = concurrent.futures.wait(waiting, timeout=POLL_SECONDS, return_when=concurrent.futures.FIRST_EXCEPTION)
        interrupts.check()
        failed = [future.exception() for future in futures if future in done and future.exception() is not None]
        if failed:
            raise failed[0]


def whole_file_copy(source: Path, target: Path) -> FilePlan:
    size = source.stat().st_size
    plan = FilePlan(target=target, size=size, source=source)
    plan.add_copy(0, 0, size)
    return plan


def reflink(src_fd: int, dst_fd: int) -> bool:
    """Clone the whole of ``src_fd`` into ``dst_fd`` copy-on-write; False where the filesystem cannot."""
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
        return True
    except OSError:
        return False


def clone(src: Path, dst: Path, hardlink: bool = True) -> str | None:
    """Give ``dst`` the content of ``src`` for free: "reflinked", "linked" (when ``hardlink``), or None
    when only a copy can do it (the caller then plans a whole-file copy)."""
    with open(src, "rb") as source, open(dst, "wb") as target:
        if reflink(source.fileno(), target.fileno()):
            shutil.copystat(src, dst)
            return "reflinked"
    os.unlink(dst)
    if hardlink:
        try:
            os.link(src, dst)
            return "linked"
        except OSError:
            pass
    return None
