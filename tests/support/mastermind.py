"""The real Waldur Mastermind (Oct 2024) for tests: worlds built through its REST API only, and the agent run
against it as its own process.

`devenv/mastermind/up` installs and starts the server (from ../shared/mastermind). The fixtures find it through
`MASTERMIND_URL` / `MASTERMIND_TOKEN_FILE`, or else through `$MM_STATE/mm.env` and `$MM_STATE/admin-token`; a
server that does not answer makes the test FAIL with the command to run. Nothing here skips.

A world is what a site has when the agent starts: a provider organisation with a `Marketplace.Slurm` offering, an
agent user who owns the provider organisation (the only non-staff role that may process orders on this server), a
consumer organisation whose owner places orders, and a project. Staff does only what only staff may do (create
users, activate the offering). Everything carries a unique stamp, so worlds never meet, on a server that keeps
everything between runs.

The server's gunicorn access log is the independent count of what the agent sent (`AccessLog`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
MM_STATE = Path(os.environ.get("MM_STATE", "/var/lib/wsa-mastermind"))
UP = REPO / "devenv" / "mastermind" / "up"
AGENT_UA = "waldur-slurm-agent/"


def _mm_conf(name: str, default: str) -> str:
    try:
        for line in (MM_STATE / "mm.env").read_text().splitlines():
            if line.startswith(name + "="):
                return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return default


def server_url() -> str:
    return os.environ.get("MASTERMIND_URL") or f"http://127.0.0.1:{os.environ.get('MM_PORT') or _mm_conf('MM_PORT', '8080')}"


def staff_token() -> str:
    path = Path(os.environ.get("MASTERMIND_TOKEN_FILE") or MM_STATE / "admin-token")
    try:
        return path.read_text().strip()
    except OSError as exc:
        pytest.fail(f"no Mastermind staff token at {path} ({exc}); run `{UP}` as root", pytrace=False)


class Api:
    """One user's view of the REST API. ``call`` fails the test on an unexpected status, naming the request."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.http = httpx.Client(base_url=self.base, headers={"Authorization": f"Token {token}"}, timeout=120)

    def call(self, method: str, path: str, *, expect: int | Sequence[int] | None = None, **kw: Any) -> Any:
        url = path[len(self.base):] if path.startswith(self.base) else path
        resp = self.http.request(method, url, **kw)
        wanted = (expect,) if isinstance(expect, int) else expect
        if (wanted is None and resp.status_code >= 400) or (wanted is not None and resp.status_code not in wanted):
            raise AssertionError(f"{method} {url} -> {resp.status_code} (wanted {wanted or '< 400'}): {resp.text[:1500]}")
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return resp.text

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, body: Any = None, *, expect: int | Sequence[int] | None = None) -> Any:
        return self.call("POST", path, json=body, expect=expect)

    def list(self, path: str, **params: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            resp = self.http.get(path, params={**params, "page": page, "page_size": 300})
            if resp.status_code >= 400:
                raise AssertionError(f"GET {path} {params} -> {resp.status_code}: {resp.text[:500]}")
            items = resp.json()
            out.extend(items)
            total = int(resp.headers.get("X-Result-Count", len(out)))
            if len(out) >= total or not items:
                return out
            page += 1

    def close(self) -> None:
        self.http.close()


def stamp() -> str:
    return time.strftime("%H%M%S") + secrets.token_hex(3)


class Mastermind:
    """The server as staff sees it, plus the means to make users with tokens of their own."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.staff = Api(self.url, token)
        self._apis: list[Api] = [self.staff]
        self.offerings: list[str] = []  # every world's offering, checked when the session ends

    def left_half_way(self) -> list[str]:
        """Orders still executing and resources still Updating in this session's worlds."""
        out = []
        for offering in self.offerings:
            out += [f"order {o['uuid']} {o['type']} {o['state']}" for o in
                    self.staff.list("/api/marketplace-orders/", offering_uuid=offering, state="executing")]
            out += [f"resource {r['uuid']} {r['state']}" for r in
                    self.staff.list("/api/marketplace-provider-resources/", offering_uuid=offering, state="Updating")]
        return out

    def user(self, prefix: str = "u", *, username: str | None = None) -> dict[str, Any]:
        s = stamp()
        name = username or f"{prefix}-{s}"
        return self.staff.post("/api/users/", {
            "username": name, "email": f"{name}@example.org", "first_name": prefix, "last_name": s,
            "agree_with_policy": True,
        }, expect=201)

    def token_of(self, user: dict[str, Any]) -> str:
        password = "Pw-" + secrets.token_hex(8)
        self.staff.post(f"/api/users/{user['uuid']}/change_password/", {"new_password": password})
        resp = httpx.post(f"{self.url}/api-auth/password/", json={"username": user["username"], "password": password},
                          timeout=60)
        assert resp.status_code == 200, resp.text
        return resp.json()["token"]

    def api_of(self, user: dict[str, Any]) -> Api:
        api = Api(self.url, self.token_of(user))
        self._apis.append(api)
        return api

    def close(self) -> None:
        for api in self._apis:
            api.close()


# The TRES file and the offering of the default world: cpu is limit-type (the consumer orders a quota), mem and
# gres/gpu are usage-type (billed by what ran), so every test sees both kinds.
DEFAULT_TRES = """\
cpu:
  label: CPU
  measured_unit: CPU-Hours
  accounting_type: limit
  unit_factor: 60
mem:
  label: RAM
  measured_unit: GB-Hours
  accounting_type: usage
  unit_factor: 61440
  limit: 100
gres/gpu:
  label: GPU
  measured_unit: GPU-Hours
  accounting_type: usage
  unit_factor: 60
  limit: 10
"""
DEFAULT_COMPONENTS = [
    {"type": "cpu", "name": "CPU", "measured_unit": "CPU-Hours", "billing_type": "limit", "limit_period": "total"},
    {"type": "mem", "name": "RAM", "measured_unit": "GB-Hours", "billing_type": "usage"},
    {"type": "gres/gpu", "name": "GPU", "measured_unit": "GPU-Hours", "billing_type": "usage"},
]


@dataclass
class World:
    mm: Mastermind
    offering_uuid: str
    public_offering_url: str
    plan_url: str
    provider_customer: dict[str, Any]
    agent_token: str
    consumer: dict[str, Any]
    owner: Api  # the consumer organisation's owner: places and approves orders
    project: dict[str, Any]
    users: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def staff(self) -> Api:
        return self.mm.staff

    # ---------------------------------------------------------------- people
    def new_project(self, name: str | None = None) -> dict[str, Any]:
        return self.owner.post("/api/projects/", {"name": name or f"proj-{stamp()}", "customer": self.consumer["url"]},
                               expect=201)

    def member(self, prefix: str = "m", *, project: dict[str, Any] | None = None,
               role: str = "PROJECT.MEMBER") -> dict[str, Any]:
        """A new Waldur user in the project's team."""
        user = self.mm.user(prefix)
        self.add_member(user, project=project, role=role)
        self.users[user["uuid"]] = user
        return user

    def add_member(self, user: dict[str, Any], *, project: dict[str, Any] | None = None,
                   role: str = "PROJECT.MEMBER") -> None:
        p = project or self.project
        self.owner.post(f"/api/projects/{p['uuid']}/add_user/", {"user": user["uuid"], "role": role}, expect=201)

    def remove_member(self, user: dict[str, Any], *, project: dict[str, Any] | None = None,
                      role: str = "PROJECT.MEMBER") -> None:
        p = project or self.project
        self.owner.post(f"/api/projects/{p['uuid']}/delete_user/", {"user": user["uuid"], "role": role})

    def offering_user(self, user: dict[str, Any]) -> dict[str, Any] | None:
        found = self.staff.list("/api/marketplace-offering-users/", offering_uuid=self.offering_uuid,
                                user_uuid=user["uuid"])
        return found[0] if found else None

    def set_username(self, user: dict[str, Any], username: str) -> dict[str, Any]:
        """Give the user a cluster login, as the provider does: PATCH the auto-created offering user, or create it."""
        ou = self.offering_user(user)
        if ou is not None:
            return self.staff.call("PATCH", f"/api/marketplace-offering-users/{ou['uuid']}/", json={"username": username})
        return self.staff.post("/api/marketplace-offering-users/", {
            "offering": f"{self.mm.url}/api/marketplace-provider-offerings/{self.offering_uuid}/",
            "user": user["url"], "username": username,
        }, expect=201)

    # ---------------------------------------------------------------- orders
    def order_create(self, name: str, limits: Mapping[str, Any] | None = None, *,
                     project: dict[str, Any] | None = None) -> dict[str, Any]:
        p = project or self.project
        order = self.owner.post("/api/marketplace-orders/", {
            "project": p["url"], "offering": self.public_offering_url, "plan": self.plan_url, "type": "Create",
            "limits": dict(limits) if limits is not None else {"cpu": 5},
            "attributes": {"name": name}, "accepting_terms_of_service": True,
        }, expect=201)
        assert order["state"] == "pending-provider", order["state"]
        return order

    def update_limits(self, resource_uuid: str, limits: Mapping[str, Any]) -> str:
        out = self.owner.post(f"/api/marketplace-resources/{resource_uuid}/update_limits/", {"limits": dict(limits)})
        return out["order_uuid"]

    def switch_plan(self, resource_uuid: str, plan_name: str) -> str:
        public = self.owner.get(f"/api/marketplace-public-offerings/{self.offering_uuid}/")
        plan = next(p["url"] for p in public["plans"] if p["name"] == plan_name)
        return self.owner.post(f"/api/marketplace-resources/{resource_uuid}/switch_plan/", {"plan": plan})["order_uuid"]

    def usage_records(self, resource_uuid: str) -> list[dict[str, Any]]:
        return self.staff.list("/api/marketplace-component-usages/", resource_uuid=resource_uuid)

    def terminate(self, resource_uuid: str) -> str:
        out = self.owner.post(f"/api/marketplace-resources/{resource_uuid}/terminate/", {})
        return out["order_uuid"]

    def order(self, uuid: str) -> dict[str, Any]:
        return self.staff.get(f"/api/marketplace-orders/{uuid}/")

    def resource(self, uuid: str) -> dict[str, Any]:
        return self.staff.get(f"/api/marketplace-provider-resources/{uuid}/")

    def orders(self) -> list[dict[str, Any]]:
        return self.staff.list("/api/marketplace-orders/", offering_uuid=self.offering_uuid)

    def resources(self) -> list[dict[str, Any]]:
        return self.staff.list("/api/marketplace-provider-resources/", offering_uuid=self.offering_uuid)

    def usages(self, resource_uuid: str) -> dict[str, str]:
        """component type -> usage this server holds for the resource (all months; the tests run in one)."""
        return {u["type"]: u["usage"] for u in self.staff.list("/api/marketplace-component-usages/",
                                                               resource_uuid=resource_uuid)}

    def user_usages(self, resource_uuid: str) -> dict[tuple[str, str], str]:
        """(component type, username) -> per-user usage held for the resource."""
        return {(u["component_type"], u["username"]): u["usage"]
                for u in self.staff.list("/api/marketplace-component-user-usages/", resource_uuid=resource_uuid)}

    def associations(self, resource_uuid: str) -> set[str]:
        alloc = self.resource(resource_uuid).get("resource_uuid")
        if not alloc:
            return set()
        return {a["username"] for a in self.staff.list("/api/slurm-associations/", allocation_uuid=alloc)}

    def wait_order(self, uuid: str, pred: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            o = self.order(uuid)
            if pred(o):
                return o
            if time.monotonic() > deadline:
                raise AssertionError(f"order {uuid} never reached the wanted state: {o['state']} {o.get('error_message')}")
            time.sleep(0.3)

    def object_uuids(self) -> set[str]:
        """The uuids of this world's offering, orders, resources and their allocations."""
        out = {self.offering_uuid}
        for o in self.orders():
            out.add(o["uuid"])
        for r in self.resources():
            out.add(r["uuid"])
            if r.get("resource_uuid"):
                out.add(r["resource_uuid"])
        return out

    def agent_env(self, **extra: str) -> dict[str, str]:
        return {"WALDUR_API_URL": self.mm.url + "/api/", "WALDUR_API_TOKEN": self.agent_token,
                "WALDUR_OFFERING_UUID": self.offering_uuid, **extra}


def build_world(mm: Mastermind, components: Sequence[Mapping[str, Any]] = DEFAULT_COMPONENTS,
                plans: Sequence[str] = ("Default",)) -> World:
    s = stamp()
    staff = mm.staff
    provider = staff.post("/api/customers/", {"name": f"HPC centre {s}", "abbreviation": "HPC"}, expect=201)
    staff.post("/api/marketplace-service-providers/", {"customer": provider["url"]}, expect=201)
    category = staff.post("/api/marketplace-categories/", {"title": f"HPC {s}"}, expect=201)
    offering = staff.post("/api/marketplace-provider-offerings/", {
        "name": f"SLURM {s}", "category": category["url"], "customer": provider["url"],
        "type": "Marketplace.Slurm", "shared": True, "billable": True,
        "components": [dict(c) for c in components],
        "plans": [{"name": name, "unit": "month"} for name in plans],
        "secret_options": {"service_provider_can_create_offering_user": True},
    }, expect=201)
    staff.post(f"/api/marketplace-provider-offerings/{offering['uuid']}/activate/", expect=200)
    mm.offerings.append(offering["uuid"])
    agent = mm.user("agent")
    staff.post(f"/api/customers/{provider['uuid']}/add_user/", {"user": agent["uuid"], "role": "CUSTOMER.OWNER"},
               expect=201)
    agent_token = mm.token_of(agent)

    consumer = staff.post("/api/customers/", {"name": f"University {s}", "abbreviation": "UNI"}, expect=201)
    owner_user = mm.user("owner")
    staff.post(f"/api/customers/{consumer['uuid']}/add_user/", {"user": owner_user["uuid"], "role": "CUSTOMER.OWNER"},
               expect=201)
    owner = mm.api_of(owner_user)
    project = owner.post("/api/projects/", {"name": f"proj-{s}", "customer": consumer["url"]}, expect=201)
    public = owner.get(f"/api/marketplace-public-offerings/{offering['uuid']}/")
    return World(mm=mm, offering_uuid=offering["uuid"], public_offering_url=public["url"],
                 plan_url=next(p["url"] for p in public["plans"] if p["name"] == plans[0]), provider_customer=provider, agent_token=agent_token,
                 consumer=consumer, owner=owner, project=project)


# ------------------------------------------------------------------ the server's own record of requests
_UUID_HEX = re.compile(r"[0-9a-f]{32}")
_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) .*"(?P<ua>[^"]*)"\s*$')


