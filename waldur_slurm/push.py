"""The push reporter: SLURM usage, limits and associations -> Waldur, one cycle at a time.

A cycle reads, plans (pure), then applies:

1. **Read SLURM first**: ONE ``sacctmgr`` dump (accounts, GrpTRESMins, users). Reading it before Waldur's
   resource list closes the pull/push race (B15): an account the pull removes after the dump is still in
   it, and one removed before the dump belongs to a resource that is already Terminating/Terminated (or
   has an order in progress) by the time the list is read.
2. **Read Waldur**: the offering (components), every resource with a backend_id in OK, Updating,
   Terminating or Erred (all pages), and, offering-wide for the billing month, the component usages and
   per-user usages Waldur holds. Requests grow with N/page_size, not N. 2024: also the associations of the
   resources' allocations, exactly (one request when the server's whole list fits one page, else one per
   allocation: the server's list is unscoped and pages unstably, see ``list_offering_associations``).
3. **ONE ``sacct``** for every account of those resources over the billing window (plus one for the
   previous month during the first days of a month): at most 3 SLURM processes per cycle, whatever N.
4. **Plan** (``plan_push``, pure): per resource, the usage totals and per-user usages that grew, the limits
   that differ, the associations to add/remove, recovery of an erred resource whose account is back, or
   marking erred a resource whose account is gone from a successful dump.
5. **Apply** with ``settings.push_concurrency`` threads (totals first, then per-user usages); one resource's failure never stops the others.

If a SLURM read fails, nothing is written and nothing is marked erred (B6); the next cycle reports.

Decisions:

- Previous month. During the first ``PREVIOUS_MONTH_GRACE`` (3 days) of a month the cycle re-reads the
  whole previous month (a third SLURM process) and reports its final totals for the components the server
  accepts a past ``date`` for: Waldur 8.x refuses it for usage-based components from a provider token
  ("Service providers can only specify date for limit-based or prepaid billing components when
  backfilling past billing periods"), so only limit-based and prepaid components are re-reported (all of
  them with a staff token). For usage-based components the month's last report is the one made before
  midnight; a loop that runs one cycle shortly before the month ends (``usage.seconds_until_month_end``)
  keeps that gap small.
- Every report carries ``date`` = the window's end (never ``plan_periods[0]``, B12): a report computed at
  23:59:59 lands in its own month even when it reaches the server after midnight. The billing timezone
  should be the server's, since Waldur picks the month of ``date`` in its own timezone.
- A value Waldur does not hold counts as zero: idle accounts cause no writes. A computed value lower than
  Waldur's is an anomaly: logged, noted in the cycle report, never written.
- A resource is marked erred only when its account is missing from two successful dumps in a row (see
  ``plan_push``), never while an order for it is in progress, and never after a failed read.
- Limits and associations are not reported while an order for the resource is in progress: the pull
  daemon is changing them, and SLURM's half-applied state must not overwrite the order's values.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from waldur_slurm.concurrency import LatencyGovernor, run_bounded
from waldur_slurm.cycle import CycleReport
from waldur_slurm.slurm.errors import SlurmError
from waldur_slurm.slurm.ops import ACCOUNT_RE, MAX_NAME_LEN
from waldur_slurm.usage import (
    Aggregate,
    BillingWindow,
    ResourceUsage,
    as_decimal,
    aggregate,
    billing_window,
    diff_associations,
    diff_limits,
    diff_usage,
    in_month_start,
    previous_window,
    to_waldur_usage,
)
from waldur_slurm.values import BadValue
from waldur_slurm.waldur.errors import WaldurAuthError, WaldurError, WaldurTransientError

if TYPE_CHECKING:
    from waldur_slurm.components import Component
    from waldur_slurm.config import Settings
    from waldur_slurm.slurm.client import SlurmClient, SlurmState
    from waldur_slurm.waldur.client import WaldurClient
    from waldur_slurm.waldur.models import ComponentUsage, Offering, Order, Resource, UserUsage

log = logging.getLogger("waldur_slurm.push")

LISTED_STATES = ("OK", "Updating", "Terminating", "Erred")
# Waldur accepts usage only for these (Creating, Erred and Terminated are refused with 400).
REPORTABLE_STATES = ("OK", "Updating", "Terminating")
USAGE_BILLING_TYPES = ("usage", "limit")
RESOURCE_FIELDS = ("uuid", "name", "state", "backend_id", "limits", "order_in_progress", "resource_uuid", "error_message")
# During the first days of a month the cycle also re-reads the previous month and reports its final
# totals where the server accepts a past date (see ``backfill_types``).
PREVIOUS_MONTH_GRACE = timedelta(days=3)
FLAVOUR_2024 = "2024"


def missing_account_message(account: str) -> str:
    return f"SLURM account {account!r} does not exist in the SLURM accounting database (reported by the push agent)"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------------------------------
# What Waldur holds


@dataclass
class Held:
    """Waldur's values for one billing month: totals, ComponentUsage uuids and per-user usages, by resource."""

    totals: dict[str, dict[str, Decimal]] = field(default_factory=dict)  # resource -> type -> amount
    usage_uuids: dict[str, dict[str, str]] = field(default_factory=dict)  # resource -> type -> uuid
    users: dict[str, dict[str, dict[str, Decimal]]] = field(default_factory=dict)  # resource -> type -> user -> amount
    # The month's usage already billed in plan periods that ended (a plan switch): the current period's record
    # gets only the rest, or the month would be billed twice (the server keeps one record per plan period).
    earlier: dict[str, dict[str, list[object]]] = field(default_factory=dict)  # resource -> type -> amounts
    earlier_users: dict[str, dict[str, dict[str, list[object]]]] = field(default_factory=dict)

    def record_count(self) -> int:
        """ComponentUsage records of the month (what an offering-wide list of them returns)."""
        return sum(len(types) for types in self.usage_uuids.values())

    @classmethod
    def from_lists(
        cls, usages: Iterable[ComponentUsage], user_usages: Iterable[UserUsage], earlier_records: Collection[str] = ()
    ) -> Held:
        """``earlier_records``: uuids of ComponentUsages that belong to plan periods which have ended."""
        held = cls()
        by_uuid: dict[str, tuple[str, str]] = {}
        old: set[str] = set()
        for cu in usages:
            if not cu.resource_uuid:
                continue
            if cu.uuid in earlier_records:
                held.earlier.setdefault(cu.resource_uuid, {}).setdefault(cu.type, []).append(cu.usage)
                old.add(cu.uuid)
            else:
                held.totals.setdefault(cu.resource_uuid, {})[cu.type] = cu.usage
                held.usage_uuids.setdefault(cu.resource_uuid, {})[cu.type] = cu.uuid
            by_uuid[cu.uuid] = (cu.resource_uuid, cu.type)
        for uu in user_usages:
            key = by_uuid.get(uu.component_usage_uuid or "")
            resource, ctype = key if key else (uu.resource_uuid, uu.component_type)
            if not resource or not ctype or not uu.username:
                continue
            if uu.component_usage_uuid in old:
                held.earlier_users.setdefault(resource, {}).setdefault(ctype, {}).setdefault(uu.username, []).append(uu.usage)
                continue
            held.users.setdefault(resource, {}).setdefault(ctype, {})[uu.username] = uu.usage
        return held

    def current_period_share(self, resource: str, usage: ResourceUsage) -> tuple[ResourceUsage, list[str]]:
        """The month-to-date ``usage`` less what earlier plan periods of the month already hold (never below
        zero: a lower value is an anomaly, reported and not written). Raises BadValue for a held amount that
        is not a number."""
        if resource not in self.earlier and resource not in self.earlier_users:
            return usage, []
        earlier = {k: sum((as_decimal(v) for v in vs), Decimal(0)) for k, vs in self.earlier.get(resource, {}).items()}
        earlier_users = {
            k: {u: sum((as_decimal(v) for v in vs), Decimal(0)) for u, vs in users.items()}
            for k, users in self.earlier_users.get(resource, {}).items()
        }
        anomalies: list[str] = []

        def rest(value: Decimal, billed: Decimal, what: str) -> Decimal:
            if value < billed:
                anomalies.append(f"{what}: month-to-date {value} is lower than {billed} billed in earlier plan periods")
                return Decimal("0.00")
            return value - billed

        totals = {k: rest(v, earlier.get(k, Decimal(0)), f"component {k}") for k, v in usage.totals.items()}
        per_user = {
            k: {u: rest(v, earlier_users.get(k, {}).get(u, Decimal(0)), f"component {k} user {u}") for u, v in users.items()}
            for k, users in usage.per_user.items()
        }
        return ResourceUsage(totals=totals, per_user=per_user), anomalies


