"""Create with users, Update, Terminate through the pull reconciler: real SLURM, real stand-in, both profiles."""

from __future__ import annotations

import pytest

from tests.pull.conftest import MEM_LIMIT, PullEnv, read_state, sacctmgr, tree_of
from waldur_slurm.domain import naming

pytestmark = pytest.mark.slurm


def default_accounts(users: list[str]) -> dict[str, str]:
    out = sacctmgr("list", "user", "format=user,defaultaccount", "where", f"name={','.join(users)}")
    return dict(line.split("|", 1) for line in out.splitlines() if "|" in line)


def test_create_update_terminate(pull_env: PullEnv) -> None:
    env = pull_env
    _, alice = env.user("a")
    _, bob = env.user("b")
    _, outsider = env.user("c", team=False)  # an offering user of another project (B7: never added)
    nologin = env.standin.add_user("w-nologin")
    env.standin.add_team_member(env.project, nologin["uuid"], "member")  # on the team, no cluster login

    created = env.order(name="My Alloc #1", limits={"cpu": 5, "gres/gpu": 1})
    res = created["resource_uuid"]
    pull = env.reconciler()

    report = pull.run_cycle()
    assert (report.seen, report.done, report.failed, report.deferred) == (1, 1, 0, 0), report.notes

    account = f"hpc_{res[:5]}_myalloc1"
    assert env.waldur_order(created["uuid"])["state"] == "done"
    resource = env.waldur_resource(res)
    assert resource["backend_id"] == account
    assert resource["state"] == "OK"
    tree = tree_of(env.root)
    customer = naming.customer_account(naming.NamingRules(), env.customer)
    project = naming.project_account(naming.NamingRules(), env.project)
    assert set(tree) == {customer, project, account}
    assert tree[customer].parent == env.root
    assert tree[project].parent == customer
    assert tree[account].parent == project  # W3: allocation under its project, not under root
    assert naming.resource_owner(tree[account].description) == res
    assert tree[account].limits == {"cpu": 5 * 60, "gres/gpu": 60, "mem": MEM_LIMIT}
    assert tree[account].users == {alice, bob}
    assert default_accounts([alice, bob]) == {alice: account, bob: account}
    assert outsider not in read_state().default_account
    posts = env.order_posts(created["uuid"])
    assert posts.get("approve_by_provider") == 1 and "set_state_erred" not in posts
    if env.profile == "2024":
        state = env.standin.state()
        alloc = state["allocations"][resource["allocation_uuid"]]
        assert alloc["state"] == 3  # OK: the next Update is not auto-erred by the server
        assert alloc["backend_id"] == account
        assert {a["username"] for a in state["associations"].values()} == {alice, bob}

    # nothing left to do: nothing written anywhere
    idle = pull.run_cycle()
    assert (idle.seen, idle.writes, idle.slurm_processes) == (0, 0, 0)

    updated = env.order("Update", resource=res, limits={"cpu": 7, "gres/gpu": 2})
    report = pull.run_cycle()
    assert (report.done, report.failed, report.deferred) == (1, 0, 0), report.notes
    assert env.waldur_order(updated["uuid"])["state"] == "done"  # B2: Update orders complete
    assert tree_of(env.root)[account].limits == {"cpu": 7 * 60, "gres/gpu": 120, "mem": MEM_LIMIT}
    assert env.waldur_resource(res)["limits"] == {"cpu": 7, "gres/gpu": 2}
    assert env.waldur_resource(res)["state"] == "OK"

    terminated = env.order("Terminate", resource=res)
    report = pull.run_cycle()
    assert (report.done, report.failed, report.deferred) == (1, 0, 0), report.notes
    assert env.waldur_order(terminated["uuid"])["state"] == "done"
    assert env.waldur_resource(res)["state"] == "Terminated"
    assert tree_of(env.root) == {}  # allocation, then the emptied project and customer accounts
    assert not {alice, bob} & set(read_state().default_account)  # their only association went with it
    for uuid in (created["uuid"], updated["uuid"], terminated["uuid"]):
        assert "set_state_erred" not in env.order_posts(uuid)


def test_dry_run_prints_the_plan_and_changes_nothing(pull_env: PullEnv) -> None:
    env = pull_env
    env.user("a")
    created = env.order(name="dry")
    lines: list[str] = []
    pull = env.reconciler(out=lines)
    before = len(env.standin.requests())
    report = pull.run_cycle(dry_run=True)
    text = "\n".join(lines)
    assert created["uuid"] in text and "approve" in text and "add account" in text and "add user" in text
    assert report.slurm_processes == 1  # the one read
    assert all(e["method"] == "GET" for e in env.standin.requests()[before:])
    assert tree_of(env.root) == {}
    assert env.waldur_order(created["uuid"])["state"] == "pending-provider"


