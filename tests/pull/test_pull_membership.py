"""The membership pass: associations follow the project team (offering users with a login), nothing else.

Real cluster, real stand-in, both profiles.
"""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
from collections.abc import Iterator

import pytest

from tests.pull.conftest import PullEnv, read_state, sacctmgr, tree_of
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.cli.executor import NativeExecutor
from waldur_slurm.slurm.ops import AddUsers

pytestmark = pytest.mark.slurm


def defaults(*users: str) -> dict[str, str]:
    out = sacctmgr("list", "user", "format=user,defaultaccount", "where", f"name={','.join(users)}")
    return dict(line.split("|", 1) for line in out.splitlines() if "|" in line)


def test_membership_follows_the_team(pull_env: PullEnv) -> None:
    env = pull_env
    _, alice = env.user("a")
    bob_uuid, bob = env.user("b")
    other_project = env.standin.add_project(env.customer, "Other")
    _, outsider = env.user("o", project=other_project)  # offering user of another project: never added (B7)
    r1, r2 = env.order(name="m1"), env.order(name="m2")
    pull = env.reconciler()
    assert pull.run_cycle().done == 2
    state = env.standin.state()
    acc1, acc2 = (state["resources"][r["resource_uuid"]]["backend_id"] for r in (r1, r2))
    tree = tree_of(env.root)
    assert tree[acc1].users == tree[acc2].users == {alice, bob}

    # An admin's manual association (a user the offering does not know) and a newcomer with a bad default.
    admin = f"adm{secrets.token_hex(3)}"
    carol_uuid, carol = env.user("c")
    slurm = SlurmClient(NativeExecutor(), timeout=30)
    results = slurm.apply([AddUsers((admin,), (acc1,)), AddUsers((carol,), (env.root,), default_account=env.root)])
    assert all(r.ok for r in results), results
    env.standin.remove_team_member(env.project, bob_uuid)

    before = len(env.standin.requests())
    report = pull.run_membership()
    assert report.failed == 0 and report.done == 2, report.notes
    tree = tree_of(env.root)
    assert tree[acc1].users == {alice, carol, admin}  # bob left the team; admin untouched
    assert tree[acc2].users == {alice, carol}
    assert outsider not in {u for a in tree.values() for u in a.users}
    assert bob not in read_state().default_account  # his record went with his last association
    assert defaults(carol)[carol] in (acc1, acc2)  # never SLURM_DEFAULT_ACCOUNT or root
    assert report.slurm_processes == 2  # one read, one batch
    # every request the pass made is counted: list resources, offering users, one team per resource
    assert report.http_requests == len(env.standin.requests()) - before
    assert report.http_requests <= 2 + 2 + (2 if env.profile == "2024" else 0) * 2
    # r1 and r2 are in one project, whose team is the same for both: it is read once
    [team_read] = [e["path"] for e in env.standin.requests()[before:] if e["path"].endswith("/team/")]
    assert team_read.split("/")[-3].replace("-", "") in {r["resource_uuid"].replace("-", "") for r in (r1, r2)}
    if env.profile == "2024":
        usernames = {a["username"] for a in env.standin.state()["associations"].values()}
        assert usernames == {alice, carol}

    idle = pull.run_membership()
    assert (idle.done, idle.writes) == (0, 0)

    # When a user's default account goes, the default moves to another of their accounts first.
    assert defaults(alice)[alice] == acc1 or defaults(alice)[alice] == acc2
    first = defaults(alice)[alice]
    gone = r1 if first == acc1 else r2
    env.order("Terminate", resource=gone["resource_uuid"])
    assert pull.run_cycle().done == 1
    left = acc2 if first == acc1 else acc1
    assert defaults(alice, carol) == {alice: left, carol: left}


@pytest.fixture
def linux_user() -> Iterator[str]:
    """A Linux user without a home directory yet; removed with its home after the test."""
    name = f"wsahd{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--no-create-home", "--home-dir", f"/home/{name}", name], check=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True, timeout=30)


def test_homedirs_of_added_users(pull_env: PullEnv, linux_user: str) -> None:
    env = pull_env
    env.user(username=linux_user)
    _, ghost = env.user("g")  # no such Linux user: mkhomedir_helper fails for it, the order still completes
    settings = env.settings(ENABLE_USER_HOMEDIR_ACCOUNT_CREATION="true", SLURM_HOMEDIR_UMASK="0027")
    pull = env.reconciler(settings=settings)
    created = env.order(name="homes")
    report = pull.run_cycle()
    assert (report.done, report.failed) == (1, 0), report.notes
    home = f"/home/{linux_user}"
    mode = stat.S_IMODE(os.stat(home).st_mode)
    assert mode == 0o750
    assert os.stat(home).st_uid == int(subprocess.run(["id", "-u", linux_user], capture_output=True, text=True).stdout)
    marker = os.path.join(home, "kept")
    open(marker, "w").close()
    # A second resource adds the same user again: the directory is left as it is.
    env.order(name="homes 2")
    assert pull.run_cycle().done == 1
    assert os.path.exists(marker) and stat.S_IMODE(os.stat(home).st_mode) == 0o750
    account = env.waldur_resource(created["resource_uuid"])["backend_id"]
    assert ghost in tree_of(env.root)[account].users
    assert not os.path.exists(f"/home/{ghost}")


def test_membership_moves_the_account_of_a_project_that_changed_customer(pull_env: PullEnv) -> None:
    from waldur_slurm.domain import naming

    env = pull_env
    rules = naming.NamingRules()
    _, alice = env.user("a")
    r1, r2 = env.order(name="m1"), env.order(name="m2")
    pull = env.reconciler()
    assert pull.run_cycle().done == 2
    state = env.standin.state()
    acc1, acc2 = (state["resources"][r["resource_uuid"]]["backend_id"] for r in (r1, r2))
    project = naming.project_account(rules, env.project)
    old_customer = naming.customer_account(rules, env.customer)

    other = env.standin.add_customer("Other Institute")
    env.standin.move_project(env.project, other)  # Waldur's staff action; no order follows it
    report = pull.run_membership()
    assert (report.done, report.failed, report.deferred) == (1, 0, 0), report.notes
    assert report.slurm_processes == 3  # the read, the load of the new customer account, the move
    new_customer = naming.customer_account(rules, other)
    tree = tree_of(env.root)
    assert tree[new_customer].parent == env.root and naming.owner_of(tree[new_customer].description) == ("customer", other)
    assert tree[project].parent == new_customer
    assert tree[acc1].parent == tree[acc2].parent == project
    assert tree[acc1].users == tree[acc2].users == {alice}
    assert set(tree) == {old_customer, new_customer, project, acc1, acc2}  # the old customer account stays, empty

    again = pull.run_membership()
    assert (again.done, again.writes, again.slurm_processes) == (0, 0, 1)
