"""Pull planning (pure): orders + one SLURM snapshot -> grouped SLURM ops and per-order Waldur actions."""

from __future__ import annotations

from waldur_slurm.slurm.cli import render

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from waldur_slurm.domain import naming
from waldur_slurm.domain.components import Component
from waldur_slurm.domain.naming import NamingRules
from waldur_slurm.pull.limits import create_limits, validate_limits
from waldur_slurm.pull.membership import plan_membership
from waldur_slurm.pull.model import (
    Associate,
    CompleteOrder,
    OrderInvalid,
    PlanConfig,
    SetBackendId,
    SetResourceLimits,
)
from waldur_slurm.pull.plan import plan_orders
from waldur_slurm.pull.users import resource_users
from waldur_slurm.slurm.errors import InvalidValue
from waldur_slurm.slurm.ops import (
    AddAccountsDescribed,
    AddAccountTree,
    AddUsers,
    CancelJobs,
    CreateHomedirs,
    LoadUser,
    MoveAccounts,
    RemoveAccounts,
    RemoveUsers,
    SetDefaultAccount,
    SetLimits,
    validate_account,
)
from waldur_slurm.waldur.models import OfferingUser, Order, Resource, TeamMember

COMPONENTS = {
    "cpu": Component("cpu", "CPU", "k-Hours", "limit", Decimal("10"), 60000),
    "mem": Component("mem", "RAM", "GB-Hours", "usage", Decimal("100"), 61440),
    "gres/gpu": Component("gres/gpu", "GPU", "GPU-Hours", "limit", None, 60),
}
RULES = NamingRules()
ROOT = "wsa_test_root"
CONFIG = PlanConfig(naming=RULES, default_account=ROOT, components=COMPONENTS)


@dataclass(frozen=True)
class Acc:
    name: str
    parent: str
    description: str = ""
    organization: str = ""
    limits: dict[str, int] = field(default_factory=dict)
    users: frozenset[str] = frozenset()


@dataclass(frozen=True)
class State:
    accounts: dict[str, Acc]
    default_account: dict[str, str] = field(default_factory=dict)


def state(*accounts: Acc, defaults: dict[str, str] | None = None) -> State:
    base = {"root": Acc("root", ""), ROOT: Acc(ROOT, "root")}
    base.update({a.name: a for a in accounts})
    return State(base, dict(defaults or {}))


def hexid() -> str:
    return uuid.uuid4().hex


CUST, PROJ = hexid(), hexid()


def order(type_: str = "Create", state_: str = "executing", *, res: str | None = None, name: str = "alloc",
          limits: Any = None, customer: str | None = CUST, project: str | None = CUST and PROJ,
          allocation: str | None = "a" * 32, created: str = "2024-01-01T00:00:00") -> Order:
    return Order.from_json({
        "uuid": hexid(), "type": type_, "state": state_, "marketplace_resource_uuid": res or hexid(),
        "resource_uuid": allocation, "resource_name": name, "customer_uuid": customer, "project_uuid": project,
        "limits": {"cpu": 2} if limits is None else limits, "created": created,
    })


def resource(uuid_: str, backend_id: str = "", limits: dict[str, Any] | None = None, **kw: Any) -> Resource:
    return Resource.from_json({"uuid": uuid_, "backend_id": backend_id, "limits": limits or {}, "state": "OK", **kw})


def member(user_uuid: str) -> TeamMember:
    return TeamMember.from_json({"uuid": user_uuid, "username": "w_" + user_uuid[:4]})


def ouser(user_uuid: str, username: str | None, restricted: bool = False) -> OfferingUser:
    return OfferingUser.from_json({"uuid": hexid(), "user_uuid": user_uuid, "username": username or "",
                                   "is_restricted": restricted})


def ops_of_type(plan: Any, kind: type) -> list[Any]:
    return [p.op for p in plan.ops if isinstance(p.op, kind)]


CUST_ACC = naming.customer_account(RULES, CUST)
PROJ_ACC = naming.project_account(RULES, PROJ)


def tree(*extra: Acc, defaults: dict[str, str] | None = None) -> State:
    return state(
        Acc(CUST_ACC, ROOT, naming.customer_marker(CUST)),
        Acc(PROJ_ACC, CUST_ACC, naming.project_marker(PROJ)),
        *extra,
        defaults=defaults,
    )


# -- limits ------------------------------------------------------------------------------------------


def test_limits_convert_with_unit_factor_and_keep_waldur_values() -> None:
    slurm, waldur, notes = validate_limits({"cpu": 1.5, "gres/gpu": "3"}, COMPONENTS)
    assert slurm == {"cpu": 90000, "gres/gpu": 180}
    assert waldur == {"cpu": 1.5, "gres/gpu": "3"}
    assert notes == []


@pytest.mark.parametrize(
    "limits, fragment",
    [
        ({"cpu": -1}, "limits.cpu = -1 is negative"),
        ({"cpu": "abc"}, "limits.cpu = 'abc' is not a finite number"),
        ({"cpu": "NaN"}, "limits.cpu = 'NaN' is not a finite number"),
        ({"cpu": float("inf")}, "limits.cpu = inf is not a finite number"),
        ({"cpu": True}, "limits.cpu = True is not a finite number"),
        ({"cpu": [1]}, "limits.cpu = [1] is not a finite number"),
        ({"cpu": 10**40}, "limits.cpu = 1" + "0" * 40 + " is too large"),
        ({"nope": 1}, "limits.nope = 1: unknown component 'nope'"),
        ("cpu=1", "limits 'cpu=1' is not a mapping"),
    ],
)
def test_bad_limits_name_field_and_value(limits: Any, fragment: str) -> None:
    with pytest.raises(OrderInvalid) as exc:
        validate_limits(limits, COMPONENTS)
    assert fragment in str(exc.value)


