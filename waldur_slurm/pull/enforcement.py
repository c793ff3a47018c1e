"""Enforcement of Waldur 8's resource flags on SLURM (pure: no I/O, no clock).

Waldur 8 resources carry ``paused``, ``downscaled`` and ``restrict_member_access`` (set by staff through
``set_paused``, ``set_downscaled``, ``set_restrict_member_access``, e.g. when a customer runs out of credit).
``plan_enforcement`` turns the flags of the offering's resources, one SLURM snapshot and the records of what
the agent changed earlier into SLURM ops and the new records:

- **paused**: ``GrpJobs=0`` and ``GrpSubmitJobs=0`` on the account association. Measured on the local
  cluster (22.05, ``AccountingStorageEnforce=associations,limits,safe``): with ``GrpJobs=0`` a job already
  pending stays pending (reason ``AssocGrpJobsLimit``) and new submissions are accepted but never start;
  with ``GrpSubmitJobs=0`` alone ``sbatch`` is refused at once ("Job violates accounting/QOS policy") but a
  job already pending still starts (its reason went from ``AssocGrpJobsLimit`` to ``Resources`` once
  ``GrpJobs`` was cleared). Both together: nothing new starts, users learn it at submission, and jobs that
  were pending before the pause start after it. Running jobs keep running under either (limits are checked
  at submission and start). A blocking QoS was not chosen: the association's QOS list is what
  ``downscaled`` changes, and the two flags must be restorable independently.
- **downscaled**: the account association's QOS list becomes ``[SLURM_DOWNSCALED_QOS]`` (created if
  missing); user associations without a QOS of their own inherit it, so their jobs run in that QoS (measured:
  a job submitted without ``--qos`` ran in it). A DefaultQOS of the account's own is pointed at it too
  (SLURM refuses a default outside the list). A user association with its own QOS list is the operator's
  and is left alone.
- **restrict_member_access**: the members' user associations in the account are removed while it is set
  (members: users the offering knows or the agent added, never ``SLURM_IGNORE_USERS``, never an
  administrator's own association) and added back, with their default account, when it is cleared.

What was there before is recorded per account and flag (``EnforcementStore``), and clearing a flag restores
it; a field the operator changed while the flag was set (the account no longer shows what the agent set) is
left as the operator set it. Accounts in ``SLURM_IGNORE_ACCOUNTS``, the default account and ``root`` are
never touched.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from waldur_slurm.domain import naming
from waldur_slurm.slurm.model import AccountControls
from waldur_slurm.slurm.ops import (
    CLEAR,
    AddQos,
    AddUsers,
    CancelJobs,
    RemoveUsers,
    SetAccountQos,
    SetDefaultAccount,
    SetJobLimits,
)

PAUSED, DOWNSCALED, RESTRICTED = "paused", "downscaled", "restrict_member_access"
FLAGS = (PAUSED, DOWNSCALED, RESTRICTED)
NEVER_TOUCHED_USERS = frozenset({"root"})

Records = dict[str, dict[str, Any]]  # account -> flag -> what the account had before (JSON-friendly)


class ResourceLike(Protocol):
    uuid: str
    backend_id: str
    paused: bool
    downscaled: bool
    restrict_member_access: bool


class AccountLike(Protocol):
    description: str
    users: frozenset[str]


class StateLike(Protocol):
    accounts: Mapping[str, AccountLike]
    default_account: Mapping[str, str]
    controls: Mapping[str, AccountControls]


@dataclass(frozen=True)
class EnforceConfig:
    downscaled_qos: str = "waldur-downscaled"
    cancel_jobs_of_paused: bool = False
    default_account: str = ""
    ignore_accounts: frozenset[str] = frozenset()
    ignore_users: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Any) -> EnforceConfig:
        return cls(
            downscaled_qos=settings.downscaled_qos,
            cancel_jobs_of_paused=bool(settings.cancel_jobs_of_paused),
            default_account=settings.default_account,
            ignore_accounts=frozenset(settings.ignore_accounts),
            ignore_users=frozenset(settings.ignore_users),
        )


@dataclass(frozen=True)
class EnforcementStep:
    """One SLURM op and the (account, flag) records that depend on it."""

    op: Any
    keys: frozenset[tuple[str, str]]

    def describe(self) -> str:
        return str(self.op.describe())


@dataclass
class EnforcementPlan:
    steps: list[EnforcementStep] = field(default_factory=list)
    previous: Records = field(default_factory=dict)
    records: Records = field(default_factory=dict)  # once every step succeeded
    active: dict[str, list[str]] = field(default_factory=dict)  # flag -> accounts enforced after the plan
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ops(self) -> list[Any]:
        return [s.op for s in self.steps]

    def counts(self) -> dict[str, int]:
        return {flag: len(self.active.get(flag, ())) for flag in FLAGS}

    def records_after(self, failed: Iterable[tuple[str, str]]) -> Records:
        """The records when the steps serving ``failed`` keys did not apply: those keep their old value."""
        out = {account: dict(flags) for account, flags in self.records.items()}
        for account, flag in failed:
            old = self.previous.get(account, {})
            if flag in old:
                out.setdefault(account, {})[flag] = old[flag]
            else:
                out.get(account, {}).pop(flag, None)
        return {account: flags for account, flags in out.items() if flags}

    def describe(self) -> list[str]:
        counts = ", ".join(f"{flag} {n}" for flag, n in self.counts().items())
        lines = [f"enforcement plan: {counts}; {len(self.steps)} SLURM op(s)"]
        lines.extend(f"  {c}" for c in self.changes)
        lines.extend(f"  {s.describe()}" for s in self.steps)
        lines.extend(f"note: {n}" for n in self.notes)
        return lines


def account_of(resource: ResourceLike, state: StateLike, config: EnforceConfig) -> tuple[str | None, str | None]:
    """(account, why not): the resource's SLURM account that enforcement may touch."""
    name = (resource.backend_id or "").strip().lower()
    if not name or name not in state.accounts:
        return None, None
    if name in ("root", config.default_account):
        return None, f"account {name} is the default account: never enforced on"
    if name in config.ignore_accounts:
        return None, f"account {name} is in SLURM_IGNORE_ACCOUNTS: not enforced on"
    owner = naming.resource_owner(state.accounts[name].description)
    if owner is not None and owner != resource.uuid:
        return None, f"account {name} belongs to resource {owner}, not {resource.uuid}: not enforced on"
    return name, None


