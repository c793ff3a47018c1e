"""The stand-in's own Mastermind semantics, over raw HTTP: what the facade tests rely on being faithful."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from waldur_standin.testing import StandIn

REPO = Path(__file__).resolve().parents[2]


class Api:
    """Raw HTTP as the provider owner (or another token)."""

    def __init__(self, w: StandIn, token: str | None = None) -> None:
        headers = {"Authorization": f"Token {token or w.provider_token}"}
        self.http = httpx.Client(base_url=w.url, headers=headers, timeout=10)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params)

    def post(self, path: str, body: Any = None) -> httpx.Response:
        return self.http.post(path, json=body) if body is not None else self.http.post(path)


@pytest.fixture
def api(standin: StandIn) -> Iterator[Api]:
    a = Api(standin)
    yield a
    a.http.close()


@pytest.fixture
def api24(standin_2024: StandIn) -> Iterator[Api]:
    a = Api(standin_2024)
    yield a
    a.http.close()


def scenario(w: StandIn, members: int = 1) -> dict[str, Any]:
    offering = w.setup_offering(
        [
            {"type": "cpu", "name": "CPU", "billing_type": "usage", "measured_unit": "k-Hours"},
            {"type": "quota", "name": "Quota", "billing_type": "limit", "measured_unit": "GB"},
            {"type": "support", "name": "Support", "billing_type": "fixed"},
        ]
    )
    project = w.add_project(w.add_customer("Org"), "P")
    users = [w.add_user(f"user{i}") for i in range(members)]
    for u in users:
        w.add_team_member(project, u["uuid"], "admin")
    return {"offering": offering, "project": project, "users": users}


# ---------------------------------------------------------------------- auth
def test_token_auth(standin_any: StandIn) -> None:
    w = standin_any
    anon = httpx.get(f"{w.url}/api/marketplace-orders/")
    assert anon.status_code == 401 and anon.json() == {"detail": "Authentication credentials were not provided."}
    assert anon.headers["WWW-Authenticate"] == "Token"
    bad = httpx.get(f"{w.url}/api/marketplace-orders/", headers={"Authorization": "Token " + "f" * 40})
    assert bad.status_code == 401 and bad.json() == {"detail": "Invalid token."}
    version = httpx.get(f"{w.url}/api/version/")
    if w.profile == "8":
        assert version.status_code == 200
    else:  # Oct 2024: IsStaffOrSupportUser
        assert version.status_code == 401
        provider = httpx.get(f"{w.url}/api/version/", headers={"Authorization": f"Token {w.provider_token}"})
        assert provider.status_code == 403
        assert provider.json() == {"detail": "You do not have permission to perform this action."}


def test_visibility_and_provider_role(standin: StandIn) -> None:
    s = scenario(standin)
    placed = standin.place_order(s["offering"], s["project"])
    pi = Api(standin, s["users"][0]["token"])
    stranger = Api(standin, standin.add_user("stranger")["token"])
    assert pi.get(f"/api/marketplace-orders/{placed['uuid']}/").status_code == 200
    assert pi.post(f"/api/marketplace-orders/{placed['uuid']}/approve_by_provider/", {}).status_code == 403
    assert stranger.get(f"/api/marketplace-orders/{placed['uuid']}/").status_code == 404
    assert stranger.get("/api/marketplace-orders/").json() == []
    assert pi.get("/api/marketplace-provider-resources/").json() == []  # provider view only


# ---------------------------------------------------------------------- pagination and filters
def test_pagination(standin: StandIn, api: Api) -> None:
    s = scenario(standin)
    standin.create_resources(s["offering"], s["project"], 25)
    first = api.get("/api/marketplace-provider-resources/")
    assert len(first.json()) == 10 and first.headers["X-Result-Count"] == "25"
    links = dict((rel, url) for url, rel in (part.split("; rel=") for part in first.headers["Link"].split(", ")))
    assert set(links) == {'"first"', '"next"', '"last"'}
    assert links['"next"'].endswith("page=2>") and links['"last"'].endswith("page=3>")
    assert links['"next"'].startswith(f"<{standin.url}/api/marketplace-provider-resources/")
    third = api.get("/api/marketplace-provider-resources/", page=3)
    assert len(third.json()) == 5 and '"next"' not in third.headers["Link"]
    past = api.get("/api/marketplace-provider-resources/", page=4)
    assert past.status_code == 404 and past.json() == {"detail": "Invalid page."}
    assert api.get("/api/marketplace-provider-resources/", page="last").json() == third.json()
    head = api.http.head("/api/marketplace-provider-resources/")
    assert head.status_code == 200 and head.headers["X-Result-Count"] == "25" and head.content == b""


def test_link_urls_are_drfs(standin_any: StandIn) -> None:
    """As measured on the real server: parameters sorted by name (values of one name in their order), the first
    page's URL without ``page``, the previous page of page 2 likewise."""
    w = standin_any
    s = scenario(w)
    w.create_resources(s["offering"], s["project"], 5)
    api = Api(w)
    resp = api.get("/api/marketplace-provider-resources/", state=["OK", "Erred"], page_size=2, o="-created", page=2)
    links = {rel.strip('"'): url.strip("<>") for url, rel in (p.split("; rel=") for p in resp.headers["Link"].split(", "))}
    base = f"{w.url}/api/marketplace-provider-resources/?o=-created"
    assert links == {
        "first": f"{base}&page_size=2&state=OK&state=Erred",
        "prev": f"{base}&page_size=2&state=OK&state=Erred",
        "next": f"{base}&page=3&page_size=2&state=OK&state=Erred",
        "last": f"{base}&page=3&page_size=2&state=OK&state=Erred",
    }
    api.http.close()