def test_null_limits_and_usage_components_are_not_limits() -> None:
    slurm, waldur, notes = validate_limits({"cpu": None, "mem": 5}, COMPONENTS)
    assert slurm == {} and waldur == {}
    assert any("limits.cpu is null" in n for n in notes)
    assert any("limits.mem ignored" in n for n in notes)
    assert validate_limits(None, COMPONENTS) == ({}, {}, [])


def test_create_limits_take_order_for_limit_components_and_file_for_usage_components() -> None:
    assert create_limits({"cpu": 120000}, COMPONENTS) == {"cpu": 120000, "mem": 100 * 61440}
    # a limit component missing from the order falls back to the file's limit (none for gpu)
    assert create_limits({}, COMPONENTS) == {"cpu": 600000, "mem": 6144000}


# -- Create --------------------------------------------------------------------------------------------


def fresh_account(plan, o):  # type: ignore[no-untyped-def]
    (p,) = [p for p in plan.orders if p.order.uuid == o.uuid]
    return p.account


def test_create_on_an_empty_tree_builds_customer_project_allocation_and_adds_team_users() -> None:
    alice, bob, eve = hexid(), hexid(), hexid()
    o = order("Create", "pending-provider", name="My Alloc", limits={"cpu": 2})
    team = {o.resource_uuid: [member(alice), member(bob)]}
    offering = [ouser(alice, "alice"), ouser(bob, "Bob"), ouser(eve, "eve")]  # eve: not on the team (B7)
    plan = plan_orders([o], state(), CONFIG, resources={o.resource_uuid: resource(o.resource_uuid)}, teams=team,
                       offering_users=offering)
    p = plan.orders[0]
    assert p.outcome == "work" and p.approve
    account = f"hpc_{o.resource_uuid[:5]}_myalloc"
    assert p.account == account
    (tree_op,) = ops_of_type(plan, AddAccountsDescribed)  # the whole tree in one load
    assert isinstance(tree_op, AddAccountTree)
    groups = tree_op.groups
    assert [(g.names, g.parent) for g in groups] == [((CUST_ACC,), ROOT), ((PROJ_ACC,), CUST_ACC), ((account,), PROJ_ACC)]
    assert groups[2].limits == {"cpu": 120000, "mem": 6144000}
    assert groups[2].entries[0][1] == naming.resource_marker(o.resource_uuid)
    assert naming.resource_owner(groups[2].entries[0][1]) == o.resource_uuid
    text = render.load_file(tree_op, "testcluster")
    assert text.count("Cluster - ") == 1
    # parents come before their children in the file
    assert text.index(f"Parent - '{ROOT}'") < text.index(f"Account - '{CUST_ACC}'") < text.index(
        f"Parent - '{CUST_ACC}'") < text.index(f"Account - '{PROJ_ACC}'") < text.index(f"Parent - '{PROJ_ACC}'")
    assert f"Account - '{account}':Description='waldur resource {o.resource_uuid}'" in text
    # the team joins in the same load, after the accounts; both are new to SLURM: the account is their default
    assert tree_op.users == (LoadUser(account, "alice", account), LoadUser(account, "bob", account))
    assert text.endswith(f"Parent - '{account}'\nUser - 'alice':DefaultAccount='{account}'\n"
                         f"User - 'bob':DefaultAccount='{account}'\n")
    assert ops_of_type(plan, AddUsers) == []
    assert p.actions == [
        SetBackendId(o.resource_uuid, account),
        SetResourceLimits(o.resource_uuid, {"cpu": 2}),
        CompleteOrder(o),
    ]
    # users are added before the order is completed (B8): ops run before actions, and they serve this order
    assert all(o.uuid in op.owners for op in plan.ops)


def test_create_reuses_existing_customer_and_project() -> None:
    o = order()
    plan = plan_orders([o], tree(), CONFIG)
    adds = ops_of_type(plan, AddAccountsDescribed)
    assert len(adds) == 1 and adds[0].parent == PROJ_ACC and not isinstance(adds[0], AddAccountTree)


def test_create_finished_in_slurm_but_not_in_waldur_only_completes() -> None:
    o = order(limits={"cpu": 2})
    account = f"hpc_{o.resource_uuid[:5]}_alloc"
    alice = hexid()
    st = tree(Acc(account, PROJ_ACC, naming.resource_marker(o.resource_uuid), CUST_ACC,
                  {"cpu": 120000, "mem": 6144000}, frozenset({"alice"})), defaults={"alice": account})
    res = resource(o.resource_uuid, account, {"cpu": 2})
    plan = plan_orders([o], st, CONFIG, resources={o.resource_uuid: res}, teams={o.resource_uuid: [member(alice)]},
                       offering_users=[ouser(alice, "alice")])
    assert plan.ops == []
    assert plan.orders[0].actions == [CompleteOrder(o)]


def test_crash_after_add_account_adopts_it_and_sets_backend_id() -> None:
    o = order(name="renamed since")  # the account was made under an older, longer-UUID name
    account = f"hpc_{o.resource_uuid[:7]}_alloc"
    st = tree(Acc(account, PROJ_ACC, naming.resource_marker(o.resource_uuid), CUST_ACC, {"cpu": 120000, "mem": 6144000}))
    plan = plan_orders([o], st, CONFIG, resources={o.resource_uuid: resource(o.resource_uuid)})
    assert ops_of_type(plan, AddAccountsDescribed) == []
    assert plan.orders[0].account == account
    assert SetBackendId(o.resource_uuid, account) in plan.orders[0].actions


def test_adopted_account_with_wrong_limits_gets_them_fixed() -> None:
    o = order(limits={"cpu": 3})
    account = f"hpc_{o.resource_uuid[:5]}_alloc"
    st = tree(Acc(account, PROJ_ACC, naming.resource_marker(o.resource_uuid), CUST_ACC, {"cpu": 1, "mem": 6144000}))
    plan = plan_orders([o], st, CONFIG)
    assert ops_of_type(plan, SetLimits) == [SetLimits(accounts=(account,), limits={"cpu": 180000})]