def wanted_flags(resources: Iterable[ResourceLike], state: StateLike,
                 config: EnforceConfig) -> tuple[dict[str, dict[str, bool]], dict[str, str], list[str]]:
    """(account -> flag -> set, account -> resource UUID, notes) for the resources that have an account."""
    wanted: dict[str, dict[str, bool]] = {}
    owners: dict[str, str] = {}
    notes: list[str] = []
    for r in sorted(resources, key=lambda r: r.uuid):
        flags = {PAUSED: bool(r.paused), DOWNSCALED: bool(r.downscaled), RESTRICTED: bool(r.restrict_member_access)}
        account, why = account_of(r, state, config)
        if account is None:
            if why and any(flags.values()):
                notes.append(f"resource {r.uuid}: {why}")
            continue
        if account in owners:
            notes.append(f"resource {r.uuid}: account {account} is also the backend_id of {owners[account]}: "
                         "the flags of the first one count")
            continue
        wanted[account] = flags
        owners[account] = r.uuid
    return wanted, owners, notes


def any_flag(resources: Iterable[ResourceLike]) -> bool:
    return any(r.paused or r.downscaled or r.restrict_member_access for r in resources)


class _Steps:
    """Groups identical changes of several accounts into one op (one sacctmgr command)."""

    def __init__(self) -> None:
        self.job_limits: dict[tuple[int | None, int | None], set[str]] = defaultdict(set)
        self.qos: dict[tuple[tuple[str, ...], str | None], set[str]] = defaultdict(set)
        self.removals: dict[frozenset[str], set[str]] = defaultdict(set)
        self.additions: dict[frozenset[str], set[str]] = defaultdict(set)
        self.defaults: dict[str, set[str]] = defaultdict(set)  # account -> users
        self.cancel: set[str] = set()
        self.need_qos = False

    def build(self, config: EnforceConfig) -> list[EnforcementStep]:
        steps: list[EnforcementStep] = []
        if self.need_qos:
            steps.append(EnforcementStep(AddQos(config.downscaled_qos), frozenset()))
        for (qos, default), accounts in sorted(self.qos.items(), key=lambda kv: repr(kv[0])):
            steps.append(EnforcementStep(SetAccountQos(tuple(sorted(accounts)), qos, default),
                                         frozenset((a, DOWNSCALED) for a in accounts)))
        for (jobs, submit), accounts in sorted(self.job_limits.items(), key=lambda kv: repr(kv[0])):
            steps.append(EnforcementStep(_job_limits_op(tuple(sorted(accounts)), jobs, submit),
                                         frozenset((a, PAUSED) for a in accounts)))
        for users, accounts in sorted(self.removals.items(), key=lambda kv: sorted(kv[0])):
            steps.append(EnforcementStep(RemoveUsers(tuple(sorted(users)), tuple(sorted(accounts))),
                                         frozenset((a, RESTRICTED) for a in accounts)))
        for users, accounts in sorted(self.additions.items(), key=lambda kv: sorted(kv[0])):
            steps.append(EnforcementStep(AddUsers(tuple(sorted(users)), tuple(sorted(accounts))),
                                         frozenset((a, RESTRICTED) for a in accounts)))
        for account, users in sorted(self.defaults.items()):
            steps.append(EnforcementStep(SetDefaultAccount(tuple(sorted(users)), account),
                                         frozenset({(account, RESTRICTED)})))
        if self.cancel:
            # after the sacctmgr batch: the pause is in place before the jobs go, so none starts in between
            steps.append(EnforcementStep(CancelJobs(tuple(sorted(self.cancel))), frozenset()))
        return steps


