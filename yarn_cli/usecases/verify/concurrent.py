"""verify's jobs through a server, several at once (``--endpoint --concurrency N``): a server batches what it is sent
together, so the requests of one task and variant go out in parallel and their cells come back in job order."""

from __future__ import annotations

import queue
import threading
from typing import Any

from yarn_cli.core.rope.variants import RopeVariant
from yarn_cli.usecases.verify.tasks.base import Cell, Job


def concurrently(engine: Any, task: Any, variant: RopeVariant, jobs: list[Job], width: int, advance, describe) -> list[Cell]:
    """``task.run`` of every job with up to ``width`` in flight; the cells in job order whatever order they finish in.
    The workers are daemon threads: a Ctrl-C or a failed request ends the run at once, not when the last request
    in flight returns."""
    if describe and jobs:
        describe(f"{variant.name}: {task.name}, {len(jobs)} requests, up to {width} at once")
    pending, lock, stop = iter(enumerate(jobs)), threading.Lock(), threading.Event()
    finished: queue.Queue = queue.Queue()

    def work() -> None:
        while not stop.is_set():
            with lock:
                item = next(pending, None)
            if item is None:
                return
            try:
                finished.put((item[0], task.run(engine, variant, item[1]), None))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, which raises it
                finished.put((item[0], None, exc))

    for _ in range(min(width, len(jobs))):
        threading.Thread(target=work, daemon=True).start()
    results: dict[int, Cell] = {}
    try:
        while len(results) < len(jobs):
            index, cell, error = finished.get()
            if error is not None:
                raise error
            results[index] = cell
            if advance:
                advance(1)
    finally:
        stop.set()
    return [results[i] for i in range(len(jobs))]