def test_name_of_another_resource_is_never_adopted() -> None:
    o = order(name="alloc")
    other = o.resource_uuid[:5] + "0" * 27
    taken = f"hpc_{o.resource_uuid[:5]}_alloc"
    st = tree(Acc(taken, PROJ_ACC, naming.resource_marker(other), CUST_ACC, {"cpu": 5}))
    plan = plan_orders([o], st, CONFIG)
    assert plan.orders[0].account == f"hpc_{o.resource_uuid[:6]}_alloc"
    assert ops_of_type(plan, SetLimits) == []  # the other account is untouched
    assert [a.names for a in ops_of_type(plan, AddAccountsDescribed)] == [(f"hpc_{o.resource_uuid[:6]}_alloc",)]


def test_unmarked_account_with_the_name_is_taken_too() -> None:
    o = order(name="alloc")
    st = tree(Acc(f"hpc_{o.resource_uuid[:5]}_alloc", "root", "made by an admin"))
    plan = plan_orders([o], st, CONFIG)
    assert plan.orders[0].account == f"hpc_{o.resource_uuid[:6]}_alloc"


def test_unmarked_account_named_by_this_resources_backend_id_is_adopted() -> None:
    o = order(name="alloc")
    legacy = "hpc_legacy_alloc"
    st = tree(Acc(legacy, PROJ_ACC, "alloc", PROJ_ACC, {"cpu": 120000, "mem": 6144000}))
    plan = plan_orders([o], st, CONFIG, resources={o.resource_uuid: resource(o.resource_uuid, legacy)})
    assert plan.orders[0].account == legacy
    assert ops_of_type(plan, AddAccountsDescribed) == []
    assert plan.orders[0].actions[0] == SetResourceLimits(o.resource_uuid, {"cpu": 2})


def test_backend_id_claimed_by_another_resource_is_taken() -> None:
    o = order(name="alloc")
    wanted = f"hpc_{o.resource_uuid[:5]}_alloc"
    other = resource(hexid(), wanted)
    plan = plan_orders([o], tree(), CONFIG, resources={other.uuid: other})
    assert plan.orders[0].account == f"hpc_{o.resource_uuid[:6]}_alloc"


def test_two_orders_with_colliding_names_in_one_cycle_get_distinct_accounts() -> None:
    shared = hexid()[:5]
    a = order(res=shared + hexid()[:27], name="same")
    b = order(res=shared + hexid()[:27], name="same")
    plan = plan_orders([a, b], tree(), CONFIG)
    accounts = {p.account for p in plan.orders}
    assert len(accounts) == 2


def test_hundred_creates_group_into_few_ops() -> None:
    orders = [order(name=f"alloc {i}", project=hexid(), customer=CUST) for i in range(100)]
    alice = hexid()
    teams = {o.resource_uuid: [member(alice)] for o in orders}
    plan = plan_orders(orders, tree(), CONFIG, teams=teams, offering_users=[ouser(alice, "alice")])
    assert all(p.outcome == "work" for p in plan.orders)
    (load,) = ops_of_type(plan, AddAccountsDescribed)
    # one load: a group for the 100 project accounts (same parent), one per project for the allocations
    assert len(load.names) == 200
    assert len(load.groups) == 1 + 100
    # alice (new to SLURM) joins the 100 new accounts in the same load, with one default among them
    assert ops_of_type(plan, AddUsers) == []
    assert isinstance(load, AddAccountTree)
    assert sorted(u.account for u in load.users) == sorted(p.account for p in plan.orders)
    assert {u.user for u in load.users} == {"alice"}
    (default,) = [u.default_account for u in load.users if u.default_account]
    assert default in load.names
    assert len(plan.ops) == 1 and plan.ops[0].owners == frozenset(o.uuid for o in orders)


def test_same_limits_on_several_accounts_share_one_modify() -> None:
    accounts = []
    orders = []
    extra = []
    for i in range(3):
        o = order("Update", limits={"cpu": 7})
        acc = f"hpc_{o.resource_uuid[:5]}_u{i}"
        extra.append(Acc(acc, PROJ_ACC, naming.resource_marker(o.resource_uuid), CUST_ACC, {"cpu": 1}))
        accounts.append(acc)
        orders.append(o)
    plan = plan_orders(orders, tree(*extra), CONFIG)
    assert ops_of_type(plan, SetLimits) == [SetLimits(accounts=tuple(sorted(accounts)), limits={"cpu": 420000})]
    assert plan.ops[0].owners == frozenset(o.uuid for o in orders)


@pytest.mark.parametrize(
    "name",
    ['a"b\'c', "x=1 where name=root", "a; remove account root", "l1\nl2", "Привет", "x" * 500, "", None, "!!!"],
)
def test_hostile_names_plan_valid_accounts_and_ops(name: Any) -> None:
    o = order(name=name or "")
    plan = plan_orders([o], tree(), CONFIG)
    p = plan.orders[0]
    assert p.outcome == "work", p.describe()
    assert validate_account(p.account) == p.account
    assert len(p.account) <= RULES.allocation_name_max_len


@pytest.mark.parametrize(
    "field_name, value, fragment",
    [
        ("customer", None, "customer_uuid None"),
        ("project", "not-a-uuid", "project_uuid None"),
        ("limits", {"cpu": -5}, "limits.cpu = -5"),
        ("limits", {"bogus": 1}, "unknown component 'bogus'"),
    ],
)
def test_invalid_pending_order_is_rejected_and_executing_one_erred(field_name: str, value: Any, fragment: str) -> None:
    good = order("Create", "pending-provider")
    kwargs: dict[str, Any] = {field_name: value}
    bad_pending = order("Create", "pending-provider", **kwargs)
    bad_exec = order("Create", "executing", **kwargs)
    plan = plan_orders([bad_pending, good, bad_exec], tree(), CONFIG)
    by = plan.by_uuid()
    assert by[bad_pending.uuid].outcome == "reject" and fragment in by[bad_pending.uuid].reason
    assert not by[bad_pending.uuid].approve
    assert by[bad_exec.uuid].outcome == "erred" and fragment in by[bad_exec.uuid].reason
    assert by[good.uuid].outcome == "work"
    # no op serves the invalid orders
    assert all(op.owners == {good.uuid} for op in plan.ops)


