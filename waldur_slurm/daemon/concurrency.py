"""Bounded concurrency for independent Waldur requests (push writes, team reads), and a limit that backs off
when the server slows down."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class LatencyGovernor:
    """How many calls may run at once, additive-increase / multiplicative-decrease on their latency.

    A call slower than ``slow`` seconds halves the limit (never below 1); ``limit`` fast calls in a row raise it
    by one (never above ``maximum``). Why: more concurrent writes than the server has workers only queue there
    (measured on the 2024 server with 3 gunicorn workers: 8 concurrent ``set_usage`` calls averaged 7.2 s and
    some passed the 15 s timeout), and each queued second brings the next call nearer to its timeout.
    Thread-safe; ``acquire``/``release`` are the gate, ``try_acquire`` never blocks.
    """

    def __init__(self, maximum: int, slow: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.maximum = max(1, int(maximum))
        self.slow = slow
        self.clock = clock
        self.limit = self.maximum
        self.in_flight = 0
        self.backoffs = 0  # how many times the limit was cut (reported by the caller)
        self._fast = 0
        self._cond = threading.Condition()

    def try_acquire(self) -> bool:
        with self._cond:
            if self.in_flight >= self.limit:
                return False
            self.in_flight += 1
            return True

    def acquire(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1

    def release(self, seconds: float) -> None:
        """End one call that took ``seconds`` and adapt the limit."""
        with self._cond:
            self.in_flight -= 1
            if seconds > self.slow:
                if self.limit > 1:
                    self.backoffs += 1
                self.limit = max(1, self.limit // 2)
                self._fast = 0
            else:
                self._fast += 1
                if self._fast >= self.limit and self.limit < self.maximum:
                    self.limit += 1
                    self._fast = 0
            self._cond.notify_all()


def run_bounded(
    fn: Callable[[T], None], items: Sequence[T], workers: int, *, name: str, governor: LatencyGovernor | None = None
) -> None:
    """``fn(item)`` for every item, at most ``workers`` at once (in the calling thread when that is one), and
    with a ``governor`` at most its current limit at once.

    The first exception ``fn`` raises is re-raised once the calls in flight have ended; the calls not
    started yet are not run, so a refused token does not send the rest of the batch."""
    workers = max(1, int(workers))
    failed = threading.Event()

    def call(item: T) -> None:
        if governor is None:
            fn(item)
            return
        governor.acquire()
        started = governor.clock()
        try:
            if not failed.is_set():
                fn(item)
        except BaseException:
            failed.set()
            raise
        finally:
            governor.release(governor.clock() - started)

    if workers == 1 or len(items) <= 1:
        for item in items:
            call(item)
        return
    pool = ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix=name)
    try:
        for future in [pool.submit(call, item) for item in items]:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