def test_page_size_is_capped_at_300(standin: StandIn, api: Api) -> None:
    s = scenario(standin)
    standin.create_resources(s["offering"], s["project"], 310)
    resp = api.get("/api/marketplace-provider-resources/", page_size=1000)
    assert len(resp.json()) == 300 and resp.headers["X-Result-Count"] == "310"
    ids = {r["uuid"] for r in resp.json()} | {r["uuid"] for r in api.get("/api/marketplace-provider-resources/", page_size=1000, page=2).json()}
    assert len(ids) == 310


def test_filters(standin: StandIn, api: Api) -> None:
    s = scenario(standin)
    [res] = standin.create_resources(s["offering"], s["project"], 1)
    standin.place_order(s["offering"], s["project"])
    standin.place_order(s["offering"], type="Update", resource_uuid=res, limits={"quota": 2})
    other = standin.setup_offering(name="other")
    standin.place_order(other, s["project"])
    path = "/api/marketplace-orders/"
    q = f"{path}?offering_uuid={s['offering']}"
    assert len(api.http.get(q + "&state=pending-provider").json()) == 2
    assert len(api.http.get(q + "&state=pending-provider&state=done").json()) == 3
    assert len(api.http.get(q + "&type=Update").json()) == 1
    comma = api.http.get(q + "&state=pending-provider,done")
    assert comma.status_code == 400 and "pending-provider,done is not one of the available choices" in comma.text
    assert api.http.get(q + "&state=bogus").status_code == 400
    assert len(api.http.get(f"{path}?offering_uuidd={s['offering']}").json()) == 4  # misspelt: ignored
    assert api.http.get(f"{path}?offering_uuid=xyz").json() == {"offering_uuid": ["Enter a valid UUID."]}
    sparse = api.get(f"/api/marketplace-provider-resources/{res}/", field=["uuid", "state"]).json()
    assert sparse == {"uuid": res, "state": "OK"}


def test_hyperlinks_use_the_request_host(standin: StandIn, api: Api) -> None:
    s = scenario(standin)
    placed = standin.place_order(s["offering"], s["project"])
    order = api.http.get(f"/api/marketplace-orders/{placed['uuid']}/", headers={"Host": "waldur.example.com"}).json()
    assert order["url"] == f"http://waldur.example.com/api/marketplace-orders/{placed['uuid']}/"
    assert order["offering"] == f"http://waldur.example.com/api/marketplace-public-offerings/{s['offering']}/"


def test_unknown_routes_and_methods(standin: StandIn, api: Api) -> None:
    missing = api.post("/api/marketplace-slurm-remote/" + "0" * 32 + "/set_state/", {"state": "ok"})
    assert missing.status_code == 404 and "<title>Not Found</title>" in missing.text
    assert missing.headers["content-type"].startswith("text/html")
    wrong = api.http.delete("/api/marketplace-orders/")
    assert wrong.status_code == 405 and wrong.json() == {"detail": 'Method "DELETE" not allowed.'}


