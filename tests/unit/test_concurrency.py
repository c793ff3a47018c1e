"""run_bounded: at most `workers` calls at once, every item once, and a failure stops what has not started."""

from __future__ import annotations

import threading
import time

import pytest

from waldur_slurm.concurrency import run_bounded


def test_every_item_once_and_never_more_than_workers_at_once() -> None:
    lock = threading.Lock()
    running, most, seen = 0, 0, []

    def fn(item: int) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            seen.append(item)
        time.sleep(0.01)
        with lock:
            running -= 1

    run_bounded(fn, list(range(40)), 4, name="t")
    assert sorted(seen) == list(range(40))
    assert 2 <= most <= 4


def test_one_worker_runs_in_the_calling_thread_in_order() -> None:
    threads, seen = set(), []

    def fn(item: int) -> None:
        threads.add(threading.get_ident())
        seen.append(item)

    run_bounded(fn, [3, 1, 2], 1, name="t")
    assert seen == [3, 1, 2] and threads == {threading.get_ident()}


def test_the_first_failure_is_raised_and_the_items_not_started_are_not_run() -> None:
    seen: list[int] = []

    def fn(item: int) -> None:
        seen.append(item)
        if item == 0:
            raise PermissionError("token refused")
        time.sleep(0.05)

    with pytest.raises(PermissionError, match="token refused"):
        run_bounded(fn, list(range(50)), 2, name="t")
    assert 0 in seen and len(seen) < 10, seen