@dataclass(frozen=True)
class MonthInput:
    """Everything the planner needs about one billing month."""

    window: BillingWindow
    usage: Aggregate
    held: Held
    components: Mapping[str, Component]  # the components reported for this month


# --------------------------------------------------------------------------------------------------
# The plan (pure data)


@dataclass
class MonthWrites:
    window: BillingWindow
    totals: dict[str, Decimal]
    per_user: dict[str, dict[str, Decimal]]
    usage_uuids: dict[str, str]  # known ComponentUsage uuids of this resource and month


@dataclass
class ResourcePlan:
    uuid: str
    name: str
    account: str
    recover: bool = False
    erred_message: str | None = None
    months: list[MonthWrites] = field(default_factory=list)
    limits: dict[str, Decimal] | None = None
    assoc_create: list[str] = field(default_factory=list)
    assoc_delete: list[str] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)

    @property
    def has_writes(self) -> bool:
        return bool(
            self.recover
            or self.erred_message
            or self.limits is not None
            or self.assoc_create
            or self.assoc_delete
            or any(m.totals or m.per_user for m in self.months)
        )

    def describe(self) -> list[str]:
        head = f"resource {self.uuid} ({self.account})"
        lines: list[str] = []
        if self.erred_message:
            lines.append(f"{head}: mark erred: {self.erred_message}")
        if self.recover:
            lines.append(f"{head}: mark OK (its SLURM account exists again)")
        for m in self.months:
            period = f"{m.window.period:%Y-%m}"
            if m.totals:
                values = ", ".join(f"{k}={v}" for k, v in sorted(m.totals.items()))
                lines.append(f"{head}: set usage {period}: {values}")
            for ctype, users in sorted(m.per_user.items()):
                values = ", ".join(f"{u}={v}" for u, v in sorted(users.items()))
                lines.append(f"{head}: set user usage {period} {ctype}: {values}")
        if self.limits is not None:
            values = ", ".join(f"{k}={v}" for k, v in sorted(self.limits.items()))
            lines.append(f"{head}: set limits: {values}")
        for user in self.assoc_create:
            lines.append(f"{head}: create association {user}")
        for user in self.assoc_delete:
            lines.append(f"{head}: delete association {user}")
        return lines