# ---------------------------------------------------------------------- orders and resources
def test_order_state_machine_and_409s(standin: StandIn, api: Api) -> None:
    s = scenario(standin)
    placed = standin.place_order(s["offering"], s["project"], limits={"quota": 5})
    o = f"/api/marketplace-orders/{placed['uuid']}/"
    assert api.post(o + "set_state_done/").json() == {"detail": "Valid states for operation: executing."}
    assert api.post(o + "approve_by_provider/", {}).json() == {"detail": "Order has been approved."}
    again = api.post(o + "approve_by_provider/", {})
    assert again.status_code == 409 and again.json() == {"detail": "Valid states for operation: pending-provider."}
    assert api.post(o + "reject_by_provider/", {}).status_code == 409
    res = api.get(f"/api/marketplace-provider-resources/{placed['resource_uuid']}/").json()
    assert (res["state"], res["limits"], res["order_in_progress"]["uuid"]) == ("Creating", {"quota": 5}, placed["uuid"])
    assert api.post(o + "set_state_erred/", {"error_message": "x", "error_traceback": "tb"}).status_code == 200
    order = api.get(o).json()
    assert (order["state"], order["error_message"], order["error_traceback"]) == ("erred", "x", "tb")
    assert api.post(o + "set_state_done/").status_code == 409
    assert api.post(o + "set_state_executing/").status_code == 200  # the retry path
    assert api.post(o + "set_state_done/").status_code == 200
    done = api.get(o).json()
    assert done["state"] == "done" and done["completed_at"]
    assert api.get(f"/api/marketplace-provider-resources/{placed['resource_uuid']}/").json()["state"] == "OK"


def test_set_state_erred_has_no_state_check(standin: StandIn, api: Api) -> None:
    s = scenario(standin)
    pending = standin.place_order(s["offering"], s["project"])
    api.post(f"/api/marketplace-orders/{pending['uuid']}/set_state_erred/", {"error_message": "x"})
    assert api.get(f"/api/marketplace-orders/{pending['uuid']}/").json()["state"] == "pending-provider"
    assert api.get(f"/api/marketplace-provider-resources/{pending['resource_uuid']}/").json()["state"] == "Erred"

    [healthy] = standin.create_resources(s["offering"], s["project"], 1)
    creation = standin.state()["resources"][healthy]["creation_order_uuid"]
    api.post(f"/api/marketplace-orders/{creation}/set_state_erred/", {"error_message": "late"})
    assert api.get(f"/api/marketplace-orders/{creation}/").json()["state"] == "done"
    assert api.get(f"/api/marketplace-provider-resources/{healthy}/").json()["state"] == "Erred"


def test_update_and_terminate(standin: StandIn, api: Api) -> None:
    s = scenario(standin)
    [res] = standin.create_resources(s["offering"], s["project"], 1, limits={"quota": 1})
    upd = standin.place_order(s["offering"], type="Update", resource_uuid=res, limits={"quota": 9}, state="pending-consumer")
    assert api.get(f"/api/marketplace-orders/{upd['uuid']}/").json()["attributes"]["old_limits"] == {"quota": 1}
    assert api.post(f"/api/marketplace-orders/{upd['uuid']}/approve_by_provider/", {}).status_code == 409
    standin.approve_by_consumer(upd["uuid"])
    api.post(f"/api/marketplace-orders/{upd['uuid']}/approve_by_provider/", {})
    assert api.get(f"/api/marketplace-provider-resources/{res}/").json()["state"] == "Updating"
    api.post(f"/api/marketplace-orders/{upd['uuid']}/set_state_done/")
    assert api.get(f"/api/marketplace-provider-resources/{res}/").json()["limits"] == {"quota": 9}

    term = standin.place_order(s["offering"], type="Terminate", resource_uuid=res)
    api.post(f"/api/marketplace-orders/{term['uuid']}/approve_by_provider/", {})
    assert api.get(f"/api/marketplace-provider-resources/{res}/").json()["state"] == "Terminating"
    api.post(f"/api/marketplace-orders/{term['uuid']}/set_state_erred/", {"error_message": "jobs running"})
    assert api.get(f"/api/marketplace-provider-resources/{res}/").json()["state"] == "OK"  # Terminate erred: back to OK


