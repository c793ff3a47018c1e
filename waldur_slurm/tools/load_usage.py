"""``--load-usage FROM..TO``: report the usage of past billing months from ``sacct`` (onboarding a cluster).

An existing cluster that starts selling through Waldur has months of usage Waldur never saw. This job reads
each month of the range with ONE ``sacct`` for every account of the offering's resources and reports it,
per component and per user, exactly as the push daemon reports the current month: the same aggregation and
conversion (``PushReporter._read_usage``), the same comparison against what Waldur holds
(``push.plan_usage_months``: only what grew is written, so a second run writes nothing) and the same writes
(``PushReporter._apply``: verified ``set_usage``, then the per-user usages).

The server decides what may be backdated, so the token's rights decide per month which components are sent
(``push.backfill_types``): the current month takes every component; a past month on 8.x takes limit-based and
prepaid components from a provider token and every component from a staff token; the 2024 server takes no
past month at all (it ignores a report's ``date`` and would file it under the current month). Every skipped
component is named with the reason in the month's progress line.

Pure planning (``parse_month_range``, ``months_in_range``, ``component_rights``, ``plan_month``) is kept apart
from the I/O (``UsageLoader``).
"""

from __future__ import annotations

import logging
import re
import sys
from functools import partial
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING

from waldur_slurm.daemon.cycle import CycleReport
from waldur_slurm.push.plan import MonthInput, PushPlan, ResourcePlan, backfill_types, plan_usage_months, reportable_accounts
from waldur_slurm.push.reporter import REPORTABLE_STATES, RESOURCE_FIELDS, PushReporter
from waldur_slurm.slurm.errors import SlurmError
from waldur_slurm.push.usage import BillingWindow, month_window
from waldur_slurm.domain.values import BadValue
from waldur_slurm.waldur.errors import WaldurAuthError, WaldurError

if TYPE_CHECKING:
    from waldur_slurm.domain.components import Component
    from waldur_slurm.config import Settings
    from waldur_slurm.slurm.cli.client import SlurmClient
    from waldur_slurm.waldur.client import WaldurClient
    from waldur_slurm.waldur.models import Offering, Resource

log = logging.getLogger("waldur_slurm.tools.load_usage")

OPTION = "--load-usage"
_RANGE_RE = re.compile(r"^(\d{4})-(\d{2})\.\.(\d{4})-(\d{2})$")
REASON_2024 = "the 2024 server files every usage report under the current month (it has no report date)"
REASON_USAGE_TYPE = (
    "usage-based component: the server takes a past month only for limit-based or prepaid components, "
    "or from a staff token"
)


class MonthRangeError(ValueError):
    """A bad ``--load-usage`` value; the message names the option and the value."""


# --------------------------------------------------------------------------------------------------
# Pure: the range


def parse_month_range(text: str) -> tuple[date, date]:
    """``YYYY-MM..YYYY-MM`` -> (first day of FROM, first day of TO); FROM must not be after TO."""
    match = _RANGE_RE.match(text.strip())
    if not match:
        raise MonthRangeError(f"{OPTION} {text!r}: expected FROM..TO as months, e.g. 2026-01..2026-11")
    y1, m1, y2, m2 = (int(g) for g in match.groups())
    for year, month in ((y1, m1), (y2, m2)):
        if not 1 <= month <= 12 or year < 1970:
            raise MonthRangeError(f"{OPTION} {text!r}: {year:04d}-{month:02d} is not a month")
    first, last = date(y1, m1, 1), date(y2, m2, 1)
    if first > last:
        raise MonthRangeError(f"{OPTION} {text!r}: {first:%Y-%m} is after {last:%Y-%m}")
    return first, last


def months_in_range(first: date, last: date, current: date, text: str = "") -> list[date]:
    """Every month from ``first`` to ``last``; ``current`` is this billing month (no usage in the future)."""
    if last > current.replace(day=1):
        raise MonthRangeError(f"{OPTION} {text or f'{first:%Y-%m}..{last:%Y-%m}'!r}: {last:%Y-%m} is in the future "
                              f"(the billing month is {current:%Y-%m})")
    out: list[date] = []
    month = first
    while month <= last:
        out.append(month)
        month = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
    return out


# --------------------------------------------------------------------------------------------------
# Pure: what the token may send, and what to write


def component_rights(
    offering: Offering, components: Mapping[str, Component], *, past: bool, staff: bool, backdated_usage: bool
) -> tuple[dict[str, Component], dict[str, str]]:
    """(components this month's report may carry, component -> why it is skipped)."""
    if not past:
        return dict(components), {}
    allowed = backfill_types(offering, components, staff=staff, backdated_usage=backdated_usage)
    reason = REASON_USAGE_TYPE if backdated_usage else REASON_2024
    return allowed, {key: reason for key in components if key not in allowed}