def test_an_order_failing_midway_leaves_no_intent_behind() -> None:
    # the project account name is used by a resource account: the customer account planned just before
    # must not be created for it
    o = order(customer=hexid())
    st = state(Acc(PROJ_ACC, ROOT, naming.resource_marker(hexid())))
    plan = plan_orders([o], st, CONFIG)
    assert plan.orders[0].outcome == "erred"
    assert plan.orders[0].outcome == "erred" and "project account" in plan.orders[0].reason
    assert plan.ops == []


INTENTS = ("new_accounts", "new_owners", "set_limits", "limit_owners", "moves", "move_owners", "joins", "join_owners",
           "new_defaults", "default_owners", "homedirs", "cancel", "leaves", "removals", "reserved")


def test_a_rolled_back_order_takes_back_every_kind_of_intent_and_nothing_else() -> None:
    from dataclasses import replace

    from waldur_slurm.pull.intents import Work

    alloc = Acc("hpc_a", PROJ_ACC, naming.resource_marker(hexid()), users=frozenset({"alice"}))
    work = Work(tree(alloc, defaults={"alice": "hpc_a"}), replace(CONFIG, enable_homedir=True))

    def intents() -> dict[str, str]:
        return {name: repr(sorted((repr(k), repr(v)) for k, v in getattr(work, name).items()))
                if isinstance(getattr(work, name), dict) else repr(sorted(getattr(work, name))) for name in INTENTS}

    # what an earlier order planned, and must survive
    work.begin()
    work.remove_account("hpc_a", 3, "first")
    work.limit("hpc_a", {"cpu": 1}, "first")
    work.join("bob", "hpc_a", "first")
    work.cancel_jobs("hpc_a", "first")
    work.commit()
    before = intents()
    # a second order adds to every structure, to the earlier entries too, then fails
    work.begin()
    work.remove_account("hpc_a", 3, "second")
    work.limit("hpc_a", {"cpu": 2, "mem": 5}, "second")
    work.join("bob", PROJ_ACC, "second")
    work.join("carol", "hpc_new", "second")
    work.move(PROJ_ACC, "hpc_other", "second")
    work.add_account("hpc_new", PROJ_ACC, "d", "o", {}, 3, "second")
    work.leave("alice", "hpc_a", "second")
    work.cancel_jobs("hpc_a", "second")
    work.reserve("hpc_new")
    work.prefer_default("bob", PROJ_ACC, "second")
    after = intents()
    assert [name for name in INTENTS if after[name] == before[name]] == []  # every structure was touched
    work.rollback()
    assert intents() == before
    assert work.parent_of(PROJ_ACC) == CUST_ACC
    assert work.children_of(PROJ_ACC) == set()  # hpc_a goes with the first order; hpc_new is taken back
    assert work.set_limits == {"hpc_a": {"cpu": 1}} and work.removals == {"hpc_a": (3, {"first"})}


def test_missing_default_account_leaves_pending_orders_pending_and_errs_executing_ones() -> None:
    pending, executing = order("Create", "pending-provider"), order("Create", "executing")
    st = State({"root": Acc("root", "")})
    plan = plan_orders([pending, executing], st, CONFIG)
    by = plan.by_uuid()
    assert by[pending.uuid].outcome == "hold" and not by[pending.uuid].approve
    assert "SLURM_DEFAULT_ACCOUNT" in by[pending.uuid].reason
    assert by[executing.uuid].outcome == "erred" and "SLURM_DEFAULT_ACCOUNT 'wsa_test_root'" in by[executing.uuid].reason


def test_unknown_type_and_other_states() -> None:
    restore_pending = order("Restore", "pending-provider")
    restore_exec = order("Restore", "executing")
    done = order("Create", "done")
    plan = plan_orders([restore_pending, restore_exec, done], tree(), CONFIG)
    by = plan.by_uuid()
    assert by[restore_pending.uuid].outcome == "reject" and "'Restore'" in by[restore_pending.uuid].reason
    assert by[restore_exec.uuid].outcome == "skip"
    assert by[done.uuid].outcome == "skip"


def test_one_order_per_resource_per_cycle_oldest_first() -> None:
    res = hexid()
    older = order("Update", res=res, created="2024-01-01T00:00:00")
    newer = order("Terminate", res=res, created="2024-02-01T00:00:00")
    acc = f"hpc_{res[:5]}_x"
    st = tree(Acc(acc, PROJ_ACC, naming.resource_marker(res), CUST_ACC, {"cpu": 1}))
    plan = plan_orders([newer, older], st, CONFIG)
    by = plan.by_uuid()
    assert by[older.uuid].outcome == "work"
    assert by[newer.uuid].outcome == "skip"