def test_second_resource_in_the_same_project_keeps_the_tree_on_terminate(pull_env: PullEnv) -> None:
    env = pull_env
    first, second = env.order(name="one"), env.order(name="two")
    pull = env.reconciler()
    assert pull.run_cycle().done == 2
    accounts = {env.waldur_resource(o["resource_uuid"])["backend_id"] for o in (first, second)}
    assert len(tree_of(env.root)) == 4  # customer, project, two allocations: the tree was created once
    env.order("Terminate", resource=first["resource_uuid"])
    assert pull.run_cycle().done == 1
    left = tree_of(env.root)
    assert env.waldur_resource(second["resource_uuid"])["backend_id"] in left
    assert len(left) == 3 and not (accounts - set(left)) - {env.waldur_resource(first["resource_uuid"])["backend_id"]}


def test_a_project_moved_to_another_customer_moves_its_account_with_the_next_create(pull_env: PullEnv) -> None:
    env = pull_env
    rules = naming.NamingRules()
    _, alice = env.user("a")
    first = env.order(name="one")
    pull = env.reconciler()
    assert pull.run_cycle().done == 1
    first_acc = env.waldur_resource(first["resource_uuid"])["backend_id"]
    old_customer = naming.customer_account(rules, env.customer)
    project = naming.project_account(rules, env.project)

    other = env.standin.add_customer("Other Institute")
    env.standin.move_project(env.project, other)  # Waldur's staff action: the project changes customer
    second = env.order(name="two")
    report = pull.run_cycle()
    assert (report.done, report.failed, report.deferred) == (1, 0, 0), report.notes
    second_acc = env.waldur_resource(second["resource_uuid"])["backend_id"]
    new_customer = naming.customer_account(rules, other)
    tree = tree_of(env.root)
    assert tree[new_customer].parent == env.root
    assert tree[project].parent == new_customer  # moved, with its subtree
    assert tree[first_acc].parent == project and tree[second_acc].parent == project
    assert tree[first_acc].users == {alice} and tree[second_acc].users == {alice}  # associations kept
    assert old_customer in tree and not any(a.parent == old_customer for a in tree.values())  # left, empty
    # the move is done: the next cycle finds nothing to do
    idle = pull.run_cycle()
    assert (idle.seen, idle.writes) == (0, 0)

    for o in (first, second):
        env.order("Terminate", resource=o["resource_uuid"])
    report = pull.run_cycle()
    assert (report.done, report.failed) == (2, 0), report.notes
    assert set(tree_of(env.root)) == {old_customer}  # the project and its new customer went with them


def test_create_hundred_orders_uses_few_slurm_processes(pull_env_8: PullEnv) -> None:
    env = pull_env_8
    _, alice = env.user("a")
    projects = [env.standin.add_project(env.customer, f"P{i}") for i in range(10)]
    for p in projects:
        env.standin.add_team_member(p, env.standin.add_user(f"w-{p[:6]}")["uuid"], "member")
    orders = [env.order(name=f"alloc {i}", project=projects[i % 10]) for i in range(100)]
    pull = env.reconciler()
    report = pull.run_cycle()
    assert (report.seen, report.done, report.failed, report.deferred) == (100, 100, 0, 0), report.notes[:5]
    assert report.slurm_processes <= 10, report.slurm_processes
    tree = tree_of(env.root)
    backend_ids = {env.waldur_resource(o["resource_uuid"])["backend_id"] for o in orders}
    assert len(backend_ids) == 100 and backend_ids <= set(tree)
    assert len(tree) == 1 + 10 + 100
    assert alice not in {u for a in tree.values() for u in a.users}  # alice is on no team of these projects


def test_idle_cycle_costs_at_most_two_slurm_processes_and_two_requests_per_page(pull_env: PullEnv) -> None:
    env = pull_env
    pull = env.reconciler()
    pull.run_cycle()  # the first cycle also detects the server flavour
    report = pull.run_cycle()
    # the orders; on 8.x also the resources' enforcement flags (none set: SLURM is not read)
    enforcement = 1 if env.profile == "8" else 0
    assert (report.seen, report.slurm_processes, report.http_requests) == (0, 0, 1 + enforcement)

    # Three pages of orders that need nothing from this agent: Restore orders another provider tool approved.
    waldur = env.waldur(page_size=5)
    resources = env.standin.create_resources(env.offering, env.project, count=12, state="Terminated")
    for res in resources:
        order = env.order("Restore", resource=res)
        waldur.approve_order(order["uuid"])
    pull = env.reconciler(waldur=waldur)
    pull.run_cycle()
    start = len(env.standin.requests())
    report = pull.run_cycle()
    pages = 3
    assert (report.seen, report.skipped, report.failed, report.writes) == (12, 12, 0, 0), report.notes
    assert report.http_requests <= 2 * pages
    assert report.slurm_processes <= 2
    assert len(env.standin.requests()) - start == report.http_requests
