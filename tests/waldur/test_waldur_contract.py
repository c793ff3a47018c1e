"""Contract tests: the stand-in serves only what the real servers serve, in the shapes the SDK parses.

A scenario drives every route of the stand-in (the facade plus raw calls for the routes the facade does not
use), with request and response bodies logged. Then, for each profile:

- every route the stand-in registers was exercised, and answered 2xx at least once;
- every (method, route template, status) it answered is in the 8.0.5 OpenAPI schema (profile 8) or in the
  2024 document's endpoint table (profile 2024; a few routes the document did not exercise are listed as
  "assumed" in tests/data with the reason). A 2xx status must be the documented one; error statuses must be
  documented or one of DRF's generic errors (the schema documents almost no error statuses);
- profile 8: every 2xx body parses with waldur-api-client's own parser for that endpoint (the generated
  ``_parse_response``, i.e. ``OrderDetails.from_dict``, ``Resource.from_dict``, ``ProjectUser.from_dict``, ...);
- profile 2024: the same parsers fail exactly where the 2024 document says the 8.1.3 client fails
  (approve_by_provider: JSON decode of the empty body; team: KeyError 'offering_user_state'), and nowhere else.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import re
from decimal import Decimal
from functools import lru_cache
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import waldur_api_client
from waldur_api_client import AuthenticatedClient
from waldur_standin.app import create_app
from waldur_standin.control import DEFAULT_COMPONENTS
from waldur_standin.testing import StandIn

from tests.support import waldur_extras as extras
from tests.support.waldur import make_client

DATA = Path(__file__).resolve().parents[1] / "data"
FULL_SCHEMA = Path("/work/shared/waldur-openapi-schema.yaml")
GENERIC_ERRORS = frozenset({400, 401, 403, 404, 405, 409})
SDK_PACKAGES = (
    "marketplace_orders",
    "marketplace_provider_resources",
    "marketplace_provider_offerings",
    "marketplace_offering_users",
    "marketplace_component_usages",
    "marketplace_component_user_usages",
    "users",
    "version",
    "slurm_associations",
)


# ---------------------------------------------------------------------- data
@lru_cache
def schema_extract() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "waldur-openapi-extract.json").read_text())
    return data


@lru_cache
def table_2024() -> dict[tuple[str, str], list[int]]:
    data = json.loads((DATA / "waldur-2024-endpoints.json").read_text())
    table: dict[tuple[str, str], list[int]] = {}
    for row in data["endpoints"] + data["assumed"]:
        table[(row["method"], row["path"])] = row["statuses"]
    return table


# DRF's router root: every Waldur release serves it (the facade's flavour probe), but its view sets
# ``schema = None``, so the OpenAPI schema never lists it.
ROUTER_ROOT_8 = {("GET", "/api/"): [200]}


def documented_statuses(profile: str, method: str, route: str) -> list[int] | None:
    if profile == "8":
        if (method, route) in ROUTER_ROOT_8:
            return ROUTER_ROOT_8[(method, route)]
        op = schema_extract()["paths"].get(route, {}).get(method)
        return None if op is None else list(op["responses"])
    return table_2024().get((method, route))


@lru_cache
def sdk_modules() -> dict[tuple[str, str], ModuleType]:
    """(METHOD, path template) -> the generated endpoint module, read from the SDK's own sources."""
    root = Path(waldur_api_client.__file__).parent / "api"
    found: dict[tuple[str, str], ModuleType] = {}
    for package in SDK_PACKAGES:
        for src in sorted((root / package).glob("*.py")):
            text = src.read_text()
            method = re.search(r'"method": "(\w+)"', text)
            url = re.search(r'"url": f?"([^"]+)"', text)
            if method and url:
                key = (method.group(1).upper(), url.group(1))
                found[key] = importlib.import_module(f"waldur_api_client.api.{package}.{src.stem}")
    return found


def parse_with_sdk(method: str, route: str, status: int, body: str) -> Any:
    module = sdk_modules()[(method, route)]
    response = httpx.Response(status, content=body.encode(), headers={"content-type": "application/json"})
    client = AuthenticatedClient(base_url="http://contract.invalid", token="x")
    return module._parse_response(client=client, response=response)


