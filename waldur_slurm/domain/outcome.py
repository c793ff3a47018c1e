"""How a unit of work (an order, a resource) ended a cycle, and the one classification of errors.

Every daemon asks ``classify`` what an error means instead of testing exception types itself:

- ``TRANSIENT``: try again next cycle, nothing is wrong with the work (a 5xx, a timeout, slurmdbd down,
  jobs still completing after a cancel);
- ``AUTH``: the token is refused: the daemon stops (exit 3), it never marks work erred for it;
- ``MISCONFIGURED``: the agent's own setup prevents the work (no sacctmgr, no container): the work waits,
  the operator is told;
- ``PERMANENT``: this work can never succeed as it is: it fails on its own, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from waldur_slurm.slurm.errors import ActiveJobsError, CommandNotFound, ContainerMissing, SlurmError, SlurmTransientError
from waldur_slurm.waldur.errors import WaldurAuthError, WaldurError, WaldurTransientError


class ErrorKind(Enum):
    TRANSIENT = "transient"
    AUTH = "auth"
    MISCONFIGURED = "misconfigured"
    PERMANENT = "permanent"


def classify(exc: BaseException) -> ErrorKind:
    if isinstance(exc, WaldurAuthError):
        return ErrorKind.AUTH
    if isinstance(exc, (CommandNotFound, ContainerMissing)):
        return ErrorKind.MISCONFIGURED
    # ActiveJobsError: a removal raced the jobs a cancel of the same cycle is still completing.
    if isinstance(exc, (SlurmTransientError, WaldurTransientError, ActiveJobsError)):
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT


def retry_later(exc: BaseException) -> bool:
    """The work waits for a later cycle (it is not failed)."""
    return classify(exc) in (ErrorKind.TRANSIENT, ErrorKind.MISCONFIGURED)


def tool_failure(exc: WaldurError | SlurmError) -> tuple[int, str]:
    """A one-shot job's exit code and words for a Waldur or SLURM error that ended it: 3 the token was refused,
    4 Waldur or SLURM could not be reached, 1 Waldur refused the read or a SLURM command failed."""
    if isinstance(exc, WaldurAuthError):
        return 3, f"Waldur refused the API token: {exc}"
    if isinstance(exc, WaldurTransientError):
        return 4, f"Waldur unreachable: {exc}"
    if isinstance(exc, SlurmError):
        return (4, f"SLURM unreachable: {exc}") if retry_later(exc) else (1, f"SLURM command failed: {exc}")
    return 1, f"Waldur refused the read: {exc}"


class Status(Enum):
    DONE = "done"
    FAILED = "failed"  # the operator must look: the reason says why
    DEFERRED = "deferred"  # tried again next cycle
    SKIPPED = "skipped"  # not ours to do


@dataclass
class Outcomes:
    """One status and one reason per unit of work (keyed by UUID); the last status set wins."""

    _by_key: dict[str, tuple[Status, str]] = field(default_factory=dict)

    def set(self, key: str, status: Status, reason: str = "") -> None:
        self._by_key[key] = (status, reason)

    def done(self, key: str) -> None:
        self.set(key, Status.DONE)

    def fail(self, key: str, reason: str) -> None:
        self.set(key, Status.FAILED, reason)

    def defer(self, key: str, reason: str) -> None:
        self.set(key, Status.DEFERRED, reason)

    def skip(self, key: str, reason: str = "") -> None:
        self.set(key, Status.SKIPPED, reason)

    def status(self, key: str) -> Status | None:
        entry = self._by_key.get(key)
        return entry[0] if entry else None

    def settled(self, key: str) -> bool:
        return key in self._by_key

    def reasons(self, status: Status) -> dict[str, str]:
        return {k: reason for k, (s, reason) in self._by_key.items() if s is status}

    def count(self, status: Status) -> int:
        return sum(1 for s, _ in self._by_key.values() if s is status)