@dataclass
class MonthPlan:
    window: BillingWindow
    resources: list[ResourcePlan] = field(default_factory=list)  # resources with writes
    unchanged: int = 0
    failed: list[str] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)

    def push_plan(self) -> PushPlan:
        """The same shape the push reporter applies."""
        return PushPlan(resources=list(self.resources), unchanged=self.unchanged)

    def describe(self) -> list[str]:
        return [line for rp in self.resources for line in rp.describe()]


def plan_month(resources: Sequence[Resource], accounts: Mapping[str, str], month: MonthInput) -> MonthPlan:
    """The usage writes of one month for the resources with a reportable account (resource uuid -> account)."""
    plan = MonthPlan(month.window)
    for res in resources:
        account = accounts.get(res.uuid)
        if account is None:
            continue
        try:
            writes, anomalies = plan_usage_months(res.uuid, account, [month])
        except BadValue as exc:
            plan.failed.append(f"resource {res.uuid} ({account}): usage not reported: {exc}")
            continue
        plan.anomalies.extend(f"resource {res.uuid} ({account}): {a}" for a in anomalies)
        if writes:
            plan.resources.append(ResourcePlan(res.uuid, res.name, account, months=writes))
        else:
            plan.unchanged += 1
    return plan


def progress_line(
    window: BillingWindow, *, resources: int, written: int, writes: int, unchanged: int, failed: int,
    sent: Sequence[str], skipped: Mapping[str, str], dry_run: bool, error: str | None = None,
) -> str:
    """One line per month: what was (or would be) written, and every skipped component with its reason."""
    head = f"load-usage {window.period:%Y-%m}:"
    if error is not None:
        return f"{head} FAILED: {error}"
    if not sent:
        parts = [f"{head} nothing sent: no component of the offering may be reported for this month"]
    elif dry_run:
        parts = [f"{head} {resources} resource(s): {written} would be written, {unchanged} unchanged (dry run)"]
    else:
        parts = [f"{head} {resources} resource(s): {written} written ({writes} writes), {unchanged} unchanged"]
        if failed:
            parts.append(f"{failed} failed")
    if sent:
        parts.append("components " + ", ".join(sorted(sent)))
    parts.extend(f"skipped {key}: {reason}" for key, reason in sorted(skipped.items()))
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------------
# I/O


