"""Pure parts of issue 11's fixes: the associations ledger, the stuck-order counter, the membership plan with the
ledger, the Update that cleans stale limit keys, and the limits push may report."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

from tests.unit.test_pull_plan import CONFIG, PROJ_ACC, Acc, member, order, ouser, hexid, resource, tree
from waldur_slurm.domain import naming
from waldur_slurm.domain.components import Component
from waldur_slurm.pull.ledger import Ledger, after_ops
from waldur_slurm.pull.membership import plan_membership
from waldur_slurm.pull.model import SetResourceLimits
from waldur_slurm.pull.plan import plan_orders
from waldur_slurm.push.plan import limits_to_report
from waldur_slurm.slurm.ops import AddAccountTree, AddAccountsDescribed, AddUsers, LoadUser, RemoveAccounts, RemoveUsers
from waldur_slurm.pull.stuck import StuckOrders, counts_as_stuck
from waldur_slurm.waldur.errors import WaldurAllocationPending, WaldurTransientError


def test_ledger_follows_adds_and_removals() -> None:
    tree_op = AddAccountTree.of(
        [AddAccountsDescribed(entries=(("acc_a", "d"),), parent="p")], [LoadUser("acc_a", "alice"), LoadUser("acc_a", "bob")]
    )
    ledger = after_ops({}, [tree_op, AddUsers(("carol",), ("acc_b", "acc_a"))])
    assert ledger == {"acc_a": {"alice", "bob", "carol"}, "acc_b": {"carol"}}
    ledger = after_ops(ledger, [RemoveUsers(("bob", "carol"), ("acc_a",)), RemoveAccounts(("acc_b",))])
    assert ledger == {"acc_a": {"alice"}}
    assert after_ops(ledger, [RemoveUsers(("alice",), ("acc_a",))]) == {}


def test_ledger_file_survives_a_restart_and_a_broken_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "state" / "associations.json"
    ledger = Ledger(path)
    ledger.update([AddUsers(("alice",), ("acc_a",))])
    assert json.loads(path.read_text()) == {"accounts": {"acc_a": ["alice"]}}
    assert Ledger(path).accounts == {"acc_a": frozenset({"alice"})}
    path.write_text("{not json")
    assert Ledger(path).accounts == {}


def test_membership_removes_a_renamed_login_the_agent_added_but_never_a_manual_one() -> None:
    carol = hexid()
    res = resource(hexid(), "hpc_m1")
    st = tree(Acc("hpc_m1", PROJ_ACC, naming.resource_marker(res.uuid), users=frozenset({"carol", "sysadmin"})),
              defaults={"carol": "hpc_m1", "sysadmin": "hpc_m1"})
    renamed = [ouser(carol, "dave")]  # carol's offering user is now called dave
    teams = {res.uuid: [member(carol)]}
    without = plan_membership([res], st, CONFIG, teams=teams, offering_users=renamed)
    assert without.removed == {}  # nobody knows "carol" any more: kept (the bug)
    plan = plan_membership([res], st, CONFIG, teams=teams, offering_users=renamed,
                           added_by_agent={"hpc_m1": {"carol"}})
    assert plan.added == {res.uuid: ["dave"]}
    assert plan.removed == {res.uuid: ["carol"]}  # sysadmin was never added by the agent: untouched


def test_stuck_orders_count_per_step_and_release_when_the_order_changes() -> None:
    stuck = StuckOrders(3)
    t0 = dt.datetime(2026, 1, 1)
    f = stuck.record("o1", t0, "CompleteOrder", "500")
    assert f.cycles == 1 and not stuck.reached(f)
    assert stuck.record("o1", t0, "SetBackendId", "500").cycles == 1  # another step starts again
    stuck.record("o1", t0, "SetBackendId", "500")
    f = stuck.record("o1", t0, "SetBackendId", "500")
    assert stuck.reached(f)
    stuck.hold("o1")
    assert stuck.held("o1", t0) is f and stuck.held_count == 1
    assert stuck.held("o1", t0 + dt.timedelta(seconds=1)) is None  # somebody acted on it
    assert stuck.held_count == 0
    stuck.record("o2", None, "approve", "500")
    stuck.keep_only({"o1"})
    assert stuck.held("o2", None) is None and stuck.record("o2", None, "approve", "500").cycles == 1


def test_only_failures_the_server_answered_count_as_stuck() -> None:
    assert counts_as_stuck(WaldurTransientError("500", status=500))
    assert counts_as_stuck(WaldurAllocationPending("no allocation yet"))
    assert not counts_as_stuck(WaldurTransientError("connection refused"))


def test_update_sets_the_order_limits_first_when_the_resource_holds_other_keys() -> None:
    res = resource(hexid(), "hpc_u1", limits={"cpu": 2, "mem": 100})
    st = tree(Acc("hpc_u1", PROJ_ACC, naming.resource_marker(res.uuid), limits={"cpu": 120000}))
    upd = order("Update", res=res.uuid, limits={"cpu": 3})
    (p,) = plan_orders([upd], st, CONFIG, resources={res.uuid: res}).orders
    assert SetResourceLimits(res.uuid, {"cpu": 3}) in p.actions
    clean = resource(res.uuid, "hpc_u1", limits={"cpu": 2})
    (p,) = plan_orders([upd], st, CONFIG, resources={res.uuid: clean}).orders
    assert not [a for a in p.actions if isinstance(a, SetResourceLimits)]


def test_push_reports_only_limit_type_keys_and_drops_others() -> None:
    comps = {"cpu": Component("cpu", "CPU", "h", "limit", None, 60), "mem": Component("mem", "RAM", "h", "usage", None, 1)}
    slurm = {"cpu": 600, "mem": 1000}
    assert limits_to_report(slurm, {"cpu": 10}, comps, {"cpu"}) is None
    assert limits_to_report(slurm, {"cpu": 10, "mem": 5}, comps, {"cpu"}) == {"cpu": 10}
    assert limits_to_report(slurm, {"cpu": 9, "license": 2}, comps, {"cpu", "license"}) == {
        "cpu": Decimal("10"), "license": Decimal("2")}


def test_diag_names_executing_orders_without_progress() -> None:
    from tests.unit.test_config import env
    from waldur_slurm.config import load_settings
    from waldur_slurm.tools.diag import stalled_orders
    from waldur_slurm.waldur.models import Order

    settings = load_settings(env(WALDUR_PULL_PERIOD_SECONDS="60", WALDUR_ORDER_MAX_FAILED_CYCLES="4"))
    now = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.timezone.utc)

    def o(state: str, minutes: int, error: str = "") -> Order:
        return Order.from_json({"uuid": hexid(), "type": "Update", "state": state, "marketplace_resource_uuid": hexid(),
                                "modified": (now - dt.timedelta(minutes=minutes)).isoformat(), "error_message": error})

    old, fresh, pending = o("executing", 6, "boom"), o("executing", 4), o("pending-provider", 600)
    lines = stalled_orders([old, fresh, pending], settings, now)
    assert lines == [f"order {old.uuid} (Update of resource {old.resource_uuid}) executing for 6 min: boom"]


def test_usage_of_earlier_plan_periods_is_not_billed_again() -> None:
    from waldur_slurm.push.plan import Held
    from waldur_slurm.push.usage import ResourceUsage
    from waldur_slurm.waldur.models import ComponentUsage, UserUsage

    res, old, new = hexid(), hexid(), hexid()
    usages = [ComponentUsage.from_json({"uuid": old, "resource_uuid": res, "type": "mem", "usage": "10.00"}),
              ComponentUsage.from_json({"uuid": new, "resource_uuid": res, "type": "mem", "usage": "2.00"})]
    users = [UserUsage.from_json({"uuid": hexid(), "component_usage": f"http://x/api/marketplace-component-usages/{old}/",
                                  "username": "alice", "usage": "10.00", "resource_uuid": res, "component_type": "mem"})]
    held = Held.from_lists(usages, users, earlier_records={old})
    assert held.totals == {res: {"mem": Decimal("2.00")}} and held.usage_uuids == {res: {"mem": new}}
    assert held.earlier == {res: {"mem": [Decimal("10.00")]}}
    assert held.users == {}
    month = ResourceUsage(totals={"mem": Decimal("15.00")}, per_user={"mem": {"alice": Decimal("15.00")}})
    share, anomalies = held.current_period_share(res, month)
    assert share.totals == {"mem": Decimal("5.00")} and share.per_user == {"mem": {"alice": Decimal("5.00")}}
    assert anomalies == []
    lower, anomalies = held.current_period_share(res, ResourceUsage(totals={"mem": Decimal("9")}, per_user={}))
    assert lower.totals == {"mem": Decimal("0.00")} and "lower than 10.00" in anomalies[0]
    untouched, _ = Held.from_lists(usages[:1], []).current_period_share(res, month)
    assert untouched is month


def test_metrics_show_the_held_orders_of_the_last_pull_cycle() -> None:
    from waldur_slurm.daemon.cycle import CycleReport
    from waldur_slurm.tools.observability import Metrics

    metrics = Metrics()
    metrics.register("pull", 120)
    metrics.record("pull", 1.0, CycleReport(kind="pull", stuck=2))
    assert 'waldur_slurm_stuck_orders{task="pull"} 2' in metrics.render()
    metrics.record("pull", 1.0, CycleReport(kind="pull"))
    assert 'waldur_slurm_stuck_orders{task="pull"} 0' in metrics.render()
    assert "stuck=0" in CycleReport(kind="pull").summary()
