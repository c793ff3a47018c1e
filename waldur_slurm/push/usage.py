"""Usage math for the push daemon: billing window, aggregation of sacct records, unit conversion, diffs.

Pure: no I/O, no clock (callers pass ``now``), no logging. Arithmetic is exact: a job contributes
``TRES value x ElapsedRaw`` TRES-seconds (mem in MB), summed as exact fractions, and only the final
Waldur amount is rounded, once, half up to the 2 decimal places Waldur stores.

Formula (per account, per user, per TRES key in the components file)::

    tres_seconds = sum over job allocations of  TRES[key] x ElapsedRaw      (AllocTRES, or ReqTRES)
    waldur_units = round_half_up(tres_seconds / 60 / unit_factor, 2)

``ElapsedRaw`` comes from ``sacct --truncate`` over the billing window, so a job that crosses the window
edge contributes only its part inside the window, and a running job contributes up to the window end
(``elapsed_in_window`` holds the agent to that whatever sacct reports).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Protocol
from zoneinfo import ZoneInfo

from waldur_slurm.domain.components import CENT, Component, to_cents
from waldur_slurm.domain.values import to_decimal

SECONDS_PER_MINUTE = 60


# --------------------------------------------------------------------------------------------------
# Billing window


@dataclass(frozen=True)
class BillingWindow:
    """One billing month in the billing timezone, possibly cut at ``now``.

    ``start`` is the first instant of the month, ``month_end`` the first instant of the next month
    (exclusive), ``end`` = min(now, month_end). All three are aware datetimes in the billing timezone,
    on whole seconds (sacct's resolution), so two windows that meet share the boundary instant exactly.
    """

    period: date  # first day of the billing month: Waldur's billing_period
    start: datetime
    end: datetime
    month_end: datetime

    @property
    def complete(self) -> bool:
        """The whole month has elapsed: its totals are final."""
        return self.end >= self.month_end

    @property
    def report_date(self) -> datetime:
        """The instant to date this month's usage report with: the window end, kept inside the month.

        Waldur files a report under the month of its ``date`` (the server's "now" when absent). Sending the
        window's own end stops a report computed at 23:59:59 from landing in the next month when it reaches
        the server after midnight, and it is never in the future.
        """
        return self.end if self.end < self.month_end else self.month_end - timedelta(seconds=1)

    def __str__(self) -> str:
        return f"{self.period:%Y-%m} [{self.start.isoformat()} .. {self.end.isoformat()})"


def _first_instant(year: int, month: int, tz: ZoneInfo) -> datetime:
    # Round-tripping through UTC normalises a midnight that a DST jump skips (fold=0 picks the
    # pre-transition offset, which lands on the first instant that exists that day).
    naive_local = datetime(year, month, 1, tzinfo=tz)
    return naive_local.astimezone(timezone.utc).astimezone(tz)


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _floor_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def month_window(year: int, month: int, tz: ZoneInfo, now: datetime) -> BillingWindow:
    """The billing window of ``year-month`` in ``tz``, cut at ``now`` (never later than the month end).

    Raises ValueError if ``now`` is naive or earlier than the month start (there is no usage to report).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    start = _first_instant(year, month, tz)
    month_end = _first_instant(*_next_month(year, month), tz)
    now_local = _floor_second(now.astimezone(tz))
    if now_local < start:
        raise ValueError(f"now {now.isoformat()} is before the start of {year:04d}-{month:02d}")
    return BillingWindow(period=date(year, month, 1), start=start, end=min(now_local, month_end), month_end=month_end)


def billing_window(now: datetime, tz: ZoneInfo) -> BillingWindow:
    """The current billing month in ``tz``: from its first instant to ``now`` (floored to the second)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    local = now.astimezone(tz)
    return month_window(local.year, local.month, tz, now)


def previous_window(now: datetime, tz: ZoneInfo) -> BillingWindow:
    """The whole previous billing month in ``tz`` (complete: its end is the current month's start)."""
    current = billing_window(now, tz)
    year, month = (current.period.year - 1, 12) if current.period.month == 1 else (current.period.year, current.period.month - 1)
    return month_window(year, month, tz, now)


def in_month_start(now: datetime, tz: ZoneInfo, grace: timedelta) -> bool:
    """True during the first ``grace`` of a billing month: the time to report the previous month's final total."""
    return now.astimezone(tz) - billing_window(now, tz).start < grace


def seconds_until_month_end(now: datetime, tz: ZoneInfo) -> float:
    """Seconds left in the current billing month: lets a loop schedule one last cycle just before it closes."""
    return (billing_window(now, tz).month_end - now.astimezone(tz)).total_seconds()


# Extra push cycles this many seconds before a billing month closes. Waldur 8.x refuses a provider's
# backdated usage for usage-type components, so what a month's last regular cycle missed would be lost.
CLOSING_LEADS = (300.0, 30.0)


def seconds_until_closing_cycle(now: datetime, tz: ZoneInfo, leads: tuple[float, ...] = CLOSING_LEADS) -> float | None:
    """Seconds until the next extra end-of-month cycle is due, or None when none is left this month."""
    left = seconds_until_month_end(now, tz)
    upcoming = [left - lead for lead in leads if left - lead > 1.0]
    return min(upcoming) if upcoming else None


# --------------------------------------------------------------------------------------------------
# Aggregation of job records


class JobLike(Protocol):
    """The fields of ``waldur_slurm.slurm.client.JobRecord`` that usage needs."""

    account: str
    user: str
    elapsed_seconds: int
    req_tres: Mapping[str, Decimal]
    alloc_tres: Mapping[str, Decimal]
    start: datetime | None  # aware; sacct --truncate puts it at the window start for earlier jobs


def elapsed_in_window(record: JobLike, window: BillingWindow) -> int:
    """The seconds of ``record`` inside ``window``: its ElapsedRaw, at most from its start to the window end.

    The window ends at the cycle's ``now``. sacct 22.05 with ``--truncate`` stops a RUNNING job's
    ElapsedRaw at ``--endtime`` (measured), but a job still has no end in slurmdbd while it runs, and
    an ElapsedRaw counted to the query instead would bill seconds the next cycle bills again in a later
    window. Clipped here, a running job is billed up to ``now`` exactly, whatever the SLURM version.
    """
    elapsed = int(record.elapsed_seconds)
    if record.start is None or elapsed <= 0:
        return max(elapsed, 0)
    inside = int((window.end - max(record.start, window.start)).total_seconds())
    return max(0, min(elapsed, inside))


@dataclass
class AccountUsage:
    """Exact TRES-seconds (mem in MB-seconds) of one account: totals and per user."""

    account: str
    totals: dict[str, Fraction] = field(default_factory=dict)
    per_user: dict[str, dict[str, Fraction]] = field(default_factory=dict)
    jobs: int = 0


@dataclass
class Aggregate:
    """What ``aggregate`` found: usage per account (lower-case names), and the records it could not use."""

    accounts: dict[str, AccountUsage] = field(default_factory=dict)
    # records whose chosen TRES source was empty although they ran; the other source was used instead
    fallbacks: list[str] = field(default_factory=list)
    # records with elapsed time but neither TRES source filled: nothing can be billed for them
    unusable: list[str] = field(default_factory=list)


def _tres_of(record: JobLike, source: str) -> tuple[Mapping[str, Decimal], bool]:
    primary, secondary = (record.alloc_tres, record.req_tres) if source == "alloc" else (record.req_tres, record.alloc_tres)
    if primary:
        return primary, False
    # sacct was seen leaving ReqTRES empty for ~2 s on a COMPLETED row (B19); the other column is the
    # best estimate then, and it is the same value for the usual job (AllocTRES == ReqTRES).
    return secondary, bool(secondary)


def aggregate(
    records: Iterable[JobLike],
    keys: Collection[str],
    *,
    source: str = "alloc",
    accounts: Collection[str] | None = None,
    window: BillingWindow | None = None,
) -> Aggregate:
    """Sum ``TRES x ElapsedRaw`` per account, per user and per TRES key, exactly.

    ``keys`` is the allow-list (the components file); other TRES (node, energy, billing when not sold)
    are ignored. ``accounts`` (optional) keeps only those accounts. Account names compare case-
    insensitively, because sacctmgr lower-cases them. Records with no elapsed time contribute nothing.
    ``window`` (optional), the window sacct was asked for, clips each record's time to it
    (``elapsed_in_window``).
    """
    if source not in ("alloc", "req"):
        raise ValueError(f"source must be 'alloc' or 'req', not {source!r}")
    wanted = None if accounts is None else {a.lower() for a in accounts}
    keys = frozenset(keys)
    result = Aggregate()
    for record in records:
        account = record.account.lower()
        if wanted is not None and account not in wanted:
            continue
        job_id = getattr(record, "job_id", "?")
        problem = getattr(record, "problem", None)
        if problem:  # a row SLURM printed unreadably: its time is unknown too, so it is reported, never guessed
            result.unusable.append(f"job {job_id} (account {account}): {problem}")
            continue
        elapsed = int(record.elapsed_seconds) if window is None else elapsed_in_window(record, window)
        if elapsed <= 0:
            continue
        tres, fell_back = _tres_of(record, source)
        if not tres:
            result.unusable.append(f"job {job_id} (account {account}): no AllocTRES and no ReqTRES")
            continue
        if fell_back:
            result.fallbacks.append(f"job {job_id} (account {account})")
        usage = result.accounts.get(account)
        if usage is None:
            usage = result.accounts[account] = AccountUsage(account)
        usage.jobs += 1
        user_totals = usage.per_user.setdefault(record.user, {})
        for key, value in tres.items():
            if key not in keys:
                continue
            amount = Fraction(value) * elapsed  # Fraction(Decimal) is exact
            usage.totals[key] = usage.totals.get(key, Fraction(0)) + amount
            user_totals[key] = user_totals.get(key, Fraction(0)) + amount
    return result


# --------------------------------------------------------------------------------------------------
# Conversion


def round_cents(value: Fraction) -> Decimal:
    """Exact half-up rounding of a rational to 2 decimal places."""
    if value < 0:
        return -round_cents(-value)
    cents = value * 100
    whole, rest = divmod(cents.numerator, cents.denominator)
    if 2 * rest >= cents.denominator:
        whole += 1
    return (Decimal(whole) / 100).quantize(CENT)


def tres_seconds_to_waldur(tres_seconds: Fraction | int, unit_factor: int) -> Decimal:
    """TRES-seconds -> Waldur units: / 60 / unit_factor, half up to 2 dp (as Component.to_waldur for whole minutes)."""
    return round_cents(Fraction(tres_seconds) / (SECONDS_PER_MINUTE * unit_factor))


@dataclass(frozen=True)
class ResourceUsage:
    """One account's usage in Waldur units: component -> amount, and component -> user -> amount."""

    totals: dict[str, Decimal]
    per_user: dict[str, dict[str, Decimal]]


def to_waldur_usage(usage: AccountUsage | None, components: Mapping[str, Component]) -> ResourceUsage:
    """Convert to Waldur units. Every component gets a total (zero when unused); users only where used."""
    totals: dict[str, Decimal] = {}
    per_user: dict[str, dict[str, Decimal]] = {}
    for key, component in components.items():
        seconds = usage.totals.get(key, Fraction(0)) if usage else Fraction(0)
        totals[key] = tres_seconds_to_waldur(seconds, component.unit_factor)
        shares: dict[str, Fraction] = {}
        if usage:
            scale = SECONDS_PER_MINUTE * component.unit_factor
            shares = {user: t[key] / scale for user, t in usage.per_user.items() if key in t}
        per_user[key] = apportion(totals[key], shares)
    return ResourceUsage(totals=totals, per_user=per_user)


def apportion(total: Decimal, shares: Mapping[str, Fraction]) -> dict[str, Decimal]:
    """Per-user amounts in cents that add up to ``total`` exactly (largest-remainder rounding).

    Rounding each share on its own does not add up (three users at 0.005 would show 0.01 each against a
    total of 0.02). Each user gets the floor of their exact share in cents; the cents left to reach the
    total go one each to the largest remainders (ties by user name, so the result is deterministic).
    ``total`` must be the half-up rounding of the shares' sum, which leaves between 0 and len(shares)
    cents to hand out.
    """
    if not shares:
        return {}
    floors: dict[str, int] = {}
    remainders: dict[str, Fraction] = {}
    for user, share in shares.items():
        cents = share * 100
        whole = cents.numerator // cents.denominator
        floors[user] = whole
        remainders[user] = cents - whole
    left = int(total * 100) - sum(floors.values())
    for user in sorted(remainders, key=lambda u: (-remainders[u], u))[: max(left, 0)]:
        floors[user] += 1
    return {user: (Decimal(cents) / 100).quantize(CENT) for user, cents in floors.items()}


# --------------------------------------------------------------------------------------------------
# Diffs against what Waldur holds


def exact_decimal(value: object, field: str = "value") -> Decimal:
    """A Waldur number (decimal string such as "12.50", int or float) as the Decimal it prints as.

    Raises BadValue naming ``field`` when it is not a finite number of bounded size.
    """
    return to_decimal(value, field)


def as_decimal(value: object, field: str = "usage") -> Decimal:
    """A Waldur usage value as a 2-dp Decimal (Waldur stores usage with 2 decimal places); BadValue if unusable."""
    return to_cents(exact_decimal(value, field))


@dataclass(frozen=True)
class UsageDiff:
    """The writes one resource needs: totals to set, user usages to set, and anomalies (not written)."""

    totals: dict[str, Decimal]
    per_user: dict[str, dict[str, Decimal]]
    anomalies: list[str]

    @property
    def empty(self) -> bool:
        return not self.totals and not any(self.per_user.values())


def _diff_value(computed: Decimal, held: Decimal | None, what: str, anomalies: list[str]) -> bool:
    """Should ``computed`` be written? Never lower than what Waldur holds; a missing value counts as zero."""
    current = Decimal("0.00") if held is None else held
    if computed == current:
        return False
    if computed < current:
        anomalies.append(f"{what}: computed {computed} is lower than {current} held by Waldur; not reported")
        return False
    return True


def diff_usage(
    computed: ResourceUsage,
    held_totals: Mapping[str, object],
    held_users: Mapping[str, Mapping[str, object]],
) -> UsageDiff:
    """Compare computed usage with Waldur's month values; keep only increases.

    A value Waldur does not hold counts as zero, so an idle account causes no writes. A computed value
    lower than Waldur's (jobs purged from the accounting DB, a changed TRES source, another writer) is
    an anomaly: it is reported to the caller and never written, because usage of a month only grows.
    """
    anomalies: list[str] = []
    totals: dict[str, Decimal] = {}
    per_user: dict[str, dict[str, Decimal]] = {}
    for key, amount in computed.totals.items():
        held = held_totals.get(key)
        if _diff_value(amount, None if held is None else as_decimal(held, f"usage.{key}"), f"component {key}", anomalies):
            totals[key] = amount
        held_for_key = {u: as_decimal(v, f"usage.{key}.{u}") for u, v in held_users.get(key, {}).items()}
        users = computed.per_user.get(key, {})
        changed: dict[str, Decimal] = {}
        for user in sorted(set(users) | set(held_for_key)):
            value = users.get(user, Decimal("0.00"))
            if _diff_value(value, held_for_key.get(user), f"component {key} user {user}", anomalies):
                changed[user] = value
        if changed:
            per_user[key] = changed
    return UsageDiff(totals=totals, per_user=per_user, anomalies=anomalies)


# --------------------------------------------------------------------------------------------------
# Limits


def diff_limits(
    slurm_limits: Mapping[str, int],
    held_limits: Mapping[str, object],
    components: Mapping[str, Component],
) -> dict[str, Decimal] | None:
    """The limits to write to Waldur so that they reflect SLURM's GrpTRESMins, or None when they already do.

    A key agrees when Waldur's value converts to exactly SLURM's integer TRES-minutes (the SLURM domain:
    what pull wrote is never echoed back), or when Waldur already holds exactly what we would write (a
    SLURM value that is not a whole number of cents in Waldur units is written once, not every cycle).
    Keys without a SLURM limit (unlimited) are left as Waldur has them. The result is the full dict
    (Waldur's other keys kept) because ``set_limits`` replaces the resource's limits.
    """
    changed: dict[str, Decimal] = {}
    for key, component in components.items():
        minutes = slurm_limits.get(key)
        if minutes is None or minutes < 0:
            continue
        target = component.to_waldur(minutes, f"GrpTRESMins.{key}")
        held = held_limits.get(key)
        if held is not None:
            # not rounded: a limit may carry more decimals than usage (8.x limit_decimal_places)
            held_amount = exact_decimal(held, f"limits.{key}")
            if held_amount >= 0 and component.to_slurm(held_amount) == minutes:
                continue
            if held_amount == target:  # a negative value in Waldur falls through: SLURM's overwrites it
                continue
        changed[key] = target
    if not changed:
        return None
    merged = {key: exact_decimal(value, f"limits.{key}") for key, value in held_limits.items() if value is not None}
    merged.update(changed)
    return merged


# --------------------------------------------------------------------------------------------------
# Associations (2024 profile)


def diff_associations(slurm_users: Collection[str], waldur_users: Collection[str]) -> tuple[list[str], list[str]]:
    """(to create, to delete) so that Waldur's associations of one account equal its SLURM users."""
    slurm = set(slurm_users)
    waldur = set(waldur_users)
    return sorted(slurm - waldur), sorted(waldur - slurm)