@dataclass
class PushPlan:
    resources: list[ResourcePlan] = field(default_factory=list)  # resources that need writes
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)  # accounts of markable resources absent from this dump
    failed: list[str] = field(default_factory=list)  # resources with a value that cannot be used (BadValue)

    def describe(self) -> list[str]:
        return [line for rp in self.resources for line in rp.describe()]


def valid_account(backend_id: str) -> str | None:
    """The SLURM account a backend_id names, or None if it must never reach a SLURM command line (B14)."""
    name = backend_id.strip().lower()
    if not name or len(name) > MAX_NAME_LEN or not ACCOUNT_RE.match(name):
        return None
    return name


def limits_to_report(
    slurm_limits: Mapping[str, int],
    held_limits: Mapping[str, object],
    components: Mapping[str, Component],
    limit_keys: Collection[str] | None,
) -> dict[str, object] | None:
    """The resource limits to write to Waldur, or None when Waldur already reflects SLURM.

    Only the offering's limit-type components may appear in a resource's limits: the 2024 server completes
    an Update by looking every key of the old limits up among them, and a usage-type key there (``cpu``)
    makes that callback fail with 500 for good, so the order can never complete. Keys outside
    ``limit_keys`` are therefore never written, and a resource that already holds one is rewritten
    without it.
    """
    if limit_keys is None:
        return diff_limits(slurm_limits, held_limits, components)
    allowed = {key: value for key, value in held_limits.items() if key in limit_keys}
    changed = diff_limits(slurm_limits, allowed, {k: c for k, c in components.items() if k in limit_keys})
    if changed is None and len(allowed) != len(held_limits):
        return {key: value for key, value in allowed.items() if value is not None}
    return changed


def order_in_progress(resource: Resource) -> bool:
    return bool(resource.raw.get("order_in_progress")) or resource.state in ("Creating", "Updating", "Terminating")


def reportable_accounts(resources: Sequence[Resource]) -> tuple[dict[str, str], list[str]]:
    """(resource uuid -> SLURM account) of the resources whose usage may be read and reported, and a line for
    each resource left out: a backend_id that is no account name (B14), or an account that is the backend_id
    of several resources (reporting it on each would bill it several times)."""
    accounts_of: dict[str, list[str]] = {}
    for res in resources:
        account = valid_account(res.backend_id)
        if account:
            accounts_of.setdefault(account, []).append(res.uuid)
    out: dict[str, str] = {}
    skipped: list[str] = []
    for res in resources:
        account = valid_account(res.backend_id)
        if account is None:
            skipped.append(f"resource {res.uuid}: backend_id {res.backend_id!r} is not a SLURM account name; not read")
        elif len(accounts_of[account]) > 1:
            skipped.append(f"resource {res.uuid}: account {account} is the backend_id of {len(accounts_of[account])} resources; not reported")
        else:
            out[res.uuid] = account
    return out, skipped


def plan_usage_months(resource_uuid: str, account: str, months: Sequence[MonthInput]) -> tuple[list[MonthWrites], list[str]]:
    """The usage writes of one resource for each month (only what grew against what Waldur holds, in the
    current plan period's share), and the anomalies seen (values lower than Waldur's, never written).
    Raises BadValue for a held amount that is not a number."""
    writes: list[MonthWrites] = []
    anomalies: list[str] = []
    for month in months:
        converted, switched = month.held.current_period_share(
            resource_uuid, to_waldur_usage(month.usage.accounts.get(account), month.components)
        )
        anomalies.extend(f"{month.window.period:%Y-%m} {a}" for a in switched)
        diff = diff_usage(converted, month.held.totals.get(resource_uuid, {}), month.held.users.get(resource_uuid, {}))
        anomalies.extend(f"{month.window.period:%Y-%m} {a}" for a in diff.anomalies)
        if not diff.empty:
            writes.append(MonthWrites(month.window, diff.totals, diff.per_user, dict(month.held.usage_uuids.get(resource_uuid, {}))))
    return writes, anomalies