def test_2024_defers_waldur_steps_until_the_allocation_exists_and_records_associations() -> None:
    cfg = PlanConfig(naming=RULES, default_account=ROOT, components=COMPONENTS, keeps_associations=True, allocation_after_approval=True)
    alice = hexid()
    pending = order("Create", "pending-provider", allocation=None)
    waiting = order("Create", "executing", allocation=None)
    ready = order("Create", "executing", allocation=hexid())
    term = order("Terminate", "pending-provider", allocation=None)
    teams = {o.resource_uuid: [member(alice)] for o in (pending, waiting, ready)}
    plan = plan_orders([pending, waiting, ready, term], tree(), cfg, teams=teams,
                       offering_users=[ouser(alice, "alice")])
    by = plan.by_uuid()
    # a pending order is approved; the re-read order tells whether the allocation exists by then
    assert by[pending.uuid].outcome == "work" and by[pending.uuid].approve
    assert by[waiting.uuid].outcome == "defer"
    assert by[ready.uuid].outcome == "work"
    assert by[term.uuid].outcome == "work"
    # the SLURM part of a deferred order still runs now
    assert any(waiting.uuid in op.owners for op in plan.ops)
    assert Associate(ready.resource_uuid, "alice") in by[ready.uuid].actions
    assert by[ready.uuid].actions[-1] == CompleteOrder(ready)
    # 8.x keeps no associations
    plan8 = plan_orders([ready], tree(), CONFIG, teams=teams, offering_users=[ouser(alice, "alice")])
    assert not any(isinstance(a, Associate) for a in plan8.orders[0].actions)


# -- users and default accounts -------------------------------------------------------------------------


def test_resource_users_intersect_by_uuid_and_skip_unusable_ones() -> None:
    a, b, c, d, e = (hexid() for _ in range(5))
    team = [member(a), member(b), member(c), member(d)]
    offering = [ouser(a, "Alice"), ouser(b, None), ouser(c, "carol", restricted=True), ouser(d, "bad name!"),
                ouser(e, "eve")]
    users, notes = resource_users(team, offering)
    assert users == {"alice"}
    assert any("bad name!" in n for n in notes)
    assert resource_users(None, offering) == (set(), [])


def test_existing_user_with_root_default_gets_a_default_in_its_own_account() -> None:
    alice, bob = hexid(), hexid()
    o = order()
    other = Acc("hpc_other", PROJ_ACC, naming.resource_marker(hexid()), CUST_ACC, {}, frozenset({"bob"}))
    st = tree(other, defaults={"alice": "root", "bob": "hpc_other"})
    plan = plan_orders([o], st, CONFIG, teams={o.resource_uuid: [member(alice), member(bob)]},
                       offering_users=[ouser(alice, "alice"), ouser(bob, "bob")])
    account = plan.orders[0].account
    # known users join the new account in its load WITHOUT a DefaultAccount (a load line with one would change
    # an existing user's default); alice's bad default is fixed by a modify after the load
    (load,) = ops_of_type(plan, AddAccountsDescribed)
    assert isinstance(load, AddAccountTree)
    assert load.users == (LoadUser(account, "alice"), LoadUser(account, "bob"))
    assert ops_of_type(plan, AddUsers) == []
    assert ops_of_type(plan, SetDefaultAccount) == [SetDefaultAccount(users=("alice",), account=account)]
    kinds = [type(p.op) for p in plan.ops]
    assert kinds.index(SetDefaultAccount) > kinds.index(AddAccountTree)


def test_new_user_joining_an_existing_and_a_new_account_joins_by_add_user() -> None:
    """The load never picks a new user's default: when it is an existing account, every join is an add user."""
    carol = hexid()
    done = order(limits={"cpu": 2}, created="2024-01-01T00:00:00")  # its account exists: only users to add
    existing = f"hpc_{done.resource_uuid[:5]}_alloc"
    acc = Acc(existing, PROJ_ACC, naming.resource_marker(done.resource_uuid), CUST_ACC, {"cpu": 120000})
    fresh = order(created="2024-01-02T00:00:00")
    team = [member(carol)]
    plan = plan_orders([fresh, done], tree(acc), CONFIG, teams={done.resource_uuid: team, fresh.resource_uuid: team},
                       offering_users=[ouser(carol, "carol")])
    new_account = fresh_account(plan, fresh)
    (load,) = ops_of_type(plan, AddAccountsDescribed)
    assert not getattr(load, "users", ())
    assert ops_of_type(plan, AddUsers) == [
        AddUsers(users=("carol",), accounts=tuple(sorted((existing, new_account))), default_account=existing)
    ]
    # the other way round (the new account's order is older) the new account is her default: she joins it in
    # the load with that default, and the existing account by add user after it
    fresh = order(created="2023-12-31T00:00:00")
    plan = plan_orders([done, fresh], tree(acc), CONFIG, teams={done.resource_uuid: team, fresh.resource_uuid: team},
                       offering_users=[ouser(carol, "carol")])
    new_account = fresh_account(plan, fresh)
    (load,) = ops_of_type(plan, AddAccountsDescribed)
    assert isinstance(load, AddAccountTree) and load.users == (LoadUser(new_account, "carol", new_account),)
    assert ops_of_type(plan, AddUsers) == [AddUsers(users=("carol",), accounts=(existing,))]


def test_homedirs_for_added_users_when_enabled() -> None:
    cfg = PlanConfig(naming=RULES, default_account=ROOT, components=COMPONENTS, enable_homedir=True,
                     homedir_umask=0o027)
    alice = hexid()
    o = order()
    plan = plan_orders([o], tree(), cfg, teams={o.resource_uuid: [member(alice)]},
                       offering_users=[ouser(alice, "alice")])
    assert ops_of_type(plan, CreateHomedirs) == [CreateHomedirs(users=("alice",), umask="0027")]
    plan = plan_orders([o], tree(), CONFIG, teams={o.resource_uuid: [member(alice)]},
                       offering_users=[ouser(alice, "alice")])
    assert ops_of_type(plan, CreateHomedirs) == []


# -- Update ---------------------------------------------------------------------------------------------


def test_update_sets_new_limits_then_completes() -> None:
    o = order("Update", limits={"cpu": 4, "gres/gpu": 1})
    acc = f"hpc_{o.resource_uuid[:5]}_x"
    st = tree(Acc(acc, PROJ_ACC, naming.resource_marker(o.resource_uuid), CUST_ACC, {"cpu": 1, "gres/gpu": 60}))
    plan = plan_orders([o], st, CONFIG, resources={o.resource_uuid: resource(o.resource_uuid, acc)})
    assert [p.op for p in plan.ops] == [SetLimits(accounts=(acc,), limits={"cpu": 240000})]
    assert plan.orders[0].actions == [CompleteOrder(o)]  # B2: Update orders complete