# ---------------------------------------------------------------------- the scenario
def drive_everything(w: StandIn) -> None:
    """Every route of the profile, through the facade where it has a method, raw HTTP otherwise."""
    w.set_log_bodies(True)
    # cpu is limit-type: the real servers take order limits only for limit-type components (and the 2024 server
    # fails to complete an Update when the resource's limits name another kind).
    offering = w.setup_offering([{**c, "billing_type": "limit"} if c["type"] == "cpu" else c for c in DEFAULT_COMPONENTS])
    client = make_client(w, offering)
    raw = httpx.Client(base_url=w.url, headers={"Authorization": f"Token {w.provider_token}"}, timeout=10)
    v8 = w.profile == "8"
    project = w.add_project(w.add_customer("Consumer Org"), "Project A")
    alice, bob = w.add_user("alice"), w.add_user("bob")
    w.add_team_member(project, alice["uuid"], "admin")
    w.add_team_member(project, bob["uuid"], "member")

    assert client.flavour == w.profile
    if client.flavour == "8":
        client.server_version()
    else:  # the Oct 2024 server shows its version to staff only: 403 to the provider
        assert raw.get("/api/version/").status_code == 403
        staff = w.add_user(f"staff-{w.profile}", is_staff=True)["token"]
        assert raw.get("/api/version/", headers={"Authorization": f"Token {staff}"}).json() == {"version": "unknown"}
    client.whoami()
    raw.head("/api/users/me/")
    client.get_offering()
    client.create_component("billing", "Billing", "usage", measured_unit="units", limit_amount=100, unit_factor=1)
    billing = client.get_offering().components_by_type()["billing"]
    client.update_component(billing.uuid, "billing", "Billing units", "usage")
    client.remove_component(billing.uuid)

    # Create: approve, backend id, limits, complete; a second approve gives 409
    create = w.place_order(offering, project, limits={"cpu": 100})
    order = client.approve_order(create["uuid"])
    client.approve_order(create["uuid"])
    res = create["resource_uuid"]
    client.set_backend_id(res, "hpc_alloc_a")
    client.set_limits(res, {"cpu": 100})
    extras.set_backend_metadata(client, res, {"slurm_account": "hpc_alloc_a"})
    client.complete_order(order)
    client.mark_order_done(order.uuid)  # 409 + re-read
    raw.head("/api/marketplace-orders/", params={"offering_uuid": offering})
    client.list_orders(states=["done"])
    raw.get(f"/api/marketplace-provider-resources/{res}/", params={"field": ["uuid", "state"]})

    # reject, erred, executing
    rejected = w.place_order(offering, project)
    client.reject_order(rejected["uuid"], "no capacity")
    failing = w.place_order(offering, project)
    client.approve_order(failing["uuid"])
    client.mark_order_erred(failing["uuid"], "sacctmgr failed", "Traceback")
    assert raw.post(f"/api/marketplace-orders/{failing['uuid']}/set_state_executing/").status_code == 200

    # resources
    client.list_resources()
    raw.head("/api/marketplace-provider-resources/", params={"offering_uuid": offering})
    client.get_resource(res)
    client.team(res)
    client.plan_periods(res)
    client.mark_resource_erred(res, "test")
    client.mark_resource_ok(res)
    if v8:
        assert raw.post(f"/api/marketplace-provider-resources/{res}/set_state_ok/").status_code == 200
        assert raw.post(f"/api/marketplace-provider-resources/{res}/refresh_last_sync/").status_code == 200
        assert raw.post(f"/api/marketplace-orders/{order.uuid}/set_backend_id/", json={"backend_id": "o1"}).status_code == 200
        # the enforcement flags: staff only ("Requires staff permissions"); the provider's token is refused
        for flag in ("paused", "downscaled", "restrict_member_access"):
            assert raw.post(f"/api/marketplace-provider-resources/{res}/set_{flag}/", json={flag: True}).status_code == 403
            assert w.set_resource_flag(res, flag, True) == 200
        flags = client.get_resource(res)
        assert (flags.paused, flags.downscaled, flags.restrict_member_access) == (True, True, True)
        for flag in ("paused", "downscaled", "restrict_member_access"):
            assert w.set_resource_flag(res, flag, False) == 200
    else:
        assert raw.get(f"/api/marketplace-provider-resources/{res}/details/").status_code == 200
        client.create_association(res, "alice_c")
        client.create_association(res, "alice_c")
        extras.list_associations(client, res)
        raw.head("/api/slurm-associations/")
        client.delete_association(res, "alice_c")

    # offering users
    users = client.list_offering_users()
    raw.head("/api/marketplace-offering-users/", params={"offering_uuid": offering})
    alice_ou = next(u for u in users if u.user_username == "alice")
    assert raw.get(f"/api/marketplace-offering-users/{alice_ou.uuid}/").status_code == 200
    extras.create_offering_user(client, w.add_user("carol")["uuid"], "carol_c")
    if v8:
        extras.offering_user_action(client, alice_ou.uuid, "begin_creating")
        extras.set_offering_user_username(client, alice_ou.uuid, "alice_c")
        bob_ou = next(u for u in users if u.user_username == "bob")
        for action in ("set_pending_account_linking", "set_validation_complete", "request_deletion", "set_deleting",
                       "set_error_deleting", "set_deleting", "set_deleted"):
            extras.offering_user_action(client, bob_ou.uuid, action, comment="contract")
        dave = w.add_user("dave")
        w.add_team_member(project, dave["uuid"])
        dave_ou = next(u for u in client.list_offering_users() if u.user_username == "dave")
        for action in ("set_pending_additional_validation", "set_error_creating", "set_ok"):
            extras.offering_user_action(client, dave_ou.uuid, action)
    else:
        extras.set_offering_user_username(client, alice_ou.uuid, "alice_c")

    # usage
    today = dt.datetime.now(dt.timezone.utc).date()
    client.set_usage(res, {"cpu": Decimal("12.5"), "mem": 300})
    usages = client.list_component_usages(today)
    raw.head("/api/marketplace-component-usages/")
    cpu = next(u for u in usages if u.type == "cpu")
    assert raw.get(f"/api/marketplace-component-usages/{cpu.uuid}/").status_code == 200
    client.set_user_usages(cpu.uuid, {"alice_c": Decimal("10"), "bob_c": Decimal("2.5")})
    assert raw.post(f"/api/marketplace-component-usages/{cpu.uuid}/set_user_usage/", json={"username": "carol_c", "usage": "1.00"}).status_code == 201
    client.list_user_usages(today)
    raw.head("/api/marketplace-component-user-usages/")
    with pytest.raises(Exception):
        client.set_usage(res, {"nope": 1})  # a 400 from set_usage

    # Update and Terminate
    upd = w.place_order(offering, type="Update", resource_uuid=res, limits={"cpu": 200})
    client.complete_order(client.approve_order(upd["uuid"]))
    term = w.place_order(offering, type="Terminate", resource_uuid=res)
    client.complete_order(client.approve_order(term["uuid"]))
    raw.close()
    client.close()


