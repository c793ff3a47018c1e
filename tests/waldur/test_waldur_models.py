"""Pure tests of the tolerant models and the facade's small helpers (no I/O)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from waldur_slurm.waldur.client import _next_page, host_root, json_number, usage_amount
from waldur_slurm.waldur.models import (
    ComponentUsage,
    CurrentUser,
    Offering,
    OfferingUser,
    Order,
    Resource,
    TeamMember,
    UserUsage,
    norm_uuid,
    uuid_from_url,
)

U1 = "3f8a1c2e4b5d4e6f8a9b0c1d2e3f4a5b"
U2 = "0123456789abcdef0123456789abcdef"


def test_norm_uuid_accepts_hex_hyphenated_and_rejects_garbage() -> None:
    assert norm_uuid(U1) == U1
    assert norm_uuid("3F8A1C2E-4B5D-4E6F-8A9B-0C1D2E3F4A5B") == U1
    assert norm_uuid("") is None
    assert norm_uuid(None) is None
    assert norm_uuid("not-a-uuid") is None
    assert uuid_from_url(f"https://h/api/marketplace-component-usages/{U1}/") == U1
    assert uuid_from_url("https://h/api/users/") is None


def test_order_reads_both_uuids_and_tolerates_unknown_values() -> None:
    order = Order.from_json(
        {
            "uuid": U1,
            "type": "Transmogrify",  # an order type from a future server
            "state": "pending-quantum",  # an unknown state
            "marketplace_resource_uuid": U2,
            "resource_uuid": None,
            "limits": {"cpu": 10},
            "attributes": {"name": "alloc", "old_limits": {"cpu": 5}},
            "created": "2024-10-25T10:11:12.123456Z",
            "a_field_from_2030": {"x": 1},
        }
    )
    assert (order.uuid, order.type, order.state) == (U1, "Transmogrify", "pending-quantum")
    assert order.resource_uuid == U2 and order.allocation_uuid is None
    assert order.old_limits == {"cpu": 5}
    assert order.resource_name == "alloc"
    assert order.created == dt.datetime(2024, 10, 25, 10, 11, 12, 123456, tzinfo=dt.timezone.utc)
    assert order.raw["a_field_from_2030"] == {"x": 1}


def test_models_survive_missing_and_wrongly_typed_fields() -> None:
    assert Order.from_json({}).uuid == ""
    res = Resource.from_json({"uuid": U1, "limits": None, "backend_id": None, "state": 3, "created": "yesterday"})
    assert (res.limits, res.backend_id, res.state, res.created) == ({}, "", "", None)
    off = Offering.from_json({"uuid": U1, "components": "oops", "plans": [None, {"uuid": U2}]})
    assert off.components == () and [p.uuid for p in off.plans] == [U2]


def test_empty_usernames_mean_no_login_yet() -> None:
    # The 2024 server auto-creates offering users with username "" and sends no state.
    ou = OfferingUser.from_json({"uuid": U1, "username": "", "user": f"http://h/api/users/{U2}/"})
    assert ou.username is None and ou.state is None and ou.user_uuid == U2
    tm = TeamMember.from_json({"uuid": U2, "username": "alice", "offering_user_username": ""})
    assert tm.offering_user_username is None and tm.offering_user_state is None


def test_decimal_strings_and_numbers() -> None:
    cu = ComponentUsage.from_json({"uuid": U1, "resource_uuid": U2, "type": "cpu", "usage": "13.00", "billing_period": "2026-11-01"})
    assert cu.usage == Decimal("13.00") and cu.billing_period == dt.date(2026, 11, 1)
    uu = UserUsage.from_json({"uuid": U1, "usage": 5, "component_usage": f"http://h/api/marketplace-component-usages/{U2}/"})
    assert uu.usage == Decimal("5") and uu.component_usage_uuid == U2
    assert ComponentUsage.from_json({"usage": "garbage"}).usage == Decimal("0")


def test_current_user_drops_the_token() -> None:
    me = CurrentUser.from_json({"uuid": U1, "username": "owner", "token": "secret-token-value"})
    assert "token" not in me.raw and "secret-token-value" not in repr(me)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://waldur.example.com/api/", "https://waldur.example.com"),
        ("https://waldur.example.com/api", "https://waldur.example.com"),
        ("https://waldur.example.com/", "https://waldur.example.com"),
        ("https://waldur.example.com", "https://waldur.example.com"),
        # rstrip("/api") would eat the host's trailing "pi" / "a" letters
        ("https://hpc.api/api/", "https://hpc.api"),
        ("http://127.0.0.1:8000/waldur/api/", "http://127.0.0.1:8000/waldur"),
    ],
)
def test_host_root_strips_the_api_suffix_only(given: str, expected: str) -> None:
    assert host_root(given) == expected


def test_numbers_for_the_wire() -> None:
    assert json_number(Decimal("100")) == 100 and isinstance(json_number(Decimal("100.0")), int)
    assert json_number(Decimal("1.5")) == 1.5
    with pytest.raises(ValueError):
        json_number(True)
    assert usage_amount(Decimal("1.005")) == "1.01"
    assert usage_amount(7) == "7.00"


def test_next_page_from_link_header() -> None:
    link = (
        '<http://h/api/marketplace-orders/?page=1&page_size=300>; rel="first", '
        '<http://h/api/marketplace-orders/?page=3&page_size=300>; rel="next", '
        '<http://h/api/marketplace-orders/?page=9&page_size=300>; rel="last"'
    )
    assert _next_page(link) == 3
    assert _next_page('<http://h/api/x/?page=1>; rel="first"') is None
    assert _next_page(None) is None