def test_update_already_applied_only_completes() -> None:
    o = order("Update", limits={"cpu": 4})
    acc = f"hpc_{o.resource_uuid[:5]}_x"
    st = tree(Acc(acc, PROJ_ACC, naming.resource_marker(o.resource_uuid), CUST_ACC, {"cpu": 240000}))
    plan = plan_orders([o], st, CONFIG, resources={o.resource_uuid: resource(o.resource_uuid, acc)})
    assert plan.ops == [] and plan.orders[0].actions == [CompleteOrder(o)]


def test_update_without_an_account() -> None:
    pending, executing = order("Update", "pending-provider"), order("Update")
    plan = plan_orders([pending, executing], tree(), CONFIG)
    by = plan.by_uuid()
    assert by[pending.uuid].outcome == "reject" and "has no SLURM account" in by[pending.uuid].reason
    assert by[executing.uuid].outcome == "erred"


# -- Terminate ------------------------------------------------------------------------------------------


def test_terminate_cancels_jobs_removes_users_then_account_project_customer() -> None:
    o = order("Terminate")
    acc = f"hpc_{o.resource_uuid[:5]}_x"
    other = Acc("hpc_elsewhere", ROOT, "", "", {}, frozenset({"alice"}))
    st = tree(
        Acc(acc, PROJ_ACC, naming.resource_marker(o.resource_uuid), CUST_ACC, {}, frozenset({"alice", "admin1"})),
        other,
        defaults={"alice": acc, "admin1": acc},
    )
    plan = plan_orders([o], st, CONFIG, resources={o.resource_uuid: resource(o.resource_uuid, acc)})
    assert [p.op for p in plan.ops] == [
        CancelJobs(accounts=(acc,)),
        SetDefaultAccount(users=("alice",), account="hpc_elsewhere"),
        # sacctmgr refuses one command mixing users who keep accounts with users losing their last one
        RemoveUsers(users=("alice",), accounts=(acc,)),
        RemoveUsers(users=("admin1",), accounts=(acc,)),
        RemoveAccounts(names=(acc,)),
        RemoveAccounts(names=(PROJ_ACC,)),
        RemoveAccounts(names=(CUST_ACC,)),
    ]
    assert plan.orders[0].actions == [CompleteOrder(o)]


def test_terminate_keeps_project_with_other_allocations_and_customer_with_other_projects() -> None:
    o = order("Terminate")
    acc = f"hpc_{o.resource_uuid[:5]}_x"
    sibling = Acc("hpc_sibling", PROJ_ACC, naming.resource_marker(hexid()))
    st = tree(Acc(acc, PROJ_ACC, naming.resource_marker(o.resource_uuid)), sibling)
    plan = plan_orders([o], st, CONFIG)
    assert ops_of_type(plan, RemoveAccounts) == [RemoveAccounts(names=(acc,))]
    # a project with a user associated directly (an admin's manual association) stays too
    st = tree(Acc(acc, PROJ_ACC, naming.resource_marker(o.resource_uuid)))
    st.accounts[PROJ_ACC] = Acc(PROJ_ACC, CUST_ACC, naming.project_marker(PROJ), users=frozenset({"admin"}))
    plan = plan_orders([o], st, CONFIG)
    assert ops_of_type(plan, RemoveAccounts) == [RemoveAccounts(names=(acc,))]


def test_terminate_with_a_create_in_the_same_project_keeps_the_project() -> None:
    term = order("Terminate")
    create = order("Create")
    acc = f"hpc_{term.resource_uuid[:5]}_x"
    st = tree(Acc(acc, PROJ_ACC, naming.resource_marker(term.resource_uuid)))
    plan = plan_orders([term, create], st, CONFIG)
    assert ops_of_type(plan, RemoveAccounts) == [RemoveAccounts(names=(acc,))]


def test_two_terminates_emptying_one_project_remove_it_once() -> None:
    t1, t2 = order("Terminate"), order("Terminate")
    a1, a2 = f"hpc_{t1.resource_uuid[:5]}_x", f"hpc_{t2.resource_uuid[:5]}_y"
    st = tree(Acc(a1, PROJ_ACC, naming.resource_marker(t1.resource_uuid)),
              Acc(a2, PROJ_ACC, naming.resource_marker(t2.resource_uuid)))
    plan = plan_orders([t1, t2], st, CONFIG)
    assert ops_of_type(plan, RemoveAccounts) == [
        RemoveAccounts(names=tuple(sorted((a1, a2)))),
        RemoveAccounts(names=(PROJ_ACC,)),
        RemoveAccounts(names=(CUST_ACC,)),
    ]


def test_terminate_of_a_gone_account_cleans_up_empty_parents_and_completes() -> None:
    o = order("Terminate")
    plan = plan_orders([o], tree(), CONFIG)
    assert [p.op for p in plan.ops] == [RemoveAccounts(names=(PROJ_ACC,)), RemoveAccounts(names=(CUST_ACC,))]
    assert plan.orders[0].actions == [CompleteOrder(o)]
    # nothing at all left: just complete
    plan = plan_orders([o], state(), CONFIG)
    assert plan.ops == [] and plan.orders[0].actions == [CompleteOrder(o)]


def test_terminate_never_removes_unmarked_parents_or_another_resources_account() -> None:
    o = order("Terminate")
    other_res = hexid()
    foreign = Acc("hpc_foreign", PROJ_ACC, naming.resource_marker(other_res))
    st = state(Acc(CUST_ACC, ROOT, "by hand"), Acc(PROJ_ACC, CUST_ACC, "by hand"), foreign)
    plan = plan_orders([o], st, CONFIG, resources={o.resource_uuid: resource(o.resource_uuid, "hpc_foreign")})
    assert plan.ops == []
    assert any("another resource" in n for n in plan.orders[0].notes)


