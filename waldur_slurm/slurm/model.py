"""What the agent knows of SLURM, whatever the backend: the account tree, job records, op results."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from .errors import SlurmError, SlurmTransientError
from .ops import Op


@dataclass(frozen=True)
class SlurmAccount:
    name: str
    parent: str
    description: str
    organization: str
    limits: dict[str, int]  # account-level GrpTRESMins, TRES-minutes (mem in MB)
    users: frozenset[str]
    # why GrpTRESMins could not be read (``limits`` is then empty): fails only this account's limits
    limits_problem: str | None = None


@dataclass(frozen=True)
class AccountControls:
    grp_jobs: int | None = None  # None: no limit of its own
    grp_submit_jobs: int | None = None
    qos: tuple[str, ...] = ()  # empty: inherited from the parent
    default_qos: str = ""  # empty: none of its own


@dataclass(frozen=True)
class SlurmState:
    accounts: dict[str, SlurmAccount]
    default_account: dict[str, str]  # user -> DefaultAccount ("" when it has none)
    # account -> its own GrpJobs/GrpSubmitJobs/QOS (what enforcement changes and restores)
    controls: dict[str, AccountControls] = field(default_factory=dict)


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    account: str
    user: str
    state: str
    elapsed_seconds: int
    req_tres: dict[str, Decimal]  # mem in MB
    alloc_tres: dict[str, Decimal]  # mem in MB
    start: datetime | None  # aware, in the SLURM host's local time zone
    end: datetime | None
    # why this record's TRES could not be read (both TRES dicts are then empty): it alone is not billed
    problem: str | None = None


@dataclass(frozen=True)
class OpResult:
    op: Op
    ok: bool
    already: bool = False  # sacctmgr said "Nothing new added/deleted/modified"
    error: SlurmError | None = None
    output: str = ""

    @property
    def transient(self) -> bool:
        return isinstance(self.error, SlurmTransientError)
