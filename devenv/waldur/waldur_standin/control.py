"""The control API (``/control/...``): what tests and the demo use to build scenarios and look inside.

Not part of Mastermind. No auth unless the server was started with a control token, which then must come in
the ``X-Control-Token`` header. Nothing under ``/control/`` is written to the request log or hit by faults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web

from .http import Recorder, json_response, read_json
from .store import ApiError, Store, month_start, parse_iso


class Holder:
    def __init__(self, store: Store, recorder: Recorder, control_token: str | None = None) -> None:
        self.store = store
        self.recorder = recorder
        self.control_token = control_token


def _user_out(u: dict[str, Any]) -> dict[str, Any]:
    return {"uuid": u["uuid"], "username": u["username"], "token": u["token"], "is_staff": u["is_staff"]}


class Control:
    def __init__(self, holder: Holder) -> None:
        self.h = holder

    @property
    def s(self) -> Store:
        return self.h.store

    def routes(self) -> list[web.RouteDef]:
        c = "/control/"
        return [
            web.get(c + "health", self.health),
            web.post(c + "reset", self.reset),
            web.get(c + "state", self.get_state),
            web.put(c + "state", self.put_state),
            web.post(c + "dump", self.dump_file),
            web.post(c + "load", self.load_file),
            web.post(c + "seed", self.seed),
            web.post(c + "users", self.add_user),
            web.post(c + "users/{uuid}/token", self.user_token),
            web.post(c + "customers", self.add_customer),
            web.post(c + "customers/{uuid}/roles", self.customer_role),
            web.post(c + "projects", self.add_project),
            web.post(c + "projects/{uuid}/members", self.add_member),
            web.post(c + "projects/{uuid}/move", self.move_project),
            web.delete(c + "projects/{uuid}/members/{user}", self.remove_member),
            web.post(c + "offerings", self.add_offering),
            web.patch(c + "offerings/{uuid}", self.patch_offering),
            web.post(c + "offering-users", self.add_offering_user),
            web.post(c + "orders", self.place_order),
            web.post(c + "orders/{uuid}/approve_by_consumer", self.approve_by_consumer),
            web.post(c + "resources/bulk", self.bulk_resources),
            web.patch(c + "resources/{uuid}", self.patch_resource),
            web.post(c + "worker", self.worker),
            web.post(c + "clock", self.clock),
            web.post(c + "billing-periods", self.billing_period),
            web.get(c + "faults", self.list_faults),
            web.post(c + "faults", self.add_fault),
            web.delete(c + "faults", self.clear_faults),
            web.get(c + "overrides", self.list_overrides),
            web.post(c + "overrides", self.add_override),
            web.delete(c + "overrides", self.clear_overrides),
            web.get(c + "requests", self.list_requests),
            web.delete(c + "requests", self.clear_requests),
            web.get(c + "counters", self.counters),
            web.post(c + "config", self.config),
        ]

    def middleware(self) -> Any:
        @web.middleware
        async def mw(request: web.Request, handler: Any) -> web.StreamResponse:
            if not request.path.startswith("/control/"):
                return await handler(request)
            if self.h.control_token and request.headers.get("X-Control-Token") != self.h.control_token:
                return json_response({"detail": "control token required"}, 401)
            try:
                return await handler(request)
            except ApiError as e:
                return json_response(e.body, e.status)
            except (KeyError, ValueError, TypeError) as e:
                return json_response({"detail": f"bad control request: {e!r}"}, 400)

        return mw

    # ------------------------------------------------------------------ state
    async def health(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok", "profile": self.s.profile})

    async def reset(self, request: web.Request) -> web.Response:
        self.h.store = Store(self.s.profile)
        self.h.recorder.entries.clear()
        self.h.recorder.counters.clear()
        self.h.recorder.faults.clear()
        self.h.recorder.overrides.clear()
        return json_response({"status": "reset"})

    async def get_state(self, request: web.Request) -> web.Response:
        return json_response(self.s.dump())

    async def put_state(self, request: web.Request) -> web.Response:
        self.s.load(await read_json(request))
        return json_response({"status": "loaded"})

    async def dump_file(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        Path(body["path"]).write_text(json.dumps(self.s.dump(), indent=1))
        return json_response({"status": "dumped", "path": body["path"]})

    async def load_file(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        self.s.load(json.loads(Path(body["path"]).read_text()))
        return json_response({"status": "loaded"})

    async def seed(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        return json_response(seed_demo(self.s, provider_token=body.get("provider_token")), 201)

    # ------------------------------------------------------------------ people and organisations
    async def add_user(self, request: web.Request) -> web.Response:
        b = await read_json(request)
        u = self.s.add_user(
            b["username"],
            full_name=b.get("full_name", ""),
            email=b.get("email", ""),
            is_staff=bool(b.get("is_staff", False)),
            token=b.get("token"),
            with_token=b.get("with_token", True),
        )
        return json_response(_user_out(u), 201)

    async def user_token(self, request: web.Request) -> web.Response:
        b = await read_json(request)
        u = self.s.get(self.s.users, request.match_info["uuid"], "user")
        if "expired" in b:
            u["token_expired"] = bool(b["expired"])
        return json_response(_user_out(u))

    async def add_customer(self, request: web.Request) -> web.Response:
        b = await read_json(request)
        c = self.s.add_customer(b["name"], abbreviation=b.get("abbreviation", ""), email=b.get("email", ""))
        for uid in b.get("owners", []):
            self.s.add_customer_role(c["uuid"], uid, "owner")
        return json_response({"uuid": c["uuid"], "name": c["name"]}, 201)

    async def customer_role(self, request: web.Request) -> web.Response:
        b = await read_json(request)
        self.s.add_customer_role(request.match_info["uuid"], b["user_uuid"], b.get("role", "owner"))
        return json_response({"status": "ok"}, 201)

    async def add_project(self, request: web.Request) -> web.Response:
        b = await read_json(request)
        p = self.s.add_project(b["customer_uuid"], b["name"], description=b.get("description", ""))
        return json_response({"uuid": p["uuid"], "name": p["name"]}, 201)

    async def move_project(self, request: web.Request) -> web.Response:
        b = await read_json(request)
        self.s.move_project(request.match_info["uuid"], b["customer_uuid"])
        return json_response({"status": "ok"})

    async def add_member(self, request: web.Request) -> web.Response:
        b = await read_json(request)
        self.s.add_team_member(request.match_info["uuid"], b["user_uuid"], b.get("role", "member"))
        return json_response({"status": "ok"}, 201)

    async def remove_member(self, request: web.Request) -> web.Response:
        self.s.remove_team_member(request.match_info["uuid"], request.match_info["user"])
        return json_response({"status": "ok"})

    # ------------------------------------------------------------------ offerings and orders
    async def add_offering(self, request: web.Request) -> web.Response:
        b = await read_json(request)
        off = self.s.add_offering(
            b["customer_uuid"],
            b.get("name", "SLURM cluster"),
            type=b.get("type", "Marketplace.Slurm"),
            components=b.get("components"),
            plans=b.get("plans"),
            plugin_options=b.get("plugin_options"),
            secret_options=b.get("secret_options"),
            state=b.get("state", "Active"),
            backend_id=b.get("backend_id", ""),
        )
        return json_response({"uuid": off["uuid"], "plans": off["plans"], "components": off["components"]}, 201)

    async def patch_offering(self, request: web.Request) -> web.Response:
        off = self.s.update_offering(request.match_info["uuid"], await read_json(request))
        return json_response({"uuid": off["uuid"]})

    async def add_offering_user(self, request: web.Request) -> web.Response:
        b = await read_json(request)
        off = self.s.get(self.s.offerings, b["offering_uuid"], "offering")
        ou = self.s.create_offering_user(off, self.s.get(self.s.users, b["user_uuid"], "user")["uuid"], b.get("username"), by_provider=False)
        if "state" in b and self.s.profile == "8":
            ou["state"] = b["state"]
        return json_response({"uuid": ou["uuid"]}, 201)

    async def place_order(self, request: web.Request) -> web.Response:
        b = await read_json(request)
        order = self.s.place_order(
            offering_uuid=b["offering_uuid"],
            type=b.get("type", "Create"),
            project_uuid=b.get("project_uuid"),
            resource_uuid=b.get("resource_uuid"),
            plan_uuid=b.get("plan_uuid"),
            limits=b.get("limits"),
            attributes=b.get("attributes"),
            state=b.get("state", "pending-provider"),
            created_by=b.get("created_by"),
        )
        return json_response({"uuid": order["uuid"], "resource_uuid": order["resource_uuid"], "state": order["state"]}, 201)

    async def approve_by_consumer(self, request: web.Request) -> web.Response:
        order = self.s.approve_by_consumer(request.match_info["uuid"])
        return json_response({"uuid": order["uuid"], "state": order["state"]})

    async def bulk_resources(self, request: web.Request) -> web.Response:
        b = await read_json(request)
        ids = self.s.bulk_resources(
            offering_uuid=b["offering_uuid"],
            project_uuid=b["project_uuid"],
            count=int(b.get("count", 1)),
            state=b.get("state", "OK"),
            name_prefix=b.get("name_prefix", "res"),
            backend_ids=b.get("backend_ids"),
            limits=b.get("limits"),
        )
        return json_response({"uuids": ids}, 201)

    async def patch_resource(self, request: web.Request) -> web.Response:
        b = await read_json(request)
        res = self.s.get(self.s.resources, request.match_info["uuid"], "resource")
        for key in ("state", "backend_id", "limits", "end_date", "name", "restrict_member_access", "paused", "downscaled"):
            if key in b:
                res[key] = b[key]
        self.s._touch(res)
        return json_response({"uuid": res["uuid"], "state": res["state"]})

    # ------------------------------------------------------------------ server behaviour
    async def worker(self, request: web.Request) -> web.Response:
        b = await read_json(request)
        self.s.set_worker(bool(b.get("up", True)))
        return json_response({"worker_up": self.s.worker_up, "pending_tasks": len(self.s.pending_tasks)})

    async def clock(self, request: web.Request) -> web.Response:
        b = await read_json(request)
        self.s.clock.set(parse_iso(b["now"]) if b.get("now") else None, frozen=bool(b.get("frozen", False)))
        return json_response({"now": self.s.now_iso()})

    async def billing_period(self, request: web.Request) -> web.Response:
        b = await read_json(request)
        period = b["period"][:7]
        month_start(parse_iso(period + "-01T00:00:00"))  # validates
        if b.get("closed", True):
            self.s.closed_periods.add(period)
        else:
            self.s.closed_periods.discard(period)
        return json_response({"closed": sorted(self.s.closed_periods)})

    async def list_faults(self, request: web.Request) -> web.Response:
        return json_response([f.as_dict() for f in self.h.recorder.faults])

    async def add_fault(self, request: web.Request) -> web.Response:
        return json_response(self.h.recorder.add_fault(await read_json(request)).as_dict(), 201)

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.h.recorder.faults.clear()
        return json_response({"status": "cleared"})

    async def list_overrides(self, request: web.Request) -> web.Response:
        return json_response([o.as_dict() for o in self.h.recorder.overrides])

    async def add_override(self, request: web.Request) -> web.Response:
        return json_response(self.h.recorder.add_override(await read_json(request)).as_dict(), 201)

    async def clear_overrides(self, request: web.Request) -> web.Response:
        self.h.recorder.overrides.clear()
        return json_response({"status": "cleared"})

    async def list_requests(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        return json_response([e for e in self.h.recorder.entries if e["seq"] > since])

    async def clear_requests(self, request: web.Request) -> web.Response:
        self.h.recorder.entries.clear()
        self.h.recorder.counters.clear()
        return json_response({"status": "cleared"})

    async def counters(self, request: web.Request) -> web.Response:
        return json_response(dict(self.h.recorder.counters))

    async def config(self, request: web.Request) -> web.Response:
        b = await read_json(request)
        if "log_bodies" in b:
            self.h.recorder.log_bodies = bool(b["log_bodies"])
        return json_response({"log_bodies": self.h.recorder.log_bodies})


DEFAULT_COMPONENTS: list[dict[str, Any]] = [
    {"type": "cpu", "name": "CPU", "measured_unit": "k-Hours", "billing_type": "usage", "unit_factor": 60000},
    {"type": "mem", "name": "RAM", "measured_unit": "gb-Hours", "billing_type": "usage", "unit_factor": 61440},
    {"type": "gres/gpu", "name": "GPU", "measured_unit": "gpu-Hours", "billing_type": "usage", "unit_factor": 60},
]


def seed_demo(store: Store, provider_token: str | None = None) -> dict[str, Any]:
    """A provider organisation with an owner token and a SLURM offering, and a consumer with a project."""
    owner = store.add_user("provider-owner", full_name="Provider Owner", token=provider_token)
    provider = store.add_customer("HPC Provider")
    store.add_customer_role(provider["uuid"], owner["uuid"], "owner")
    offering = store.add_offering(provider["uuid"], "SLURM cluster", components=DEFAULT_COMPONENTS)
    consumer = store.add_customer("Research Org")
    project = store.add_project(consumer["uuid"], "Project Alpha")
    pi = store.add_user("pi-alice", full_name="Alice Pi")
    member = store.add_user("bob", full_name="Bob Member")
    store.add_team_member(project["uuid"], pi["uuid"], "admin")
    store.add_team_member(project["uuid"], member["uuid"], "member")
    return {
        "provider_token": owner["token"],
        "provider_customer_uuid": provider["uuid"],
        "offering_uuid": offering["uuid"],
        "plan_uuid": offering["plans"][0],
        "consumer_customer_uuid": consumer["uuid"],
        "project_uuid": project["uuid"],
        "users": {u["username"]: u["uuid"] for u in (pi, member)},
    }