@dataclass
class LoadResult:
    months: int = 0
    failed_months: list[str] = field(default_factory=list)
    writes: int = 0
    slurm_processes: int = 0
    http_requests: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed_months


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UsageLoader:
    """Reads, plans and writes month by month; one month's failure does not stop the next one."""

    def __init__(
        self, settings: Settings, waldur: WaldurClient, slurm: SlurmClient, *,
        now: Callable[[], datetime] = _utcnow, echo: Callable[[str], None] = print,
    ) -> None:
        self.settings = settings
        self.waldur = waldur
        self.slurm = slurm
        self.now = now
        self.echo = echo
        self.reporter = PushReporter(settings, waldur, slurm, now=now, echo=echo, confirm_missing=False)

    def run(self, months: Sequence[date], *, dry_run: bool = False) -> LoadResult:
        """Raises WaldurAuthError when the token is refused; any other failure fails only its month."""
        result = LoadResult()
        procs0, http0 = self.slurm.executor.process_count, self.waldur.requests_total
        try:
            self._run(months, dry_run, result)
        finally:
            result.slurm_processes = self.slurm.executor.process_count - procs0
            result.http_requests = self.waldur.requests_total - http0
        return result

    def _run(self, months: Sequence[date], dry_run: bool, result: LoadResult) -> None:
        now = self.now()
        tz = self.settings.billing_timezone
        offering = self.waldur.get_offering()
        usage_components, _ = self.reporter._components(offering, CycleReport(kind="load-usage"))
        listed = self.waldur.list_resources(states=REPORTABLE_STATES, fields=RESOURCE_FIELDS)
        resources = [r for r in listed if r.backend_id.strip()]
        accounts, skipped = reportable_accounts(resources)
        for line in skipped:
            log.info(line)
        local = now.astimezone(tz)
        current = date(local.year, local.month, 1)
        backdated = self.waldur.capabilities.backdated_usage
        for period in months:
            window = month_window(period.year, period.month, tz, now)
            past = period < current
            # staff only matters where the server takes a staff backdate (8.x): asked once, and only then
            staff = past and backdated and self.reporter._is_staff()
            sent, refused = component_rights(offering, usage_components, past=past, staff=staff, backdated_usage=backdated)
            line = partial(progress_line, window, resources=len(accounts), sent=list(sent), skipped=refused,
                           dry_run=dry_run)
            result.months += 1
            error = self._month(window, past, sent, resources, accounts, dry_run, line, result) if sent else None
            if not sent:
                self.echo(line(written=0, writes=0, unchanged=0, failed=0))
            if error is not None:
                result.failed_months.append(f"{window.period:%Y-%m}: {error}")

    def _month(
        self, window: BillingWindow, past: bool, sent: Mapping[str, Component], resources: Sequence[Resource],
        accounts: Mapping[str, str], dry_run: bool, line: Callable[..., str], result: LoadResult,
    ) -> str | None:
        """Read (one sacct, the month's usage records), plan and write one month; returns why it failed, if it did."""
        try:
            usage = self.reporter._read_usage(sorted(set(accounts.values())), window)
            month = MonthInput(window, usage, self.reporter._held(window, current=not past), sent)
        except SlurmError as exc:
            error = f"SLURM read (sacct) failed: {exc}"
        except WaldurAuthError:
            raise
        except WaldurError as exc:
            error = f"Waldur read failed: {exc}"
        else:
            return self._write(month, resources, accounts, dry_run, line, result)
        self.echo(line(written=0, writes=0, unchanged=0, failed=0, error=error))
        return error

    def _write(
        self, month: MonthInput, resources: Sequence[Resource], accounts: Mapping[str, str], dry_run: bool,
        line: Callable[..., str], result: LoadResult,
    ) -> str | None:
        plan = plan_month(resources, accounts, month)
        for anomaly in plan.anomalies:
            log.warning("usage anomaly: %s", anomaly)
        for failure in plan.failed:
            log.warning(failure)
        if dry_run:
            for planned in plan.describe():
                self.echo(f"[dry-run] {planned}")
            self.echo(line(written=len(plan.resources), writes=0, unchanged=plan.unchanged, failed=len(plan.failed)))
            return "; ".join(plan.failed) or None
        report = CycleReport(kind="load-usage")
        # the push reporter's writes: verified set_usage, then the per-user usages (one lookup of new records)
        self.reporter._apply(plan.push_plan(), report, {month.window.period: month.held.record_count()})
        result.writes += report.writes
        for note in report.notes:
            log.info(note)
        unfinished = report.failed + report.deferred
        failed = unfinished + len(plan.failed)
        self.echo(line(written=len(plan.resources) - unfinished, writes=report.writes, unchanged=plan.unchanged,
                       failed=failed))
        if not failed:
            return None
        reasons = plan.failed + [note for note in report.notes if "failed" in note]
        return f"{failed} resource(s) failed: " + "; ".join(reasons)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def run(settings: Settings, text: str, *, dry_run: bool = False, echo: Callable[[str], None] = print,
        err: Callable[[str], None] = _stderr, now: Callable[[], datetime] = _utcnow) -> int:
    """The CLI job: 0 when every month was reported (or had nothing to report), 1 when a month failed,
    2 for a bad range, 3 when Waldur refused the token, 4 when Waldur or SLURM could not be reached at all."""
    from waldur_slurm.daemon.wiring import make_slurm_client, make_waldur_client
    from waldur_slurm.domain.outcome import tool_failure

    tz = settings.billing_timezone
    moment = now()
    try:
        first, last = parse_month_range(text)
        months = months_in_range(first, last, moment.astimezone(tz).date(), text)
    except MonthRangeError as exc:
        err(f"waldur-slurm-agent: {exc}")
        return 2
    waldur = make_waldur_client(settings)
    slurm = make_slurm_client(settings)
    try:
        loader = UsageLoader(settings, waldur, slurm, now=lambda: moment, echo=echo)
        try:
            result = loader.run(months, dry_run=dry_run)
        except WaldurError as exc:
            code, words = tool_failure(exc)
            err(f"load-usage: {words}" + ("" if code == 3 else "; nothing reported"))
            return code
    finally:
        waldur.close()
    summary = (f"load-usage {first:%Y-%m}..{last:%Y-%m}: {result.months} month(s), {result.writes} write(s), "
               f"{result.slurm_processes} SLURM process(es), {result.http_requests} HTTP request(s)")
    if result.ok:
        echo(summary)
        return 0
    err(f"{summary}; FAILED: " + " | ".join(result.failed_months))
    return 1
