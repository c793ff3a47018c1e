"""The real-server benchmark's world: N resources of one offering on the real Oct-2024 Mastermind, made the way a
site gets them (Create orders through the REST API, processed by the agent's own pull daemon), two team members
with cluster logins, and one finished job per allocation account.

Building N=500 takes many minutes on the 3-worker server, so a world is kept: its description (server objects,
SLURM root, logins) goes to ``bench/results/mastermind-worlds/world-<N>.json`` and a later run reuses it when
the server and SLURM still hold it (``--fresh-world`` builds a new one). The agent's token is made anew each
run (the server's tokens expire after an hour). Everything carries a unique tag: worlds of other engineers on the
same server and cluster are never touched, and ``remove`` deletes only this world's SLURM accounts and Linux
users (the server keeps its objects; it has no delete for most of them).
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support.mastermind import Mastermind, World, build_world, run_agent, server_url, staff_token
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.cli.executor import NativeExecutor
from waldur_slurm.slurm.ops import AddAccounts, RemoveAccounts

from .common import REPO, log, retry
from .slurm_side import ensure_linux_users, sh, submit_job_loops, wait_jobs

CACHE_DIR = REPO / "bench" / "results" / "mastermind-worlds"
TAG_PREFIX = "bmm"
ORDER_THREADS = 3  # the server has 3 gunicorn workers: more only queue there
# cpu is limit-type (the consumer orders a quota), mem usage-type in MB-minutes so that a one-second job of
# 10 MB has a usage of 0.17 to report (the production GB-Hours would round it to 0.00).
TRES = """\
cpu:
  label: CPU
  measured_unit: CPU-Hours
  accounting_type: limit
  unit_factor: 60
mem:
  label: RAM
  measured_unit: MB-minutes
  accounting_type: usage
  unit_factor: 1
"""
COMPONENTS = [
    {"type": "cpu", "name": "CPU", "measured_unit": "CPU-Hours", "billing_type": "limit", "limit_period": "total"},
    {"type": "mem", "name": "RAM", "measured_unit": "MB-minutes", "billing_type": "usage"},
]


@dataclass
class MMWorld:
    n: int
    url: str
    tag: str  # the SLURM root account and the prefix of the two logins
    offering_uuid: str
    agent_user: dict[str, str]  # uuid, username: its token is made anew per run
    logins: list[str]
    resources: dict[str, dict[str, str]] = field(default_factory=dict)  # uuid -> backend_id, allocation
    orders: list[str] = field(default_factory=list)
    built: str = ""
    build: dict[str, Any] = field(default_factory=dict)  # seconds of each setup step, pull cycle summaries
    token: str = ""  # this run's agent token (never saved)

    @property
    def root(self) -> str:
        return self.tag

    @property
    def accounts(self) -> list[str]:
        return sorted(r["backend_id"] for r in self.resources.values())

    @property
    def state_dir(self) -> Path:
        return CACHE_DIR / f"{self.tag}-state"

    @property
    def tres_path(self) -> Path:
        return CACHE_DIR / f"{self.tag}-tres.yaml"

    def uuids(self) -> set[str]:
        out = {self.offering_uuid, *self.resources, *self.orders}
        out.update(r["allocation"] for r in self.resources.values() if r.get("allocation"))
        return out

    def env(self, direction: str, **extra: str) -> dict[str, str]:
        """The daemon's configuration for this world (REQUESTS_TIMEOUT and concurrency as shipped)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.tres_path.write_text(TRES)
        return {"WALDUR_API_URL": self.url + "/api/", "WALDUR_API_TOKEN": self.token,
                "WALDUR_OFFERING_UUID": self.offering_uuid, "WALDUR_SYNC_DIRECTION": direction,
                "SLURM_DEPLOYMENT_TYPE": "native", "SLURM_DEFAULT_ACCOUNT": self.root,
                "SLURM_TRES_CONFIG_PATH": str(self.tres_path), "WALDUR_STATE_DIR": str(self.state_dir), **extra}

    def save(self) -> Path:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        path = CACHE_DIR / f"world-{self.n}.json"
        data = asdict(self)
        data.pop("token")
        path.write_text(json.dumps(data, indent=1))
        return path


def connect() -> Mastermind:
    return Mastermind(server_url(), staff_token())


def slurm_client() -> SlurmClient:
    return SlurmClient(NativeExecutor(), timeout=3600)  # setup only: inserts into a busy slurmdbd can be slow


def _agent_token(mm: Mastermind, world: MMWorld) -> str:
    return mm.token_of({"uuid": world.agent_user["uuid"], "username": world.agent_user["username"]})


def cached(mm: Mastermind, n: int) -> MMWorld | None:
    """The kept world of size n, when the server and SLURM still hold all of it."""
    path = CACHE_DIR / f"world-{n}.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    world = MMWorld(**data)
    if world.url != mm.url:
        log(f"kept world N={n} is on {world.url}, not {mm.url}: building a new one")
        return None
    ok = [r for r in mm.staff.list("/api/marketplace-provider-resources/", offering_uuid=world.offering_uuid,
                                   state="OK", field=["uuid"])]
    if {r["uuid"] for r in ok} != set(world.resources):
        log(f"kept world N={n}: the server holds {len(ok)} of its {len(world.resources)} OK resources: building anew")
        return None
    state = slurm_client().read_state()
    missing = [a for a in world.accounts if a not in state.accounts]
    lacking = [a for a in world.accounts if a in state.accounts and not set(world.logins) <= set(state.accounts[a].users)]
    if missing or world.root not in state.accounts:
        log(f"kept world N={n}: {len(missing)} of its SLURM accounts are gone: building anew")
        return None
    if lacking:  # an interrupted restore scenario: put the associations back as the membership pass would
        log(f"kept world N={n}: {len(lacking)} accounts lack a login; the membership pass of the run restores them")
    ensure_linux_users(world.logins)
    world.token = _agent_token(mm, world)
    log(f"reusing the world N={n} built {world.built} (offering {world.offering_uuid}, SLURM root {world.root})")
    return world