def plan_push(
    resources: Sequence[Resource],
    state: SlurmState,
    months: Sequence[MonthInput],
    limit_components: Mapping[str, Component],
    associations: Mapping[str, frozenset[str]] | None = None,
    missing_before: Collection[str] | None = None,
    limit_keys: Collection[str] | None = None,
) -> PushPlan:
    """Decide every write of the cycle from what was read (pure).

    ``state`` must come from a SUCCESSFUL dump. ``associations`` (allocation uuid -> usernames held by
    Waldur) is given only for the 2024 flavour, which keeps them; an allocation missing from it was not read,
    and its associations are left alone.

    ``missing_before``: accounts that were already absent from the previous successful dump. When given,
    a resource is marked erred only if its account is absent from two dumps in a row: a dump can succeed
    and still miss accounts while slurmdbd repairs its association tree under concurrent writes (seen on
    the test cluster: "Can't find parent id ..."), and one bad read must not err a healthy resource.
    ``None`` marks at the first absence.

    ``limit_keys``: the offering's limit-type component types, the only keys the server can take in a
    resource's limits (see ``limits_to_report``); ``None`` keeps every key Waldur holds.
    """
    plan = PushPlan()
    reportable, skipped = reportable_accounts(resources)
    plan.skipped.extend(skipped)
    for res in resources:
        account = reportable.get(res.uuid)
        if account is None:
            continue
        busy = order_in_progress(res)
        slurm_account = state.accounts.get(account)
        if slurm_account is None:
            if res.state == "Erred":
                plan.skipped.append(f"resource {res.uuid}: erred, account {account} still missing")
            elif busy:
                plan.skipped.append(f"resource {res.uuid}: account {account} missing while an order is in progress; not marked")
            else:
                plan.missing.add(account)
                if missing_before is None or account in missing_before:
                    plan.resources.append(ResourcePlan(res.uuid, res.name, account, erred_message=missing_account_message(account)))
                else:
                    plan.skipped.append(
                        f"resource {res.uuid}: account {account} missing from this dump; marked erred if still missing next cycle"
                    )
            continue
        if res.state == "Erred" and busy:
            plan.skipped.append(f"resource {res.uuid}: erred with an order in progress; left to the pull daemon")
            continue
        rp = ResourcePlan(res.uuid, res.name, account, recover=res.state == "Erred")
        try:
            rp.months, anomalies = plan_usage_months(res.uuid, account, months)
            rp.anomalies.extend(anomalies)
        except BadValue as exc:
            # Without a usable value held by Waldur, "never lower" cannot be checked: this resource's usage
            # waits until the value is fixed; every other resource is reported.
            plan.failed.append(f"resource {res.uuid} ({account}): usage not reported: {exc}")
            continue
        if not busy:
            # While an order runs, the pull daemon is changing limits and users: reporting SLURM's
            # half-applied state back could overwrite the order's values.
            try:
                if slurm_account.limits_problem:
                    plan.failed.append(f"resource {res.uuid} ({account}): limits not reported: {slurm_account.limits_problem}")
                else:
                    rp.limits = limits_to_report(slurm_account.limits, res.limits, limit_components, limit_keys)
            except BadValue as exc:
                # the usage above is still reported: a bad limit in Waldur must not cost a bill
                plan.failed.append(f"resource {res.uuid} ({account}): limits not reported: {exc}")
            if associations is not None:
                held_users = associations.get(res.allocation_uuid) if res.allocation_uuid else None
                if res.allocation_uuid is None:
                    plan.skipped.append(f"resource {res.uuid}: no SLURM allocation in Waldur yet; associations not synced")
                elif held_users is None:
                    # Not read (the read failed): "none held" would re-create every association.
                    plan.skipped.append(f"resource {res.uuid}: associations of its allocation not read; not synced")
                else:
                    rp.assoc_create, rp.assoc_delete = diff_associations(slurm_account.users, held_users)
        plan.anomalies.extend(f"resource {res.uuid} ({account}): {a}" for a in rp.anomalies)
        if rp.has_writes:
            plan.resources.append(rp)
        else:
            plan.unchanged += 1
    return plan


def backfill_types(
    offering: Offering, components: Mapping[str, Component], *, staff: bool, flavour: str | None = None
) -> dict[str, Component]:
    """Components whose previous-month usage this token may still report.

    8.x (and the stand-in of both flavours) refuses a past ``date`` for usage-type components from a
    non-staff token ("Service providers can only specify date for limit-based or prepaid billing components
    when backfilling past billing periods"); limit-based and prepaid ones are accepted. A staff token may
    backfill everything.

    The 2024 server has no ``date`` in its usage serializer: it ignores it and files every report under the
    current month (``billing_period = month_start(now)`` in ``ComponentUsageCreateSerializer.save``), so a past
    month's total sent there would overwrite this month's. Nothing is backfilled on that flavour.
    """
    if flavour == FLAVOUR_2024:
        return {}
    by_type = offering.components_by_type()
    out: dict[str, Component] = {}
    for key, component in components.items():
        oc = by_type.get(key)
        if oc is None:
            continue
        if staff or oc.billing_type == "limit" or bool(oc.raw.get("is_prepaid")):
            out[key] = component
    return out


# --------------------------------------------------------------------------------------------------
# The reporter


def slow_write_seconds(http_timeout: float) -> float:
    """A write slower than this makes the push use fewer concurrent writes (see ``LatencyGovernor``)."""
    return max(0.5, http_timeout / 4)


def offering_wide_lookup(waiting: int, records: int, page_size: int) -> bool:
    """Whether one offering-wide list of a month's ComponentUsages (about ``records`` of them, in pages of
    ``page_size``) costs fewer requests than one list for each of the ``waiting`` resources."""
    return waiting > 0 and math.ceil(max(records, 1) / max(page_size, 1)) < waiting


