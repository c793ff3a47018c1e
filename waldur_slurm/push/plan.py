"""The push plan (pure): what Waldur holds, and per resource the usage, limits and associations to write."""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from waldur_slurm.domain import naming
from waldur_slurm.domain.values import BadValue
from waldur_slurm.push.usage import (
    Aggregate,
    BillingWindow,
    ResourceUsage,
    as_decimal,
    diff_associations,
    diff_limits,
    diff_usage,
    to_waldur_usage,
)

if TYPE_CHECKING:
    from waldur_slurm.domain.components import Component
    from waldur_slurm.slurm.model import SlurmState
    from waldur_slurm.waldur.models import ComponentUsage, Offering, Resource, UserUsage

log = logging.getLogger("waldur_slurm.push.plan")

USAGE_BILLING_TYPES = ("usage", "limit")


def missing_account_message(account: str) -> str:
    return f"SLURM account {account!r} does not exist in the SLURM accounting database (reported by the push agent)"


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
        account = naming.account_of(res.backend_id)
        if account:
            accounts_of.setdefault(account, []).append(res.uuid)
    out: dict[str, str] = {}
    skipped: list[str] = []
    for res in resources:
        account = naming.account_of(res.backend_id)
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
    offering: Offering, components: Mapping[str, Component], *, staff: bool, backdated_usage: bool = True
) -> dict[str, Component]:
    """Components whose previous-month usage this token may still report.

    8.x refuses a past ``date`` for usage-type components from a non-staff token ("Service providers can
    only specify date for limit-based or prepaid billing components when backfilling past billing periods");
    limit-based and prepaid ones are accepted. A staff token may backfill everything.

    ``backdated_usage`` False (the 2024 server, see ``Capabilities``): the server ignores ``date`` and files
    every report under the current month, so a past month's total would overwrite this month's. Nothing is
    backfilled there.
    """
    if not backdated_usage:
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
