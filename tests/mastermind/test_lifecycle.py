"""The agent against the REAL Mastermind (Oct 2024) and real SLURM: Create, Update, Update, Terminate.

Orders are placed by the consumer organisation's owner, the agent runs as its own process with the provider
owner's token, and each step is checked on both sides: the server's order and resource, and SLURM's accounts.
"""

from __future__ import annotations

import os

import pytest

from tests.mastermind.conftest import Site, slurm_state, subtree_of
from tests.support.mastermind import Api
from tests.support.slurm import job_states, remove_tree, submit_job, wait_jobs_in_sacct

pytestmark = [pytest.mark.mastermind, pytest.mark.slurm]

MEM_LIMIT = 100 * 61440  # the TRES file's limit for the usage-type mem component, x unit_factor
GPU_LIMIT = 10 * 60


def done(site: Site, order_uuid: str) -> bool:
    return site.world.order(order_uuid)["state"] == "done"


def create(site: Site, name: str = "Ocean model", limits: dict | None = None) -> tuple[dict, dict]:
    """Create an allocation through the real server and the agent; returns (order, resource)."""
    w = site.world
    order = w.order_create(name, limits if limits is not None else {"cpu": 5})
    site.pull_until(lambda: done(site, order["uuid"]))
    order = w.order(order["uuid"])
    return order, w.resource(order["marketplace_resource_uuid"])


def test_create_update_update_terminate_with_a_running_job(site: Site) -> None:
    w = site.world
    alice, bob = w.member("alice"), w.member("bob")
    w.set_username(alice, "wsa_alice")
    w.set_username(bob, "wsa_bob")

    order, res = create(site)
    # Waldur: the order is done, the resource OK with its account as backend_id; nothing erred.
    assert order["state"] == "done" and not order["error_message"]
    assert res["state"] == "OK"
    account = res["backend_id"]
    assert account.startswith("hpc_") and account.endswith("_oceanmodel")
    # SLURM: default account -> customer -> project -> allocation, limits, the team's logins.
    tree = subtree_of(site.root)
    customer = f"hpc_{w.consumer['uuid']}"
    project = f"hpc_{w.project['uuid']}"
    assert tree[customer].parent == site.root
    assert tree[project].parent == customer
    assert tree[account].parent == project
    assert tree[account].limits == {"cpu": 5 * 60, "mem": MEM_LIMIT, "gres/gpu": GPU_LIMIT}
    assert tree[account].users == {"wsa_alice", "wsa_bob"}

    # A push between the Create and the Update: before the fix it wrote cpu, mem and gres/gpu into the
    # resource's limits, and the next Update could never complete (500 from the server's callback).
    pushed = site.push()
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert set(w.resource(res["uuid"])["limits"]) <= {"cpu"}

    # Update, and a second Update right after it: both complete, SLURM follows each.
    for cpu in (7, 9):
        mark = site.access.mark()
        upd = w.update_limits(res["uuid"], {"cpu": cpu})
        assert w.order(upd)["state"] == "pending-provider"  # placed by the consumer organisation's owner
        site.pull_until(lambda: done(site, upd))
        assert subtree_of(site.root)[account].limits["cpu"] == cpu * 60
        after = w.resource(res["uuid"])
        assert after["state"] == "OK" and after["limits"] == {"cpu": cpu}
        sent = site.access.since(mark, world=site.world)
        assert not [e for e in sent if e[2] >= 500], sent  # no server error on the way
        assert not [e for e in sent if "set_state_erred" in e[1]], sent
        pushed = site.push()
        assert pushed.returncode == 0, pushed.stderr[-3000:]

    # Terminate while a job of the account runs: the job is cancelled, the account removed, the resource
    # Terminated. The customer and project accounts go too: nothing else is under them.
    job = submit_job("wsa_alice", account, seconds=600, time_limit_min=15)
    wait_jobs_in_sacct([job], states=frozenset({"RUNNING"}))
    term = w.terminate(res["uuid"])
    site.pull_until(lambda: done(site, term))
    assert job_states([job])[job] == "CANCELLED"
    assert w.resource(res["uuid"])["state"] == "Terminated"
    assert subtree_of(site.root) == {}

    # A push after the Terminate: nothing to report, nothing fails.
    pushed = site.push()
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert pushed.summary("push")["failed"] == 0

    # Nothing is left half-way on the server.
    assert {o["state"] for o in w.orders()} == {"done"}
    assert {r["state"] for r in w.resources()} == {"Terminated"}


