"""Issue 12, "the class, not only the instances": the pure layers driven with generated hostile values.

Property: no exception escapes but the typed per-item ones (BadValue, OrderInvalid, SlurmParseError,
NamingError), and totals are conserved (per-user sums equal totals; usage is never lowered).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_pull_plan import COMPONENTS, CONFIG, hexid, order, tree
from waldur_slurm.domain import naming
from waldur_slurm.domain.components import Component
from waldur_slurm.domain.naming import NamingError, NamingRules
from waldur_slurm.pull.limits import validate_limits
from waldur_slurm.pull.model import OrderInvalid
from waldur_slurm.pull.plan import plan_orders
from waldur_slurm.slurm.cli.parsing import parse_jobs, parse_state
from waldur_slurm.slurm.ops import validate_account
from waldur_slurm.slurm.cli.parsing import SlurmParseError, parse_elapsed, parse_elapsed_raw, parse_limits, parse_tres
from waldur_slurm.push.usage import (
    ResourceUsage,
    aggregate,
    apportion,
    diff_limits,
    diff_usage,
    month_window,
    round_cents,
    to_waldur_usage,
)
from waldur_slurm.domain.values import MAX_EXPONENT, BadValue, show, to_decimal

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- hostile values --------------------------------------------------------------------------------
huge_ints = st.integers(min_value=10**4000, max_value=10**6000) | st.integers(max_value=-(10**4000), min_value=-(10**6000))
number_text = st.sampled_from(["1e999999", "-1e999999", "1e-999999", "NaN", "sNaN", "-Infinity", "inf", "1_000", "0x10",
                               "", " ", "٣", "１２", "1e24", "9" * 5000, "1." + "0" * 5000, "-0", "0e-1000000",
                               "12.50", "3", "abc", "n/a", "1,5", "½"])
hostile = (
    st.none() | st.booleans() | st.integers() | huge_ints | st.floats(allow_nan=True, allow_infinity=True)
    | st.decimals(allow_nan=True, allow_infinity=True) | number_text | st.text(max_size=30)
    | st.lists(st.integers(), max_size=3) | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)


@FAST
@given(hostile, st.text(max_size=20))
def test_to_decimal_returns_a_bounded_number_or_a_bad_value(value: Any, field_name: str) -> None:
    try:
        number = to_decimal(value, field_name)
    except BadValue as exc:
        assert str(exc).startswith(f"{field_name} = ") and len(str(exc)) < 200 + len(field_name)
        return
    assert number.is_finite() and (number.is_zero() or -MAX_EXPONENT <= number.adjusted() < MAX_EXPONENT)


@FAST
@given(hostile)
def test_show_never_raises_and_stays_short(value: Any) -> None:
    assert len(show(value)) <= 60


@FAST
@given(hostile, st.integers(min_value=1, max_value=10**9))
def test_component_conversions_raise_only_bad_value(value: Any, factor: int) -> None:
    component = Component("cpu", "CPU", "h", "limit", None, factor)
    try:
        minutes = component.to_slurm(value)
        assert minutes >= 0
        assert component.to_waldur(minutes) >= 0
    except BadValue:
        pass


@FAST
@given(st.dictionaries(st.sampled_from(["cpu", "mem", "gres/gpu", "bogus", ""]), hostile, max_size=4) | hostile)
def test_validate_limits_raises_only_order_invalid(raw: Any) -> None:
    try:
        slurm, _waldur, _notes = validate_limits(raw, COMPONENTS)
    except OrderInvalid as exc:
        assert len(str(exc)) < 400
        return
    assert all(isinstance(v, int) and 0 <= v < 2**62 for v in slurm.values())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(st.sampled_from(["cpu", "mem", "gres/gpu"]), hostile, max_size=3), min_size=1, max_size=4),
       st.lists(st.text(max_size=40), min_size=4, max_size=4))
def test_plan_orders_never_dies_on_data(limits: list[dict[str, Any]], names: list[str]) -> None:
    orders = [order(limits=lim, name=name) for lim, name in zip(limits, names)]
    plan = plan_orders(orders, tree(), CONFIG)  # must not raise
    assert len(plan.orders) == len(orders)
    for op in plan.orders:
        assert op.works or (op.outcome in ("erred", "reject", "skip") and op.reason)


# -- SLURM text ------------------------------------------------------------------------------------
tres_item = st.tuples(
    st.sampled_from(["cpu", "mem", "gres/gpu", "bb/cray", "gres/gpumem", "billing", "", "x=y"]),
    st.sampled_from(["", "4", "100M", "2G", "1.5T", "5?", "1X", "-1", "1e9", "9" * 40, "0.25K", "nan", "１"]),
)


@FAST
@given(st.lists(tres_item, max_size=5).map(lambda items: ",".join(f"{k}={v}" for k, v in items)) | st.text(max_size=40))
def test_tres_and_limit_parsing_raise_only_parse_errors(text: str) -> None:
    try:
        parsed = parse_tres(text)
    except SlurmParseError:
        return
    assert all(v.is_finite() and 0 <= v < 2**64 for v in parsed.values())
    try:
        limits = parse_limits(text)
    except SlurmParseError:
        return
    assert all(isinstance(v, int) for v in limits.values())


@FAST
@given(st.text(max_size=20))
def test_time_parsing_raises_only_parse_errors(text: str) -> None:
    for parse in (parse_elapsed, parse_elapsed_raw):
        try:
            parse(text)
        except SlurmParseError:
            pass


@FAST
@given(st.lists(st.sampled_from(["cpu=1,mem=5?", "cpu=4,mem=100M", "garbage", "", "cpu=1X", "bb/x=2G"]), min_size=1, max_size=4))
def test_one_unreadable_value_fails_only_its_own_row(tres: list[str]) -> None:
    jobs = "\n".join(f"{i}|acc{i}|u|COMPLETED|10|{t}|{t}|2026-01-01T00:00:00|2026-01-01T00:00:10" for i, t in enumerate(tres))
    records = parse_jobs(jobs)
    assert len(records) == len(tres)
    for record, text in zip(records, tres):
        try:
            parse_tres(text)
            assert record.problem is None
        except SlurmParseError:
            assert record.problem and not record.alloc_tres
    accounts = "\n".join(f"acc{i}|root||{t}|c|o|d" for i, t in enumerate(tres))
    state = parse_state(accounts, "")
    assert len(state.accounts) == len(tres)


# -- usage -----------------------------------------------------------------------------------------
@dataclass
class Job:
    account: str
    user: str
    elapsed_seconds: int
    req_tres: dict[str, Decimal] = field(default_factory=dict)
    alloc_tres: dict[str, Decimal] = field(default_factory=dict)
    start: datetime | None = None
    job_id: str = "1"


tres_values = st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False)
jobs = st.lists(
    st.builds(
        Job,
        account=st.sampled_from(["a", "A", "b"]),
        user=st.sampled_from(["u1", "u2", "U1", "ü", ""]),
        elapsed_seconds=st.integers(min_value=-10, max_value=10**7),
        alloc_tres=st.dictionaries(st.sampled_from(["cpu", "mem", "gres/gpu", "node"]), tres_values, max_size=3),
    ),
    max_size=12,
)


@FAST
@given(jobs, st.integers(min_value=1, max_value=10**6))
def test_aggregation_conserves_totals_and_per_user_amounts_add_up(records: list[Job], factor: int) -> None:
    agg = aggregate(records, ["cpu", "mem", "gres/gpu"])
    components = {k: Component(k, k, "u", "usage", None, factor) for k in ("cpu", "mem", "gres/gpu")}
    for usage in agg.accounts.values():
        for key, total in usage.totals.items():
            assert sum(u.get(key, Fraction(0)) for u in usage.per_user.values()) == total
        converted = to_waldur_usage(usage, components)
        for key, total in converted.totals.items():
            users = converted.per_user[key]
            if users:
                assert sum(users.values()) == total  # per-user sums equal the total, to the cent
            for amount in users.values():
                assert amount >= 0


@FAST
@given(st.dictionaries(st.text(min_size=1, max_size=4), st.fractions(min_value=0, max_value=10**6), min_size=1, max_size=8))
def test_apportion_adds_up_and_stays_within_a_cent(shares: dict[str, Fraction]) -> None:
    total = round_cents(sum(shares.values(), Fraction(0)))
    parts = apportion(total, shares)
    assert sum(parts.values()) == total
    for user, amount in parts.items():
        assert abs(Fraction(amount) - shares[user]) < Fraction(1, 100)


def test_apportion_three_users_at_half_a_cent() -> None:
    shares = {u: Fraction(5, 1000) for u in ("a", "b", "c")}
    parts = apportion(round_cents(sum(shares.values(), Fraction(0))), shares)
    assert sum(parts.values()) == Decimal("0.02") and sorted(parts.values()) == [Decimal("0.00"), Decimal("0.01"), Decimal("0.01")]


held_values = hostile | st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False)


@FAST
@given(st.dictionaries(st.sampled_from(["cpu", "mem"]), st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False), max_size=2),
       st.dictionaries(st.sampled_from(["cpu", "mem", "x"]), held_values, max_size=3),
       st.dictionaries(st.sampled_from(["u1", "u2"]), held_values, max_size=2))
def test_diff_usage_never_lowers_and_fails_only_with_bad_value(computed: dict[str, Decimal], held: dict[str, Any],
                                                               held_users: dict[str, Any]) -> None:
    usage = ResourceUsage(totals=computed, per_user={k: {"u1": v} for k, v in computed.items()})
    try:
        diff = diff_usage(usage, held, {k: held_users for k in computed})
    except BadValue:
        return
    for key, amount in diff.totals.items():
        if held.get(key) is not None:
            assert amount > to_decimal(held[key], "held").quantize(Decimal("0.01"))


@FAST
@given(st.dictionaries(st.sampled_from(["cpu", "mem"]), st.integers(min_value=-1, max_value=2**63), max_size=2),
       st.dictionaries(st.sampled_from(["cpu", "mem", "other"]), hostile, max_size=3))
def test_diff_limits_fails_only_with_bad_value(slurm: dict[str, int], held: dict[str, Any]) -> None:
    components = {k: Component(k, k, "u", "limit", None, 60) for k in ("cpu", "mem")}
    try:
        result = diff_limits(slurm, held, components)
    except BadValue:
        return
    assert result is None or all(v.is_finite() for v in result.values())


# -- naming ----------------------------------------------------------------------------------------
@FAST
@given(st.text(max_size=200), st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", max_size=10),
       st.integers(min_value=8, max_value=64))
def test_allocation_names_are_valid_accounts_or_naming_errors(name: str, prefix: str, max_len: int) -> None:
    rules = NamingRules(allocation_prefix=prefix, allocation_name_max_len=max_len)
    try:
        account = naming.allocation_account(rules, hexid(), name, lambda _n: False)
    except NamingError:
        return
    assert validate_account(account) == account and len(account) <= max_len


def test_month_window_is_sane_for_hostile_clock() -> None:
    # the window end never goes past the month end, whatever "now" is
    from zoneinfo import ZoneInfo

    now = datetime(2026, 1, 31, 23, 59, 59, tzinfo=timezone.utc) + timedelta(days=400)
    window = month_window(2026, 1, ZoneInfo("UTC"), now)
    assert window.end == window.month_end and not math.isnan(window.end.timestamp())