def test_provider_resource_actions_8(standin: StandIn, api: Api) -> None:
    s = scenario(standin)
    [res] = standin.create_resources(s["offering"], s["project"], 1)
    r = f"/api/marketplace-provider-resources/{res}/"
    assert api.post(r + "set_backend_id/", {"backend_id": "hpc_x"}).json() == {"status": "Resource backend_id has been changed."}
    assert api.post(r + "set_backend_id/", {"backend_id": "hpc_x"}).json() == {"status": "Resource backend_id is not changed."}
    assert api.post(r + "set_limits/", {"limits": {"cpu": "many"}}).status_code == 400
    assert api.post(r + "set_limits/", {"limits": {"cpu": 10}}).status_code == 200
    assert api.post(r + "set_as_erred/", {"error_message": "e"}).content == b""
    assert api.get(r).json()["state"] == "Erred"
    assert api.post(r + "set_as_ok/").status_code == 200
    assert api.get(r).json()["state"] == "OK"
    assert api.post(r + "refresh_last_sync/").status_code == 200


# ---------------------------------------------------------------------- 2024 profile
def test_2024_allocation_state_machine_and_auto_complete(standin_2024: StandIn, api24: Api) -> None:
    w = standin_2024
    s = scenario(w)
    placed = w.place_order(s["offering"], s["project"], limits={"cpu": 5})
    res = placed["resource_uuid"]
    sr = f"/api/marketplace-slurm-remote/{res}/"
    before = api24.post(sr + "set_state/", {"state": "creating"})
    assert before.status_code == 404 and before.json() == {"detail": "No Resource matches the given query."}
    assert api24.post(f"/api/marketplace-orders/{placed['uuid']}/approve_by_provider/").content == b""
    order = api24.get(f"/api/marketplace-orders/{placed['uuid']}/").json()
    assert order["resource_uuid"] and order["resource_type"] == "SLURM.Allocation"
    for missing in ("completed_at", "created_by_username", "error_traceback", "old_plan_uuid"):
        assert missing not in order
    assert api24.get(f"/api/marketplace-provider-resources/{res}/details/").json()["state"] == "Creation Scheduled"
    assert api24.post(sr + "set_state/", {"state": "creating"}).json() == {"detail": "Allocation state has been changed to creating"}
    assert api24.post(sr + "set_limits/", {"cpu": 100, "mem": 2000}).json() == {"status": "Limits are successfully set."}
    assert api24.post(sr + "set_state/", {"state": "ok"}).status_code == 200
    assert api24.get(f"/api/marketplace-orders/{placed['uuid']}/").json()["state"] == "done"  # auto-complete
    late = api24.post(f"/api/marketplace-orders/{placed['uuid']}/set_state_done/")
    assert late.status_code == 409 and late.json() == {"detail": "Valid states for operation: executing."}
    conflict = api24.post(sr + "set_state/", {"state": "creating"})
    assert conflict.status_code == 409 and conflict.json() == {"detail": "Allocation state can not be changed from 3 to creating."}
    resource = api24.get(f"/api/marketplace-provider-resources/{res}/").json()
    assert (resource["state"], resource["limits"]) == ("OK", {"cpu": 100, "mem": 2000})
    assert "last_sync" not in resource and "customer_slug" not in resource and resource["scope"].endswith(f"{order['resource_uuid']}/")


def test_2024_pitfall_update_after_an_allocation_never_driven_to_ok(standin_2024: StandIn, api24: Api) -> None:
    w = standin_2024
    s = scenario(w)
    placed = w.place_order(s["offering"], s["project"])
    api24.post(f"/api/marketplace-orders/{placed['uuid']}/approve_by_provider/")
    assert api24.post(f"/api/marketplace-orders/{placed['uuid']}/set_state_done/").status_code == 200  # no auto-complete
    upd = w.place_order(s["offering"], type="Update", resource_uuid=placed["resource_uuid"], limits={"cpu": 9})
    api24.post(f"/api/marketplace-orders/{upd['uuid']}/approve_by_provider/")
    order = api24.get(f"/api/marketplace-orders/{upd['uuid']}/").json()
    assert order["state"] == "erred"
    assert order["error_message"] == "Can't switch from state '5' using method 'schedule_updating'"


