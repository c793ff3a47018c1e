"""Crash safety: kill -9 the pull daemon at random points of a cycle, restart, check nothing is lost or doubled.

Each batch of orders (Creates in two projects, an Update and a Terminate of earlier resources) goes to a real
daemon process (``tests.pull.runner``) that is SIGKILLed at a random point of its cycle: a random time after
its start, while it lists the orders, inside its sacctmgr write batch, or among the Waldur steps after it
(each kind of aim once per round of four, in a random order, so every run cuts all of them); up to three
daemons in a row are cut that way (each starts from what the previous one left), until a daemon
finishes the batch; then a fresh reconciler (a restart: the agent keeps no local state) runs cycles until no
order is left. Each daemon killed inside a cycle is one trial; a profile runs until 16 trials. After every
batch:

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
import signal
import subprocess
import sys
import time
from pathlib import Path
from collections import Counter
from typing import Any

import pytest
from waldur_standin.testing import StandIn

from tests.pull.conftest import PullEnv, env_vars, make_env, tree_of
from waldur_slurm.domain import naming

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
KILLS_PER_PROFILE = 16  # daemons killed inside a cycle, x 2 profiles = 32 trials
MAX_BATCHES = 16
RULES = naming.NamingRules()
AIMS = ["anywhere", "reads", "slurm write", "waldur steps"]


class Runner:
    """A daemon process that has imported everything and waits for "go" on stdin."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.pull.runner", "--wait"],
            cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self.killed_mid_write = False  # whether a sacctmgr write of the daemon's was alive at the kill

    def go(self) -> None:
        assert self.proc.stdout is not None and self.proc.stdin is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"runner did not start (rc {self.proc.poll()})"
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, less if the cycle ends first."""
        try:
            self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> int | None:
        """SIGKILL the daemon and every process it started, at once.

        That is what happens when the daemon's unit or container dies (systemd kills the whole control
        group). Killing only the Python process would leave its sacctmgr child running a plan made from
        an older state concurrently with the restarted daemon (see the report: the executor should set
        PR_SET_PDEATHSIG for that case).
        """
        finished = self.proc.poll()
        victims = [self.proc.pid, *descendants(self.proc.pid)]
        self.killed_mid_write = any(is_slurm_write(pid) for pid in victims[1:])
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        return finished


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children started in their own session included)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents[int(entry)] = ppid
    found: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found.extend(kids)
        todo.extend(kids)
    return found


def is_slurm_write(pid: int) -> bool:
    """A sacctmgr process of the agent's write batch (its reads run with --parsable2)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return False
    return Path(argv[0]).name == "sacctmgr" and "--parsable2" not in argv


