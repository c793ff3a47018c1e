"""--load-usage, pure: the month range, what the token may send per month, the month's plan, the progress line."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from waldur_slurm.domain.components import Component
from waldur_slurm.tools.load_usage import (
    REASON_2024,
    REASON_USAGE_TYPE,
    MonthRangeError,
    component_rights,
    months_in_range,
    parse_month_range,
    plan_month,
    progress_line,
)
from waldur_slurm.push.plan import Held, MonthInput, reportable_accounts
from waldur_slurm.push.usage import AccountUsage, Aggregate, month_window
from waldur_slurm.waldur.models import ComponentUsage, Offering, Resource, UserUsage

UTC = timezone.utc
NOW = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
CPU = Component("cpu", "CPU", "CPU-minutes", "usage", None, 1)
MEM = Component("mem", "RAM", "MB-minutes", "usage", None, 1)
GPU = Component("gres/gpu", "GPU", "GPU-minutes", "usage", None, 1)
COMPONENTS = {"cpu": CPU, "mem": MEM, "gres/gpu": GPU}
OFFERING = Offering.from_json({"uuid": "e" * 32, "components": [
    {"type": "cpu", "billing_type": "usage"},
    {"type": "mem", "billing_type": "limit"},
    {"type": "gres/gpu", "billing_type": "usage", "is_prepaid": True},
]})  # fmt: skip
U1, U2, U3 = "1" * 32, "2" * 32, "3" * 32


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [("2026-01..2026-11", date(2026, 1, 1), date(2026, 11, 1)), ("2025-12..2025-12", date(2025, 12, 1), date(2025, 12, 1)),
     (" 2024-10..2026-02 ", date(2024, 10, 1), date(2026, 2, 1))],
)
def test_range_parses(text: str, first: date, last: date) -> None:
    assert parse_month_range(text) == (first, last)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("2026-01", "expected FROM..TO"), ("2026-1..2026-11", "expected FROM..TO"), ("2026-01...2026-02", "expected FROM..TO"),
     ("", "expected FROM..TO"), ("2026-13..2026-12", "2026-13 is not a month"), ("2026-00..2026-01", "2026-00 is not a month"),
     ("2026-11..2026-01", "2026-11 is after 2026-01")],
)
def test_bad_range_names_the_option_and_the_value(text: str, problem: str) -> None:
    with pytest.raises(MonthRangeError) as err:
        parse_month_range(text)
    assert str(err.value).startswith(f"--load-usage {text!r}: ") and problem in str(err.value)


def test_months_in_range_crosses_years_and_stops_at_the_current_month() -> None:
    assert months_in_range(date(2025, 11, 1), date(2026, 2, 1), date(2026, 12, 3)) == [
        date(2025, 11, 1), date(2025, 12, 1), date(2026, 1, 1), date(2026, 2, 1)]
    assert months_in_range(date(2026, 12, 1), date(2026, 12, 1), date(2026, 12, 3)) == [date(2026, 12, 1)]
    with pytest.raises(MonthRangeError, match=r"--load-usage '2026-11..2027-01': 2027-01 is in the future"):
        months_in_range(date(2026, 11, 1), date(2027, 1, 1), date(2026, 12, 3), "2026-11..2027-01")


@given(st.dates(min_value=date(1990, 1, 1), max_value=date(2090, 12, 1)), st.integers(0, 40))
def test_months_in_range_is_consecutive_and_complete(start: date, span: int) -> None:
    first = start.replace(day=1)
    months = months_in_range(first, date(2100, 1, 1), date(2100, 1, 1))[: span + 1]
    assert months[0] == first and len(set(months)) == len(months)
    for a, b in zip(months, months[1:]):
        assert (b.year * 12 + b.month) - (a.year * 12 + a.month) == 1 and b.day == 1


def test_rights_current_month_takes_everything() -> None:
    for backdated in (True, False):
        sent, skipped = component_rights(OFFERING, COMPONENTS, past=False, staff=False, backdated_usage=backdated)
        assert set(sent) == {"cpu", "mem", "gres/gpu"} and skipped == {}


def test_rights_past_month_provider_8_skips_usage_based_with_the_reason() -> None:
    sent, skipped = component_rights(OFFERING, COMPONENTS, past=True, staff=False, backdated_usage=True)
    assert set(sent) == {"mem", "gres/gpu"}  # limit-based and prepaid
    assert skipped == {"cpu": REASON_USAGE_TYPE}


def test_rights_past_month_staff_8_takes_everything() -> None:
    sent, skipped = component_rights(OFFERING, COMPONENTS, past=True, staff=True, backdated_usage=True)
    assert set(sent) == {"cpu", "mem", "gres/gpu"} and skipped == {}


def test_rights_past_month_2024_skips_everything_even_for_staff() -> None:
    for staff in (False, True):
        sent, skipped = component_rights(OFFERING, COMPONENTS, past=True, staff=staff, backdated_usage=False)
        assert sent == {} and skipped == dict.fromkeys(COMPONENTS, REASON_2024)


def _res(uuid: str, backend_id: str) -> Resource:
    return Resource.from_json({"uuid": uuid, "backend_id": backend_id, "state": "OK", "limits": {}})


def _month(period: date, usage: dict[str, dict[str, int]], held: Held, comps: dict[str, Component]) -> MonthInput:
    """usage: account -> user -> cpu TRES-seconds (as the aggregation keeps them)."""
    agg = Aggregate()
    for account, users in usage.items():
        total = Fraction(sum(users.values()))
        agg.accounts[account] = AccountUsage(account, {"cpu": total}, {u: {"cpu": Fraction(s)} for u, s in users.items()})
    return MonthInput(month_window(period.year, period.month, UTC, NOW), agg, held, comps)  # type: ignore[arg-type]


def test_plan_month_writes_only_what_grew_per_component_and_user() -> None:
    resources = [_res(U1, "acc_a"), _res(U2, "acc_b"), _res(U3, "")]
    accounts, skipped = reportable_accounts(resources)
    assert accounts == {U1: "acc_a", U2: "acc_b"} and len(skipped) == 1
    period = date(2026, 10, 1)
    # Waldur already holds acc_b's October (1.00 CPU-minute, alice) from an earlier run
    held = Held.from_lists(
        [ComponentUsage.from_json({"uuid": "c" * 32, "resource_uuid": U2, "type": "cpu", "usage": "1.00", "billing_period": "2026-10-01"})],
        [UserUsage.from_json({"uuid": "d" * 32, "component_usage": f"https://w/api/marketplace-component-usages/{'c' * 32}/",
                              "username": "alice", "usage": "1.00"})],
    )
    month = _month(period, {"acc_a": {"alice": 120, "bob": 60}, "acc_b": {"alice": 60}}, held, {"cpu": CPU})
    plan = plan_month(resources, accounts, month)
    assert plan.unchanged == 1 and plan.failed == []
    (rp,) = plan.resources
    assert rp.uuid == U1 and rp.months[0].totals == {"cpu": Decimal("3.00")}
    assert rp.months[0].per_user == {"cpu": {"alice": Decimal("2.00"), "bob": Decimal("1.00")}}
    assert plan.describe() == [f"resource {U1} (acc_a): set usage 2026-10: cpu=3.00",
                               f"resource {U1} (acc_a): set user usage 2026-10 cpu: alice=2.00, bob=1.00"]
    assert plan.push_plan().resources == plan.resources


def test_plan_month_never_lowers_and_one_bad_held_value_fails_only_its_resource() -> None:
    resources = [_res(U1, "acc_a"), _res(U2, "acc_b")]
    accounts, _ = reportable_accounts(resources)
    held = Held.from_lists([
        ComponentUsage.from_json({"uuid": "c" * 32, "resource_uuid": U1, "type": "cpu", "usage": "9.00"}),
        ComponentUsage.from_json({"uuid": "d" * 32, "resource_uuid": U2, "type": "cpu", "usage": "1e999999"}),
    ], [UserUsage.from_json({"uuid": "e" * 32, "component_usage": f"https://w/api/marketplace-component-usages/{'c' * 32}/",
                             "username": "x", "usage": "9.00"})])
    plan = plan_month(resources, accounts, _month(date(2026, 9, 1), {"acc_a": {"x": 60}, "acc_b": {"x": 60}}, held, {"cpu": CPU}))
    assert plan.resources == [] and plan.unchanged == 1
    assert len(plan.failed) == 1 and U2 in plan.failed[0] and "too large" in plan.failed[0]
    assert len(plan.anomalies) == 2 and all("acc_a" in a and "lower than 9.00" in a for a in plan.anomalies)


def test_progress_line_names_every_skipped_component_and_the_reason() -> None:
    window = month_window(2026, 10, UTC, NOW)  # type: ignore[arg-type]
    line = progress_line(window, resources=3, written=2, writes=5, unchanged=1, failed=0, sent=["mem"],
                         skipped={"cpu": REASON_USAGE_TYPE}, dry_run=False)
    assert line == f"load-usage 2026-10: 3 resource(s): 2 written (5 writes), 1 unchanged; components mem; skipped cpu: {REASON_USAGE_TYPE}"
    none = progress_line(window, resources=3, written=0, writes=0, unchanged=0, failed=0, sent=[],
                         skipped={"cpu": REASON_2024}, dry_run=False)
    assert none.startswith("load-usage 2026-10: nothing sent") and none.endswith(f"skipped cpu: {REASON_2024}")
    failed = progress_line(window, resources=3, written=0, writes=0, unchanged=0, failed=0, sent=["cpu"], skipped={},
                           dry_run=False, error="SLURM read (sacct) failed: boom")
    assert failed == "load-usage 2026-10: FAILED: SLURM read (sacct) failed: boom"