def _job_limits_op(accounts: tuple[str, ...], jobs: int | None, submit: int | None) -> SetJobLimits:
    return SetJobLimits(accounts, grp_jobs=jobs, grp_submit_jobs=submit)


def _restore_count(recorded: Any, current: int | None) -> int | None:
    """The value to write back, or None when the field is no longer what the agent set (0): the operator's."""
    if current != 0:
        return None
    if recorded is None:
        return CLEAR
    return int(recorded)


def plan_enforcement(
    resources: Iterable[ResourceLike],
    state: StateLike,
    records: Mapping[str, Mapping[str, Any]],
    config: EnforceConfig,
    *,
    members: Collection[str] = (),
    added_by_agent: Mapping[str, Collection[str]] | None = None,
) -> EnforcementPlan:
    """Plan one cycle of enforcement.

    ``records`` is what earlier cycles recorded (account -> flag -> the account's values before); ``members``
    the SLURM users the offering knows (the users a restriction may remove), ``added_by_agent`` the
    associations the agent added (account -> users). Accounts no listed resource names any more (Terminated,
    or its backend_id changed) have their flags restored as if cleared.
    """
    wanted, owners, notes = wanted_flags(resources, state, config)
    plan = EnforcementPlan(previous={a: dict(f) for a, f in records.items()}, notes=notes)
    steps = _Steps()
    new_records: Records = {}
    q = config.downscaled_qos
    for account in sorted(set(wanted) | set(records)):
        acc = state.accounts.get(account)
        if acc is None:
            if account in records:
                plan.notes.append(f"account {account} no longer exists: its enforcement records are dropped")
            continue
        if account in config.ignore_accounts or account in ("root", config.default_account):
            continue  # recorded before it was ignored: the operator owns it now
        want = wanted.get(account, {})
        rec = {flag: value for flag, value in records.get(account, {}).items() if flag in FLAGS}
        controls = state.controls.get(account)
        who = f"account {account}" + (f" (resource {owners[account]})" if account in owners else "")

        # -- paused
        if want.get(PAUSED):
            if controls is None:
                plan.notes.append(f"{who}: its job limits could not be read: not paused this cycle")
            else:
                if PAUSED not in rec:
                    rec[PAUSED] = {"grp_jobs": controls.grp_jobs, "grp_submit_jobs": controls.grp_submit_jobs}
                    plan.changes.append(f"pause {who}")
                    if config.cancel_jobs_of_paused:
                        steps.cancel.add(account)
                if controls.grp_jobs != 0 or controls.grp_submit_jobs != 0:
                    steps.job_limits[(0, 0)].add(account)
        elif PAUSED in rec:
            before = rec.pop(PAUSED) or {}
            jobs = _restore_count(before.get("grp_jobs"), controls.grp_jobs if controls else None)
            submit = _restore_count(before.get("grp_submit_jobs"), controls.grp_submit_jobs if controls else None)
            if jobs is not None or submit is not None:
                steps.job_limits[(jobs, submit)].add(account)
            plan.changes.append(f"unpause {who}")

        # -- downscaled
        if want.get(DOWNSCALED):
            if controls is None:
                plan.notes.append(f"{who}: its QOS could not be read: not downscaled this cycle")
            else:
                if DOWNSCALED not in rec:
                    rec[DOWNSCALED] = {"qos": list(controls.qos), "default_qos": controls.default_qos}
                    plan.changes.append(f"downscale {who} (QoS {q})")
                default = q if controls.default_qos not in ("", q) else None
                if controls.qos != (q,) or default is not None:
                    steps.qos[((q,), default)].add(account)
                    steps.need_qos = True
        elif DOWNSCALED in rec:
            before = rec.pop(DOWNSCALED) or {}
            if controls is not None and controls.qos == (q,):
                qos = tuple(str(x) for x in before.get("qos") or ())
                old_default = str(before.get("default_qos") or "")
                default = old_default if controls.default_qos == q and old_default != q else None
                steps.qos[(qos, default)].add(account)
                plan.changes.append(f"end the downscaling of {who}")
            else:
                plan.notes.append(f"{who}: QOS changed by someone else while downscaled: left as it is")

        # -- restrict_member_access
        ours = (set(members) | set((added_by_agent or {}).get(account, ()))) - config.ignore_users - NEVER_TOUCHED_USERS
        if want.get(RESTRICTED):
            present = sorted(set(acc.users) & ours)
            before = rec.get(RESTRICTED) or {"users": [], "defaults": []}
            if RESTRICTED not in rec:
                plan.changes.append(f"restrict member access to {who}" + (f": remove {', '.join(present)}" if present else ""))
            users = sorted(set(before.get("users", [])) | set(present))
            defaults = sorted(set(before.get("defaults", []))
                              | {u for u in present if state.default_account.get(u, "").lower() == account})
            rec[RESTRICTED] = {"users": users, "defaults": defaults}
            if present:
                steps.removals[frozenset(present)].add(account)
        elif RESTRICTED in rec:
            before = rec.pop(RESTRICTED) or {}
            back = sorted(set(before.get("users", [])) - set(acc.users) - config.ignore_users - NEVER_TOUCHED_USERS)
            if back:
                steps.additions[frozenset(back)].add(account)
            for user in before.get("defaults", []):
                # a user whose last association went has no record: the add makes this account its default
                if not state.default_account.get(user) and (user in back or user in acc.users):
                    steps.defaults[account].add(user)
            plan.changes.append(f"restore member access to {who}" + (f": add {', '.join(back)}" if back else ""))

        if rec:
            new_records[account] = rec
    plan.steps = steps.build(config)
    plan.records = new_records
    for flag in FLAGS:
        plan.active[flag] = sorted(a for a, rec in new_records.items() if flag in rec)
    return plan


__all__ = [
    "DOWNSCALED",
    "EnforceConfig",
    "EnforcementPlan",
    "EnforcementStep",
    "FLAGS",
    "PAUSED",
    "RESTRICTED",
    "account_of",
    "any_flag",
    "plan_enforcement",
]