class AccessLog:
    """gunicorn's access log: what reached the server, as the server saw it. ``since(mark)`` lists
    (method, path, status) of the agent's requests (its User-Agent) logged after ``mark()``."""

    def __init__(self, path: Path = MM_STATE / "logs" / "gunicorn-access.log") -> None:
        self.path = path

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def since(self, mark: int, *, agent_only: bool = True, world: World | None = None) -> list[tuple[str, str, int]]:
        """``world``: keep only requests that name one of its objects, or that name none (set_usage, lists
        by filter): other agents may use the same server at the same time (never in CI)."""
        with self.path.open("rb") as f:
            f.seek(mark)
            text = f.read().decode("utf-8", "replace")
        out = []
        for line in text.splitlines():
            m = _ACCESS.search(line)
            if m and (not agent_only or m["ua"].startswith(AGENT_UA)):
                out.append((m["method"], m["path"], int(m["status"])))
        if world is not None:
            ours = world.object_uuids()
            out = [e for e in out if not (found := _UUID_HEX.findall(e[1])) or any(u in ours for u in found)]
        return out

    def since_ua(self, mark: int, marker: str) -> list[tuple[str, str, int, str]]:
        """(method, path, status, user agent) of the requests logged after ``mark`` whose User-Agent contains
        ``marker``: one agent process's requests, told apart from other agents' on a shared server."""
        with self.path.open("rb") as f:
            f.seek(mark)
            text = f.read().decode("utf-8", "replace")
        return [(m["method"], m["path"], int(m["status"]), m["ua"]) for line in text.splitlines()
                if (m := _ACCESS.search(line)) and marker in m["ua"]]

    @staticmethod
    def writes(entries: Sequence[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
        return [e for e in entries if e[0] in ("POST", "PUT", "PATCH", "DELETE")]


# ------------------------------------------------------------------ the agent as its own process
@dataclass
class AgentRun:
    returncode: int
    stdout: str
    stderr: str
    summaries: list[dict[str, Any]]

    def summary(self, kind: str) -> dict[str, Any]:
        found = [s for s in self.summaries if s.get("kind") == kind]
        assert found, f"no {kind} summary in the agent's log:\n{self.stderr[-3000:]}"
        return found[-1]


_SUMMARY = re.compile(r"(?P<kind>pull|push|membership) cycle: (?P<fields>(?:\w+=\S+ ?)+)")


def run_agent(env: Mapping[str, str], *args: str, timeout: float = 240) -> AgentRun:
    """``python -m waldur_slurm.main --once ARGS`` with exactly ``env`` (plus PATH and the like)."""
    proc_env = {k: v for k, v in os.environ.items() if not k.startswith(("WALDUR_", "SLURM_", "SENTRY_"))}
    proc_env.update(env)
    r = subprocess.run([sys.executable, "-m", "waldur_slurm.main", "--once", *args], cwd=REPO, env=proc_env,
                       capture_output=True, text=True, timeout=timeout)
    summaries = []
    for line in r.stderr.splitlines():
        m = _SUMMARY.search(line)
        if m:
            fields = dict(kv.split("=", 1) for kv in m["fields"].split())
            summaries.append({"kind": m["kind"], **{k: _num(v) for k, v in fields.items()}})
    return AgentRun(r.returncode, r.stdout, r.stderr, summaries)


class Daemon:
    """The agent as the long-running daemon (no --once), stopped with SIGTERM."""

    def __init__(self, env: Mapping[str, str]) -> None:
        proc_env = {k: v for k, v in os.environ.items() if not k.startswith(("WALDUR_", "SLURM_", "SENTRY_"))}
        proc_env.update(env)
        self.proc = subprocess.Popen([sys.executable, "-m", "waldur_slurm.main"], cwd=REPO, env=proc_env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop(self) -> str:
        """SIGTERM, wait, and the daemon's log."""
        self.proc.terminate()
        try:
            _out, err = self.proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _out, err = self.proc.communicate()
        return err


def _num(v: str) -> Any:
    try:
        return int(v)
    except ValueError:
        return v


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def mastermind() -> Iterator[Mastermind]:
    url = server_url()
    token = staff_token()
    try:
        resp = httpx.get(f"{url}/api/users/me/", headers={"Authorization": f"Token {token}"}, timeout=30)
    except httpx.HTTPError as exc:
        pytest.fail(f"the real Mastermind at {url} does not answer ({exc}); run `{UP}` as root", pytrace=False)
    if resp.status_code != 200 or not resp.json().get("is_staff"):
        pytest.fail(f"the real Mastermind at {url} refused the staff token ({resp.status_code}); run `{UP}`",
                    pytrace=False)
    mm = Mastermind(url, token)
    yield mm
    try:
        left = mm.left_half_way()
        assert not left, f"the real-server tests left work half-way on the server: {left}"
    finally:
        mm.close()


@pytest.fixture
def mm_world(mastermind: Mastermind) -> World:
    return build_world(mastermind)


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, default=str)[:4000]


# ------------------------------------------------------------------ faults made in the server's own database
def psql(sql: str) -> str:
    """Run SQL in the server's PostgreSQL (as its own `waldur` role): how a test makes the REAL server fail."""
    env = {**os.environ, "PGPASSWORD": _mm_conf("MM_PG_PASSWORD", "")}
    r = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", _mm_conf("MM_PG_PORT", "15432"), "-U", "waldur", "-d", "waldur",
         "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, f"psql failed: {r.stderr.strip()}"
    return r.stdout


class ResourceStateFault:
    """A trigger that makes the server's database refuse to move one marketplace resource into the given states
    (Mastermind's integer codes: 2 OK, 3 Erred): the request that tries answers 500 and rolls back."""

    def __init__(self, resource_uuid: str, states: Sequence[int]) -> None:
        self.name = f"wsa_fault_{resource_uuid[:12]}"
        self.uuid = resource_uuid
        self.states = ",".join(str(int(s)) for s in states)

    def __enter__(self) -> ResourceStateFault:
        psql(f"""
            CREATE OR REPLACE FUNCTION {self.name}() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION 'injected test fault: resource % may not enter state %', NEW.uuid, NEW.state; END
            $$ LANGUAGE plpgsql;
            DROP TRIGGER IF EXISTS {self.name} ON marketplace_resource;
            CREATE TRIGGER {self.name} BEFORE UPDATE ON marketplace_resource FOR EACH ROW
              WHEN (replace(OLD.uuid::text, '-', '') = '{self.uuid}' AND NEW.state IN ({self.states})
                    AND OLD.state <> NEW.state)
              EXECUTE FUNCTION {self.name}();
        """)
        return self

    def __exit__(self, *exc: object) -> None:
        psql(f"DROP TRIGGER IF EXISTS {self.name} ON marketplace_resource; DROP FUNCTION IF EXISTS {self.name}();")
