"""Pull planning (pure): SLURM_IGNORE_ACCOUNTS / SLURM_IGNORE_USERS, and the adoption rules of existing accounts."""

from __future__ import annotations

from waldur_slurm.slurm.cli import render

from dataclasses import replace

from tests.unit.test_pull_plan import (
    CONFIG,
    PROJ_ACC,
    ROOT,
    Acc,
    hexid,
    member,
    order,
    ops_of_type,
    ouser,
    resource,
    tree,
)
from waldur_slurm.domain import naming
from waldur_slurm.pull.membership import plan_membership
from waldur_slurm.pull.model import CompleteOrder
from waldur_slurm.pull.plan import plan_orders
from waldur_slurm.slurm.ops import (
    AddAccountTree,
    AddUsers,
    CancelJobs,
    RemoveAccounts,
    RemoveUsers,
    SetLimits,
)

IGNORING = replace(CONFIG, ignore_accounts=frozenset({"manual"}), ignore_users=frozenset({"opsadmin"}))


def test_ignored_users_are_never_added_by_a_create_or_membership() -> None:
    o = order()
    alice, ops = hexid(), hexid()
    team = {o.resource_uuid: [member(alice), member(ops)]}
    users = [ouser(alice, "alice"), ouser(ops, "opsadmin")]
    plan = plan_orders([o], tree(), IGNORING, teams=team, offering_users=users)
    (load,) = ops_of_type(plan, AddAccountTree)
    assert [u.user for u in load.users] == ["alice"]
    assert {u.user for u in plan_orders([o], tree(), CONFIG, teams=team, offering_users=users)
            .ops[0].op.users} == {"alice", "opsadmin"}  # the same order without the setting adds both


def test_membership_never_removes_an_ignored_user_the_offering_knows() -> None:
    r = hexid()
    acc = "hpc_x"
    st = tree(Acc(acc, PROJ_ACC, naming.resource_marker(r), users=frozenset({"opsadmin", "bob"})))
    users = [ouser(hexid(), "opsadmin"), ouser(hexid(), "bob")]
    plan = plan_membership([resource(r, acc)], st, IGNORING, teams={r: []}, offering_users=users)
    assert ops_of_type(plan, RemoveUsers) == [RemoveUsers(("bob",), (acc,))]
    plan = plan_membership([resource(r, acc)], st, CONFIG, teams={r: []}, offering_users=users)
    assert ops_of_type(plan, RemoveUsers) == [RemoveUsers(("bob", "opsadmin"), (acc,))]


def test_terminate_keeps_an_account_holding_an_ignored_users_association() -> None:
    o = order("Terminate")
    acc = "hpc_t"
    st = tree(Acc(acc, PROJ_ACC, naming.resource_marker(o.resource_uuid), users=frozenset({"opsadmin", "alice"})),
              defaults={"alice": "elsewhere", "opsadmin": "elsewhere"})
    plan = plan_orders([o], st, IGNORING, resources={o.resource_uuid: resource(o.resource_uuid, acc)})
    assert [p.op for p in plan.ops] == [RemoveUsers(("alice",), (acc,))]  # no scancel, no account removal
    assert plan.orders[0].actions == [CompleteOrder(o)]
    assert any("SLURM_IGNORE_USERS" in n for n in plan.orders[0].notes)


def test_ignored_accounts_are_never_changed_by_update_terminate_or_membership() -> None:
    res = hexid()
    st = tree(Acc("manual", PROJ_ACC, naming.resource_marker(res), users=frozenset({"bob"})))
    r = resource(res, "manual")
    upd = order("Update", res=res, limits={"cpu": 3})
    plan = plan_orders([upd], st, IGNORING, resources={res: r})
    assert plan.orders[0].outcome == "erred" and "'manual' is in SLURM_IGNORE_ACCOUNTS" in plan.orders[0].reason
    assert ops_of_type(plan, SetLimits) == []
    term = order("Terminate", res=res)
    plan = plan_orders([term], st, IGNORING, resources={res: r})
    assert not ops_of_type(plan, RemoveAccounts) and not ops_of_type(plan, CancelJobs)
    members = plan_membership([r], st, IGNORING, teams={res: []}, offering_users=[ouser(hexid(), "bob")])
    assert members.ops == []


def test_adopting_an_existing_account() -> None:
    o = order(name="alloc")
    st = tree(
        Acc("legacy", PROJ_ACC, "made by hand"),
        Acc("manual", PROJ_ACC, "made by hand"),
        Acc("grp", ROOT, "a group"),
        Acc("hpc_under", "grp", naming.resource_marker(hexid())),
    )
    def create(backend_id: str) -> object:
        plan = plan_orders([o], st, IGNORING, resources={o.resource_uuid: resource(o.resource_uuid, backend_id)})
        return plan.orders[0]

    assert create("legacy").account == "legacy"  # adopted
    for name, why in ((ROOT, "is the default account"), ("manual", "is in SLURM_IGNORE_ACCOUNTS"),
                      ("grp", "is an ancestor of account 'hpc_under', which the agent manages"),
                      (PROJ_ACC, "is the agent's project account")):
        refused = create(name)
        assert refused.outcome == "erred" and f"account {name!r} {why}" in refused.reason, refused.reason
    pending = plan_orders([replace(o, state="pending-provider")], st, IGNORING,
                          resources={o.resource_uuid: resource(o.resource_uuid, "manual")}).orders[0]
    assert pending.outcome == "reject" and "'manual'" in pending.reason


def test_adding_users_to_an_ignored_account_is_never_planned() -> None:
    r = hexid()
    st = tree(Acc("manual", PROJ_ACC, naming.resource_marker(r)))
    plan = plan_membership([resource(r, "manual")], st, IGNORING, teams={r: [member(u := hexid())]},
                           offering_users=[ouser(u, "alice")])
    assert ops_of_type(plan, AddUsers) == [] and any("SLURM_IGNORE_ACCOUNTS" in n for n in plan.notes)


def test_leaving_members_jobs_are_cancelled_first_only_when_asked() -> None:
    from waldur_slurm.slurm.ops import CancelUserJobs

    r1, r2 = hexid(), hexid()
    st = tree(Acc("hpc_1", PROJ_ACC, naming.resource_marker(r1), users=frozenset({"bob", "carol"})),
              Acc("hpc_2", PROJ_ACC, naming.resource_marker(r2), users=frozenset({"bob"})),
              defaults={"bob": "elsewhere", "carol": "elsewhere"})
    users = [ouser(hexid(), "bob"), ouser(hexid(), "carol")]
    resources = [resource(r1, "hpc_1"), resource(r2, "hpc_2")]
    cancelling = replace(CONFIG, cancel_jobs_of_leaving_members=True)
    plan = plan_membership(resources, st, cancelling, teams={r1: [], r2: []}, offering_users=users)
    ops = [p.op for p in plan.ops]
    assert ops[0] == CancelUserJobs((("hpc_1", "bob"), ("hpc_1", "carol"), ("hpc_2", "bob")))  # one process, first
    assert all(isinstance(op, RemoveUsers) for op in ops[1:]) and ops[1:]
    assert render.argv(ops[0])[:2] == ["sh", "-c"] and render.argv(ops[0])[4:] == ["hpc_1", "bob", "hpc_1", "carol", "hpc_2", "bob"]
    plain = plan_membership(resources, st, CONFIG, teams={r1: [], r2: []}, offering_users=users)
    assert not any(isinstance(p.op, CancelUserJobs) for p in plain.ops)
