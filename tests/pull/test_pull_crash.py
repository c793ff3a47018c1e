"""Crash safety: kill -9 the pull daemon at random points of a cycle, restart, check nothing is lost or doubled.

Each trial places a small batch (Creates in two projects, an Update and a Terminate of earlier resources),
starts a real daemon process (``tests.pull.runner``), lets it run for a random time from the start of its
cycle and SIGKILLs it, sometimes twice; then a fresh reconciler (a restart: the agent keeps no local state)
runs cycles until no order is left. After every trial:

- every order is done, and was approved and completed at most once, never erred or rejected
  (the stand-in's request log, successful POSTs only);
- each live resource has exactly one SLURM account (found by the marker in its description), named as its
  backend_id, under its project account; terminated resources have none;
- nothing is left over: the subtree of the test's root holds exactly the live allocations and their
  project and customer accounts.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from waldur_standin.testing import StandIn

from tests.pull.conftest import PullEnv, env_vars, make_env, tree_of
from waldur_slurm import naming

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TRIALS_PER_PROFILE = 16  # x 2 profiles = 32 kill trials
MAX_KILL_DELAY = 2.5  # seconds after the cycle starts; a full cycle of a batch takes about 1-2 s
RULES = naming.NamingRules()


class Runner:
    """A daemon process that has imported everything and waits for "go" on stdin."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.pull.runner", "--wait"],
            cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )

    def go(self) -> None:
        assert self.proc.stdout is not None and self.proc.stdin is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"runner did not start (rc {self.proc.poll()})"
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def kill(self) -> int | None:
        finished = self.proc.poll()
        self.proc.kill()
        self.proc.wait(30)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        return finished


def successful_posts(requests: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """(order uuid, action) -> number of 2xx POSTs."""
    counts: dict[tuple[str, str], int] = {}
    for e in requests:
        if e["method"] != "POST" or "/marketplace-orders/" not in e["path"]:
            continue
        if not (e["status"] and 200 <= e["status"] < 300):
            continue
        parts = e["path"].strip("/").split("/")
        key = (parts[-2], parts[-1])
        counts[key] = counts.get(key, 0) + 1
    return counts


def check(env: PullEnv, orders: list[dict[str, Any]], live: dict[str, str], gone: set[str], trial: str) -> None:
    state = env.standin.state()
    for o in orders:
        assert state["orders"][o["uuid"]]["state"] == "done", f"{trial}: order {o['uuid']} is {state['orders'][o['uuid']]['state']}"
    posts = successful_posts(env.standin.requests())
    for (order, action), n in posts.items():
        assert action not in ("set_state_erred", "reject_by_provider"), f"{trial}: {action} on {order}"
        assert n <= 1, f"{trial}: {action} sent {n} times for order {order}"
    tree = tree_of(env.root)
    owners: dict[str, list[str]] = {}
    for name, acc in tree.items():
        owner = naming.resource_owner(acc.description)
        if owner is not None:
            owners.setdefault(owner, []).append(name)
    for res, project in live.items():
        backend_id = state["resources"][res]["backend_id"]
        assert owners.get(res) == [backend_id], f"{trial}: resource {res}: accounts {owners.get(res)}, backend_id {backend_id!r}"
        assert tree[backend_id].parent == naming.project_account(RULES, project)
    for res in gone:
        assert res not in owners, f"{trial}: terminated resource {res} still has {owners[res]}"
        assert state["resources"][res]["state"] == "Terminated"
    assert set(owners) == set(live), f"{trial}: accounts of unknown resources: {set(owners) - set(live)}"
    projects = {naming.project_account(RULES, p) for p in live.values()}
    customers = {naming.customer_account(RULES, env.customer)} if live else set()
    expected = {state["resources"][r]["backend_id"] for r in live} | projects | customers
    assert set(tree) == expected, f"{trial}: leftover {set(tree) - expected}, missing {expected - set(tree)}"


def run_trials(env: PullEnv, rng: random.Random, trials: int) -> int:
    projects = [env.project, env.standin.add_project(env.customer, "Project Beta")]
    for p in projects:
        for i in range(2):
            env.user(f"k{i}", project=p)
    proc_env = {**os.environ, **env_vars(env.standin.url, env.standin.provider_token, env.offering, env.root,
                                         env.tres_path, REQUESTS_TIMEOUT="5")}
    proc_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(REPO / "devenv" / "waldur"),
                                                           proc_env.get("PYTHONPATH")]))
    live: dict[str, str] = {}  # resource -> project
    gone: set[str] = set()
    orders: list[dict[str, Any]] = []
    recover = env.reconciler()
    kills = 0
    nxt = Runner(proc_env)
    for t in range(trials):
        trial = f"profile {env.profile} trial {t}"
        batch = [env.order(name=f"t{t} {i}", project=rng.choice(projects)) for i in range(2)]
        created = {o["resource_uuid"]: o for o in batch}
        olds = rng.sample(sorted(live), k=min(2, len(live)))
        if olds:
            batch.append(env.order("Update", resource=olds[0], limits={"cpu": rng.randint(1, 50), "gres/gpu": 1}))
        if len(olds) > 1:
            batch.append(env.order("Terminate", resource=olds[1]))
        orders.extend(batch)
        for attempt in range(rng.choice((1, 1, 2))):
            runner, nxt = nxt, Runner(proc_env)  # the next one imports while this one works
            runner.go()
            time.sleep(rng.uniform(0.0, MAX_KILL_DELAY))
            if runner.kill() is None:
                kills += 1
        for _ in range(4):  # the restart: a fresh agent, no memory of the killed one
            report = recover.run_cycle()
            assert report.failed == 0, f"{trial}: {report.notes}"
            if report.seen == 0:
                break
        for res, o in created.items():
            live[res] = env.standin.state()["resources"][res]["project_uuid"]
        if len(olds) > 1:
            live.pop(olds[1])
            gone.add(olds[1])
        check(env, orders, live, gone, trial)
    nxt.kill()
    return kills


@pytest.mark.parametrize("profile", ["8", "2024"])
def test_kill_9_at_random_points(profile: str, slurm_root: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("WSA_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    with StandIn(profile=profile) as server:
        env = make_env(server, profile, slurm_root, tmp_path)
        kills = run_trials(env, rng, TRIALS_PER_PROFILE)
    print(f"profile {profile}: seed {seed}, {kills} processes killed mid-cycle")
    # the random delays must actually cut cycles short, or the test proves nothing
    assert kills >= TRIALS_PER_PROFILE // 2, f"seed {seed}: only {kills} kills landed inside a cycle"
