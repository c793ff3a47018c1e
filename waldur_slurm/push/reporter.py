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
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from waldur_slurm.daemon.concurrency import LatencyGovernor, run_bounded
from waldur_slurm.daemon.cycle import CycleReport
from waldur_slurm.domain import naming
from waldur_slurm.domain.outcome import ErrorKind, Outcomes, Status, classify, retry_later
from waldur_slurm.slurm.errors import SlurmError
from waldur_slurm.push.usage import (
    Aggregate,
    BillingWindow,
    aggregate,
    billing_window,
    diff_usage,
    in_month_start,
    previous_window,
    to_waldur_usage,
)
from waldur_slurm.domain.values import BadValue
from waldur_slurm.waldur.errors import WaldurAuthError, WaldurError, WaldurTransientError

if TYPE_CHECKING:
    from waldur_slurm.domain.components import Component
    from waldur_slurm.config import Settings
    from waldur_slurm.slurm.backend import SlurmBackend
    from waldur_slurm.slurm.model import SlurmState
    from waldur_slurm.waldur.client import WaldurClient
    from waldur_slurm.waldur.models import Offering, Order, Resource

from waldur_slurm.push.plan import (
    USAGE_BILLING_TYPES, Held, MonthInput, MonthWrites, PushPlan, ResourcePlan, backfill_types, missing_account_message,
    offering_wide_lookup, order_in_progress, plan_push, slow_write_seconds,
)

log = logging.getLogger("waldur_slurm.push.reporter")

LISTED_STATES = ("OK", "Updating", "Terminating", "Erred")
# Waldur accepts usage only for these (Creating, Erred and Terminated are refused with 400).
REPORTABLE_STATES = ("OK", "Updating", "Terminating")
RESOURCE_FIELDS = ("uuid", "name", "state", "backend_id", "limits", "order_in_progress", "resource_uuid", "error_message")
# During the first days of a month the cycle also re-reads the previous month and reports its final
# totals where the server accepts a past date (see ``backfill_types``).
PREVIOUS_MONTH_GRACE = timedelta(days=3)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class _ResourceWrites:
    """What the writes of one resource did this cycle; turned into its outcome once all have run."""

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


def _record_failure(rp: ResourcePlan, out: _ResourceWrites, what: str, error: WaldurError) -> None:
    if classify(error) is ErrorKind.AUTH:
        out.auth_error = out.auth_error or error  # type: ignore[assignment]
        return
    # a permanent error outranks a transient one in the outcome of the resource
    if out.error is None or retry_later(out.error):
        out.error = error
    note = f"resource {rp.uuid} ({rp.account}): {what} failed: {error}"
    out.notes.append(note)
    log.warning(note)


def _attempt(rp: ResourcePlan, out: _ResourceWrites) -> Callable[[str, Callable[[], Any]], bool]:
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
        slurm: SlurmBackend,
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
            if r.allocation_uuid and not order_in_progress(r) and (a := naming.account_of(r.backend_id)) and a in state.accounts
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
        procs0 = self.slurm.process_count
        http0 = self.waldur.requests_total
        try:
            self._cycle(report, dry_run)
        except WaldurTransientError as e:
            # Only reads get here (each resource's writes catch their own errors): Waldur is unreachable or
            # overloaded right now; the next cycle reports everything, as usage is month-to-date.
            report.unreachable.append(f"Waldur unreachable: read failed ({e}); nothing reported this cycle")
            report.deferred = max(report.deferred, report.seen - report.skipped)
        finally:
            report.slurm_processes = self.slurm.process_count - procs0
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
        accounts = sorted({a for r in resources if (a := naming.account_of(r.backend_id)) and a in state.accounts})

        months: list[MonthInput] = []
        try:
            months.append(MonthInput(current, self._read_usage(accounts, current), self._held(current), usage_components))
        except SlurmError as e:
            self._slurm_failed(report, "sacct", e)
            report.deferred = len(resources)
            return
        if in_month_start(now, tz, self.previous_month_grace):
            previous = previous_window(now, tz)
            allowed = backfill_types(
                offering, usage_components, staff=self._is_staff(), backdated_usage=self.waldur.capabilities.backdated_usage
            )
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

        associations = self._associations(resources, state, report) if self.waldur.capabilities.keeps_associations else None
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
        outcomes = {id(rp): _ResourceWrites() for rp in plan.resources}
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

        results = Outcomes()
        for rp in plan.resources:
            written = outcomes[id(rp)]
            report.writes += written.writes
            report.notes.extend(written.notes)
            if written.auth_error is not None:
                raise written.auth_error
            if written.error is None:
                results.done(rp.uuid)
            elif retry_later(written.error):
                results.defer(rp.uuid, str(written.error))
            else:
                results.fail(rp.uuid, str(written.error))
        report.failed += results.count(Status.FAILED)
        report.deferred += results.count(Status.DEFERRED)
        report.done += plan.unchanged + results.count(Status.DONE)

    def _apply_one(self, rp: ResourcePlan, out: _ResourceWrites) -> list[_UserUsageWrites]:
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
        self, items: list[_UserUsageWrites], outcomes: Mapping[int, _ResourceWrites], held_records: Mapping[date, int]
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

    def _write_user_usages(self, items: list[_UserUsageWrites], out: _ResourceWrites) -> None:
        attempt = _attempt(items[0].rp, out)
        for item in items:
            attempt(f"user usage {item.month.window.period:%Y-%m}", lambda i=item: self._write_one_month_users(i, out))

    def _write_one_month_users(self, item: _UserUsageWrites, out: _ResourceWrites) -> None:
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
            out = _ResourceWrites()
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

    def _mark_erred(self, rp: ResourcePlan, out: _ResourceWrites) -> None:
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
