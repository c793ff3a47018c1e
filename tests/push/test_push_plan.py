"""plan_push decisions, pure: missing accounts, races with the pull daemon, bad backend_ids, associations."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

from waldur_slurm.domain.components import Component
from waldur_slurm.push.plan import Held, MonthInput, backfill_types, missing_account_message, offering_wide_lookup, plan_push
from waldur_slurm.slurm.model import SlurmAccount, SlurmState
from waldur_slurm.push.usage import Aggregate, AccountUsage, billing_window
from waldur_slurm.waldur.models import ComponentUsage, Offering, Resource, UserUsage

D = Decimal
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
WINDOW = billing_window(NOW, timezone.utc)  # type: ignore[arg-type]
CPU = Component("cpu", "CPU", "CPU-minutes", "usage", None, 1)
COMPONENTS = {"cpu": CPU}


def res(uuid: str, backend_id: str, state: str = "OK", *, order: bool = False, limits: dict[str, Any] | None = None, alloc: str | None = None) -> Resource:
    raw: dict[str, Any] = {
        "uuid": uuid, "backend_id": backend_id, "state": state, "limits": limits or {},
        "order_in_progress": {"uuid": "f" * 32} if order else None, "resource_uuid": alloc,
    }  # fmt: skip
    return Resource.from_json(raw)


def slurm(*accounts: str, limits: dict[str, int] | None = None, users: dict[str, set[str]] | None = None) -> SlurmState:
    return SlurmState(
        accounts={
            a: SlurmAccount(a, "root", "", "", dict(limits or {}), frozenset((users or {}).get(a, set()))) for a in accounts
        },
        default_account={},
    )


def month(usage: dict[str, int] | None = None, held: Held | None = None) -> MonthInput:
    agg = Aggregate()
    for account, seconds in (usage or {}).items():
        agg.accounts[account] = AccountUsage(account, {"cpu": Fraction(seconds)}, {"u1": {"cpu": Fraction(seconds)}})
    return MonthInput(WINDOW, agg, held or Held(), COMPONENTS)


U1, U2, U3, U4 = ("1" * 32, "2" * 32, "3" * 32, "4" * 32)


def test_missing_account_marks_erred_only_when_safe_b6_b15() -> None:
    resources = [
        res(U1, "acc_gone"),  # OK, no order: erred
        res(U2, "acc_gone2", order=True),  # an order runs (e.g. Terminate): the pull daemon owns it
        res(U3, "acc_gone3", "Terminating"),
        res(U4, "acc_gone4", "Erred"),  # already erred: nothing new
    ]
    plan = plan_push(resources, slurm("other"), [month()], COMPONENTS)
    assert [(rp.uuid, rp.erred_message) for rp in plan.resources] == [(U1, missing_account_message("acc_gone"))]
    assert "acc_gone" in (plan.resources[0].erred_message or "")
    assert len(plan.skipped) == 3


def test_an_account_must_be_missing_from_two_dumps_in_a_row() -> None:
    resources = [res(U1, "acc_a"), res(U2, "acc_b")]
    first = plan_push(resources, slurm(), [month()], COMPONENTS, None, missing_before=set())
    assert first.resources == [] and first.missing == {"acc_a", "acc_b"} and len(first.skipped) == 2
    # acc_a reappeared (the first dump was bad), acc_b is still gone
    second = plan_push(resources, slurm("acc_a"), [month()], COMPONENTS, None, missing_before=first.missing)
    assert [(rp.uuid, rp.erred_message) for rp in second.resources] == [(U2, missing_account_message("acc_b"))]
    assert second.missing == {"acc_b"}


def test_erred_resource_whose_account_exists_is_recovered_and_reported() -> None:
    plan = plan_push([res(U1, "acc", "Erred")], slurm("acc"), [month({"acc": 120})], COMPONENTS)
    (rp,) = plan.resources
    assert rp.recover and rp.erred_message is None
    assert rp.months[0].totals == {"cpu": D("2.00")}
    # but not while an order for it runs
    plan = plan_push([res(U1, "acc", "Erred", order=True)], slurm("acc"), [month({"acc": 120})], COMPONENTS)
    assert plan.resources == [] and len(plan.skipped) == 1


def test_empty_and_unsafe_backend_ids_never_reach_slurm_b14() -> None:
    resources = [res(U1, ""), res(U2, "  "), res(U3, "a,b"), res(U4, "x y")]
    plan = plan_push(resources, slurm("a", "b"), [month({"a": 60, "b": 60})], COMPONENTS)
    assert plan.resources == [] and len(plan.skipped) == 4


def test_one_account_on_two_resources_is_not_billed_twice() -> None:
    plan = plan_push([res(U1, "acc"), res(U2, "ACC")], slurm("acc"), [month({"acc": 60})], COMPONENTS)
    assert plan.resources == [] and len(plan.skipped) == 2


def test_usage_uses_held_values_and_anomalies_are_not_written() -> None:
    held = Held.from_lists(
        [ComponentUsage(uuid="c" * 32, resource_uuid=U1, type="cpu", usage=D("5.00"))],
        [UserUsage(uuid="d" * 32, component_usage_uuid="c" * 32, username="u1", usage=D("5.00"))],
    )
    same = plan_push([res(U1, "acc")], slurm("acc"), [month({"acc": 300}, held)], COMPONENTS)
    assert same.resources == [] and same.unchanged == 1
    lower = plan_push([res(U1, "acc")], slurm("acc"), [month({"acc": 240}, held)], COMPONENTS)
    assert lower.resources == [] and len(lower.anomalies) == 2
    higher = plan_push([res(U1, "acc")], slurm("acc"), [month({"acc": 360}, held)], COMPONENTS)
    (rp,) = higher.resources
    assert rp.months[0].totals == {"cpu": D("6.00")}
    assert rp.months[0].per_user == {"cpu": {"u1": D("6.00")}}
    assert rp.months[0].usage_uuids == {"cpu": "c" * 32}


def test_limits_are_reported_only_when_no_order_runs() -> None:
    state = slurm("acc", limits={"cpu": 500})
    (rp,) = plan_push([res(U1, "acc", limits={"cpu": 100})], state, [month()], COMPONENTS).resources
    assert rp.limits == {"cpu": D("500.00")}
    plan = plan_push([res(U1, "acc", "Updating", order=True, limits={"cpu": 100})], state, [month()], COMPONENTS)
    assert plan.resources == []
    assert plan_push([res(U1, "acc", limits={"cpu": 500})], state, [month()], COMPONENTS).resources == []


def test_associations_are_the_accounts_own_users_only_b7() -> None:
    state = slurm("acc_a", "acc_b", users={"acc_a": {"alice", "bob"}, "acc_b": {"carol"}})
    held = {"a" * 32: frozenset({"bob", "mallory"}), "b" * 32: frozenset()}
    plan = plan_push(
        [res(U1, "acc_a", alloc="a" * 32), res(U2, "acc_b", alloc="b" * 32)], state, [month()], COMPONENTS, held
    )
    got = {rp.uuid: (rp.assoc_create, rp.assoc_delete) for rp in plan.resources}
    assert got == {U1: (["alice"], ["mallory"]), U2: (["carol"], [])}
    # an allocation whose associations were not read (its read failed) is left alone, never taken for "none held"
    del held["b" * 32]
    plan = plan_push([res(U2, "acc_b", alloc="b" * 32)], state, [month()], COMPONENTS, held)
    assert plan.resources == [] and plan.unchanged == 1
    assert plan.skipped == [f"resource {U2}: associations of its allocation not read; not synced"]
    # 8.x: no associations in Waldur, nothing planned
    assert plan_push([res(U1, "acc_a")], state, [month()], COMPONENTS, None).resources == []


def test_backfill_only_where_the_server_accepts_a_past_date() -> None:
    offering = Offering.from_json(
        {
            "uuid": "e" * 32,
            "components": [
                {"type": "cpu", "billing_type": "usage"},
                {"type": "mem", "billing_type": "limit"},
                {"type": "gres/gpu", "billing_type": "usage", "is_prepaid": True},
            ],
        }
    )
    comps = {k: Component(k, k, "u", "usage", None, 1) for k in ("cpu", "mem", "gres/gpu", "billing")}
    assert set(backfill_types(offering, comps, staff=False)) == {"mem", "gres/gpu"}
    assert set(backfill_types(offering, comps, staff=True)) == {"cpu", "mem", "gres/gpu"}
    assert set(backfill_types(offering, comps, staff=True, backdated_usage=True)) == {"cpu", "mem", "gres/gpu"}


def test_no_backfill_on_the_2024_server_which_files_every_report_under_the_current_month() -> None:
    # The Oct-2024 serializer has no `date`: a past month's total would overwrite this month's record.
    offering = Offering.from_json({"uuid": "e" * 32, "components": [
        {"type": "cpu", "billing_type": "usage"}, {"type": "mem", "billing_type": "limit"},
        {"type": "gres/gpu", "billing_type": "usage", "is_prepaid": True}]})
    comps = {k: Component(k, k, "u", "usage", None, 1) for k in ("cpu", "mem", "gres/gpu")}
    assert backfill_types(offering, comps, staff=False, backdated_usage=False) == {}
    assert backfill_types(offering, comps, staff=True, backdated_usage=False) == {}


def test_offering_wide_lookup_only_when_it_takes_fewer_requests() -> None:
    assert not offering_wide_lookup(0, 0, 300)  # nobody waits
    assert not offering_wide_lookup(1, 1, 300)  # one list either way: the resource's own
    assert offering_wide_lookup(2, 6, 300)  # one page instead of two lists
    assert offering_wide_lookup(1000, 3000, 300)  # 10 pages instead of 1,000 lists
    assert not offering_wide_lookup(5, 9000, 300)  # 30 pages of other resources' records: 5 lists are cheaper
    assert not offering_wide_lookup(30, 9000, 300) and offering_wide_lookup(31, 9000, 300)
