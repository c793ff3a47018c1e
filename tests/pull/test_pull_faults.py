"""Faults: Waldur 503s, dropped connections and timeouts; slurmdbd stopped mid-cycle; Terminate with a running job.

In every case nothing is marked erred, no order is failed, and the final state is what a fault-free run gives.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from tests.pull.conftest import MEM_LIMIT, PullEnv, read_state, tree_of
from tests.support.slurm import RunJob, job_states, slurm_ctl, wait_jobs_in_sacct
from waldur_slurm.domain import naming

pytestmark = pytest.mark.slurm

RULES = naming.NamingRules()
ROUTES = [
    "/api/marketplace-orders/",
    "/api/marketplace-orders/*/",
    "/api/marketplace-orders/*/approve_by_provider/",
    "/api/marketplace-orders/*/set_state_done/",
    "/api/marketplace-provider-resources/",
    "/api/marketplace-provider-resources/*/set_backend_id/",
    "/api/marketplace-provider-resources/*/team/",
    "/api/marketplace-offering-users/",
    "/api/marketplace-slurm-remote/*/set_state/",
    "/api/marketplace-slurm-remote/*/set_backend_id/",
    "/api/marketplace-slurm-remote/*/create_association/",
]


def erred_posts(env: PullEnv) -> list[str]:
    return [e["path"] for e in env.standin.requests() if e["method"] == "POST" and e["path"].endswith("/set_state_erred/")]


def inject_random_faults(env: PullEnv, rng: random.Random) -> None:
    """A share of the next requests fail: 503 before or after applying, dropped connections, timeouts."""
    for _ in range(4):
        route = rng.choice(ROUTES)
        kind = rng.choice(("status", "status", "drop", "delay"))
        when = rng.choice(("before", "after"))
        if kind == "delay":
            env.standin.inject_fault(route, kind="delay", delay=1.5, count=1)  # the client gives up after 1 s
        elif kind == "drop":
            env.standin.inject_fault(route, kind="drop", when=when, count=1)
        else:
            env.standin.inject_fault(route, kind="status", status=rng.choice((502, 503, 504)), when=when,
                                     count=rng.randint(1, 3))


def run_until_settled(env: PullEnv, pull: Any, rng: random.Random | None, cycles: int = 25) -> None:
    for _ in range(cycles):
        if rng is not None:
            inject_random_faults(env, rng)
        report = pull.run_cycle()
        assert report.failed == 0, report.notes
        if report.seen == 0 and rng is None:
            return
        if report.seen == 0:
            env.standin.clear_faults()
            if pull.run_cycle().seen == 0:
                return
    env.standin.clear_faults()
    final = pull.run_cycle()
    assert final.seen == 0, f"orders left after {cycles} faulty cycles: {final.notes}"


def test_waldur_faults_give_the_same_final_state(pull_env: PullEnv) -> None:
    env = pull_env
    rng = random.Random(20261125)
    _, alice = env.user("a")
    _, bob = env.user("b")
    pull = env.reconciler(waldur=env.waldur(timeout=1.0, max_retries=1))
    orders = [env.order(name=f"faulty {i}", limits={"cpu": 3 + i, "gres/gpu": 1}) for i in range(3)]
    run_until_settled(env, pull, rng)
    res = [o["resource_uuid"] for o in orders]
    upd = env.order("Update", resource=res[0], limits={"cpu": 11, "gres/gpu": 2})
    term = env.order("Terminate", resource=res[1])
    run_until_settled(env, pull, rng)

    state = env.standin.state()
    faults = [e for e in env.standin.requests() if e.get("fault")]
    assert len(faults) >= 10  # the faults did hit the agent
    assert erred_posts(env) == []
    for o in [*orders, upd, term]:
        assert state["orders"][o["uuid"]]["state"] == "done"
    tree = tree_of(env.root)
    accounts = {r: state["resources"][r]["backend_id"] for r in res}
    assert accounts[res[0]] == f"hpc_{res[0][:5]}_faulty0" and accounts[res[2]] == f"hpc_{res[2][:5]}_faulty2"
    assert set(tree) == {accounts[res[0]], accounts[res[2]], naming.project_account(RULES, env.project),
                         naming.customer_account(RULES, env.customer)}
    assert tree[accounts[res[0]]].limits == {"cpu": 11 * 60, "gres/gpu": 120, "mem": MEM_LIMIT}
    assert tree[accounts[res[2]]].limits == {"cpu": 5 * 60, "gres/gpu": 60, "mem": MEM_LIMIT}
    assert tree[accounts[res[0]]].users == tree[accounts[res[2]]].users == {alice, bob}
    assert state["resources"][res[1]]["state"] == "Terminated"
    assert {state["resources"][r]["state"] for r in (res[0], res[2])} == {"OK"}


def test_slurmdbd_stopped_mid_cycle_defers_and_the_next_cycle_completes(pull_env: PullEnv) -> None:
    env = pull_env
    env.user("a")
    pull = env.reconciler(waldur=env.waldur(timeout=10.0))
    for attempt in range(3):
        orders = [env.order(name=f"dbd {attempt} {i}") for i in range(2)]
        report, undisturbed = stop_slurmdbd_during_a_cycle(env, pull)
        if undisturbed:
            break
        # Another session on this shared cluster started slurmdbd again under us: settle and retry.
        while pull.run_cycle().seen:
            time.sleep(1)
    else:
        pytest.fail("slurmdbd was restarted by someone else in every attempt")
    assert (report.failed, report.deferred, report.done) == (0, 2, 0), report.notes
    assert erred_posts(env) == []
    state = env.standin.state()
    assert {state["orders"][o["uuid"]]["state"] for o in orders} == {"executing"}  # approved, then deferred
    report = pull.run_cycle()
    assert (report.done, report.failed) == (2, 0), report.notes
    assert len(tree_of(env.root)) == 2 + 2 * (attempt + 1)


def stop_slurmdbd_during_a_cycle(env: PullEnv, pull: Any) -> tuple[Any, bool]:
    """Run a cycle; stop slurmdbd between its SLURM read and its SLURM writes (while an approval is held).

    Returns the cycle's report and whether slurmdbd was still down when the cycle ended.
    """
    hold = "/api/marketplace-orders/*/approve_by_provider/"
    env.standin.clear_requests()
    env.standin.inject_fault(hold, kind="delay", delay=6.0, count=1)
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(report=pull.run_cycle()))
    stopped = False
    try:
        worker.start()
        deadline = time.monotonic() + 30
        while not any(e["path"].endswith("/approve_by_provider/") for e in env.standin.requests()):
            assert time.monotonic() < deadline, "the cycle never reached the approval"
            time.sleep(0.05)
        held = time.monotonic()
        assert slurm_ctl("stop", "slurmdbd").returncode == 0
        stopped = True
        assert time.monotonic() - held < 5.5, "slurmdbd took too long to stop: the test proves nothing"
        worker.join(60)
        undisturbed = slurm_ctl("status", "slurmdbd").returncode != 0
    finally:
        if stopped:
            started = slurm_ctl("start", "slurmdbd")
            assert started.returncode == 0, started.stderr
    return result["report"], undisturbed


def test_terminate_with_a_running_job(pull_env: PullEnv, run_job: RunJob) -> None:
    env = pull_env
    env.user(username="wsa_alice")
    created = env.order(name="busy", limits={"cpu": 100, "gres/gpu": 1})
    pull = env.reconciler()
    assert pull.run_cycle().done == 1
    account = env.waldur_resource(created["resource_uuid"])["backend_id"]
    job = run_job("wsa_alice", account, seconds=300, time_limit_min=10)
    wait_jobs_in_sacct([job], states=frozenset({"RUNNING"}), timeout=60)

    term = env.order("Terminate", resource=created["resource_uuid"])
    for _ in range(10):  # cancelled jobs take a moment to leave; the order waits for a later cycle meanwhile
        report = pull.run_cycle()
        assert report.failed == 0, report.notes
        if report.done:
            break
        time.sleep(1)
    assert env.waldur_order(term["uuid"])["state"] == "done"
    assert job_states([job])[job] == "CANCELLED"
    assert tree_of(env.root) == {}
    assert erred_posts(env) == []
    assert account not in read_state().accounts
