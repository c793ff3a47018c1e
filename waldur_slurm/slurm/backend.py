"""The contract between the agent and a SLURM backend.

The pull reconciler, the push reporter and the operator tools use only this: read the account tree, read
job records, apply a list of neutral ops (``waldur_slurm.slurm.ops``) and count the processes spent doing
it. ``waldur_slurm.slurm.cli.client.SlurmClient`` (sacctmgr/sacct, native or through ``docker exec``) is
the implementation; another backend (slurmrestd, say) implements the same methods and renders the same ops.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from .model import JobRecord, OpResult, SlurmState
from .ops import Op


class SlurmBackend(Protocol):
    def read_state(self) -> SlurmState:
        """Every account (parent, description, organization, GrpTRESMins, users) and each user's default
        account, at a constant cost whatever the number of accounts."""
        ...

    def read_usage(self, accounts: Iterable[str], start: datetime, end: datetime, duplicates: bool = False) -> list[JobRecord]:
        """Job allocations charged to ``accounts`` in [start, end), at a constant cost."""
        ...

    def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        """Run ``ops`` in order, batched; one result per op (a failed op fails only the work it serves).
        Raises ``SlurmTransientError`` only when nothing could run."""
        ...

    def unreachable(self) -> str | None:
        """Why the backend cannot be reached, or None; cheap, spawns no process (run every idle cycle)."""
        ...

    def list_tres(self) -> list[str]: ...

    def version(self) -> str: ...

    @property
    def process_count(self) -> int:
        """Processes (or container execs) spawned so far: the unit of SLURM work the tests count."""
        ...