def test_2024_update_completion_fails_on_a_limits_key_that_is_no_limit_component(standin_2024: StandIn, api24: Api) -> None:
    """The real 2024 server's fault (callbacks.resource_update_succeeded -> format_limits_list KeyError): a usage-type
    key in the resource's limits makes every completion of an Update answer Django's 500 page and roll back."""
    w = standin_2024
    s = scenario(w)  # cpu is usage-type, quota limit-type
    placed = w.place_order(s["offering"], s["project"], limits={"quota": 5})
    res = placed["resource_uuid"]
    sr = f"/api/marketplace-slurm-remote/{res}/"
    api24.post(f"/api/marketplace-orders/{placed['uuid']}/approve_by_provider/")
    assert api24.post(sr + "set_state/", {"state": "creating"}).status_code == 200
    assert api24.post(sr + "set_limits/", {"quota": 5, "cpu": 100}).status_code == 200  # what an older agent pushed
    assert api24.post(sr + "set_state/", {"state": "ok"}).status_code == 200  # Create completion never formats limits
    upd = w.place_order(s["offering"], type="Update", resource_uuid=res, limits={"quota": 7})
    api24.post(f"/api/marketplace-orders/{upd['uuid']}/approve_by_provider/")
    assert api24.post(sr + "set_state/", {"state": "updating"}).status_code == 200

    def held() -> None:
        order = api24.get(f"/api/marketplace-orders/{upd['uuid']}/").json()
        resource = api24.get(f"/api/marketplace-provider-resources/{res}/").json()
        alloc = api24.get(f"/api/marketplace-provider-resources/{res}/details/").json()
        assert (order["state"], resource["state"], alloc["state"]) == ("executing", "Updating", "Updating")
        assert resource["limits"] == {"quota": 5, "cpu": 100}

    for attempt in (sr + "set_state/", f"/api/marketplace-orders/{upd['uuid']}/set_state_done/", sr + "set_state/"):
        failed = api24.post(attempt, {"state": "ok"})
        assert failed.status_code == 500 and failed.headers["Content-Type"].startswith("text/html")
        assert failed.text.startswith("\n<!doctype html>") and "<title>Server Error (500)</title>" in failed.text
        held()  # rolled back: nothing moved, so the next try fails the same way
    # Once the limits hold only limit-type keys (what the fixed agent writes), the same call completes the order.
    assert api24.post(sr + "set_limits/", {"quota": 5}).status_code == 200
    assert api24.post(sr + "set_state/", {"state": "ok"}).status_code == 200
    order = api24.get(f"/api/marketplace-orders/{upd['uuid']}/").json()
    resource = api24.get(f"/api/marketplace-provider-resources/{res}/").json()
    assert (order["state"], resource["state"], resource["limits"]) == ("done", "OK", {"quota": 7})


def test_2024_answers_as_the_real_server_measured_by_the_differential_test(standin_2024: StandIn, api24: Api) -> None:
    """What tests/mastermind/test_differential.py found the real Oct-2024 server to do differently."""
    w = standin_2024
    s = scenario(w)
    [res] = w.create_resources(s["offering"], s["project"], 1, limits={"quota": 5})
    # The slurm-remote viewset has actions only: its list route refuses GET (and HEAD) with 405, after auth.
    listed = api24.get("/api/marketplace-slurm-remote/", page_size=1)
    assert listed.status_code == 405 and listed.json() == {"detail": 'Method "GET" not allowed.'}
    assert api24.http.head("/api/marketplace-slurm-remote/").status_code == 405
    assert httpx.get(f"{w.url}/api/marketplace-slurm-remote/").status_code == 401
    # The resource list has no order_in_progress / creation_order (field= cannot ask for them); retrieve has both.
    upd = w.place_order(s["offering"], type="Update", resource_uuid=res, limits={"quota": 6})
    [item] = api24.get("/api/marketplace-provider-resources/", offering_uuid=s["offering"]).json()
    assert "order_in_progress" not in item and "creation_order" not in item and "offering_slug" not in item
    sparse = api24.get("/api/marketplace-provider-resources/", offering_uuid=s["offering"], field=["uuid", "order_in_progress"])
    assert sparse.json() == [{"uuid": res}]
    one = api24.get(f"/api/marketplace-provider-resources/{res}/").json()
    assert one["order_in_progress"]["uuid"] == upd["uuid"] and one["creation_order"]["state"] == "done"
    # Orders: no url, new_cost_estimate a number.
    order = api24.get(f"/api/marketplace-orders/{upd['uuid']}/").json()
    assert "url" not in order and order["new_cost_estimate"] == 0.0
    # /users/me/ of a non-staff user: no staff flags, the roles listed.
    me = api24.get("/api/users/me/").json()
    assert not {"is_staff", "is_active", "is_support", "token_expires_at", "notifications_enabled"} & me.keys()
    assert [(p["role_name"], p["scope_type"], p["scope_uuid"]) for p in me["permissions"]] == [
        ("CUSTOMER.OWNER", "customer", w.provider_customer_uuid)
    ]
    staff = Api(w, w.add_user("root", is_staff=True)["token"])
    assert staff.get("/api/users/me/").json()["is_staff"] is True
    # The offering: the 2024 serializer's fields.
    off = api24.get(f"/api/marketplace-provider-offerings/{s['offering']}/").json()
    assert not {"access_url", "quotas", "scope_uuid", "parent_uuid", "project_uuid"} & off.keys()
    assert (off["integration_status"], off["roles"], off["service_attributes"], off["datacite_doi"]) == ([], [], {}, "")
    # Plan periods: components without billing_period.
    api24.post("/api/marketplace-component-usages/set_usage/", {"resource": res, "usages": [{"type": "cpu", "amount": 1}]})
    [pp] = api24.get(f"/api/marketplace-provider-resources/{res}/plan_periods/").json()
    assert [sorted(c) for c in pp["components"]] == [
        ["created", "date", "description", "measured_unit", "name", "recurring", "type", "usage", "uuid"]
    ]