def build(mm: Mastermind, n: int) -> MMWorld:
    """A new world of n resources; progress is printed, each step timed in ``world.build``."""
    t0 = time.monotonic()
    steps: dict[str, Any] = {}
    w: World = build_world(mm, components=COMPONENTS)
    tag = TAG_PREFIX + secrets.token_hex(3)
    me = httpx_me(mm.url, w.agent_token)
    world = MMWorld(n=n, url=mm.url, tag=tag, offering_uuid=w.offering_uuid,
                    agent_user={"uuid": me["uuid"], "username": me["username"]}, logins=[f"{tag}a", f"{tag}b"],
                    built=datetime.now().astimezone().isoformat(timespec="seconds"), token=w.agent_token)
    ensure_linux_users(world.logins)
    slurm = slurm_client()

    def add_root() -> None:
        [r] = slurm.apply([AddAccounts((world.root,), "root", description="wsa-bench mastermind world",
                                       organization="wsa-bench")])
        if not r.ok:
            raise RuntimeError(str(r.error))

    retry("add the SLURM root", add_root)
    for prefix, login in zip(("alice", "bob"), world.logins):
        w.set_username(w.member(prefix), login)
    steps["server_objects_s"] = round(time.monotonic() - t0, 1)
    log(f"world {tag}: offering {w.offering_uuid}, SLURM root {world.root}, logins {world.logins}; placing {n} orders")

    t1 = time.monotonic()
    done = 0

    def order(i: int) -> str:
        nonlocal done
        uuid = str(w.order_create(f"r{i:04d}", {"cpu": 5})["uuid"])
        done += 1
        if done % 50 == 0:
            log(f"  {done}/{n} orders placed ({time.monotonic() - t1:.0f} s)")
        return uuid

    with ThreadPoolExecutor(ORDER_THREADS) as pool:
        world.orders = list(pool.map(order, range(n)))
    steps["orders_s"] = round(time.monotonic() - t1, 1)

    t1 = time.monotonic()
    cycles = []
    for cycle in range(1, 9):  # a 2024 allocation is made by the server's worker: a Create may need a second cycle
        run = run_agent(world.env("pull", REQUESTS_TIMEOUT="60"), timeout=3600)
        summary = run.summary("pull") if run.summaries else {"returncode": run.returncode}
        cycles.append(summary)
        left = [o for o in w.orders() if o["state"] != "done"]
        log(f"  pull cycle {cycle}: {summary}; {len(left)} orders not done")
        if not left:
            break
        if run.returncode not in (0, 1):
            raise RuntimeError(f"the agent's pull failed:\n{run.stderr[-3000:]}")
    else:
        raise RuntimeError("the Create orders were not all done after 8 pull cycles")
    steps["pull_s"] = round(time.monotonic() - t1, 1)
    steps["pull_cycles"] = cycles
    world.resources = {r["uuid"]: {"backend_id": r["backend_id"], "allocation": r.get("resource_uuid") or ""}
                       for r in w.resources()}
    assert len(world.resources) == n and all(r["backend_id"] for r in world.resources.values()), "resources"
    state = slurm.read_state()
    lacking = [a for a in world.accounts if a not in state.accounts or set(state.accounts[a].users) != set(world.logins)]
    assert not lacking, f"accounts without exactly the two logins after the pull: {lacking[:5]}"

    t1 = time.monotonic()
    submit_and_wait(world)
    steps["jobs_s"] = round(time.monotonic() - t1, 1)
    steps["total_s"] = round(time.monotonic() - t0, 1)
    world.build = steps
    log(f"world N={n} built in {steps['total_s']:.0f} s ({steps}); kept in {world.save()}")
    return world


def submit_and_wait(world: MMWorld) -> float:
    """One `sleep 1` job in every account, by its logins in turn; the seconds until sacct has them all."""
    started = datetime.now()
    per_user: dict[str, list[str]] = {}
    for i, account in enumerate(world.accounts):
        per_user.setdefault(world.logins[i % 2], []).append(account)
    ids = submit_job_loops(per_user)
    return wait_jobs(world.logins, ids, started)


def httpx_me(url: str, token: str) -> dict[str, Any]:
    import httpx

    resp = httpx.get(f"{url}/api/users/me/", headers={"Authorization": f"Token {token}"}, timeout=60)
    resp.raise_for_status()
    data: dict[str, Any] = resp.json()
    return data


def remove(world: MMWorld) -> None:
    """This world's SLURM accounts (its root's subtree) and Linux users; the server objects stay."""
    slurm = slurm_client()
    state = slurm.read_state()
    below, frontier = [], {world.root}
    while frontier:
        nxt = {a.name for a in state.accounts.values() if a.parent in frontier}
        below.extend(sorted(nxt))
        frontier = nxt
    for r in slurm.apply([RemoveAccounts(tuple(reversed(below)))] if below else []):
        if not r.ok:
            log(f"removing {world.tag}'s accounts: {r.error}")
    slurm.apply([RemoveAccounts((world.root,))])
    for login in world.logins:
        sh(["userdel", login])
    shutil.rmtree(world.state_dir, ignore_errors=True)
    world.tres_path.unlink(missing_ok=True)
    (CACHE_DIR / f"world-{world.n}.json").unlink(missing_ok=True)