@lru_cache
def driven_log(profile: str) -> tuple[str, list[dict[str, Any]]]:
    """Run the scenario once per profile per test session; the request log is what the tests inspect."""
    with StandIn(profile=profile) as w:
        drive_everything(w)
        return profile, w.requests()


@pytest.fixture(params=["8", "2024"])
def driven(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return driven_log(request.param)


def registered_routes(profile: str) -> set[tuple[str, str]]:
    app = create_app(profile)
    out = set()
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else ""
        if canonical.startswith("/api/"):
            out.add((route.method, canonical))
    return out


# ---------------------------------------------------------------------- the tests
def test_the_scenario_exercised_every_route(driven: Any) -> None:
    profile, log = driven
    ok = {(e["method"], e["route"]) for e in log if e["route"] and 200 <= (e["status"] or 0) < 300}
    # A route the real server has but only refuses (documented with error statuses only) never answers 2xx.
    refusing = {key for key, statuses in table_2024().items() if all(s >= 400 for s in statuses)} if profile == "2024" else set()
    missing = registered_routes(profile) - ok - refusing
    assert not missing, f"routes never answered 2xx in the scenario: {sorted(missing)}"


def test_every_route_and_status_served_is_documented(driven: Any) -> None:
    profile, log = driven
    problems = []
    for e in log:
        if e["route"] is None:  # unmatched: Django's 404 page, which every server gives for unknown routes
            assert e["status"] == 404 and e["content_type"] == "text/html"
            continue
        documented = documented_statuses(profile, e["method"], e["route"])
        if documented is None:
            problems.append(f"{e['method']} {e['route']} is not in the {profile} reference")
        elif e["status"] not in documented and not (e["status"] in GENERIC_ERRORS and e["status"] >= 400):
            problems.append(f"{e['method']} {e['route']} answered {e['status']}, documented {documented}")
    assert not problems, "\n".join(problems)


def test_every_8x_body_parses_with_the_sdk_models() -> None:
    _, log = driven_log("8")
    parsed_types: dict[str, set[str]] = {}
    for e in log:
        if e["route"] is None or not 200 <= e["status"] < 300 or e["method"] == "HEAD":
            continue
        if (e["method"], e["route"]) in ROUTER_ROOT_8:
            continue  # the flavour probe: no SDK function exists for the router root (its view has no schema)
        result = parse_with_sdk(e["method"], e["route"], e["status"], e["response_body"])
        items = result if isinstance(result, list) else [result]
        parsed_types.setdefault(e["route"], set()).update(type(x).__name__ for x in items)
    # the objects the agent depends on really went through the SDK's models
    assert parsed_types["/api/marketplace-orders/"] == {"OrderDetails"}
    assert parsed_types["/api/marketplace-provider-resources/"] == {"Resource"}
    assert parsed_types["/api/marketplace-provider-offerings/{uuid}/"] == {"ProviderOfferingDetails"}
    assert parsed_types["/api/marketplace-provider-resources/{uuid}/team/"] == {"ProjectUser"}
    assert parsed_types["/api/marketplace-provider-resources/{uuid}/plan_periods/"] == {"ResourcePlanPeriod"}
    assert parsed_types["/api/marketplace-offering-users/"] == {"OfferingUser"}
    assert parsed_types["/api/marketplace-component-usages/"] == {"ComponentUsage"}
    assert parsed_types["/api/marketplace-component-user-usages/"] == {"ComponentUserUsage"}
    assert parsed_types["/api/marketplace-orders/{uuid}/approve_by_provider/"] == {"OrderInfoResponse"}
    assert parsed_types["/api/marketplace-provider-resources/{uuid}/set_backend_id/"] == {"Status"}
    for flag in ("paused", "downscaled", "restrict_member_access"):
        assert parsed_types[f"/api/marketplace-provider-resources/{{uuid}}/set_{flag}/"] == {"Status"}


def test_2024_bodies_break_the_8x_sdk_exactly_where_the_document_says() -> None:
    _, log = driven_log("2024")
    failures: dict[str, set[str]] = {}
    for e in log:
        if e["route"] is None or not 200 <= e["status"] < 300 or e["method"] == "HEAD":
            continue
        if (e["method"], e["route"]) not in sdk_modules():
            continue  # slurm-remote: no SDK function exists for it in any version
        try:
            parse_with_sdk(e["method"], e["route"], e["status"], e["response_body"])
        except Exception as exc:  # noqa: BLE001 - the kind of failure is what is compared
            failures.setdefault(e["route"], set()).add(f"{type(exc).__name__}: {exc}")
    assert failures == {
        "/api/marketplace-orders/{uuid}/approve_by_provider/": {"JSONDecodeError: Expecting value: line 1 column 1 (char 0)"},
        "/api/marketplace-provider-resources/{uuid}/team/": {"KeyError: 'offering_user_state'"},
    }


def test_2024_action_endpoints_answer_empty_bodies() -> None:
    _, log = driven_log("2024")
    data = json.loads((DATA / "waldur-2024-endpoints.json").read_text())
    empty = {(r["method"], r["path"]) for r in data["endpoints"] if r.get("empty_body")}
    seen = set()
    for e in log:
        if (e["method"], e["route"]) in empty and 200 <= e["status"] < 300:
            assert e["response_body"] == "", f"{e['method']} {e['route']} answered a body"
            seen.add((e["method"], e["route"]))
    assert seen == empty


def test_the_2024_table_has_no_8x_only_routes() -> None:
    data = json.loads((DATA / "waldur-2024-endpoints.json").read_text())
    served = registered_routes("2024")
    for row in data["absent"]:
        assert (row["method"], row["path"]) not in served


def test_schema_extract_is_current() -> None:
    if not FULL_SCHEMA.exists():
        pytest.skip(f"{FULL_SCHEMA} not present; the committed extract is used as is")
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_extract", DATA / "make_waldur_schema_extract.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.extract(FULL_SCHEMA) == schema_extract()


def test_status_codes_in_the_references_are_real_http_statuses() -> None:
    for entry in schema_extract()["paths"].values():
        for op in entry.values():
            for code in op["responses"]:
                HTTPStatus(code)
    for statuses in table_2024().values():
        for code in statuses:
            HTTPStatus(code)
