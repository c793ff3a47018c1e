"""The stand-in (profile 2024) calibrated against the REAL Oct-2024 Mastermind: one scenario, run by the agent as its
own process against both servers and the real SLURM cluster, compared on what matters to the agent.

Scenario: Create (a team member with an offering username) -> pull -> push -> Update -> pull -> Update again -> pull
-> membership change (one member joins, one leaves) -> pull -> Terminate -> pull -> push.

Compared after every step:
- the agent's requests as (method, normalised path, status), in order: the stand-in's request log on one side, the
  real server's gunicorn access log on the other (uuids and query-string order normalised);
- the order's and the resource's state, backend_id and limits;
- and once, the shape (keys and value types) of the JSON the agent reads, fetched from the same endpoints of both.

Every difference must be in the allow-lists below, each of which is explained in devenv/waldur/README.md ("Known
differences from the real 2024 server"); anything else fails the test.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from waldur_standin.testing import StandIn

from tests.support.mastermind import (
    AGENT_UA,
    DEFAULT_COMPONENTS,
    DEFAULT_TRES,
    AccessLog,
    AgentRun,
    Mastermind,
    World,
    build_world,
    run_agent,
)
from tests.support.slurm import submit_job, wait_jobs_in_sacct

pytestmark = [pytest.mark.mastermind, pytest.mark.slurm]

UUID_RE = re.compile(r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b")
Request = tuple[str, str, int]

# The default world's components (cpu limit-type; mem and gres/gpu usage-type) with unit factors small enough that
# a one-second job of 100 MB is a usage of at least 0.01 (so push writes component and per-user usages worth comparing).
DIFF_TRES = DEFAULT_TRES.replace("unit_factor: 61440\n  limit: 100", "unit_factor: 1\n  limit: 1000000").replace(
    "  unit_factor: 60\n  limit: 10", "  unit_factor: 1\n  limit: 10")

# ---------------------------------------------------------------------- documented differences (see the README)
# (endpoint, key path, what) of the JSON shapes: "only real" = the real server sends the key, the stand-in not;
# "only stand-in" = the reverse; "type" = both send it with another JSON type.
# Empty: every shape difference the test found was fixed in the stand-in.
SHAPE_ALLOWED: set[tuple[str, str, str]] = set()
# The other documented differences are handled, each in one place: the celery task's timing by ``Record.pacing``
# (the stand-in's worker is held where the real one was late), the association pages by
# ``collapse_association_reads``, uuids and account names by ``normalise`` / ``_states``.


def norm_uuid(text: str) -> str:
    return text.replace("-", "").lower()


def normalise(method: str, path: str, query: str, status: int) -> Request:
    """uuids -> {uuid}, query parameters sorted (the order of a query string means nothing to the server)."""
    q = sorted((k, UUID_RE.sub("{uuid}", v)) for k, v in parse_qsl(query, keep_blank_values=True))
    p = UUID_RE.sub("{uuid}", path)
    return method, p + ("?" + "&".join(f"{k}={v}" for k, v in q) if q else ""), status


ASSOCIATIONS = "/api/slurm-associations/"


def collapse_association_reads(requests: list[Request]) -> list[Request]:
    """A run of reads of /api/slurm-associations/ -> one entry. Every token sees every association of the server
    (the model has no permissions), so how many pages (or filtered reads) the agent needs depends on what the whole
    server holds: the shared real server keeps every test's associations, the stand-in only this test's."""
    out: list[Request] = []
    for method, path, status in requests:
        if method == "GET" and path.startswith(ASSOCIATIONS):
            entry = (method, ASSOCIATIONS + " (reads)", status)
            if out and out[-1] == entry:
                continue
            out.append(entry)
        else:
            out.append((method, path, status))
    return out


def uuids_in(text: str) -> set[str]:
    return {norm_uuid(u) for u in UUID_RE.findall(text)}


# ---------------------------------------------------------------------- the two servers behind one interface
@dataclass
class Step:
    name: str
    cycles: list[list[Request]]
    order: tuple[Any, ...] | None
    resource: tuple[Any, ...]
    mixed: bool = False  # another test's agent wrote to the real server meanwhile: uuid-less requests are not ours
    logs: list[str] = field(default_factory=list)  # the agent's log of each cycle, for the failure report


class Side:
    """One server: the consumer's and provider's actions of the scenario, and the agent's requests seen by it."""

    name = ""
    offering_uuid = ""

    def agent_env(self) -> dict[str, str]:
        raise NotImplementedError

    def add_member(self, prefix: str, username: str) -> str:
        raise NotImplementedError

    def remove_member(self, user: str) -> None:
        raise NotImplementedError

    def create(self, name: str, limits: Mapping[str, Any]) -> tuple[str, str]:
        raise NotImplementedError

    def update(self, resource: str, limits: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def terminate(self, resource: str) -> str:
        raise NotImplementedError

    def order(self, uuid: str) -> dict[str, Any]:
        raise NotImplementedError

    def resource(self, uuid: str) -> dict[str, Any]:
        raise NotImplementedError

    def mark(self) -> int:
        raise NotImplementedError

    def requests(self, mark: int) -> tuple[list[Request], bool]:
        """The agent's requests since ``mark``, normalised, and whether foreign agent requests were mixed in."""
        raise NotImplementedError

    def agent_get(self, path: str, **params: Any) -> Any:
        raise NotImplementedError


class RealSide(Side):
    name = "real"

    def __init__(self, world: World) -> None:
        self.w = world
        self.offering_uuid = world.offering_uuid
        self.access = AccessLog()
        self.users: dict[str, dict[str, Any]] = {}
        self.agent = httpx.Client(base_url=world.mm.url, headers={"Authorization": f"Token {world.agent_token}"},
                                  timeout=60)

    def agent_env(self) -> dict[str, str]:
        return self.w.agent_env()

    def add_member(self, prefix: str, username: str) -> str:
        user = self.w.member(prefix)
        self.w.set_username(user, username)
        self.users[user["uuid"]] = user
        return str(user["uuid"])

    def remove_member(self, user: str) -> None:
        self.w.remove_member(self.users[user])

    def create(self, name: str, limits: Mapping[str, Any]) -> tuple[str, str]:
        o = self.w.order_create(name, limits)
        return o["uuid"], o["marketplace_resource_uuid"]

    def update(self, resource: str, limits: Mapping[str, Any]) -> str:
        return self.w.update_limits(resource, limits)

    def terminate(self, resource: str) -> str:
        return self.w.terminate(resource)

    def order(self, uuid: str) -> dict[str, Any]:
        return self.w.order(uuid)

    def resource(self, uuid: str) -> dict[str, Any]:
        return self.w.resource(uuid)

    def mark(self) -> int:
        return self.access.mark()

    def ours(self) -> set[str]:
        """Every uuid of this world (offering, plan, project, customers, users, orders, resources, allocations,
        offering users, usages): the agent's requests for this world name only these."""
        w = self.w
        docs = [w.orders(), w.resources(), w.staff.list("/api/marketplace-offering-users/", offering_uuid=w.offering_uuid),
                w.staff.list("/api/marketplace-component-usages/", offering_uuid=w.offering_uuid),
                w.staff.get(f"/api/marketplace-provider-offerings/{w.offering_uuid}/"), w.project, w.consumer]
        return uuids_in(json.dumps(docs))

    def requests(self, mark: int) -> tuple[list[Request], bool]:
        ours = self.ours()
        out: list[Request] = []
        mixed = False
        for method, target, status in self.access.since(mark):
            path, _, query = target.partition("?")
            named = uuids_in(target)
            if named - ours:
                mixed = True  # another test's agent, on its own world
                continue
            out.append(normalise(method, path, query, status))
        return out, mixed

    def agent_get(self, path: str, **params: Any) -> Any:
        resp = self.agent.get(path, params=params)
        assert resp.status_code == 200, f"real GET {path}: {resp.status_code} {resp.text[:300]}"
        return resp.json()


class StandinSide(Side):
    name = "stand-in"

    def __init__(self, w: StandIn) -> None:
        self.s = w
        self.offering_uuid = w.setup_offering([dict(c) for c in DEFAULT_COMPONENTS])
        self.project = w.add_project(w.add_customer("University"), "proj")
        self.agent = httpx.Client(base_url=w.url, headers={"Authorization": f"Token {w.provider_token}"}, timeout=60)

    def agent_env(self) -> dict[str, str]:
        return {"WALDUR_API_URL": self.s.url + "/api/", "WALDUR_API_TOKEN": self.s.provider_token,
                "WALDUR_OFFERING_UUID": self.offering_uuid}

    def add_member(self, prefix: str, username: str) -> str:
        user = self.s.add_user(f"{prefix}-{username}")
        self.s.add_team_member(self.project, user["uuid"], "member")
        ou = self.s.state()["offering_users"]
        mine = [u for u in ou.values() if u["user_uuid"] == user["uuid"] and u["offering_uuid"] == self.offering_uuid]
        if mine:  # auto-created with "" (live resources): the provider sets the login, as on the real server
            resp = self.agent.patch(f"/api/marketplace-offering-users/{mine[0]['uuid']}/", json={"username": username})
            assert resp.status_code == 200, resp.text
        else:
            self.s.add_offering_user(self.offering_uuid, user["uuid"], username)
        return str(user["uuid"])

    def remove_member(self, user: str) -> None:
        self.s.remove_team_member(self.project, user)

    def create(self, name: str, limits: Mapping[str, Any]) -> tuple[str, str]:
        o = self.s.place_order(self.offering_uuid, self.project, limits=dict(limits), name=name)
        return o["uuid"], o["resource_uuid"]

    def update(self, resource: str, limits: Mapping[str, Any]) -> str:
        return str(self.s.place_order(self.offering_uuid, type="Update", resource_uuid=resource, limits=dict(limits))["uuid"])

    def terminate(self, resource: str) -> str:
        return str(self.s.place_order(self.offering_uuid, type="Terminate", resource_uuid=resource)["uuid"])

    def order(self, uuid: str) -> dict[str, Any]:
        return dict(self.agent_get(f"/api/marketplace-orders/{uuid}/"))

    def resource(self, uuid: str) -> dict[str, Any]:
        return dict(self.agent_get(f"/api/marketplace-provider-resources/{uuid}/"))

    def mark(self) -> int:
        entries = self.s.requests()
        return int(entries[-1]["seq"]) if entries else 0

    def requests(self, mark: int) -> tuple[list[Request], bool]:
        return [normalise(e["method"], e["path"], e["query"], int(e["status"]))
                for e in self.s.requests(since=mark) if (e.get("user_agent") or "").startswith(AGENT_UA)], False

    def agent_get(self, path: str, **params: Any) -> Any:
        resp = self.agent.get(path, params=params)
        assert resp.status_code == 200, f"stand-in GET {path}: {resp.status_code} {resp.text[:300]}"
        return resp.json()


# ---------------------------------------------------------------------- the scenario
@dataclass
class Record:
    steps: list[Step] = field(default_factory=list)
    shapes: dict[str, dict[str, str]] = field(default_factory=dict)

    def pacing(self) -> dict[str, tuple[int, bool]]:
        """step -> (pull cycles it took, whether the server's worker was late in its first cycle). The real server
        creates (Create) or schedules (Update) the SLURM allocation in a celery task after approval, 0.1-0.8 s
        later; a cycle that came first sees no allocation (a second cycle is needed) or a 409 from set_state."""
        out = {}
        for st in self.steps:
            late = len(st.cycles) > 1 or ("POST", SET_STATE, 409) in st.cycles[0] or ("POST", SET_STATE, 404) in st.cycles[0]
            out[st.name] = (len(st.cycles), late)
        return out


SET_STATE = "/api/marketplace-slurm-remote/{uuid}/set_state/"
# A SLURM read failed before anything was written (pull, membership and push read SLURM first): the cycle is run again.
SLURM_DOWN = re.compile(r"SLURM unreachable|SLURM (association dump|sacct) failed")
# A SLURM write failed or timed out (the shared cluster is slow while other tests load it): the whole scenario is run
# again, on both servers, as the two runs no longer show the agent the same cluster.
SLURM_TROUBLE = re.compile(r"SLURM op failed|SLURM ops of \d+ order\(s\) failed")


def wait_for_slurmdbd(timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run(["sacctmgr", "-n", "show", "cluster"], capture_output=True, timeout=60).returncode != 0:
        assert time.monotonic() < deadline, "slurmdbd did not come back"
        time.sleep(1)


def _run(side: Side, env: Mapping[str, str], direction: str) -> AgentRun:
    run = run_agent({**side.agent_env(), **env, "WALDUR_SYNC_DIRECTION": direction})
    assert run.returncode in (0, 1), f"{side.name} {direction}: exit {run.returncode}\n{run.stderr[-3000:]}"
    return run


def _states(side: Side, order_uuid: str | None, resource_uuid: str) -> tuple[tuple[Any, ...] | None, tuple[Any, ...]]:
    r = side.resource(resource_uuid)
    # the account name carries the first hex digits of the resource uuid: hpc_<hex>_<name>
    resource = (r["state"], re.sub(r"^hpc_[0-9a-f]{5,}_", "hpc_{uuid}_", r["backend_id"]), r["limits"])
    if order_uuid is None:
        return None, resource
    return (side.order(order_uuid)["state"],), resource


def run_scenario(side: Side, env: Mapping[str, str], *, pacing: Mapping[str, tuple[int, bool]] | None = None,
                 worker: Callable[[bool], None] = lambda up: None) -> Record:
    """The scenario against one server. Without ``pacing`` (the real server) every order step runs pull cycles until
    its order is done or erred; with it (the stand-in) each step runs the real server's number of cycles, its
    worker held through the first one where the real server's worker was late."""
    rec = Record()

    def step(name: str, direction: str, order_uuid: str | None, resource_uuid: str) -> None:
        runs: list[list[Request]] = []
        logs: list[str] = []
        mixed = False
        cycles, late = pacing[name] if pacing is not None else (5 if order_uuid else 1, False)
        for n in range(cycles):
            worker(not (late and n == 0))
            for _ in range(3):
                wait_for_slurmdbd()
                mark = side.mark()
                log = _run(side, env, direction).stderr
                # Another test on the shared cluster stopped slurmdbd: the cycle only read (SLURM is read before
                # any write, and a failed read defers everything), so it is run again, not compared.
                if not SLURM_DOWN.search(log):
                    break
            logs.append(log)
            reqs, was_mixed = side.requests(mark)
            runs.append(reqs)
            mixed |= was_mixed
            if pacing is None and (order_uuid is None or side.order(order_uuid)["state"] in ("done", "erred")):
                break
        worker(True)
        order, resource = _states(side, order_uuid, resource_uuid)
        rec.steps.append(Step(name, runs, order, resource, mixed, logs))

    alice = side.add_member("alice", "wsa_alice")
    order, res = side.create("diff-alloc", {"cpu": 5})
    step("create", "pull", order, res)
    account = side.resource(res)["backend_id"]
    assert account, f"{side.name}: no backend_id after Create: {rec.steps[-1]}"
    job = submit_job("wsa_alice", account, seconds=1)
    wait_jobs_in_sacct([job])
    step("push", "push", None, res)
    rec.shapes = shapes(side, res)
    step("update", "pull", side.update(res, {"cpu": 7}), res)
    step("update-again", "pull", side.update(res, {"cpu": 9}), res)
    side.add_member("bob", "wsa_bob")
    side.remove_member(alice)
    step("membership", "pull", None, res)
    step("terminate", "pull", side.terminate(res), res)
    step("push-after-terminate", "push", None, res)
    return rec


# ---------------------------------------------------------------------- JSON shapes
def shape(value: Any, prefix: str = "", out: dict[str, str] | None = None, depth: int = 0) -> dict[str, str]:
    """key path -> JSON type; lists of objects merge their items under ``[]``; free-form maps (limits, attributes,
    plugin options...) are one ``object`` (their keys are data, not schema)."""
    out = {} if out is None else out
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict) and (k in FREE_FORM or depth >= 1):
                out[path] = "object"
            else:
                out[path] = _type(v) if not isinstance(v, (dict, list)) else ("object" if isinstance(v, dict) else "array")
                if isinstance(v, (dict, list)):
                    shape(v, path, out, depth + 1)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                shape(item, prefix + "[]", out, depth)
            else:
                out[prefix + "[]"] = _type(item)
    return out


FREE_FORM = frozenset({"limits", "attributes", "plugin_options", "secret_options", "backend_metadata", "current_usages",
                       "limit_usage", "offering_plugin_options", "options", "resource_options", "prices", "quotas",
                       "future_prices", "marketplace_offering_plugin_options", "billing_period_applies"})


def _type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    return "string" if isinstance(v, str) else type(v).__name__


def shapes(side: Side, res: str) -> dict[str, dict[str, str]]:
    """The JSON the agent reads, from the same endpoints of both servers, with the agent's token."""
    off = side.offering_uuid
    alloc = side.resource(res)["resource_uuid"]
    order = side.resource(res)["creation_order"]["uuid"] if side.resource(res).get("creation_order") else None
    reads: dict[str, tuple[str, dict[str, Any]]] = {
        "orders list": ("/api/marketplace-orders/", {"offering_uuid": off}),
        "resources list": ("/api/marketplace-provider-resources/", {"offering_uuid": off}),
        "resource": (f"/api/marketplace-provider-resources/{res}/", {}),
        "team": (f"/api/marketplace-provider-resources/{res}/team/", {}),
        "plan periods": (f"/api/marketplace-provider-resources/{res}/plan_periods/", {}),
        "offering": (f"/api/marketplace-provider-offerings/{off}/", {}),
        "offering users": ("/api/marketplace-offering-users/", {"offering_uuid": off}),
        "component usages": ("/api/marketplace-component-usages/", {"offering_uuid": off}),
        "user usages": ("/api/marketplace-component-user-usages/", {"offering_uuid": off}),
        "associations": ("/api/slurm-associations/", {"allocation_uuid": alloc}),
        "me": ("/api/users/me/", {}),
    }
    if order:
        reads["order"] = (f"/api/marketplace-orders/{order}/", {})
    out = {}
    for name, (path, params) in reads.items():
        data = side.agent_get(path, **params)
        assert data, f"{side.name}: {name} is empty, nothing to compare"
        out[name] = shape(data)
    return out


def shape_diff(real: dict[str, dict[str, str]], standin: dict[str, dict[str, str]]) -> set[tuple[str, str, str]]:
    out = set()
    for ep in real.keys() | standin.keys():
        a, b = real.get(ep, {}), standin.get(ep, {})
        for k in a.keys() - b.keys():
            out.add((ep, k, "only real"))
        for k in b.keys() - a.keys():
            out.add((ep, k, "only stand-in"))
        for k in a.keys() & b.keys():
            if a[k] != b[k] and "null" not in (a[k], b[k]):
                out.add((ep, k, f"type {a[k]} vs {b[k]}"))
    return out


# ---------------------------------------------------------------------- the test
@pytest.fixture
def standin_2024_side() -> Iterator[StandIn]:
    with StandIn(profile="2024") as w:
        yield w


def test_stand_in_2024_matches_the_real_server(mastermind: Mastermind, slurm_root: str, tmp_path: Path,
                                                standin_2024_side: StandIn) -> None:
    tres = tmp_path / "tres.yaml"
    tres.write_text(DIFF_TRES)
    # One write or read at a time, so both logs hold the requests in one well-defined order.
    env = {"SLURM_DEPLOYMENT_TYPE": "native", "SLURM_DEFAULT_ACCOUNT": slurm_root, "SLURM_TRES_CONFIG_PATH": str(tres),
           "SLURM_COMMAND_TIMEOUT": "60", "REQUESTS_TIMEOUT": "30", "WALDUR_PUSH_CONCURRENCY": "1",
           "WALDUR_READ_CONCURRENCY": "1"}
    for attempt in range(3):
        real = run_scenario(RealSide(build_world(mastermind)), env)
        standin_2024_side.reset()
        fake = run_scenario(StandinSide(standin_2024_side), env, pacing=real.pacing(), worker=standin_2024_side.set_worker)
        troubled = [f"{rec_name} {st.name}" for rec_name, rec in (("real", real), ("stand-in", fake)) for st in rec.steps
                    if any(SLURM_TROUBLE.search(log) for log in st.logs)]
        if not troubled:
            break
        print(f"attempt {attempt + 1}: SLURM writes failed in {troubled}; the scenario runs again")
    else:
        pytest.fail(f"the shared SLURM cluster failed writes in every attempt (last: {troubled})", pytrace=False)

    report = []
    for r, f in zip(real.steps, fake.steps, strict=True):
        if (r.order, r.resource) != (f.order, f.resource):
            report.append(f"{r.name}: states real {r.order} {r.resource} != stand-in {f.order} {f.resource}")
        for i, (rc, fc) in enumerate(zip(r.cycles, f.cycles, strict=True)):
            rc, fc = collapse_association_reads(rc), collapse_association_reads(fc)
            if r.mixed:  # uuid-less requests of another agent may be mixed in: compare the ones that name our world
                rc, fc = ([x for x in c if "{uuid}" in x[1] and not x[1].startswith(ASSOCIATIONS)] for c in (rc, fc))
            if rc != fc:
                report.append(f"{r.name} cycle {i + 1}: requests differ\n  real:     {rc}\n  stand-in: {fc}\n"
                              f"  real agent log:\n{r.logs[i][-2500:]}\n  stand-in agent log:\n{f.logs[i][-2500:]}")
    unexplained = shape_diff(real.shapes, fake.shapes) - SHAPE_ALLOWED
    if unexplained:
        report.append("JSON shapes differ:\n  " + "\n  ".join(map(str, sorted(unexplained))))
    assert not report, "\n".join(report)
