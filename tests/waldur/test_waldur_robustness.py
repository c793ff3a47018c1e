"""Retries, non-idempotent writes under ambiguous failures, auth errors, version skew and TLS, against the
stand-in's injected faults (real HTTP, real sockets)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from waldur_api_client.models import OrderDetails
from waldur_standin.testing import StandIn

from waldur_slurm.waldur.client import WaldurClient
from waldur_slurm.waldur.errors import (
    WaldurAuthError,
    WaldurPermanentError,
    WaldurTransientError,
)

from tests.support.waldur import make_client

APPROVE = "/api/marketplace-orders/{uuid}/approve_by_provider/"
DONE = "/api/marketplace-orders/{uuid}/set_state_done/"


def order_ready(w: StandIn, client: WaldurClient, *, approved: bool = False) -> dict[str, Any]:
    project = w.add_project(w.add_customer("Org"), "P")
    placed = w.place_order(client.offering_uuid, project, limits={"cpu": 1})
    if approved:
        client.approve_order(placed["uuid"])
    return placed


def sent(w: StandIn, route: str) -> list[dict[str, Any]]:
    return [e for e in w.requests() if e["route"] == route]


# ---------------------------------------------------------------------- reads and idempotent writes
def test_reads_are_retried_through_503s_with_growing_backoff(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    w.inject_fault("/api/marketplace-provider-offerings/*", status=503, count=2)
    assert client.get_offering().uuid == client.offering_uuid
    statuses = [e["status"] for e in w.requests()]
    assert statuses == [503, 503, 200]
    assert client.request_counts == {"GET": 3} and client.retries == 2
    s1, s2 = client.sleeps  # type: ignore[attr-defined]
    assert 0.25 <= s1 <= 0.5 and 0.5 <= s2 <= 1.0  # base 0.5 s doubling, with jitter in [50 %, 100 %]


@pytest.mark.parametrize("status", [502, 504, 429])
def test_other_transient_statuses_are_retried(waldur_client: WaldurClient, status: int) -> None:
    w: StandIn = waldur_client.standin  # type: ignore[attr-defined]
    w.inject_fault("*", status=status, count=1)
    assert waldur_client.server_version() == "8.0.5"
    assert [e["status"] for e in w.requests()] == [status, 200]


def test_a_500_is_transient_but_not_retried(waldur_client: WaldurClient) -> None:
    w: StandIn = waldur_client.standin  # type: ignore[attr-defined]
    w.inject_fault("*", status=500, count=1)
    with pytest.raises(WaldurTransientError) as err:
        waldur_client.get_offering()
    assert err.value.status == 500 and "HTML page" in err.value.message
    assert len(w.requests()) == 1


def test_retries_are_bounded(waldur_client: WaldurClient) -> None:
    w: StandIn = waldur_client.standin  # type: ignore[attr-defined]
    w.inject_fault("*", status=503, count=None)
    with pytest.raises(WaldurTransientError) as err:
        waldur_client.list_orders()
    assert err.value.status == 503
    assert len(w.requests()) == 4  # 1 + max_retries
    assert len(waldur_client.sleeps) == 3  # type: ignore[attr-defined]


def test_timeouts_and_dropped_connections_on_reads_are_retried(standin: StandIn, standin_offering: str) -> None:
    client = make_client(standin, standin_offering, timeout=0.3)
    standin.inject_fault("/api/marketplace-orders/", kind="delay", delay=1.0, count=1)
    standin.inject_fault("/api/marketplace-orders/", kind="drop", count=1)
    assert client.list_orders() == []
    faults = [e["fault"] for e in standin.requests() if e["path"] == "/api/marketplace-orders/"]
    assert faults == ["delay:before", "drop:before", None]
    assert client.request_counts == {"GET": 3}


def test_idempotent_writes_are_retried(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    project = w.add_project(w.add_customer("Org"), "P")
    [res] = w.create_resources(client.offering_uuid, project, 1)
    w.inject_fault("/api/marketplace-provider-resources/*/set_backend_id/", kind="drop", when="after", count=1)
    w.inject_fault("/api/marketplace-component-usages/set_usage/", status=503, count=1)
    client.set_backend_id(res, "hpc_r")
    assert client.get_resource(res).backend_id == "hpc_r"
    assert [e["status"] for e in sent(w, "/api/marketplace-provider-resources/{uuid}/set_backend_id/")] == [0, 200]
    # set_usage is not re-sent blind (a server that applied a timed-out report would apply it twice): the
    # month is re-read, the report was not applied, and the next cycle sends it.
    with pytest.raises(WaldurTransientError):
        client.set_usage(res, {"cpu": 5})
    assert [e["status"] for e in sent(w, "/api/marketplace-component-usages/set_usage/")] == [503]
    client.set_usage(res, {"cpu": 5})
    assert [e["status"] for e in sent(w, "/api/marketplace-component-usages/set_usage/")] == [503, 201]


# ---------------------------------------------------------------------- non-idempotent writes
def test_approve_applied_then_503_is_success_without_a_second_send(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    placed = order_ready(w, client)
    w.inject_fault(APPROVE, status=503, when="after", count=1)
    order = client.approve_order(placed["uuid"])
    assert order.state == "executing"
    assert [e["status"] for e in sent(w, APPROVE)] == [503]  # sent once; the re-read showed it applied


def test_approve_rejected_by_a_proxy_is_not_resent(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    placed = order_ready(w, client)
    w.inject_fault(APPROVE, status=503, count=1)
    with pytest.raises(WaldurTransientError) as err:
        client.approve_order(placed["uuid"])
    assert err.value.maybe_applied
    assert [e["status"] for e in sent(w, APPROVE)] == [503]
    assert client.get_order(placed["uuid"]).state == "pending-provider"
    assert client.approve_order(placed["uuid"]).state == "executing"  # next cycle
    assert [e["status"] for e in sent(w, APPROVE)] == [503, 200]


def test_set_state_done_with_a_dropped_connection_after_applying(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    placed = order_ready(w, client, approved=True)
    w.inject_fault(DONE, kind="drop", when="after", count=1)
    client.mark_order_done(placed["uuid"])
    assert client.get_order(placed["uuid"]).state == "done"
    assert len(sent(w, DONE)) == 1


def test_set_state_done_timing_out_is_sent_once_and_settles_later(standin: StandIn, standin_offering: str) -> None:
    client = make_client(standin, standin_offering, timeout=0.3)
    placed = order_ready(standin, client, approved=True)
    standin.inject_fault(DONE, kind="delay", delay=0.6, count=1)
    # The server applies it after 0.6 s; the client gave up at 0.3 s and its re-read came too early.
    with pytest.raises(WaldurTransientError):
        client.mark_order_done(placed["uuid"])
    assert len(sent(standin, DONE)) == 1
    import time

    deadline = time.monotonic() + 5
    while client.get_order(placed["uuid"]).state != "done" and time.monotonic() < deadline:
        time.sleep(0.05)
    client.mark_order_done(placed["uuid"])  # next cycle: 409 + re-read "done" = success
    assert [e["status"] for e in sent(standin, DONE)] == [200, 409]


def test_create_component_ambiguous_failure_verified_by_reading_the_offering(waldur_client: WaldurClient) -> None:
    w: StandIn = waldur_client.standin  # type: ignore[attr-defined]
    w.inject_fault("/api/marketplace-provider-offerings/*/create_offering_component/", kind="drop", when="after", count=1)
    waldur_client.create_component("billing", "Billing", "usage")
    assert "billing" in waldur_client.get_offering().components_by_type()
    assert len(sent(w, "/api/marketplace-provider-offerings/{uuid}/create_offering_component/")) == 1


def test_a_write_that_never_left_the_client_may_be_retried(standin: StandIn, standin_offering: str) -> None:
    # Connection refused: nothing reached a server, so even approve is safe to send again.
    w = standin
    port = w.port
    w.stop()
    client = WaldurClient(f"http://127.0.0.1:{port}", "x" * 40, standin_offering, max_retries=2, sleep=lambda s: None, timeout=1)
    with pytest.raises(WaldurTransientError) as err:
        client.approve_order("0" * 32)
    assert err.value.maybe_applied is False
    assert client.request_counts == {"POST": 3}


# ---------------------------------------------------------------------- auth and errors
def test_401_is_an_auth_error_with_a_clear_message_and_no_token(standin_any: StandIn) -> None:
    offering = standin_any.setup_offering()
    bad_token = "0123456789abcdef0123456789abcdef01234567"
    client = make_client(standin_any, offering, token=bad_token)
    with pytest.raises(WaldurAuthError) as err:
        client.get_offering()
    message = str(err.value)
    assert err.value.status == 401 and "Invalid token." in message and "token is missing, invalid or expired" in message
    assert bad_token not in message and bad_token not in repr(client)
    assert client.request_counts == {"GET": 1}  # never retried


def test_expired_token_and_missing_token(standin: StandIn, standin_offering: str) -> None:
    standin.expire_token(standin.provider_user_uuid)
    with pytest.raises(WaldurAuthError) as err:
        make_client(standin, standin_offering).whoami()
    assert "Token has expired." in err.value.message
    with pytest.raises(ValueError, match="token is empty"):
        make_client(standin, standin_offering, token="")
    for bad in ("abc\n", "abc def", "tökén"):
        with pytest.raises(ValueError, match="token is empty or contains whitespace") as err:
            make_client(standin, standin_offering, token=bad)
        assert bad not in str(err.value)


def test_403_for_a_token_without_the_provider_role(standin_any: StandIn) -> None:
    w = standin_any
    offering = w.setup_offering()
    project = w.add_project(w.add_customer("Org"), "P")
    pi = w.add_user("pi")
    w.add_team_member(project, pi["uuid"], "admin")
    placed = w.place_order(offering, project)
    client = make_client(w, offering, token=pi["token"])
    with pytest.raises(WaldurAuthError) as err:
        client.approve_order(placed["uuid"])  # the PI sees the order but may not approve it
    assert err.value.status == 403 and "owner of the provider organisation" in err.value.message
    assert client.get_order(placed["uuid"]).state == "pending-provider"


def test_400_carries_the_servers_field_errors(waldur_client: WaldurClient) -> None:
    with pytest.raises(WaldurPermanentError) as err:
        waldur_client.create_component("bad type!", "Bad", "usage")
    assert err.value.status == 400 and err.value.detail == "type: Enter a valid value."


def test_tls_verification_on_by_default_and_ca_bundle(tmp_path: Path) -> None:
    ca_key, ca_crt, key, csr, crt = (tmp_path / n for n in ("ca.key", "ca.crt", "srv.key", "srv.csr", "srv.crt"))
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "2", "-subj", "/CN=test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(ext))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(crt), str(key))
    with StandIn("8", ssl_context=ctx) as w:
        offering = w.setup_offering()
        assert w.url.startswith("https://")
        with pytest.raises(WaldurPermanentError) as err:  # verify on, unknown CA: clear, not retried
            make_client(w, offering).get_offering()
        assert "TLS certificate verification failed" in err.value.message
        assert make_client(w, offering, ca_bundle=str(ca_crt)).get_offering().uuid == offering
        assert make_client(w, offering, verify_ssl=False).get_offering().uuid == offering


# ---------------------------------------------------------------------- version skew
def test_unknown_enum_values_and_extra_fields_do_not_crash(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    w: StandIn = client.standin  # type: ignore[attr-defined]
    placed = order_ready(w, client)
    project = w.add_project(w.add_customer("Org2"), "P2")
    alice = w.add_user("alice")
    w.add_team_member(project, alice["uuid"])
    [res] = w.create_resources(client.offering_uuid, project, 1)
    skew = {"state": "pending-quantum-review", "type": "Transmogrify", "field_from_2030": {"nested": [1, 2]}}
    w.add_override("/api/marketplace-orders/*", set=skew)
    w.add_override("/api/marketplace-provider-resources/", set={"state": "Hibernating", "limits": None, "new_flag": True})
    w.add_override("/api/marketplace-provider-resources/*/team/", set={"role": "PROJECT.WIZARD"}, remove=["offering_user_state", "email"])
    w.add_override("/api/marketplace-offering-users/", set={"state": "Pending quantum linking"}, remove=["user_uuid"])

    [order] = client.list_orders(states=["pending-provider"])
    assert (order.uuid, order.state, order.type) == (placed["uuid"], "pending-quantum-review", "Transmogrify")
    assert order.raw["field_from_2030"] == {"nested": [1, 2]}
    [resource] = client.list_resources(states=["OK"])
    assert (resource.uuid, resource.state, resource.limits) == (res, "Hibernating", {})
    [member] = client.team(res)
    assert (member.role, member.offering_user_state, member.email) == ("PROJECT.WIZARD", None, "")
    [ou] = client.list_offering_users()
    assert ou.state == "Pending quantum linking" and ou.user_uuid == alice["uuid"]  # from the user URL

    # The SDK's own model would have crashed on the same body: the override really reached the client.
    body = [e for e in w.requests() if e["path"] == "/api/marketplace-orders/"]
    assert body, "the orders list was requested"
    import httpx

    raw = httpx.get(f"{w.url}/api/marketplace-orders/{placed['uuid']}/", headers={"Authorization": f"Token {w.provider_token}"}).json()
    with pytest.raises(ValueError, match="is not a valid OrderState"):
        OrderDetails.from_dict(raw)


def test_empty_action_bodies_of_the_2024_server(standin_2024: StandIn) -> None:
    w = standin_2024
    client = make_client(w, w.setup_offering())
    placed = order_ready(w, client)
    assert client.approve_order(placed["uuid"]).state == "executing"
    [approve] = sent(w, APPROVE)
    assert approve["status"] == 200
    w.set_log_bodies(True)
    client.reject_order(order_ready(w, client)["uuid"], "no")
    [reject] = sent(w, "/api/marketplace-orders/{uuid}/reject_by_provider/")
    assert reject["response_body"] == ""