def test_create_in_a_project_moved_to_another_customer_moves_the_project_account() -> None:
    new_cust = hexid()
    new_acc = naming.customer_account(RULES, new_cust)
    old_alloc = Acc("hpc_old", PROJ_ACC, naming.resource_marker(hexid()))
    o = order(customer=new_cust)  # Waldur moved the project: its orders name the new customer
    plan = plan_orders([o], tree(old_alloc), CONFIG)
    account = fresh_account(plan, o)
    (load,) = ops_of_type(plan, AddAccountsDescribed)
    assert [(g.names, g.parent) for g in load.groups] == [((new_acc,), ROOT), ((account,), PROJ_ACC)]
    assert ops_of_type(plan, MoveAccounts) == [MoveAccounts(names=(PROJ_ACC,), parent=new_acc)]
    kinds = [type(op.op) for op in plan.ops]
    assert kinds.index(MoveAccounts) > kinds.index(AddAccountTree)  # the new customer exists first
    assert ops_of_type(plan, RemoveAccounts) == []  # the old customer account is left, never removed mid-move
    assert any(f"moves from {CUST_ACC} to {new_acc}" in n for n in plan.orders[0].notes)
    # the next cycle sees the project under its new customer: nothing to move, nothing to say
    moved = state(Acc(CUST_ACC, ROOT, naming.customer_marker(CUST)), Acc(new_acc, ROOT, naming.customer_marker(new_cust)),
                  Acc(PROJ_ACC, new_acc, naming.project_marker(PROJ)), old_alloc)
    again = plan_orders([order(customer=new_cust)], moved, CONFIG)
    assert ops_of_type(again, MoveAccounts) == [] and not any("account" in n for n in again.orders[0].notes)


def test_a_project_account_placed_by_hand_is_never_moved() -> None:
    new_cust = hexid()
    for st in (
        state(Acc("institute", ROOT), Acc(PROJ_ACC, "institute", naming.project_marker(PROJ))),  # under a foreign parent
        state(Acc(CUST_ACC, ROOT, naming.customer_marker(CUST)), Acc(PROJ_ACC, CUST_ACC, "made by hand")),  # unmarked
    ):
        plan = plan_orders([order(customer=new_cust)], st, CONFIG)
        assert ops_of_type(plan, MoveAccounts) == []
        assert any(f"project account {PROJ_ACC} is under" in n and "left there" in n for n in plan.orders[0].notes)


def test_move_accounts_op_renders_one_modify_and_refuses_nonsense() -> None:
    op = MoveAccounts(names=("p_b", "p_a", "p_b"), parent="c_x")
    assert op.names == ("p_b", "p_a")
    assert render.sacctmgr_lines(op, "hpc") == ["modify account where name=p_b,p_a cluster=hpc set parent=c_x"]
    assert op.describe() == "move account(s) p_b,p_a under c_x"
    for names, parent, fragment in ((("root",), "c_x", "never moved"), (("p_a",), "p_a", "own parent"),
                                    (("p_a",), "c x", "parent"), (("p a",), "c_x", "account")):
        with pytest.raises(InvalidValue, match=fragment):
            MoveAccounts(names=names, parent=parent)


# -- membership -----------------------------------------------------------------------------------------


def test_membership_adds_missing_removes_departed_and_keeps_unknown_users() -> None:
    alice, bob, carol, dave = (hexid() for _ in range(4))
    res = resource(hexid(), "hpc_m1")
    st = tree(
        Acc("hpc_m1", PROJ_ACC, naming.resource_marker(res.uuid), users=frozenset({"bob", "carol", "sysadmin"})),
        Acc("hpc_m2", PROJ_ACC, naming.resource_marker(hexid()), users=frozenset({"carol"})),
        defaults={"bob": "hpc_m1", "carol": "hpc_m1", "sysadmin": "hpc_m1"},
    )
    offering = [ouser(alice, "alice"), ouser(bob, "bob"), ouser(carol, "carol"), ouser(dave, "dave", restricted=True)]
    plan = plan_membership([res], st, CONFIG, teams={res.uuid: [member(alice), member(bob), member(dave)]},
                           offering_users=offering)
    assert plan.added == {res.uuid: ["alice"]}
    assert plan.removed == {res.uuid: ["carol"]}  # sysadmin is not an offering user: untouched
    assert [p.op for p in plan.ops] == [
        AddUsers(users=("alice",), accounts=("hpc_m1",), default_account="hpc_m1"),
        SetDefaultAccount(users=("carol",), account="hpc_m2"),
        RemoveUsers(users=("carol",), accounts=("hpc_m1",)),
    ]


def test_membership_in_sync_plans_nothing_and_skips_foreign_accounts() -> None:
    alice = hexid()
    res = resource(hexid(), "hpc_m1")
    hijack = resource(hexid(), "hpc_m1")  # claims an account marked for res
    st = tree(Acc("hpc_m1", PROJ_ACC, naming.resource_marker(res.uuid), users=frozenset({"alice"})),
              defaults={"alice": "hpc_m1"})
    teams = {res.uuid: [member(alice)], hijack.uuid: []}
    plan = plan_membership([res, hijack], st, CONFIG, teams=teams, offering_users=[ouser(alice, "alice")])
    assert plan.ops == []
    assert any("another resource" in n for n in plan.notes)


