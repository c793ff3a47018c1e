"""Run the stand-in inside a test process and drive it through its control API.

    with StandIn(profile="8") as w:
        offering = w.setup_offering()                 # provider-owned Marketplace.Slurm offering
        project = w.add_project(w.add_customer("Org"), "P1")
        alice = w.add_user("alice")
        w.add_team_member(project, alice["uuid"], "admin")
        order = w.place_order(offering, project, limits={"cpu": 100})
        client = WaldurClient(api_url=w.url, token=w.provider_token, offering_uuid=offering, ...)
        ...
        assert w.count("POST", "/api/marketplace-orders/{uuid}/approve_by_provider/") == 1

The server runs on its own event loop in a background thread, on a free port of 127.0.0.1. Every helper is a
real HTTP call to ``/control/...``; those calls are not in the request log, so ``requests()`` shows only what
the code under test sent to ``/api/``.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import threading
from typing import Any

import httpx
from aiohttp import web

from .app import create_app
from .control import DEFAULT_COMPONENTS


class StandIn:
    def __init__(
        self, profile: str = "8", *, log_bodies: bool = False, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.profile = profile
        self.ssl_context = ssl_context
        self.host = host
        self._log_bodies = log_bodies
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.url = ""
        self.provider_token = ""
        self.provider_user_uuid = ""
        self.provider_customer_uuid = ""
        self._http: httpx.Client | None = None
        self._staff_token: str | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> StandIn:
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                app = create_app(self.profile, log_bodies=self._log_bodies)
                self.app = app
                runner = web.AppRunner(app, access_log=None)
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, self.host, 0, ssl_context=self.ssl_context)
                loop.run_until_complete(site.start())
                self._runner = runner
                server = site._server
                assert server is not None and server.sockets
                self.port = server.sockets[0].getsockname()[1]
            except BaseException as e:  # surface start-up errors in the calling thread
                errors.append(e)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"waldur-standin-{self.profile}", daemon=True)
        self._thread.start()
        started.wait(30)
        if errors:
            raise errors[0]
        self.url = f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"
        # The control client talks only to this in-process server, whose test certificate it need not verify.
        self._http = httpx.Client(base_url=self.url, timeout=30.0, verify=False)
        provider = self.add_user("provider-owner", full_name="Provider Owner")
        self.provider_token = provider["token"]
        self.provider_user_uuid = provider["uuid"]
        self.provider_customer_uuid = self.add_customer("HPC Provider", owners=[provider["uuid"]])
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop = None

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ control API
    def control(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        assert self._http is not None, "StandIn is not started"
        resp = self._http.request(method, f"/control/{path}", json=json, params=params)
        if resp.status_code >= 400:
            raise RuntimeError(f"control {method} {path} -> {resp.status_code}: {resp.text}")
        return resp.json()

    def add_user(self, username: str, *, full_name: str = "", email: str = "", is_staff: bool = False, token: str | None = None) -> dict[str, Any]:
        """A user with an API token: returns {"uuid", "username", "token", "is_staff"}."""
        body = {"username": username, "full_name": full_name, "email": email, "is_staff": is_staff}
        if token:
            body["token"] = token
        result: dict[str, Any] = self.control("POST", "users", body)
        return result

    def set_resource_flag(self, resource_uuid: str, flag: str, value: bool, *, token: str | None = None) -> int:
        """POST the 8.x staff action ``set_<flag>`` through the served API (a staff user is made on first use);
        returns the HTTP status."""
        assert self._http is not None, "StandIn is not started"
        if token is None:
            if self._staff_token is None:
                self._staff_token = self.add_user(f"staff-{secrets.token_hex(3)}", is_staff=True)["token"]
            token = self._staff_token
        resp = self._http.post(f"/api/marketplace-provider-resources/{resource_uuid}/set_{flag}/",
                               json={flag: value}, headers={"Authorization": f"Token {token}"})
        return resp.status_code

    def expire_token(self, user_uuid: str, expired: bool = True) -> None:
        self.control("POST", f"users/{user_uuid}/token", {"expired": expired})

    def add_customer(self, name: str, *, owners: list[str] | None = None) -> str:
        result: str = self.control("POST", "customers", {"name": name, "owners": owners or []})["uuid"]
        return result

    def add_customer_role(self, customer_uuid: str, user_uuid: str, role: str = "owner") -> None:
        """role: "owner" or "service_manager"."""
        self.control("POST", f"customers/{customer_uuid}/roles", {"user_uuid": user_uuid, "role": role})

    def add_project(self, customer_uuid: str, name: str, *, description: str = "") -> str:
        result: str = self.control("POST", "projects", {"customer_uuid": customer_uuid, "name": name, "description": description})["uuid"]
        return result

    def move_project(self, project_uuid: str, customer_uuid: str) -> None:
        """What Waldur's ``move_project`` does: the project (resources, orders) changes customer."""
        self.control("POST", f"projects/{project_uuid}/move", {"customer_uuid": customer_uuid})

    def add_team_member(self, project_uuid: str, user_uuid: str, role: str = "member") -> None:
        """role: "admin", "manager" or "member". Members of a project with live resources get an offering user."""
        self.control("POST", f"projects/{project_uuid}/members", {"user_uuid": user_uuid, "role": role})

    def remove_team_member(self, project_uuid: str, user_uuid: str) -> None:
        self.control("DELETE", f"projects/{project_uuid}/members/{user_uuid}")

    def setup_offering(
        self,
        components: list[dict[str, Any]] | None = None,
        *,
        name: str = "SLURM cluster",
        plugin_options: dict[str, Any] | None = None,
        secret_options: dict[str, Any] | None = None,
        customer_uuid: str | None = None,
    ) -> str:
        """A Marketplace.Slurm offering of the provider customer with one plan; returns its UUID.

        ``components`` are offering-component dicts (``type``, ``name``, ``billing_type``, ``measured_unit``,
        ``limit_amount``, ``unit_factor``, ...); default: cpu, mem, gres/gpu, all usage-based.
        """
        body = {
            "customer_uuid": customer_uuid or self.provider_customer_uuid,
            "name": name,
            "components": DEFAULT_COMPONENTS if components is None else components,
            "plugin_options": plugin_options or {},
            "secret_options": secret_options or {},
        }
        result: str = self.control("POST", "offerings", body)["uuid"]
        return result

    def update_offering(self, offering_uuid: str, **changes: Any) -> None:
        """name, state, type, backend_id, plugin_options (merged), secret_options (merged), managers (user uuids)."""
        self.control("PATCH", f"offerings/{offering_uuid}", changes)

    def add_offering_user(self, offering_uuid: str, user_uuid: str, username: str | None = None, state: str | None = None) -> str:
        body: dict[str, Any] = {"offering_uuid": offering_uuid, "user_uuid": user_uuid, "username": username}
        if state:
            body["state"] = state
        result: str = self.control("POST", "offering-users", body)["uuid"]
        return result

    def place_order(
        self,
        offering_uuid: str,
        project_uuid: str | None = None,
        *,
        type: str = "Create",
        resource_uuid: str | None = None,
        limits: dict[str, Any] | None = None,
        attributes: dict[str, Any] | None = None,
        name: str | None = None,
        state: str = "pending-provider",
    ) -> dict[str, Any]:
        """Place an order as a consumer would: returns {"uuid", "resource_uuid", "state"}.

        Create needs ``project_uuid``; Update and Terminate need ``resource_uuid`` (an OK resource).
        ``state="pending-consumer"`` leaves it for ``approve_by_consumer``.
        """
        attrs = dict(attributes or {})
        if name:
            attrs["name"] = name
        body = {
            "offering_uuid": offering_uuid,
            "project_uuid": project_uuid,
            "type": type,
            "resource_uuid": resource_uuid,
            "limits": limits,
            "attributes": attrs,
            "state": state,
        }
        result: dict[str, Any] = self.control("POST", "orders", body)
        return result

    def approve_by_consumer(self, order_uuid: str) -> None:
        self.control("POST", f"orders/{order_uuid}/approve_by_consumer")

    def create_resources(
        self,
        offering_uuid: str,
        project_uuid: str,
        count: int = 1,
        *,
        state: str = "OK",
        name_prefix: str = "res",
        backend_ids: list[str] | None = None,
        limits: dict[str, Any] | None = None,
    ) -> list[str]:
        """Resources whose Create order is already done (plan period open, offering users created)."""
        body = {
            "offering_uuid": offering_uuid,
            "project_uuid": project_uuid,
            "count": count,
            "state": state,
            "name_prefix": name_prefix,
            "backend_ids": backend_ids,
            "limits": limits,
        }
        result: list[str] = self.control("POST", "resources/bulk", body)["uuids"]
        return result

    def patch_resource(self, resource_uuid: str, **changes: Any) -> None:
        self.control("PATCH", f"resources/{resource_uuid}", changes)

    def set_worker(self, up: bool) -> None:
        """2024 profile: stop/start the server task that creates allocations after approval."""
        self.control("POST", "worker", {"up": up})

    def set_clock(self, now: str | None, *, frozen: bool = False) -> None:
        """Shift (or freeze) the server clock to an ISO timestamp; None goes back to real time."""
        self.control("POST", "clock", {"now": now, "frozen": frozen})

    def close_billing_period(self, period: str, closed: bool = True) -> None:
        """period "YYYY-MM": set_usage into it then answers 400 "Billing period is closed."."""
        self.control("POST", "billing-periods", {"period": period, "closed": closed})

    def state(self) -> dict[str, Any]:
        """The whole server state (collections keyed by 32-hex UUID)."""
        result: dict[str, Any] = self.control("GET", "state")
        return result

    def load_state(self, data: dict[str, Any]) -> None:
        self.control("PUT", "state", data)

    def inject_fault(
        self,
        path: str = "*",
        *,
        kind: str = "status",
        status: int = 503,
        count: int | None = 1,
        delay: float = 0.0,
        when: str = "before",
        method: str | None = None,
        skip: int = 0,
    ) -> dict[str, Any]:
        """The next ``count`` matching /api/ requests (None = all) fail, after ``skip`` that pass untouched.

        ``path`` is a glob matched against the request path or the route template
        (e.g. ``"/api/marketplace-orders/*/approve_by_provider/"`` or ``"*"``).
        kind ``status``: answer ``status`` (nginx-style page for 502/503/504). ``when="after"`` applies the
        request first (an ambiguous failure). kind ``drop``: close the connection without answering (before or
        after applying). kind ``delay``: sleep ``delay`` seconds, then handle the request normally (a client
        timeout; the server still applies it); with ``when="after"`` the request is applied first and answered
        ``delay`` seconds late (the server did the work before the client gave up).
        """
        body = {"path": path, "kind": kind, "status": status, "count": count, "delay": delay, "when": when, "method": method,
                "skip": skip}
        result: dict[str, Any] = self.control("POST", "faults", body)
        return result

    def clear_faults(self) -> None:
        self.control("DELETE", "faults")

    def add_override(
        self, path: str = "*", *, set: dict[str, Any] | None = None, remove: list[str] | None = None, count: int | None = None, method: str | None = None
    ) -> dict[str, Any]:
        """Rewrite JSON answers of matching routes (each object of a list): add/replace keys, drop keys."""
        body = {"path": path, "set": set or {}, "remove": remove or [], "count": count, "method": method}
        result: dict[str, Any] = self.control("POST", "overrides", body)
        return result

    def clear_overrides(self) -> None:
        self.control("DELETE", "overrides")

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        """The /api/ request log: {"seq", "method", "path", "query", "route", "status", "user", "fault", ...}."""
        result: list[dict[str, Any]] = self.control("GET", "requests", params={"since": since})
        return result

    def clear_requests(self) -> None:
        self.control("DELETE", "requests")

    def count(self, method: str | None = None, route: str | None = None) -> int:
        """Number of logged /api/ requests, optionally by method and route template (or path glob)."""
        import fnmatch

        n = 0
        for e in self.requests():
            if method and e["method"] != method:
                continue
            if route and not (e["route"] == route or fnmatch.fnmatchcase(e["path"], route)):
                continue
            n += 1
        return n

    def set_log_bodies(self, enabled: bool) -> None:
        self.control("POST", "config", {"log_bodies": enabled})

    def reset(self) -> None:
        """Forget everything (state, log, faults) and recreate the provider owner and customer."""
        self.control("POST", "reset")
        self._staff_token = None
        provider = self.add_user("provider-owner", full_name="Provider Owner")
        self.provider_token = provider["token"]
        self.provider_user_uuid = provider["uuid"]
        self.provider_customer_uuid = self.add_customer("HPC Provider", owners=[provider["uuid"]])