def test_update_completes_when_the_resource_limits_hold_a_usage_type_key(site: Site) -> None:
    """A resource whose limits an older agent filled with usage-type keys (cpu, mem, gres/gpu from SLURM): the
    server's Update completion fails with 500 on such a key, so the agent writes the order's limits first."""
    w = site.world
    _order, res = create(site)
    # What the push of an older agent version wrote: SLURM's limits for every component.
    agent = Api(w.mm.url, w.agent_token)
    agent.post(f"/api/marketplace-slurm-remote/{res['uuid']}/set_limits/", {"cpu": 5, "mem": 100, "gres/gpu": 10})
    assert set(w.resource(res["uuid"])["limits"]) == {"cpu", "mem", "gres/gpu"}

    upd = w.update_limits(res["uuid"], {"cpu": 6})
    run = site.pull_until(lambda: done(site, upd))
    assert "replaced by the order's limits before completion" in run.stderr
    after = w.resource(res["uuid"])
    assert after["state"] == "OK" and after["limits"] == {"cpu": 6}
    assert subtree_of(site.root)[res["backend_id"]].limits["cpu"] == 360


def test_push_never_writes_usage_type_keys_and_cleans_them(site: Site) -> None:
    w = site.world
    _order, res = create(site)
    agent = Api(w.mm.url, w.agent_token)
    agent.post(f"/api/marketplace-slurm-remote/{res['uuid']}/set_limits/", {"cpu": 5, "mem": 100})
    mark = site.access.mark()
    pushed = site.push()
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert w.resource(res["uuid"])["limits"] == {"cpu": 5}
    limit_writes = [e for e in site.access.since(mark, world=site.world) if e[1].endswith("/set_limits/")]
    assert len(limit_writes) == 1, limit_writes
    # and once clean, a second push writes no limits at all
    mark = site.access.mark()
    assert site.push().returncode == 0
    assert not [e for e in site.access.since(mark, world=site.world) if e[1].endswith("/set_limits/")]


@pytest.mark.parametrize("default", ["root", "dedicated"])
def test_default_account_root_or_dedicated(site: Site, default: str) -> None:
    """SLURM_DEFAULT_ACCOUNT=root (the original README's own example) builds the tree under root; a dedicated
    default account works the same way."""
    w = site.world
    customer = f"hpc_{w.consumer['uuid']}"
    parent = "root" if default == "root" else site.root
    try:
        order = w.order_create("rooted", {"cpu": 1})
        site.pull_until(lambda: done(site, order["uuid"]), SLURM_DEFAULT_ACCOUNT=parent)
        state = slurm_state()
        assert state.accounts[customer].parent == parent
        res = w.resource(w.order(order["uuid"])["marketplace_resource_uuid"])
        assert res["state"] == "OK" and state.accounts[res["backend_id"]].parent == f"hpc_{w.project['uuid']}"
        term = w.terminate(res["uuid"])
        site.pull_until(lambda: done(site, term), SLURM_DEFAULT_ACCOUNT=parent)
        assert customer not in slurm_state().accounts  # the empty customer account is removed, root is not
    finally:
        if customer in slurm_state().accounts:
            remove_tree(customer)


def test_docker_mode_create_to_terminate(site: Site, docker_host: str) -> None:
    """SLURM_DEPLOYMENT_TYPE=docker: every SLURM command through `docker exec` in the real slurmctld container."""
    w = site.world
    alice = w.member("alice")
    w.set_username(alice, "wsa_alice")
    extra = {"SLURM_DEPLOYMENT_TYPE": "docker", "SLURM_CONTAINER_NAME": os.environ.get("SLURM_CONTAINER_NAME", "slurmctld"),
             "DOCKER_HOST": docker_host}
    order = w.order_create("In a container", {"cpu": 2})
    site.pull_until(lambda: done(site, order["uuid"]), **extra)
    res = w.resource(w.order(order["uuid"])["marketplace_resource_uuid"])
    tree = subtree_of(site.root)
    assert res["state"] == "OK" and tree[res["backend_id"]].users == {"wsa_alice"}
    assert tree[res["backend_id"]].limits["cpu"] == 120
    term = w.terminate(res["uuid"])
    site.pull_until(lambda: done(site, term), **extra)
    assert w.resource(res["uuid"])["state"] == "Terminated"
    assert subtree_of(site.root) == {}
