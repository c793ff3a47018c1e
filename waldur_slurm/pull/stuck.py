"""Orders that fail the same way cycle after cycle: counted, then given up with a word to the operator.

A server error (5xx, 429) on one order's own step is normally transient, and the order waits for the next
cycle. But some are not: the 2024 server answers 500 to the completion of an Update whose resource limits
hold a key it cannot format, every time, for good. Retrying such an order every period forever says nothing
to anybody. So each order's failures are counted per step; after ``limit`` cycles in a row at the same step
the order is given up: the reconciler marks it erred where the server allows (which tells the consumer and
the operator in Waldur), and otherwise holds it — no more requests for it — and logs one line per cycle.

A held order is tried again when it changes on the server (its ``modified`` time moves: somebody acted on
it) or when the daemon restarts. Failures without an answer from the server (connection refused, timeouts)
are not counted here: they mean Waldur is unreachable, which is the cycle's problem, not the order's.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from waldur_slurm.waldur.errors import WaldurAllocationPending, WaldurError


def counts_as_stuck(error: WaldurError) -> bool:
    """Whether a failure says something about the order itself: the server answered (5xx, 429), or the
    server's task never created the order's allocation."""
    return error.status is not None or isinstance(error, WaldurAllocationPending)


@dataclass
class Failure:
    step: str
    error: str
    cycles: int
    modified: dt.datetime | None
    held: bool = False


class StuckOrders:
    """Consecutive failing cycles per order (in memory: a restart gives every order a fresh count)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._failures: dict[str, Failure] = {}

    def record(self, uuid: str, modified: dt.datetime | None, step: str, error: str) -> Failure:
        """One more failing cycle of ``step``; a failure at another step starts the count again."""
        f = self._failures.get(uuid)
        if f is None or f.step != step or f.held:
            f = Failure(step, error, 0, modified)
            self._failures[uuid] = f
        f.cycles += 1
        f.error = error
        f.modified = modified
        return f

    def reached(self, failure: Failure) -> bool:
        return failure.cycles >= self.limit

    def hold(self, uuid: str) -> None:
        self._failures[uuid].held = True

    def held(self, uuid: str, modified: dt.datetime | None) -> Failure | None:
        """The failure that holds this order, unless the order changed on the server since it was held."""
        f = self._failures.get(uuid)
        if f is None or not f.held:
            return None
        if modified != f.modified:
            del self._failures[uuid]
            return None
        return f

    def succeeded(self, uuid: str) -> None:
        self._failures.pop(uuid, None)

    def keep_only(self, uuids: set[str]) -> None:
        """Forget orders that left the listed states (done, erred or rejected elsewhere)."""
        for uuid in list(self._failures):
            if uuid not in uuids:
                del self._failures[uuid]

    @property
    def held_count(self) -> int:
        return sum(1 for f in self._failures.values() if f.held)