def wait_for_slurm_write(runner: Runner, timeout: float = 30) -> None:
    """Until the daemon runs its SLURM write batch (or ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and runner.proc.poll() is None:
        if any(is_slurm_write(pid) for pid in descendants(runner.proc.pid)):
            return
        time.sleep(0.01)


def wait_for_request(env: PullEnv, runner: Runner, since: int, match: Any, timeout: float = 30) -> None:
    """Until the daemon sends a matching request (or ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and runner.proc.poll() is None:
        if any(match(e) for e in env.standin.requests(since=since)):
            return
        time.sleep(0.02)


def kill_phase(requests: list[dict[str, Any]], mid_write: bool) -> str:
    """Where a daemon was killed: in its SLURM write batch, or else by the last Waldur request it made."""
    if mid_write:
        return "in the SLURM write batch"
    posts = [e["path"] for e in requests if e["method"] == "POST"]
    if not requests:
        return "before any request"
    if not posts:
        return "after reads, before any write"
    last = posts[-1].rstrip("/").rsplit("/", 1)[-1]
    if last in ("approve_by_provider", "reject_by_provider"):
        return "after approval, before set_backend_id"
    return "after set_backend_id or completion"


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


def debug_tree(env: PullEnv) -> str:
    from tests.pull.conftest import read_state

    state = read_state()
    tree = tree_of(env.root)
    users = sorted({u for a in tree.values() for u in a.users})
    lines = [f"{n}: parent={a.parent} users={sorted(a.users)}" for n, a in sorted(tree.items())]
    lines += [f"default of {u}: {state.default_account.get(u)!r}" for u in users]
    return "\n".join(lines)


def run_trials(env: PullEnv, rng: random.Random, wanted_kills: int) -> tuple[int, int]:
    """Batches until ``wanted_kills`` daemons died inside a cycle; returns (kills, batches)."""
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
    # Runners import for ~2 s before they are ready: keep two warm so a kill is never waited for.
    pool = [Runner(proc_env), Runner(proc_env)]
    t = 0
    cycle_estimate = 3.0
    phases: Counter[str] = Counter()
    aims: list[str] = []
    while kills < wanted_kills and t < MAX_BATCHES:
        started = time.monotonic()
        trial = f"profile {env.profile} batch {t}"
        # Small batches: each SLURM commit costs ~0.3-0.8 s on the shared cluster. Over the batches every
        # kind of order is cut at many points, and each batch is cut up to three times in a row (every
        # restarted daemon picks up what the killed one left half done).
        batch = [env.order(name=f"t{t} {i}", project=rng.choice(projects)) for i in range(rng.choice((1, 2)))]
        created = {o["resource_uuid"]: o for o in batch}
        olds = rng.sample(sorted(live), k=min(2, len(live)))
        if olds and rng.random() < 0.6:
            batch.append(env.order("Update", resource=olds[0], limits={"cpu": rng.randint(1, 50), "gres/gpu": 1}))
        terminate = len(olds) > 1 and rng.random() < 0.6
        if terminate:
            batch.append(env.order("Terminate", resource=olds[1]))
        orders.extend(batch)
        cut = 0
        for _attempt in range(3):
            runner = pool.pop(0)
            pool.append(Runner(proc_env))
            seen = len(env.standin.requests())
            runner.go()
            if not aims:  # every kind of aim once per round, in a random order
                aims = rng.sample(AIMS, k=len(AIMS))
            aim = aims.pop()
            if aim == "anywhere":
                runner.wait(rng.uniform(0.0, cycle_estimate))
            elif aim == "reads":  # while it lists the orders (a slow server keeps it there)
                env.standin.inject_fault("/api/marketplace-orders/", kind="delay", delay=0.5, count=1, method="GET")
                wait_for_request(env, runner, seen, lambda e: e["method"] == "GET" and e["path"] == "/api/marketplace-orders/")
                runner.wait(rng.uniform(0.0, 0.4))
            elif aim == "slurm write":  # inside the sacctmgr batch: half of a transaction or none
                wait_for_slurm_write(runner)
                runner.wait(rng.uniform(0.0, 0.1))
            else:  # among the Waldur steps after the SLURM batch
                # They take a few ms against the local stand-in, less than one poll: a slow server (0.3 s per
                # step) keeps the daemon in them long enough to be cut there, mid-request included.
                for step in ("set_backend_id", "set_state_done", "set_state"):
                    env.standin.inject_fault(f"*/{step}/", kind="delay", delay=0.3, count=None, method="POST")
                wait_for_request(env, runner, seen, lambda e: e["method"] == "POST" and any(
                    e["path"].endswith(a) for a in ("/set_backend_id/", "/set_state_done/", "/set_state/")))
                runner.wait(rng.uniform(0.0, 0.6))
            finished = runner.kill() is not None
            env.standin.clear_faults()
            if finished:
                break  # that daemon finished the batch: nothing left to cut
            cut += 1
            phases[kill_phase(env.standin.requests()[seen:], runner.killed_mid_write)] += 1
        kills += cut
        # The restart: a fresh agent, no memory of the killed ones. The cluster is shared: when another
        # session's test has slurmdbd down, orders are (rightly) deferred; wait here, outside the agent.
        recovering = time.monotonic()
        deadline = time.monotonic() + 90
        for cycle in range(60):
            cycle_started = time.monotonic()
            report = recover.run_cycle()
            if cycle == 0 and report.seen and not report.deferred:
                # kills spread over a whole cycle: the next ones aim at up to this cycle's length
                cycle_estimate = max(1.0, 1.2 * (time.monotonic() - cycle_started))
            assert report.failed == 0, f"{trial}: {report.notes}\n{debug_tree(env)}"
            if report.seen == 0 or time.monotonic() > deadline:
                break
            if report.deferred:
                time.sleep(1)
        for res in created:
            live[res] = env.standin.state()["resources"][res]["project_uuid"]
        if terminate:
            live.pop(olds[1])
            gone.add(olds[1])
        checked = time.monotonic()
        check(env, orders, live, gone, trial)
        print(f"{trial}: {len(batch)} orders, {cut} kill(s) mid-cycle, {time.monotonic() - started:.1f}s"
              f" (recovery {checked - recovering:.1f}s)")
        t += 1
    for runner in pool:
        runner.kill()
    print(f"profile {env.profile}: kills by the last request the daemon made: {dict(phases)}")
    # the kills must land all over the cycle: the reads, the SLURM batch and the Waldur steps after it
    for phase in ("after reads, before any write", "in the SLURM write batch", "after set_backend_id or completion"):
        assert phases[phase] > 0, f"no kill {phase}: {dict(phases)}"
    return kills, t


@pytest.mark.parametrize("profile", ["8", "2024"])
def test_kill_9_at_random_points(profile: str, slurm_root: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("WSA_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"crash test seed {seed} (set WSA_CRASH_SEED to replay)")
    with StandIn(profile=profile) as server:
        env = make_env(server, profile, slurm_root, tmp_path)
        kills, batches = run_trials(env, rng, KILLS_PER_PROFILE)
    print(f"profile {profile}: seed {seed}, {kills} daemons killed mid-cycle over {batches} batches")
    # the random delays must actually cut cycles short, or the test proves nothing
    assert kills >= KILLS_PER_PROFILE, f"seed {seed}: only {kills} kills landed inside a cycle"
