"""SLURM_IGNORE_ACCOUNTS / SLURM_IGNORE_USERS and the adoption of existing accounts, on the real cluster."""

from __future__ import annotations

import secrets

import pytest

from tests.pull.conftest import PullEnv, read_state, sacctmgr, tree_of
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.cli.executor import NativeExecutor
from waldur_slurm.slurm.ops import AddAccounts, AddUsers

pytestmark = pytest.mark.slurm


def slurm() -> SlurmClient:
    return SlurmClient(NativeExecutor(), timeout=30)


def test_ignored_users_survive_membership_and_terminate(pull_env: PullEnv) -> None:
    env = pull_env
    ops_uuid, ops = env.user("ops")
    _, alice = env.user("a")
    pull = env.reconciler(env.settings(SLURM_IGNORE_USERS=ops))
    order = env.order()
    assert pull.run_cycle().done == 1
    account = env.waldur_resource(order["resource_uuid"])["backend_id"]
    assert tree_of(env.root)[account].users == {alice}  # the ignored member was not added
    assert all(r.ok for r in slurm().apply([AddUsers((ops,), (account,))]))  # the site adds it by hand
    env.standin.remove_team_member(env.project, ops_uuid)
    assert pull.run_membership().writes == 0  # known to the offering, left the team, but ignored
    assert tree_of(env.root)[account].users == {alice, ops}

    env.order("Terminate", resource=order["resource_uuid"])
    report = pull.run_cycle()
    assert report.done == 1, report.notes
    tree = tree_of(env.root)
    assert tree[account].users == {ops}  # alice went; the account stays for the ignored user's association
    assert env.waldur_resource(order["resource_uuid"])["state"] == "Terminated"


def test_ignored_account_is_not_limited_and_adoption_rules(pull_env_8: PullEnv) -> None:
    env = pull_env_8
    manual, legacy, group = (f"{p}{secrets.token_hex(3)}" for p in ("man", "leg", "grp"))
    results = slurm().apply([
        AddAccounts((manual, legacy, group), env.root, description="made by hand"),
    ])
    assert all(r.ok for r in results), results
    pull = env.reconciler(env.settings(SLURM_IGNORE_ACCOUNTS=manual))
    # An existing resource whose account is ignored: an Update is refused, naming it, and nothing changes.
    (ignored,) = env.standin.create_resources(env.offering, env.project, 1, backend_ids=[manual])
    env.order("Update", resource=ignored, limits={"cpu": 7})
    report = pull.run_cycle()
    assert report.failed + report.done == 1
    order = next(o for o in env.standin.state()["orders"].values() if o.get("type") == "Update")
    assert order["state"] == "rejected", order
    assert order["provider_rejection_comment"] == f"account {manual!r} is in SLURM_IGNORE_ACCOUNTS", order
    assert read_state().accounts[manual].limits == {}

    # Create orders naming existing accounts: adopted, or failed with the account's name.
    def create_for(backend_id: str) -> dict:
        o = env.order(name="c")
        env.standin.patch_resource(o["resource_uuid"], backend_id=backend_id)
        pull.run_cycle()
        return env.waldur_order(o["uuid"])

    adopted = create_for(legacy)
    assert adopted["state"] == "done"
    assert read_state().accounts[legacy].limits.get("cpu") == 5 * 60  # now Waldur's
    sacctmgr("-i", "add", "account", f"hpc_{secrets.token_hex(3)}", f"parent={group}",
             f"description=waldur resource {secrets.token_hex(16)}")
    for name, why in ((manual, "SLURM_IGNORE_ACCOUNTS"), (env.root, "default account"), (group, "an ancestor of")):
        refused = create_for(name)
        assert refused["state"] == "rejected", refused
        text = refused["provider_rejection_comment"]
        assert f"account {name!r}" in text and why in text, text