@dataclass
class _Outcome:
    writes: int = 0
    error: WaldurError | None = None
    auth_error: WaldurAuthError | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class _UserUsageWrites:
    """The per-user usages of one resource and month, written after its total."""

    rp: ResourcePlan
    month: MonthWrites
    uuids: dict[str, str]  # component type -> ComponentUsage uuid, as far as known
    looked_up: bool = False  # the offering-wide list was read after the total was written

    def missing_types(self) -> list[str]:
        return [t for t in self.month.per_user if t not in self.uuids]


def _record_failure(rp: ResourcePlan, out: _Outcome, what: str, error: WaldurError) -> None:
    if isinstance(error, WaldurAuthError):
        out.auth_error = out.auth_error or error
        return
    # a permanent error outranks a transient one in the outcome of the resource
    if out.error is None or isinstance(out.error, WaldurTransientError):
        out.error = error
    note = f"resource {rp.uuid} ({rp.account}): {what} failed: {error}"
    out.notes.append(note)
    log.warning(note)


def _attempt(rp: ResourcePlan, out: _Outcome) -> Callable[[str, Callable[[], Any]], bool]:
    """Run one write of a resource; record its error in the resource's outcome instead of raising."""

    def attempt(what: str, fn: Callable[[], Any]) -> bool:
        try:
            fn()
            return True
        except WaldurError as e:
            _record_failure(rp, out, what, e)
        return False

    return attempt


