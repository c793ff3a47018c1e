"""run_bounded: at most `workers` calls at once, every item once, and a failure stops what has not started."""

from __future__ import annotations

import threading
import time

import pytest

from waldur_slurm.daemon.concurrency import LatencyGovernor, run_bounded


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


def test_the_governor_halves_on_a_slow_call_and_grows_back_one_at_a_time() -> None:
    g = LatencyGovernor(4, slow=1.0)
    assert [g.try_acquire() for _ in range(5)] == [True, True, True, True, False]
    g.release(3.0)  # slow: 4 -> 2, and 3 are still running
    assert (g.limit, g.in_flight, g.backoffs) == (2, 3, 1)
    assert g.try_acquire() is False
    g.release(3.0)  # 2 -> 1
    assert (g.limit, g.in_flight, g.backoffs) == (1, 2, 2)
    assert g.try_acquire() is False
    g.release(0.1)  # one fast call at limit 1: 1 -> 2
    assert (g.limit, g.in_flight) == (2, 1)
    g.release(0.1)  # the fast streak restarts at each step: 1 of 2
    assert (g.limit, g.in_flight) == (2, 0)
    assert g.try_acquire()
    g.release(0.1)  # 2 fast calls at limit 2: 2 -> 3
    assert g.limit == 3
    for _ in range(3 + 4 + 4):  # 3 -> 4, then never above the maximum
        assert g.try_acquire()
        g.release(0.1)
    assert g.limit == 4
    assert g.try_acquire()
    g.release(1.0)  # exactly the threshold is not slow
    assert (g.limit, g.backoffs) == (4, 2)
    one = LatencyGovernor(1, slow=1.0)
    assert one.try_acquire()
    one.release(9.0)
    assert (one.limit, one.backoffs) == (1, 0)  # nothing left to cut


def test_run_bounded_keeps_to_the_governors_limit() -> None:
    """A governor already cut to 1 (its calls were slow): the pool of 4 runs one call at a time until fast
    calls raise the limit; every item runs once, and no call starts above the limit of its time."""
    g = LatencyGovernor(4, slow=5.0)
    for _ in range(3):
        assert g.try_acquire()
    for _ in range(3):
        g.release(60.0)
    assert g.limit == 1
    lock = threading.Lock()
    seen: list[int] = []
    over: list[tuple[int, int]] = []

    def fn(item: int) -> None:
        with lock:
            seen.append(item)
            if g.in_flight > g.limit + 1:  # +1: the limit may drop by one step while a call runs, never more
                over.append((g.in_flight, g.limit))
        time.sleep(0.005)

    run_bounded(fn, list(range(30)), 4, name="t", governor=g)
    assert sorted(seen) == list(range(30)) and over == []
    assert g.in_flight == 0 and g.limit == 4  # fast calls grew it back


def test_with_a_governor_a_failure_stops_the_calls_not_started() -> None:
    g = LatencyGovernor(2, slow=5.0)
    seen: list[int] = []

    def fn(item: int) -> None:
        seen.append(item)
        if item == 0:
            raise PermissionError("token refused")
        time.sleep(0.02)

    with pytest.raises(PermissionError):
        run_bounded(fn, list(range(50)), 2, name="t", governor=g)
    assert 0 in seen and len(seen) < 5, seen
    assert g.in_flight == 0