def test_membership_moves_the_account_of_a_project_that_changed_customer_once() -> None:
    alice, new_cust = hexid(), hexid()
    new_acc = naming.customer_account(RULES, new_cust)
    r1, r2 = (resource(hexid(), f"hpc_m{i}", project_uuid=PROJ, customer_uuid=new_cust) for i in (1, 2))
    stay = resource(hexid(), "hpc_s", project_uuid=PROJ, customer_uuid=CUST)  # as before the move: nothing to do
    accs = [Acc(r.backend_id, PROJ_ACC, naming.resource_marker(r.uuid), users=frozenset({"alice"})) for r in (r1, r2, stay)]
    teams = {r.uuid: [member(alice)] for r in (r1, r2, stay)}
    offering = [ouser(alice, "alice")]
    plan = plan_membership([r1, r2], tree(*accs, defaults={"alice": "hpc_m1"}), CONFIG, teams=teams, offering_users=offering)
    (load, move) = [p.op for p in plan.ops]
    assert isinstance(load, AddAccountsDescribed) and (load.names, load.parent) == ((new_acc,), ROOT)
    assert naming.owner_of(load.entries[0][1]) == ("customer", new_cust)
    assert move == MoveAccounts(names=(PROJ_ACC,), parent=new_acc)
    assert plan.moved == [min(r1.uuid, r2.uuid)] and not plan.added and not plan.removed
    assert any("moves from" in n for n in plan.notes)
    assert plan_membership([stay], tree(*accs, defaults={"alice": "hpc_m1"}), CONFIG, teams=teams,
                           offering_users=offering).ops == []
    # after the move: in sync, nothing planned
    moved = state(Acc(CUST_ACC, ROOT, naming.customer_marker(CUST)), Acc(new_acc, ROOT, naming.customer_marker(new_cust)),
                  Acc(PROJ_ACC, new_acc, naming.project_marker(PROJ)), *accs, defaults={"alice": "hpc_m1"})
    again = plan_membership([r1, r2], moved, CONFIG, teams=teams, offering_users=offering)
    assert again.ops == [] and again.moved == [] and again.notes == []
    # an allocation account placed by hand elsewhere, or a project account not made by the agent: never moved
    by_hand = state(Acc(CUST_ACC, ROOT, naming.customer_marker(CUST)), Acc(PROJ_ACC, CUST_ACC, "by hand"), *accs,
                    defaults={"alice": "hpc_m1"})
    assert plan_membership([r1], by_hand, CONFIG, teams=teams, offering_users=offering).ops == []


def test_describe_mentions_every_order_and_op() -> None:
    o = order("Create", "pending-provider")
    plan = plan_orders([o], tree(), CONFIG)
    text = "\n".join(plan.describe())
    assert o.uuid in text and "approve" in text and "add account" in text and "complete Create order" in text


def test_mixed_plan_keeps_sacctmgr_ops_contiguous() -> None:
    """scancel first, mkhomedir last: the sacctmgr ops between them share one process after the load."""
    cfg = PlanConfig(naming=RULES, default_account=ROOT, components=COMPONENTS, enable_homedir=True)
    alice = hexid()
    term = order("Terminate")
    acc = f"hpc_{term.resource_uuid[:5]}_x"
    create = order("Create", project=hexid())
    update = order("Update", limits={"cpu": 9})
    upd_acc = f"hpc_{update.resource_uuid[:5]}_u"
    st = tree(Acc(acc, PROJ_ACC, naming.resource_marker(term.resource_uuid), users=frozenset({"bob"})),
              Acc(upd_acc, PROJ_ACC, naming.resource_marker(update.resource_uuid), limits={"cpu": 1}),
              defaults={"bob": acc})
    plan = plan_orders([term, create, update], st, cfg, teams={create.resource_uuid: [member(alice)]},
                       offering_users=[ouser(alice, "alice")])
    kinds = [type(p.op) for p in plan.ops]
    assert kinds[0] is CancelJobs and kinds[-1] is CreateHomedirs
    assert kinds[1] is AddAccountTree or issubclass(kinds[1], AddAccountsDescribed)
    assert not {CancelJobs, CreateHomedirs, AddAccountTree, AddAccountsDescribed} & set(kinds[2:-1])


def test_default_never_moves_to_an_account_that_goes_in_the_same_cycle() -> None:
    t1, t2 = order("Terminate"), order("Terminate")
    a1, a2 = f"hpc_{t1.resource_uuid[:5]}_x", f"hpc_{t2.resource_uuid[:5]}_y"
    keep = "hpc_keep"
    st = tree(Acc(a1, PROJ_ACC, naming.resource_marker(t1.resource_uuid), users=frozenset({"alice", "bob"})),
              Acc(a2, PROJ_ACC, naming.resource_marker(t2.resource_uuid), users=frozenset({"alice", "bob"})),
              Acc(keep, ROOT, naming.resource_marker(hexid()), users=frozenset({"bob"})),
              defaults={"alice": a1, "bob": a1})
    plan = plan_orders([t1, t2], st, CONFIG)
    assert ops_of_type(plan, SetDefaultAccount) == [SetDefaultAccount(users=("bob",), account=keep)]
    removals = ops_of_type(plan, RemoveUsers)
    assert removals == [RemoveUsers(users=("bob",), accounts=tuple(sorted((a1, a2)))),
                        RemoveUsers(users=("alice",), accounts=tuple(sorted((a1, a2))))]


def test_default_account_is_only_the_last_resort_and_root_never() -> None:
    o = order("Terminate")
    acc = f"hpc_{o.resource_uuid[:5]}_x"
    st = tree(Acc(acc, PROJ_ACC, naming.resource_marker(o.resource_uuid), users=frozenset({"carol", "dave"})),
              Acc("hpc_manual", ROOT, "by hand", users=frozenset({"dave"})),
              defaults={"carol": acc, "dave": acc})
    st.accounts[ROOT] = Acc(ROOT, "root", users=frozenset({"carol", "dave"}))
    plan = plan_orders([o], st, CONFIG)
    assert ops_of_type(plan, SetDefaultAccount) == [
        SetDefaultAccount(users=("dave",), account="hpc_manual"),  # an account that is not the default one
        SetDefaultAccount(users=("carol",), account=ROOT),  # carol has nothing else: the last resort
    ]