def test_2024_slurm_remote_and_order_errors_as_measured_on_the_real_server(standin_2024: StandIn, api24: Api) -> None:
    w = standin_2024
    s = scenario(w)
    placed = w.place_order(s["offering"], s["project"], limits={"quota": 5})
    res = placed["resource_uuid"]
    sr = f"/api/marketplace-slurm-remote/{res}/"
    api24.post(f"/api/marketplace-orders/{placed['uuid']}/approve_by_provider/")
    assert api24.get(sr).status_code == 405  # no retrieve
    ok = api24.post(sr + "set_limits/", {"quota": "5"})  # stored as sent; "5" and true pass the number check
    assert ok.status_code == 200 and ok.headers["Content-Type"] == "application/json"  # no "; charset=utf-8"
    # A value that is no number: stored, then the server's hook fails after the write (500, not rolled back).
    bad = api24.post(sr + "set_limits/", {"quota": None})
    assert bad.status_code == 500 and "<title>Server Error (500)</title>" in bad.text
    assert api24.get(f"/api/marketplace-provider-resources/{res}/").json()["limits"] == {"quota": None}
    listed = api24.post(sr + "set_limits/", [1, 2])
    assert listed.status_code == 400 and listed.json() == ["The payload must have dictionary type, not <class 'list'>."]
    bogus = api24.post(sr + "set_state/", {"state": "bogus"})
    assert bogus.status_code == 400 and bogus.json() == ["Invalid state: a corresponding method for transition is absent"]
    assert api24.post(sr + "set_state/", {"state": ""}).json() == {"state": ["This field may not be blank."]}
    assert api24.post(sr + "set_state/", {}).json() == {"state": ["This field is required."]}
    missing = api24.post(sr + "delete_association/", {"username": "nobody"})
    assert missing.status_code == 400 and missing.json() == ["Association between the allocation and the username does not exist."]
    assert api24.post(sr + "create_association/", {"username": ""}).json() == {"username": ["This field may not be blank."]}
    # set_state_erred reads both fields unconditionally: without one it fails (500) and nothing changes.
    half = api24.post(f"/api/marketplace-orders/{placed['uuid']}/set_state_erred/", {"error_message": "x"})
    assert half.status_code == 500
    assert api24.get(f"/api/marketplace-orders/{placed['uuid']}/").json()["state"] == "executing"
    full = api24.post(f"/api/marketplace-orders/{placed['uuid']}/set_state_erred/", {"error_message": "x", "error_traceback": ""})
    assert full.status_code == 200
    assert api24.get(f"/api/marketplace-orders/{placed['uuid']}/").json()["state"] == "erred"


def test_2024_has_no_8x_routes_and_8_has_no_slurm_remote(standin_2024: StandIn, api24: Api) -> None:
    s = scenario(standin_2024)
    [res] = standin_2024.create_resources(s["offering"], s["project"], 1)
    for action in ("set_limits", "set_as_ok", "set_state_ok"):
        resp = api24.post(f"/api/marketplace-provider-resources/{res}/{action}/", {})
        assert resp.status_code == 404 and "<title>Not Found</title>" in resp.text


