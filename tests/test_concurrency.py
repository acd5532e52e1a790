"""The protocol's concurrent requests (verify --endpoint --concurrency N): cells come back in job order whatever order
the requests finish in, at most N are in flight, and the first failure ends the run."""

from __future__ import annotations

import threading
import time

import pytest

from yarn_cli.usecases.verify.concurrent import concurrently
from yarn_cli.usecases.verify.tasks.base import Cell, Job


class SlowTask:
    name = "slow"

    def __init__(self, fail_at: int | None = None):
        self.fail_at, self.active, self.most, self.lock = fail_at, 0, 0, threading.Lock()

    def run(self, engine, variant, job):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            time.sleep(0.01 * (10 - job.sample))  # the first jobs finish last
            if job.sample == self.fail_at:
                raise ValueError(f"request {job.sample} failed")
            return Cell("slow", "extended", job.length, None, job.sample, float(job.sample))
        finally:
            with self.lock:
                self.active -= 1


class Variant:
    name = "extended"


def test_cells_keep_job_order_and_at_most_n_run_at_once():
    jobs = [Job("slow", 100, [1], None, i) for i in range(10)]
    task, advanced = SlowTask(), []
    cells = concurrently(None, task, Variant(), jobs, 4, advanced.append, None)
    assert [c.sample for c in cells] == list(range(10)) and sum(advanced) == 10
    assert 1 < task.most <= 4


def test_the_first_failure_ends_the_run():
    jobs = [Job("slow", 100, [1], None, i) for i in range(10)]
    with pytest.raises(ValueError, match="request 9 failed"):
        concurrently(None, SlowTask(fail_at=9), Variant(), jobs, 4, None, None)
