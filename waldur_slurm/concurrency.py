"""Bounded concurrency for independent Waldur requests (push writes, team reads)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def run_bounded(fn: Callable[[T], None], items: Sequence[T], workers: int, *, name: str) -> None:
    """``fn(item)`` for every item, at most ``workers`` at once (in the calling thread when that is one).

    The first exception ``fn`` raises is re-raised once the calls in flight have ended; the calls not
    started yet are cancelled, so a refused token does not send the rest of the batch."""
    workers = max(1, int(workers))
    if workers == 1 or len(items) <= 1:
        for item in items:
            fn(item)
        return
    pool = ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix=name)
    try:
        for future in [pool.submit(fn, item) for item in items]:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