def test_2024_offering_users_auto_created_with_empty_username(standin_2024: StandIn, api24: Api) -> None:
    w = standin_2024
    s = scenario(w, members=2)
    [res] = w.create_resources(s["offering"], s["project"], 1)
    owner = w.add_user("org-owner")
    w.add_customer_role(w.state()["projects"][s["project"]]["customer_uuid"], owner["uuid"], "owner")
    users = api24.get("/api/marketplace-offering-users/", offering_uuid=s["offering"]).json()
    assert sorted(u["user_username"] for u in users) == ["user0", "user1"]  # owners are not project users
    assert {u["username"] for u in users} == {""} and all("state" not in u for u in users)
    team = api24.get(f"/api/marketplace-provider-resources/{res}/team/").json()
    assert {m["offering_user_username"] for m in team} == {""} and all("offering_user_state" not in m for m in team)
    dup = api24.post("/api/marketplace-offering-users/", {"offering_uuid": s["offering"], "user_uuid": s["users"][0]["uuid"], "username": "x"})
    assert dup.status_code == 400 and dup.json() == {"non_field_errors": ["The fields offering, user must make a unique set."]}
    patched = api24.http.patch(f"/api/marketplace-offering-users/{users[0]['uuid']}/", json={"username": "u_c"}).json()
    assert patched["username"] == "u_c"


def test_8_offering_user_state_machine(standin: StandIn, api: Api) -> None:
    s = scenario(standin)
    standin.create_resources(s["offering"], s["project"], 1)
    [ou] = api.get("/api/marketplace-offering-users/", offering_uuid=s["offering"]).json()
    assert (ou["state"], ou["username"]) == ("Requested", None)
    u = f"/api/marketplace-offering-users/{ou['uuid']}/"
    assert api.post(u + "set_deleted/").status_code == 409
    assert api.post(u + "begin_creating/").status_code == 200
    assert api.http.patch(u, json={"username": "u0"}).json()["state"] == "OK"
    assert api.get("/api/marketplace-offering-users/", state="Bogus").status_code == 400
    standin.update_offering(s["offering"], secret_options={"service_provider_can_create_offering_user": False})
    other = standin.add_user("other")
    refused = api.post("/api/marketplace-offering-users/", {"offering_uuid": s["offering"], "user_uuid": other["uuid"]})
    assert refused.status_code == 400 and refused.json() == {"detail": "It is not allowed to create users for current offering."}


# ---------------------------------------------------------------------- components and usage
def test_component_rules(standin: StandIn, api: Api) -> None:
    s = scenario(standin)
    po = f"/api/marketplace-provider-offerings/{s['offering']}/"
    assert api.post(po + "create_offering_component/", {"type": "x"}).json() == {
        "name": ["This field is required."],
        "billing_type": ["This field is required."],
    }
    assert api.post(po + "create_offering_component/", {"type": "x", "name": "X", "billing_type": "weekly"}).status_code == 400
    assert api.post(po + "create_offering_component/", {"type": "gres/gpu", "name": "GPU", "billing_type": "usage"}).status_code == 201
    assert api.post(po + "update_offering_component/", {"uuid": "0" * 32, "type": "x", "name": "X", "billing_type": "usage"}).status_code == 404
    assert api.post(po + "remove_offering_component/", {}).status_code == 400