class PushReporter:
    """One push cycle per ``run_cycle``; ``now`` is injectable so tests control the billing clock."""

    def __init__(
        self,
        settings: Settings,
        waldur: WaldurClient,
        slurm: SlurmClient,
        *,
        now: Callable[[], datetime] = _utcnow,
        previous_month_grace: timedelta = PREVIOUS_MONTH_GRACE,
        confirm_missing: bool = True,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.settings = settings
        self.waldur = waldur
        self.slurm = slurm
        self.now = now
        self.previous_month_grace = previous_month_grace
        self.echo = echo
        self.confirm_missing = confirm_missing
        # accounts absent from the last successful dump (see plan_push); in memory only: after a restart
        # a missing account is confirmed by the second cycle
        self._missing: set[str] = set()
        self._staff: bool | None = None

    # ------------------------------------------------------------------ reads
    def _components(self, offering: Offering, report: CycleReport) -> tuple[dict[str, Component], dict[str, Component]]:
        """(components whose usage is reported, components whose limits are reported)."""
        by_type = offering.components_by_type()
        usage: dict[str, Component] = {}
        limits: dict[str, Component] = {}
        for key, component in self.settings.components.items():
            oc = by_type.get(key)
            if oc is None:
                note = f"component {key} of the TRES file is not in the offering; not reported"
                report.notes.append(note)
                log.warning(note)
                continue
            if oc.billing_type == "limit":
                limits[key] = component
            if oc.billing_type in USAGE_BILLING_TYPES:
                usage[key] = component
            else:
                note = f"component {key} is billed as {oc.billing_type!r} in the offering; usage not reported"
                report.notes.append(note)
                log.warning(note)
        return usage, limits

    def _held(self, window: BillingWindow, *, current: bool = True) -> Held:
        earlier = self._earlier_period_records(window) if current else set()
        return Held.from_lists(
            self.waldur.list_component_usages(window.period), self.waldur.list_user_usages(window.period), earlier
        )

    def _earlier_period_records(self, window: BillingWindow) -> set[str]:
        """ComponentUsage uuids of plan periods that ended this month.

        The server keeps one usage record per (resource, component, plan period, month) and ``set_usage``
        writes into the current period. After a plan switch in the middle of a month, the month-to-date total
        written there would bill the part before the switch twice. One list of the month's done plan-switch
        orders (an Update whose ``old_plan_uuid`` differs from its plan) finds the resources; only those have
        their plan periods read.
        """
        orders = self.waldur.list_orders(states=("done",), types=("Update",), modified_since=window.start)
        switched = sorted({o.resource_uuid for o in orders if o.resource_uuid and _switches_plan(o)})
        records: set[str] = set()
        for uuid in switched:
            for period in self.waldur.plan_periods(uuid):
                if period.end is not None and period.end >= window.start:
                    for component in period.raw.get("components") or []:
                        if isinstance(component, Mapping) and isinstance(component.get("uuid"), str):
                            records.add(component["uuid"].replace("-", "").lower())
        return records

    def _associations(
        self, resources: Sequence[Resource], state: SlurmState, report: CycleReport
    ) -> dict[str, frozenset[str]]:
        """2024: Waldur's associations of the allocations whose associations this cycle may sync (see
        ``WaldurClient.list_offering_associations``). An allocation whose read failed is left out, so the
        planner leaves its associations alone instead of taking the failure for "none"."""
        wanted = [
            r.allocation_uuid
            for r in resources
            if r.allocation_uuid and not order_in_progress(r) and (a := valid_account(r.backend_id)) and a in state.accounts
        ]
        read = self.waldur.list_offering_associations(wanted, workers=self.settings.push_concurrency)
        out: dict[str, frozenset[str]] = {}
        for alloc, users in read.items():
            if isinstance(users, WaldurError):
                note = f"associations of allocation {alloc} not read ({users}); not synced this cycle"
                report.notes.append(note)
                log.warning(note)
                continue
            out[alloc] = users
        return out

    def _is_staff(self) -> bool:
        if self._staff is None:
            self._staff = bool(self.waldur.whoami().is_staff)
        return self._staff

    def _read_usage(self, accounts: list[str], window: BillingWindow) -> Aggregate:
        keys = list(self.settings.components)
        if not accounts or window.end <= window.start:
            return Aggregate()
        records = self.slurm.read_usage(accounts, window.start, window.end, duplicates=self.settings.usage_count_requeues)
        agg = aggregate(records, keys, source=self.settings.usage_tres_source, accounts=accounts, window=window)
        for what in agg.fallbacks:
            log.info("%s: %s TRES column empty, used the other one", what, self.settings.usage_tres_source)
        for what in agg.unusable:
            log.warning("%s; not billed this cycle", what)
        return agg

    # ------------------------------------------------------------------ cycle
    def run_cycle(self, dry_run: bool = False) -> CycleReport:
        report = CycleReport(kind="push")
        procs0 = self.slurm.executor.process_count
        http0 = self.waldur.requests_total
        try:
            self._cycle(report, dry_run)
        except WaldurTransientError as e:
            # Only reads get here (each resource's writes catch their own errors): Waldur is unreachable or
            # overloaded right now; the next cycle reports everything, as usage is month-to-date.
            report.unreachable.append(f"Waldur unreachable: read failed ({e}); nothing reported this cycle")
            report.deferred = max(report.deferred, report.seen - report.skipped)
        finally:
            report.slurm_processes = self.slurm.executor.process_count - procs0
            report.http_requests = self.waldur.requests_total - http0
        return report

    def _cycle(self, report: CycleReport, dry_run: bool) -> None:
        now = self.now()
        tz = self.settings.billing_timezone
        current = billing_window(now, tz)

        try:
            state: SlurmState | None = self.slurm.read_state()
        except SlurmError as e:
            self._slurm_failed(report, "association dump", e)
            state = None

        listed = self.waldur.list_resources(states=LISTED_STATES, fields=RESOURCE_FIELDS)
        report.seen = len(listed)
        resources = [r for r in listed if r.backend_id.strip() or _skip_empty(report, r)]
        if state is None:
            report.deferred = len(resources)
            return
        offering = self.waldur.get_offering()
        usage_components, limit_components = self._components(offering, report)
        accounts = sorted({a for r in resources if (a := valid_account(r.backend_id)) and a in state.accounts})

        months: list[MonthInput] = []
        try:
            months.append(MonthInput(current, self._read_usage(accounts, current), self._held(current), usage_components))
        except SlurmError as e:
            self._slurm_failed(report, "sacct", e)
            report.deferred = len(resources)
            return
        if in_month_start(now, tz, self.previous_month_grace):
            previous = previous_window(now, tz)
            allowed = backfill_types(offering, usage_components, staff=self._is_staff(), flavour=self.waldur.flavour)
            if allowed:
                try:
                    months.append(MonthInput(previous, self._read_usage(accounts, previous), self._held(previous, current=False), allowed))
                except SlurmError as e:
                    note = f"previous month {previous.period:%Y-%m} not re-reported: SLURM read failed: {e}"
                    report.notes.append(note)
                    log.warning(note)
            else:
                log.info(
                    "previous month %s: no component of the offering accepts a backdated report from this token; "
                    "its final usage is what the last cycle of that month reported",
                    f"{previous.period:%Y-%m}",
                )

        associations = self._associations(resources, state, report) if self.waldur.flavour == FLAVOUR_2024 else None
        plan = plan_push(
            resources, state, months, limit_components, associations, self._missing if self.confirm_missing else None,
            limit_keys={c.type for c in offering.components if c.billing_type == "limit"},
        )
        if not dry_run:
            self._missing = set(plan.missing)

        report.skipped += len(plan.skipped)
        for line in plan.skipped:
            log.info(line)
        report.failed += len(plan.failed)
        report.notes.extend(plan.failed)
        for line in plan.failed:
            log.warning(line)
        if plan.missing:
            sample = ", ".join(sorted(plan.missing)[:10])
            log.warning("%d account(s) of resources absent from the SLURM dump: %s", len(plan.missing), sample)
        for line in plan.anomalies:
            log.warning("usage anomaly: %s", line)
        report.notes.extend(f"anomaly: {a}" for a in plan.anomalies)

        if dry_run:
            lines = plan.describe()
            for line in lines:
                self.echo(f"[dry-run] {line}")
            report.notes.extend(f"planned: {line}" for line in lines)
            report.done = plan.unchanged + len(plan.resources)
            return
        self._apply(plan, report, {m.window.period: m.held.record_count() for m in months})

    def _slurm_failed(self, report: CycleReport, what: str, error: SlurmError) -> None:
        # Any failed read of the dump or of sacct means SLURM cannot be read now: the loop logs the one line.
        report.unreachable.append(f"SLURM unreachable: {error} ({what} failed; nothing reported or marked this cycle)")

    # ------------------------------------------------------------------ apply
    def _apply(self, plan: PushPlan, report: CycleReport, held_records: Mapping[date, int]) -> None:
        """Two passes over the resources: first every write but the per-user usages, then those. Per-user
        usages need the uuid of the ComponentUsage that ``set_usage`` creates and answers no body for; when
        many resources need one, a single offering-wide list (N/page_size requests) finds them all instead
        of one list per resource (see ``offering_wide_lookup``)."""
        outcomes = {id(rp): _Outcome() for rp in plan.resources}
        per_user: list[_UserUsageWrites] = []
        lock = threading.Lock()

        def first_pass(rp: ResourcePlan) -> None:
            later = self._apply_one(rp, outcomes[id(rp)])
            with lock:
                per_user.extend(later)

        workers = self.settings.push_concurrency
        # Writes back off when the server slows down: a write slower than a quarter of REQUESTS_TIMEOUT halves
        # how many run at once, well before the queue on the server pushes calls past the timeout.
        governor = LatencyGovernor(workers, slow_write_seconds(self.settings.http_timeout))
        run_bounded(first_pass, plan.resources, workers, name="push", governor=governor)
        by_resource: dict[int, list[_UserUsageWrites]] = {}
        for item in self._find_usage_uuids(per_user, outcomes, held_records):
            by_resource.setdefault(id(item.rp), []).append(item)
        run_bounded(lambda items: self._write_user_usages(items, outcomes[id(items[0].rp)]), list(by_resource.values()),
                    workers, name="push", governor=governor)
        if governor.backoffs:
            note = (
                f"Waldur slowed down (a write took over {governor.slow:.1f}s): concurrent writes cut "
                f"{governor.backoffs} time(s), ending at {governor.limit} of {workers}"
            )
            report.notes.append(note)
            log.warning(note)

        failed = deferred = 0
        for outcome in outcomes.values():
            report.writes += outcome.writes
            report.notes.extend(outcome.notes)
            if outcome.auth_error is not None:
                raise outcome.auth_error
            if outcome.error is None:
                continue
            if isinstance(outcome.error, WaldurTransientError):
                deferred += 1
            else:
                failed += 1
        report.failed += failed
        report.deferred += deferred
        report.done += plan.unchanged + len(outcomes) - failed - deferred

    def _apply_one(self, rp: ResourcePlan, out: _Outcome) -> list[_UserUsageWrites]:
        """Every write of one resource but its per-user usages, which it returns for the second pass.
        Independent parts (usage, limits, associations) go on after a failure."""
        attempt = _attempt(rp, out)
        later: list[_UserUsageWrites] = []

        def wrote(fn: Callable[[], Any]) -> Callable[[], None]:
            def go() -> None:
                fn()
                out.writes += 1

            return go

        if rp.erred_message:
            attempt("mark erred", lambda: self._mark_erred(rp, out))
            return later
        if rp.recover and not attempt("mark OK", wrote(lambda: self.waldur.mark_resource_ok(rp.uuid))):
            return later  # Waldur refuses usage for an erred resource; try again next cycle
        if rp.recover:
            log.info("resource %s (%s): recovered, its SLURM account exists again", rp.uuid, rp.account)
        for month in rp.months:
            if month.totals and not attempt(f"usage {month.window.period:%Y-%m}", wrote(
                lambda m=month: self.waldur.set_usage(rp.uuid, m.totals, date=m.window.report_date)
            )):
                continue  # per-user usages belong to the total that was not written
            if month.per_user:
                later.append(_UserUsageWrites(rp, month, dict(month.usage_uuids)))
        if rp.limits is not None:
            attempt("set limits", wrote(lambda: self.waldur.set_limits(rp.uuid, rp.limits or {})))
        for user in rp.assoc_create:
            attempt(f"create association {user}", wrote(lambda u=user: self.waldur.create_association(rp.uuid, u)))
        for user in rp.assoc_delete:
            attempt(f"delete association {user}", wrote(lambda u=user: self.waldur.delete_association(rp.uuid, u)))
        return later

    def _find_usage_uuids(
        self, items: list[_UserUsageWrites], outcomes: Mapping[int, _Outcome], held_records: Mapping[date, int]
    ) -> list[_UserUsageWrites]:
        """Fill in the uuids of the ComponentUsages that ``set_usage`` just created, with one offering-wide
        list per month where that takes fewer requests than one list per resource; returns the items still
        to write (not those whose list failed). Items left without their uuids look them up one resource at
        a time in ``_write_one_month_users``."""
        by_period: dict[date, list[_UserUsageWrites]] = {}
        for item in items:
            if item.missing_types():
                by_period.setdefault(item.month.window.period, []).append(item)
        failed: set[int] = set()
        for period, waiting in sorted(by_period.items()):
            records = held_records.get(period, 0) + sum(len(i.missing_types()) for i in waiting)
            if not offering_wide_lookup(len(waiting), records, self.waldur.page_size):
                continue
            try:
                listed = self.waldur.list_component_usages(period)
            except WaldurError as e:
                for item in waiting:
                    _record_failure(item.rp, outcomes[id(item.rp)], f"usage records {period:%Y-%m}", e)
                    failed.add(id(item))
                continue
            found: dict[str, dict[str, str]] = {}
            for cu in listed:
                if cu.resource_uuid:
                    found.setdefault(cu.resource_uuid, {})[cu.type] = cu.uuid
            for item in waiting:
                item.uuids.update(found.get(item.rp.uuid, {}))
                item.looked_up = True
        return [item for item in items if id(item) not in failed]

    def _write_user_usages(self, items: list[_UserUsageWrites], out: _Outcome) -> None:
        attempt = _attempt(items[0].rp, out)
        for item in items:
            attempt(f"user usage {item.month.window.period:%Y-%m}", lambda i=item: self._write_one_month_users(i, out))

    def _write_one_month_users(self, item: _UserUsageWrites, out: _Outcome) -> None:
        rp, window = item.rp, item.month.window
        if item.missing_types() and not item.looked_up:
            for cu in self.waldur.list_component_usages(window.period, resource_uuid=rp.uuid):
                item.uuids[cu.type] = cu.uuid
        for ctype, users in sorted(item.month.per_user.items()):
            usage_uuid = item.uuids.get(ctype)
            if usage_uuid is None:
                out.notes.append(f"resource {rp.uuid}: no {ctype} usage record for {window.period:%Y-%m}; user usage not reported")
                continue
            self.waldur.set_user_usages(usage_uuid, users)
            out.writes += 1

    # ------------------------------------------------------------------ final usage (Terminate)
    def report_final(self, accounts: Mapping[str, str]) -> dict[str, BaseException | None]:
        """Report the month-to-date usage of resources whose Terminate is in progress, while Waldur still
        accepts usage for them (resource uuid -> SLURM account; the account may already be removed: sacct
        keeps its job records).

        The push cycle's own steps: ONE sacct for all the accounts, the same aggregation and conversion, the
        month's plan switches (one order list), and per resource what Waldur holds for the month (two lists),
        writing only increases into the current plan period's record. Returns each
        resource's error (None when reported or nothing was new). A failed sacct or offering read raises
        (SlurmError, WaldurError): then nothing was reported.
        """
        if not accounts:
            return {}
        window = billing_window(self.now(), self.settings.billing_timezone)
        usage_components, _ = self._components(self.waldur.get_offering(), CycleReport(kind="final usage"))
        agg = self._read_usage(sorted(set(accounts.values())), window)
        # as in the push cycle: after a plan switch this month, the current period gets only the rest
        earlier = self._earlier_period_records(window)
        results: dict[str, BaseException | None] = {}
        for uuid, account in sorted(accounts.items()):
            try:
                held = Held.from_lists(self.waldur.list_component_usages(window.period, resource_uuid=uuid),
                                       self.waldur.list_user_usages(window.period, resource_uuid=uuid), earlier)
                converted, switched = held.current_period_share(
                    uuid, to_waldur_usage(agg.accounts.get(account), usage_components))
                diff = diff_usage(converted, held.totals.get(uuid, {}), held.users.get(uuid, {}))
            except WaldurAuthError:
                raise
            except (WaldurError, BadValue) as exc:
                results[uuid] = exc
                continue
            for anomaly in [*switched, *diff.anomalies]:
                log.warning("usage anomaly: resource %s (%s): %s", uuid, account, anomaly)
            rp = ResourcePlan(uuid, "", account)
            if not diff.empty:
                rp.months.append(MonthWrites(window, diff.totals, diff.per_user, dict(held.usage_uuids.get(uuid, {}))))
            out = _Outcome()
            later = self._apply_one(rp, out)
            if later and out.error is None:
                self._write_user_usages(later, out)
            if out.auth_error is not None:
                raise out.auth_error
            results[uuid] = out.error
            if out.error is None and not diff.empty:
                values = ", ".join(f"{k}={v}" for k, v in sorted(diff.totals.items()))
                log.info("resource %s (%s): final usage %s reported: %s", uuid, account, f"{window.period:%Y-%m}",
                         values or "per-user usage only")
        return results

    def _mark_erred(self, rp: ResourcePlan, out: _Outcome) -> None:
        # Re-read just before the only destructive write of the cycle: the pull daemon may have started an
        # order for this resource since the list was read (B15).
        fresh = self.waldur.get_resource(rp.uuid)
        if fresh.state != "OK" or order_in_progress(fresh):
            out.notes.append(f"resource {rp.uuid}: account {rp.account} missing, but the resource is now {fresh.state}; not marked")
            return
        self.waldur.mark_resource_erred(rp.uuid, rp.erred_message or missing_account_message(rp.account))
        out.writes += 1
        log.warning("resource %s marked erred: %s", rp.uuid, rp.erred_message)

def _switches_plan(order: Order) -> bool:
    old = order.raw.get("old_plan_uuid")
    return isinstance(old, str) and bool(old) and old.replace("-", "").lower() != (order.plan_uuid or "")


def _skip_empty(report: CycleReport, resource: Resource) -> bool:
    """A resource with an empty backend_id never reaches SLURM (B14); Waldur lists them when it ignores filters."""
    report.skipped += 1
    log.info("resource %s has no backend_id; skipped", resource.uuid)
    return False
