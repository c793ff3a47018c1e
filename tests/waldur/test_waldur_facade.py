"""WaldurClient against the real stand-in, in both profiles: every method, with exact HTTP request counts."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from waldur_standin.testing import StandIn

from tests.support import waldur_extras as extras
from tests.support.waldur import make_client
from waldur_slurm import USER_AGENT
from waldur_slurm.waldur.client import WaldurClient
from waldur_slurm.waldur.errors import (
    WaldurAuthError,
    WaldurConflict,
    WaldurNotFound,
    WaldurPermanentError,
    WaldurTransientError,
)


def utc_today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()  # the stand-in's server timezone is UTC


def project_with_member(w: StandIn, username: str = "alice", role: str = "admin") -> tuple[str, dict[str, Any]]:
    project = w.add_project(w.add_customer("Research Org"), "Project Alpha")
    user = w.add_user(username)
    w.add_team_member(project, user["uuid"], role)
    return project, user


def last_seq(w: StandIn) -> int:
    log = w.requests()
    return int(log[-1]["seq"]) if log else 0


def api_posts(w: StandIn, route_suffix: str) -> list[dict[str, Any]]:
    return [e for e in w.requests() if e["method"] == "POST" and (e["route"] or "").endswith(route_suffix)]


# ---------------------------------------------------------------------- server, flavour, offering
def test_flavour_is_detected_once(standin_any: StandIn) -> None:
    client = make_client(standin_any, standin_any.setup_offering())
    assert client.flavour == standin_any.profile
    assert client.flavour == standin_any.profile
    assert client.requests_total == 1
    # The API root answers 200 on both flavours: no 404/405 in the server's log at every start.
    [probe] = standin_any.requests()
    assert (probe["method"], probe["path"], probe["status"]) == ("GET", "/api/", 200)


def test_server_version_whoami_and_user_agent(waldur_client_any: WaldurClient) -> None:
    w: StandIn = waldur_client_any.standin  # type: ignore[attr-defined]
    if waldur_client_any.flavour == "8":
        assert waldur_client_any.server_version() == "8.0.5"
    else:  # the Oct 2024 server shows its version to staff only
        with pytest.raises(WaldurAuthError) as refused:
            waldur_client_any.server_version()
        assert refused.value.status == 403
    me = waldur_client_any.whoami()
    assert me.username == "provider-owner" and me.uuid == w.provider_user_uuid
    assert {e["user_agent"] for e in w.requests()} == {USER_AGENT}
    assert USER_AGENT.startswith("waldur-slurm-agent/")


def test_api_url_with_api_suffix_works(standin: StandIn, standin_offering: str) -> None:
    client = make_client(standin, standin_offering)
    other = WaldurClient(standin.url + "/api/", standin.provider_token, standin_offering)
    assert other.base_url == client.base_url == standin.url
    assert other.get_offering().uuid == standin_offering
    assert standin.requests()[-1]["path"] == f"/api/marketplace-provider-offerings/{standin_offering}/"


def test_offering_components_create_update_remove(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    offering = client.get_offering()
    assert offering.type == "Marketplace.Slurm"
    assert sorted(offering.components_by_type()) == ["cpu", "gres/gpu", "mem"]

    client.create_component("billing", "Billing", "usage", measured_unit="units", limit_amount=Decimal("1000"), unit_factor=60)
    comps = client.get_offering().components_by_type()
    assert comps["billing"].name == "Billing" and comps["billing"].limit_amount == Decimal("1000")

    client.update_component(comps["billing"].uuid, "billing", "Billing units", "limit", measured_unit="units", limit_period="total")
    updated = client.get_offering().components_by_type()["billing"]
    assert (updated.name, updated.billing_type, updated.limit_period) == ("Billing units", "limit", "total")

    with pytest.raises(WaldurPermanentError) as err:  # Mastermind: DB unique (offering, type)
        client.create_component("billing", "Again", "usage")
    assert err.value.status == 400 and "unique" in err.value.message

    client.remove_component(updated.uuid)
    assert "billing" not in client.get_offering().components_by_type()
    with pytest.raises(WaldurNotFound):
        client.remove_component(updated.uuid)


def test_remove_component_refused_while_the_offering_has_resources(waldur_client: WaldurClient) -> None:
    w: StandIn = waldur_client.standin  # type: ignore[attr-defined]
    project, _ = project_with_member(w)
    w.create_resources(waldur_client.offering_uuid, project, 1)
    cpu = waldur_client.get_offering().components_by_type()["cpu"]
    with pytest.raises(WaldurPermanentError) as err:
        waldur_client.remove_component(cpu.uuid)
    assert err.value.status == 400 and "has resources" in err.value.message


# ---------------------------------------------------------------------- pagination
def test_lists_over_300_items_follow_pages_with_exact_request_counts(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    project, _ = project_with_member(w)
    uuids = w.create_resources(client.offering_uuid, project, 650)
    w.clear_requests()
    client.reset_counts()

    resources = client.list_resources()
    assert len(resources) == 650 and {r.uuid for r in resources} == set(uuids)
    assert client.request_counts == {"GET": 3}  # 300 + 300 + 50
    log = w.requests()
    assert [e["query"].count("page_size=300") for e in log] == [1, 1, 1]
    assert [e["status"] for e in log] == [200, 200, 200]

    client.reset_counts()
    done = client.list_orders(states=["done"])
    assert len(done) == 650 and client.request_counts == {"GET": 3}

    client.reset_counts()
    assert client.list_orders() == [] and client.request_counts == {"GET": 1}

    client.reset_counts()
    ok = client.list_resources(states=["OK"], fields=["uuid", "state", "backend_id"])
    assert len(ok) == 650 and set(ok[0].raw) == {"uuid", "state", "backend_id"}
    assert client.request_counts == {"GET": 3}


def test_smaller_page_size_means_more_pages(standin: StandIn, standin_offering: str) -> None:
    client = make_client(standin, standin_offering, page_size=100)
    project, _ = project_with_member(standin)
    standin.create_resources(standin_offering, project, 250)
    assert len(client.list_resources()) == 250
    assert client.request_counts == {"GET": 3}


# ---------------------------------------------------------------------- orders
def test_list_orders_filters_by_state_and_type(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    project, _ = project_with_member(w)
    [res] = w.create_resources(client.offering_uuid, project, 1)
    create = w.place_order(client.offering_uuid, project, limits={"cpu": 5})
    update = w.place_order(client.offering_uuid, type="Update", resource_uuid=res, limits={"cpu": 7})
    w.place_order(client.offering_uuid, project, state="pending-consumer")

    pending = client.list_orders()
    assert {o.uuid for o in pending} == {create["uuid"], update["uuid"]}
    assert [o.uuid for o in client.list_orders(types=["Update"])] == [update["uuid"]]
    got = client.get_order(update["uuid"])
    assert (got.type, got.resource_uuid, got.limits, got.old_limits) == ("Update", res, {"cpu": 7}, {})
    assert len(client.list_orders(states=["pending-consumer"])) == 1


def test_approve_is_idempotent_for_the_caller(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    project, _ = project_with_member(w)
    placed = w.place_order(client.offering_uuid, project)

    order = client.approve_order(placed["uuid"])
    assert order.state == "executing" and order.resource_uuid == placed["resource_uuid"]
    if client.flavour == "2024":
        assert order.allocation_uuid is not None  # the server task created the allocation
    # A second approval (e.g. after a crash) gets 409 from the server; the order is approved: success.
    again = client.approve_order(placed["uuid"])
    assert again.state == "executing"
    assert [e["status"] for e in api_posts(w, "approve_by_provider/")] == [200, 409]


def test_approve_of_a_rejected_order_is_a_conflict(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    project, _ = project_with_member(w)
    placed = w.place_order(client.offering_uuid, project)
    client.reject_order(placed["uuid"], "no capacity")
    order = client.get_order(placed["uuid"])
    assert order.state == "rejected"
    assert client.get_resource(placed["resource_uuid"]).state == "Terminated"
    client.reject_order(placed["uuid"], "no capacity")  # 409, already rejected: fine
    with pytest.raises(WaldurConflict):
        client.approve_order(placed["uuid"])


def test_mark_order_done_tolerates_409_on_done_orders_only(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    project, _ = project_with_member(w)
    placed = w.place_order(client.offering_uuid, project)
    with pytest.raises(WaldurConflict) as err:  # pending-provider: not executing, not done
        client.mark_order_done(placed["uuid"])
    assert err.value.detail == "pending-provider"
    client.approve_order(placed["uuid"])
    client.mark_order_done(placed["uuid"])
    client.mark_order_done(placed["uuid"])  # 409 + re-GET shows done
    assert [e["status"] for e in api_posts(w, "set_state_done/")] == [409, 200, 409]
    assert client.get_resource(placed["resource_uuid"]).state == "OK"


def test_allocation_state_is_a_no_op_on_8(waldur_client: WaldurClient) -> None:
    w: StandIn = waldur_client.standin  # type: ignore[attr-defined]
    project, _ = project_with_member(w)
    [res] = w.create_resources(waldur_client.offering_uuid, project, 1)
    assert waldur_client.set_allocation_state(res, "ok") is False
    assert [e["path"] for e in w.requests()] == ["/api/"]  # the probe only


def test_mark_order_erred_only_touches_executing_orders(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    project, _ = project_with_member(w)
    placed = w.place_order(client.offering_uuid, project)
    # pending-provider: Mastermind would mark the resource Erred and leave the order; the guard sends nothing.
    assert client.mark_order_erred(placed["uuid"], "boom") is False
    client.approve_order(placed["uuid"])
    assert client.mark_order_erred(placed["uuid"], "sacctmgr failed", "Traceback ...") is True
    order = client.get_order(placed["uuid"])
    assert (order.state, order.error_message) == ("erred", "sacctmgr failed")
    assert client.get_resource(placed["resource_uuid"]).state == "Erred"

    [healthy] = w.create_resources(client.offering_uuid, project, 1)
    done_order = w.state()["resources"][healthy]["creation_order_uuid"]
    assert client.mark_order_erred(done_order, "late failure") is False  # would flip a healthy resource
    assert client.get_resource(healthy).state == "OK"
    assert len(api_posts(w, "set_state_erred/")) == 1


@pytest.mark.parametrize("order_type", ["Create", "Update", "Terminate"])
def test_complete_order_drives_each_type_to_done(standin_any: StandIn, order_type: str) -> None:
    w = standin_any
    # cpu limit-type: the limits of real orders name only limit-type components
    client = make_client(w, w.setup_offering([{"type": "cpu", "name": "CPU", "billing_type": "limit", "measured_unit": "h"}]))
    project, _ = project_with_member(w)
    if order_type == "Create":
        placed = w.place_order(client.offering_uuid, project, limits={"cpu": 100})
    else:
        [res] = w.create_resources(client.offering_uuid, project, 1, limits={"cpu": 100})
        placed = w.place_order(client.offering_uuid, type=order_type, resource_uuid=res, limits={"cpu": 250})
        placed["resource_uuid"] = res
    order = client.approve_order(placed["uuid"])
    assert client.flavour == w.profile  # probed once, before counting
    w.clear_requests()
    client.complete_order(order)

    assert client.get_order(order.uuid).state == "done"
    res_state = client.get_resource(placed["resource_uuid"])
    expected = {"Create": ("OK", {"cpu": 100}), "Update": ("OK", {"cpu": 250}), "Terminate": ("Terminated", {"cpu": 100})}
    assert (res_state.state, res_state.limits) == expected[order_type]
    sent = [(e["method"], e["route"], e["status"]) for e in w.requests()][:-2]  # minus the two checks above
    if client.flavour == "8" or order_type == "Terminate":
        assert sent == [("POST", "/api/marketplace-orders/{uuid}/set_state_done/", 200)]
    else:
        first = "creating" if order_type == "Create" else "updating"
        assert sent == [
            ("POST", "/api/marketplace-slurm-remote/{uuid}/set_state/", 200),
            ("POST", "/api/marketplace-slurm-remote/{uuid}/set_state/", 200),
            ("GET", "/api/marketplace-orders/{uuid}/", 200),
        ], first  # creating/updating then ok auto-completed the order: no set_state_done needed
        alloc = w.state()["allocations"][order.allocation_uuid]
        assert alloc["state"] == 3  # OK, so the next Update is not auto-erred


def test_complete_order_after_a_crash_half_way_2024(standin_2024: StandIn) -> None:
    w = standin_2024
    client = make_client(w, w.setup_offering())
    project, _ = project_with_member(w)
    placed = w.place_order(client.offering_uuid, project)
    order = client.approve_order(placed["uuid"])
    client.set_allocation_state(order.resource_uuid, "creating")  # the agent died right after this
    client.complete_order(order)  # creating again -> 409 tolerated; ok -> auto-complete
    assert client.get_order(order.uuid).state == "done"
    client.complete_order(order)  # and once more: everything already done
    assert client.get_order(order.uuid).state == "done"


def test_complete_order_waits_for_the_allocation_2024(standin_2024: StandIn) -> None:
    w = standin_2024
    client = make_client(w, w.setup_offering())
    project, _ = project_with_member(w)
    w.set_worker(False)  # the server's task queue is down: no allocation after approval
    order = client.approve_order(w.place_order(client.offering_uuid, project)["uuid"])
    assert order.state == "executing" and order.allocation_uuid is None
    with pytest.raises(WaldurTransientError) as err:
        client.complete_order(order)
    assert "allocation" in err.value.message
    with pytest.raises(WaldurTransientError):  # slurm-remote 404 means "not yet", not "gone"
        client.set_backend_id(order.resource_uuid, "hpc_x")
    w.set_worker(True)
    client.complete_order(order)
    assert client.get_order(order.uuid).state == "done"


# ---------------------------------------------------------------------- resources
def test_backend_id_limits_and_resource_state(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    w.set_log_bodies(True)
    project, _ = project_with_member(w)
    [res] = w.create_resources(client.offering_uuid, project, 1)
    assert client.set_backend_id(res, "hpc_a") is True
    assert client.set_backend_id(res, "hpc_a") is False
    assert client.list_resources(backend_id="hpc_a")[0].uuid == res

    w.clear_requests()
    client.set_limits(res, {"cpu": Decimal("1000"), "mem": Decimal("2.5")})
    assert client.get_resource(res).limits == {"cpu": 1000, "mem": 2.5}
    [post] = [e for e in w.requests() if e["method"] == "POST"]
    if client.flavour == "8":
        assert post["route"] == "/api/marketplace-provider-resources/{uuid}/set_limits/"
        assert json.loads(post["request_body"]) == {"limits": {"cpu": 1000, "mem": 2.5}}
    else:
        assert post["route"] == "/api/marketplace-slurm-remote/{uuid}/set_limits/"
        assert json.loads(post["request_body"]) == {"cpu": 1000, "mem": 2.5}
        alloc = w.state()["allocations"][client.get_resource(res).allocation_uuid]
        assert alloc["backend_id"] == "hpc_a"

    client.mark_resource_erred(res, "account vanished")
    assert client.get_resource(res).state == "Erred"
    client.mark_resource_ok(res)
    assert client.get_resource(res).state == "OK"

    extras.set_backend_metadata(client, res, {"slurm_account": "hpc_a"})
    assert client.get_resource(res).backend_metadata["slurm_account"] == "hpc_a"


def test_get_unknown_resource_is_not_found(waldur_client_any: WaldurClient) -> None:
    with pytest.raises(WaldurNotFound) as err:
        waldur_client_any.get_resource("0" * 32)
    assert err.value.status == 404


def test_teams_of_many_resources_are_read_side_by_side(waldur_client_any: WaldurClient) -> None:
    """One team request per resource, up to ``workers`` in flight at once; a resource whose team fails maps
    to its error, the others are read; a refused token is raised, and the reads not yet started are not sent."""
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    project, _ = project_with_member(w)
    resources = w.create_resources(client.offering_uuid, project, 8)
    team_route = "/api/marketplace-provider-resources/*/team/"
    # each team request takes 0.3 s on the server: read one at a time, none would overlap another
    w.inject_fault(team_route, kind="delay", delay=0.3, count=None, method="GET")
    mark = last_seq(w)
    teams = client.teams(resources, workers=4)
    log = [e for e in w.requests(mark) if e["path"].endswith("/team/")]
    assert sorted(teams) == sorted(resources) and all(isinstance(t, list) and len(t) == 1 for t in teams.values())
    assert len(log) == 8
    most_in_flight = max(sum(1 for o in log if o["time"] <= e["time"] < o["finished"]) for e in log)
    assert 2 <= most_in_flight <= 4, most_in_flight
    w.clear_faults()

    w.inject_fault(team_route, status=404, count=1, method="GET")
    teams = client.teams(resources[:3], workers=4)
    failed = [u for u, t in teams.items() if isinstance(t, WaldurNotFound)]
    assert len(failed) == 1 and all(isinstance(teams[u], list) for u in resources[:3] if u not in failed)

    w.expire_token(w.provider_user_uuid)
    mark = last_seq(w)
    with pytest.raises(WaldurAuthError):
        client.teams(resources, workers=1)
    assert len(w.requests(mark)) == 1  # the first 401 stops the pass


def test_team_and_offering_users(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    project, alice = project_with_member(w)
    [res] = w.create_resources(client.offering_uuid, project, 1)
    bob = w.add_user("bob")
    w.add_team_member(project, bob["uuid"], "member")  # joins later: gets an offering user too

    client.reset_counts()
    team = client.team(res)
    assert client.request_counts == {"GET": 1}
    assert {(m.username, m.role) for m in team} == {("alice", "admin"), ("bob", "member")}
    assert all(m.offering_user_username is None for m in team)
    if client.flavour == "8":
        assert {m.offering_user_state for m in team} == {"Requested"}
    else:
        assert {m.offering_user_state for m in team} == {None}

    users = {ou.user_username: ou for ou in client.list_offering_users()}
    assert set(users) == {"alice", "bob"} and users["alice"].username is None
    if client.flavour == "8":
        assert extras.offering_user_action(client, users["alice"].uuid, "begin_creating") is True
        assert len(client.list_offering_users(states=["Creating"])) == 1
    else:
        assert extras.offering_user_action(client, users["alice"].uuid, "begin_creating") is False
    updated = extras.set_offering_user_username(client, users["alice"].uuid, "alice_c")
    assert updated.username == "alice_c"
    if client.flavour == "8":
        assert updated.state == "OK"  # Creating + username -> OK
    by_user = {m.username: m for m in client.team(res)}
    assert by_user["alice"].offering_user_username == "alice_c"

    carol = w.add_user("carol")
    created = extras.create_offering_user(client, carol["uuid"], "carol_c")
    assert created.username == "carol_c" and created.user_uuid == carol["uuid"]
    with pytest.raises(WaldurPermanentError) as err:
        extras.create_offering_user(client, carol["uuid"], "carol_c")
    assert "unique" in err.value.message


def test_plan_periods_open_when_the_create_order_completes(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    project, _ = project_with_member(w)
    placed = w.place_order(client.offering_uuid, project)
    assert client.plan_periods(placed["resource_uuid"]) == []
    order = client.approve_order(placed["uuid"])
    client.complete_order(order)
    [period] = client.plan_periods(placed["resource_uuid"])
    assert period.plan_name == "Default" and period.end is None


# ---------------------------------------------------------------------- usage
def test_set_usage_is_an_upsert_and_lists_offering_wide(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    project, _ = project_with_member(w)
    res = w.create_resources(client.offering_uuid, project, 3)
    today = utc_today()
    assert client.flavour == w.profile
    for i, r in enumerate(res):
        client.set_usage(r, {"cpu": Decimal("12.5") + i, "mem": Decimal("300")})
    client.set_usage(res[0], {"cpu": Decimal("13")})  # a later, larger month-to-date total replaces the value

    client.reset_counts()
    usages = client.list_component_usages(today)
    assert client.request_counts == {"GET": 1}
    assert len(usages) == 6
    cpu0 = next(u for u in usages if u.resource_uuid == res[0] and u.type == "cpu")
    assert cpu0.usage == Decimal("13.00") and cpu0.billing_period == today.replace(day=1)
    assert [u.usage for u in client.list_component_usages(today, resource_uuid=res[2]) if u.type == "cpu"] == [Decimal("14.50")]
    assert client.get_resource(res[0]).current_usages["cpu"] == 13.0

    client.reset_counts()
    client.set_user_usages(cpu0.uuid, {"alice_c": Decimal("10"), "bob_c": Decimal("3")})
    assert client.request_counts == {"POST": 1 if client.flavour == "8" else 2}
    client.set_user_usages(cpu0.uuid, {"alice_c": Decimal("11")})  # upsert per (usage, username)
    got = {u.username: u.usage for u in client.list_user_usages(today)}
    assert got == {"alice_c": Decimal("11.00"), "bob_c": Decimal("3.00")}


def test_set_usage_rejections_come_back_as_permanent_errors_with_the_servers_message(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    project, _ = project_with_member(w)
    [res] = w.create_resources(client.offering_uuid, project, 1)
    with pytest.raises(WaldurPermanentError) as err:
        client.set_usage(res, {"nope": 1})
    assert err.value.status == 400 and err.value.detail == "These components are invalid: nope."

    creating = w.place_order(client.offering_uuid, project)["resource_uuid"]
    with pytest.raises(WaldurPermanentError) as err:
        client.set_usage(creating, {"cpu": 1})
    assert "Creating" in err.value.message

    last_month = (utc_today().replace(day=1) - dt.timedelta(days=1)).replace(day=15)
    if client.flavour == "8":
        with pytest.raises(WaldurPermanentError) as err:
            client.set_usage(res, {"cpu": 1}, date=dt.datetime.combine(last_month, dt.time(12), dt.timezone.utc))
        assert "backfilling past billing periods" in err.value.message
    else:  # the 2024 server has no `date`: the report is filed under the current month, never refused for it
        client.set_usage(res, {"cpu": 1}, date=dt.datetime.combine(last_month, dt.time(12), dt.timezone.utc))
        periods = {r["billing_period"][:7] for r in httpx.get(
            f"{w.url}/api/marketplace-component-usages/", params={"resource_uuid": res},
            headers={"Authorization": f"Token {w.provider_token}"}).json()}
        assert periods == {utc_today().isoformat()[:7]}

    w.close_billing_period(utc_today().isoformat()[:7])
    with pytest.raises(WaldurPermanentError) as err:
        client.set_usage(res, {"cpu": 1})
    assert err.value.detail == "Billing period is closed."


# ---------------------------------------------------------------------- 2024 associations
def test_associations(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    project, _ = project_with_member(w)
    [res] = w.create_resources(client.offering_uuid, project, 1)
    client.reset_counts()
    if client.flavour == "8":
        assert client.create_association(res, "alice_c") is False
        assert extras.list_associations(client, res) == []
        assert client.delete_association(res, "alice_c") is False
        assert client.list_offering_associations(["0" * 32]) == {}
        assert client.requests_total == 1  # only the flavour probe
        return
    assert client.create_association(res, "alice_c") is True
    assert client.create_association(res, "alice_c") is False  # 200 "already exists"
    assert extras.list_associations(client, res) == ["alice_c"]
    assert client.delete_association(res, "alice_c") is True
    assert extras.list_associations(client, res) == []
    # gone already (a retried delete whose first attempt went through): the server's 400 for it is success
    assert client.delete_association(res, "alice_c") is False


def test_associations_on_one_page_are_read_in_one_request(standin_2024: StandIn) -> None:
    w = standin_2024
    client = make_client(w, w.setup_offering())
    project, _ = project_with_member(w)
    resources = w.create_resources(client.offering_uuid, project, 3)
    client.create_association(resources[0], "alice_c")
    client.create_association(resources[1], "bob_c")
    allocs = [client.get_resource(r).allocation_uuid for r in resources]
    client.reset_counts()
    assert client.list_offering_associations(allocs) == {
        allocs[0]: frozenset({"alice_c"}), allocs[1]: frozenset({"bob_c"}), allocs[2]: frozenset()
    }
    assert client.request_counts == {"GET": 1}  # the whole server's list fits one page: one consistent query
    assert client.list_offering_associations([]) == {}
    assert client.request_counts == {"GET": 1}  # nothing wanted, nothing read


def test_associations_past_one_page_are_read_exactly(standin_2024: StandIn) -> None:
    """The 2024 server pages associations by username only (ties broken anew by each query) and unscoped: a
    paged read of 320 rows sharing two usernames skips some rows and repeats others. The agent reads the pages
    and re-reads the username that straddles the boundary in one window; when that costs more than reading each
    allocation on its own, it does that. Both are exact, other offerings' rows are not taken, and a failed
    read stays with its allocation."""
    w = standin_2024
    client = make_client(w, w.setup_offering())
    other = make_client(w, w.setup_offering())  # another offering on the server: its rows are not ours
    project, _ = project_with_member(w)
    resources = w.create_resources(client.offering_uuid, project, 150)
    for r in resources:
        client.create_association(r, "alice_c")
        client.create_association(r, "bob_c")
    for r in w.create_resources(other.offering_uuid, project, 10):
        other.create_association(r, "alice_c")
        other.create_association(r, "bob_c")
    allocs = [a for r in resources if (a := client.get_resource(r).allocation_uuid)]
    assert len(allocs) == 150

    # What a paged read of the whole list gets (the agent's old way): not every row, some twice.
    seen: list[str] = []
    for page in (1, 2):
        resp = httpx.get(f"{w.url}/api/slurm-associations/", params={"page": page, "page_size": 300},
                         headers={"Authorization": f"Token {w.provider_token}"})
        seen += [row["uuid"] for row in resp.json()]
    assert len(seen) == 320 and len(set(seen)) < 320

    client.reset_counts()
    w.clear_requests()
    by_alloc = client.list_offering_associations(allocs, workers=4)
    assert by_alloc == {a: frozenset({"alice_c", "bob_c"}) for a in allocs}
    # two pages, then bob_c's 160 rows (positions 160-319, across the boundary at 300) in one window
    assert client.request_counts == {"GET": 3}
    assert sorted((parse_qs(e["query"])["page"][0], parse_qs(e["query"])["page_size"][0]) for e in w.requests()) == [
        ("1", "300"), ("2", "160"), ("2", "300")]

    # Two allocations: 3 requests for the whole list would not be cheaper than one each: read on their own.
    client.reset_counts()
    w.clear_requests()
    assert client.list_offering_associations(allocs[:2]) == {a: frozenset({"alice_c", "bob_c"}) for a in allocs[:2]}
    assert client.request_counts == {"GET": 1 + 2}
    queried = sorted(parse_qs(e["query"])["allocation_uuid"][0].replace("-", "") for e in w.requests()[1:])
    assert queried == sorted(allocs[:2])

    # One allocation's read keeps failing (503 past the retries): it maps to its error, the other is exact.
    w.inject_fault("/api/slurm-associations/", status=503, count=4, skip=1 + 1)
    client.reset_counts()
    by_alloc = client.list_offering_associations(allocs[:2])
    failed = [a for a, v in by_alloc.items() if isinstance(v, WaldurTransientError)]
    assert failed == [allocs[1]]
    assert by_alloc[allocs[0]] == frozenset({"alice_c", "bob_c"})
    assert client.request_counts == {"GET": 1 + 2 + 3}  # the failing one was retried 3 times

    # A page of the whole list keeps failing: every allocation is then read on its own, still exactly.
    w.inject_fault("/api/slurm-associations/", status=503, count=4, skip=1)
    client.reset_counts()
    by_alloc = client.list_offering_associations(allocs)
    assert by_alloc == {a: frozenset({"alice_c", "bob_c"}) for a in allocs}
    assert client.request_counts == {"GET": 1 + 4 + 150}


def test_a_login_in_more_associations_than_a_page_holds(standin_2024: StandIn) -> None:
    """ops is in 310 allocations: no window holds its run, so its rows from the pages are kept, and only the
    allocations where the pages did not show it are read on their own. Still exact."""
    w = standin_2024
    client = make_client(w, w.setup_offering())
    project, _ = project_with_member(w)
    resources = w.create_resources(client.offering_uuid, project, 310)
    for i, r in enumerate(resources):
        client.create_association(r, "ops")
        client.create_association(r, f"user{i:03d}")
    allocs = [a for r in resources if (a := client.get_resource(r).allocation_uuid)]
    client.reset_counts()
    w.clear_requests()
    by_alloc = client.list_offering_associations(allocs, workers=4)
    assert by_alloc == {a: frozenset({"ops", f"user{i:03d}"}) for i, a in enumerate(allocs)}
    queries = [parse_qs(e["query"]) for e in w.requests()]
    own = [q["allocation_uuid"][0].replace("-", "") for q in queries if "allocation_uuid" in q]
    whole = [q for q in queries if "allocation_uuid" not in q]
    # 620 rows: 3 pages of 300; the user### runs are one row each (no window); ops's skipped rows: read alone
    assert sorted(q["page"][0] for q in whole) == ["1", "2", "3"] and all(q["page_size"] == ["300"] for q in whole)
    assert 0 < len(own) == len(set(own)) < 310
    assert client.request_counts == {"GET": 3 + len(own)}


def test_every_list_asks_for_the_fields_the_agent_uses(waldur_client_any: WaldurClient) -> None:
    """field= on every paginated list: a full resource costs the 2024 server ~10x the fields the agent reads.
    The association list is the exception: its serializer has no field selection and only 3 fields."""
    from waldur_slurm.waldur import client as facade

    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    project, _ = project_with_member(w)
    [res] = w.create_resources(client.offering_uuid, project, 1)
    w.place_order(client.offering_uuid, project)
    assert client.flavour == w.profile
    w.clear_requests()
    orders = client.list_orders()
    resources = client.list_resources(states=["OK"])
    client.list_offering_users()
    client.list_component_usages(utc_today())
    client.list_user_usages(utc_today())
    expected = {
        "/api/marketplace-orders/": facade.ORDER_FIELDS,
        "/api/marketplace-provider-resources/": facade.RESOURCE_FIELDS,
        "/api/marketplace-offering-users/": facade.OFFERING_USER_FIELDS,
        "/api/marketplace-component-usages/": facade.COMPONENT_USAGE_FIELDS,
        "/api/marketplace-component-user-usages/": facade.USER_USAGE_FIELDS,
    }
    sent = {e["path"]: tuple(parse_qs(e["query"]).get("field", [])) for e in w.requests()}
    assert sent == expected
    # what the agent reads from them is still there
    assert [r.uuid for r in resources] == [res] and resources[0].limits is not None and resources[0].project_uuid
    assert orders and orders[0].type == "Create" and orders[0].project_uuid == project and orders[0].customer_uuid


@pytest.mark.parametrize("when", ["after", "before"])
def test_set_usage_is_checked_not_resent_after_an_ambiguous_failure(waldur_client_any: WaldurClient, when: str) -> None:
    """A dropped answer to set_usage: the facade re-reads the month's usage of that resource. Applied (dropped
    after): success. Not applied (dropped before): the error stands for the next cycle. Never sent twice."""
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    project, _ = project_with_member(w)
    [res] = w.create_resources(client.offering_uuid, project, 1)
    assert client.flavour == w.profile
    w.inject_fault("/api/marketplace-component-usages/set_usage/", kind="drop", when=when, count=None)
    client.reset_counts()
    if when == "after":
        client.set_usage(res, {"cpu": Decimal("12.5"), "mem": 3})
    else:
        with pytest.raises(WaldurTransientError):
            client.set_usage(res, {"cpu": Decimal("12.5"), "mem": 3})
    assert client.request_counts == {"POST": 1, "GET": 1}
    held = {u.type: u.usage for u in client.list_component_usages(utc_today(), resource_uuid=res)}
    assert held == ({"cpu": Decimal("12.5"), "mem": Decimal("3")} if when == "after" else {})