def test_set_usage_rules(standin: StandIn, api: Api) -> None:
    s = scenario(standin)
    [res] = standin.create_resources(s["offering"], s["project"], 1)
    url = "/api/marketplace-component-usages/set_usage/"

    def usage(**item: Any) -> httpx.Response:
        return api.post(url, {"resource": res, "usages": [{"type": "cpu", "amount": "1", **item}]})

    assert usage(amount="1.234").json() == {"usages": [{"amount": ["Ensure that there are no more than 2 decimal places."]}]}
    assert usage(amount="-1").status_code == 400
    assert usage(type="support").json() == {"non_field_errors": ["These components are invalid: support."]}
    assert usage(amount=12.5).status_code == 201  # a JSON number is accepted too
    period = standin.state()["plan_periods"]
    [pp] = list(period)
    assert api.post(url, {"plan_period": pp, "usages": [{"type": "cpu", "amount": "13"}]}).status_code == 201
    [cu] = api.get("/api/marketplace-component-usages/", resource_uuid=res).json()
    assert cu["usage"] == "13.00"  # the month's value was replaced, not added to
    # limit-type components may be backfilled into a past month; usage-type ones may not
    last_month = "2000-01-15T00:00:00Z"
    assert api.post(url, {"resource": res, "date": last_month, "usages": [{"type": "quota", "amount": "2"}]}).status_code == 201
    assert api.post(url, {"resource": res, "date": last_month, "usages": [{"type": "cpu", "amount": "2"}]}).status_code == 400
    standin.close_billing_period("2000-01")
    closed = api.post(url, {"resource": res, "date": last_month, "usages": [{"type": "quota", "amount": "3"}]})
    assert closed.json() == {"non_field_errors": ["Billing period is closed."]}
    user_usage = api.post(f"/api/marketplace-component-usages/{cu['uuid']}/set_user_usage/", {"username": "u", "usage": "1.999"})
    assert user_usage.status_code == 400


def test_clock_moves_the_billing_month(standin: StandIn, api: Api) -> None:
    s = scenario(standin)
    [res] = standin.create_resources(s["offering"], s["project"], 1)
    standin.set_clock("2031-03-31T23:59:00+00:00", frozen=True)
    api.post("/api/marketplace-component-usages/set_usage/", {"resource": res, "usages": [{"type": "cpu", "amount": "1"}]})
    standin.set_clock("2031-04-01T00:00:30+00:00", frozen=True)
    api.post("/api/marketplace-component-usages/set_usage/", {"resource": res, "usages": [{"type": "cpu", "amount": "2"}]})
    periods = sorted(u["billing_period"] for u in api.get("/api/marketplace-component-usages/", resource_uuid=res).json())
    assert periods == ["2031-03-01", "2031-04-01"]


# ---------------------------------------------------------------------- control API
def test_state_dump_and_load_round_trip(standin: StandIn, api: Api) -> None:
    s = scenario(standin)
    placed = standin.place_order(s["offering"], s["project"], limits={"cpu": 3})
    dumped = json.loads(json.dumps(standin.state()))
    with StandIn("8") as other:
        other.load_state(dumped)
        moved = Api(other, standin.provider_token)
        assert moved.get(f"/api/marketplace-orders/{placed['uuid']}/").json()["limits"] == {"cpu": 3}
        assert moved.post(f"/api/marketplace-orders/{placed['uuid']}/approve_by_provider/", {}).status_code == 200
        assert len(moved.get("/api/marketplace-orders/", offering_uuid=s["offering"]).json()) == 1


def test_faults_match_routes_methods_and_counts(standin: StandIn, api: Api) -> None:
    s = scenario(standin)
    standin.inject_fault("/api/marketplace-orders/{uuid}/", status=502, count=2, method="GET")
    placed = standin.place_order(s["offering"], s["project"])
    o = f"/api/marketplace-orders/{placed['uuid']}/"
    assert api.get("/api/marketplace-orders/").status_code == 200  # another route
    assert [api.get(o).status_code for _ in range(3)] == [502, 502, 200]
    log = standin.requests()
    assert (log[1]["fault"], log[1]["status"], log[3]["fault"]) == ("status:before:502", 502, None)
    standin.inject_fault("*", kind="drop", count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        api.get(o)
    assert standin.count("GET", "/api/marketplace-orders/{uuid}/") == 4


def test_cli_runs_the_server(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "waldur_standin", "--port", str(port), "--profile", "2024", "--seed"],
        cwd=REPO / "devenv" / "waldur",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seed = json.loads(proc.stdout.readline())
        deadline = time.monotonic() + 20
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/api/marketplace-slurm-remote/", headers={"Authorization": f"Token {seed['provider_token']}"})
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "stand-in did not start"
                time.sleep(0.05)
        assert resp.status_code == 405 and seed["profile"] == "2024"  # the route exists (8.x: 404), without a list
        offering = httpx.get(
            f"http://127.0.0.1:{port}/api/marketplace-provider-offerings/{seed['offering_uuid']}/",
            headers={"Authorization": f"Token {seed['provider_token']}"},
        ).json()
        assert [c["type"] for c in offering["components"]] == ["cpu", "mem", "gres/gpu"]
    finally:
        proc.terminate()
        proc.wait(10)
