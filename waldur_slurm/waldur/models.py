"""Plain dataclasses the agent works with, parsed from Waldur's raw JSON.

The generated ``waldur_api_client`` models are strict (an unknown enum value raises ValueError, a missing
"required" field raises KeyError) and differ between server versions. These dataclasses read only what the
agent needs and tolerate everything else:

- enum-like fields (states, types) stay plain strings, so a value added by a newer server passes through;
- missing fields get neutral defaults; extra fields are ignored (``raw`` keeps the whole object);
- UUIDs are normalised to 32 lowercase hex characters (Waldur sends them that way; hyphenated input is
  accepted too);
- limits and usages stay raw dicts (``{type: number}``): the agent validates them against its components.

Empty usernames (the 2024 server auto-creates offering users with ``username: ""``) become ``None``, so
"no cluster login yet" has one spelling.
"""

from __future__ import annotations

import datetime as dt
import uuid as uuid_mod
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping
from urllib.parse import urlsplit


def norm_uuid(value: object) -> str | None:
    """32-hex lowercase form of a UUID given as hex, hyphenated string or ``uuid.UUID``; None if not a UUID."""
    if value is None or value == "":
        return None
    if isinstance(value, uuid_mod.UUID):
        return value.hex
    try:
        return uuid_mod.UUID(str(value)).hex
    except ValueError:
        return None


def uuid_from_url(url: object) -> str | None:
    """The last UUID path segment of a hyperlinked field (``.../api/users/<uuid>/``)."""
    if not isinstance(url, str) or not url:
        return None
    for segment in reversed([s for s in urlsplit(url).path.split("/") if s]):
        found = norm_uuid(segment)
        if found:
            return found
    return None


def parse_datetime(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


def parse_date(value: object) -> dt.date | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        return None


def parse_decimal(value: object) -> Decimal | None:
    """DRF sends DecimalFields as strings ("13.00"); some fields arrive as JSON numbers."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _str(value: object, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def _dict(value: object) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _bool(value: object, default: bool = False) -> bool:
    return value if isinstance(value, bool) else default


def _int(value: object, default: int | None = None) -> int | None:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class Order:
    """A marketplace order.

    ``resource_uuid`` is the **marketplace resource** (JSON ``marketplace_resource_uuid``): every provider call
    takes it. ``allocation_uuid`` is JSON ``resource_uuid``, the legacy SLURM allocation (the scope) that the
    2024 server creates asynchronously after approval; it is None until then and normally None on 8.x.
    """

    uuid: str
    type: str
    state: str
    offering_uuid: str | None = None
    resource_uuid: str | None = None
    allocation_uuid: str | None = None
    resource_name: str = ""
    project_uuid: str | None = None
    project_name: str = ""
    project_slug: str = ""
    customer_uuid: str | None = None
    customer_name: str = ""
    customer_slug: str = ""
    plan_uuid: str | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    created: dt.datetime | None = None
    modified: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    error_message: str = ""
    backend_id: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def old_limits(self) -> dict[str, Any]:
        """Limits before an Update order (``attributes.old_limits``); empty when absent."""
        return _dict(self.attributes.get("old_limits"))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Order:
        return cls(
            uuid=norm_uuid(d.get("uuid")) or "",
            type=_str(d.get("type")),
            state=_str(d.get("state")),
            offering_uuid=norm_uuid(d.get("offering_uuid")),
            resource_uuid=norm_uuid(d.get("marketplace_resource_uuid")),
            allocation_uuid=norm_uuid(d.get("resource_uuid")),
            resource_name=_str(d.get("resource_name")) or _str(_dict(d.get("attributes")).get("name")),
            project_uuid=norm_uuid(d.get("project_uuid")),
            project_name=_str(d.get("project_name")),
            project_slug=_str(d.get("project_slug")),
            customer_uuid=norm_uuid(d.get("customer_uuid")),
            customer_name=_str(d.get("customer_name")),
            customer_slug=_str(d.get("customer_slug")),
            plan_uuid=norm_uuid(d.get("plan_uuid")),
            limits=_dict(d.get("limits")),
            attributes=_dict(d.get("attributes")),
            created=parse_datetime(d.get("created")),
            modified=parse_datetime(d.get("modified")),
            completed_at=parse_datetime(d.get("completed_at")),
            error_message=_str(d.get("error_message")),
            backend_id=_str(d.get("backend_id")),
            raw=dict(d),
        )


@dataclass(frozen=True)
class Resource:
    """A marketplace resource as the provider sees it. ``backend_id`` is "" until the agent sets it."""

    uuid: str
    name: str = ""
    slug: str = ""
    state: str = ""
    backend_id: str = ""
    offering_uuid: str | None = None
    project_uuid: str | None = None
    project_name: str = ""
    project_slug: str = ""
    customer_uuid: str | None = None
    customer_name: str = ""
    customer_slug: str = ""
    plan_uuid: str | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    current_usages: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    backend_metadata: dict[str, Any] = field(default_factory=dict)
    error_message: str = ""
    end_date: dt.date | None = None
    restrict_member_access: bool = False
    paused: bool = False
    downscaled: bool = False
    allocation_uuid: str | None = None
    created: dt.datetime | None = None
    modified: dt.datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Resource:
        return cls(
            uuid=norm_uuid(d.get("uuid")) or "",
            name=_str(d.get("name")),
            slug=_str(d.get("slug")),
            state=_str(d.get("state")),
            backend_id=_str(d.get("backend_id")),
            offering_uuid=norm_uuid(d.get("offering_uuid")),
            project_uuid=norm_uuid(d.get("project_uuid")),
            project_name=_str(d.get("project_name")),
            project_slug=_str(d.get("project_slug")),
            customer_uuid=norm_uuid(d.get("customer_uuid")),
            customer_name=_str(d.get("customer_name")),
            customer_slug=_str(d.get("customer_slug")),
            plan_uuid=norm_uuid(d.get("plan_uuid")),
            limits=_dict(d.get("limits")),
            current_usages=_dict(d.get("current_usages")),
            attributes=_dict(d.get("attributes")),
            backend_metadata=_dict(d.get("backend_metadata")),
            error_message=_str(d.get("error_message")),
            end_date=parse_date(d.get("end_date")),
            restrict_member_access=_bool(d.get("restrict_member_access")),
            paused=_bool(d.get("paused")),
            downscaled=_bool(d.get("downscaled")),
            allocation_uuid=norm_uuid(d.get("resource_uuid")),
            created=parse_datetime(d.get("created")),
            modified=parse_datetime(d.get("modified")),
            raw=dict(d),
        )


@dataclass(frozen=True)
class TeamMember:
    """A member of the resource's project (``…/team/``), with the cluster login for this offering.

    ``uuid`` is the Waldur user's UUID. ``offering_user_username`` is None until the provider sets it (the 2024
    server sends ""). ``offering_user_state`` is None on 2024 servers, which have no such field.
    """

    uuid: str
    username: str = ""
    full_name: str = ""
    email: str = ""
    role: str | None = None
    offering_user_username: str | None = None
    offering_user_state: str | None = None
    expiration_time: dt.datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TeamMember:
        return cls(
            uuid=norm_uuid(d.get("uuid")) or "",
            username=_str(d.get("username")),
            full_name=_str(d.get("full_name")),
            email=_str(d.get("email")),
            role=_opt_str(d.get("role")),
            offering_user_username=_opt_str(d.get("offering_user_username")),
            offering_user_state=_opt_str(d.get("offering_user_state")),
            expiration_time=parse_datetime(d.get("expiration_time")),
            raw=dict(d),
        )


@dataclass(frozen=True)
class OfferingUser:
    """The link between a Waldur user and a cluster login for one offering.

    ``username`` is the cluster login (None while unset). ``state`` is None on 2024 servers.
    """

    uuid: str
    user_uuid: str | None = None
    username: str | None = None
    state: str | None = None
    offering_uuid: str | None = None
    user_username: str = ""
    user_full_name: str = ""
    user_email: str = ""
    is_restricted: bool = False
    customer_uuid: str | None = None
    created: dt.datetime | None = None
    modified: dt.datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> OfferingUser:
        return cls(
            uuid=norm_uuid(d.get("uuid")) or "",
            user_uuid=norm_uuid(d.get("user_uuid")) or uuid_from_url(d.get("user")),
            username=_opt_str(d.get("username")),
            state=_opt_str(d.get("state")),
            offering_uuid=norm_uuid(d.get("offering_uuid")) or uuid_from_url(d.get("offering")),
            user_username=_str(d.get("user_username")),
            user_full_name=_str(d.get("user_full_name")),
            user_email=_str(d.get("user_email")),
            is_restricted=_bool(d.get("is_restricted")),
            customer_uuid=norm_uuid(d.get("customer_uuid")),
            created=parse_datetime(d.get("created")),
            modified=parse_datetime(d.get("modified")),
            raw=dict(d),
        )


@dataclass(frozen=True)
class OfferingComponent:
    """An offering component; ``type`` is the key of usage and limit dicts (the TRES name for this agent)."""

    uuid: str
    type: str
    name: str = ""
    measured_unit: str = ""
    billing_type: str = ""
    description: str = ""
    limit_period: str | None = None
    limit_amount: Decimal | None = None
    unit_factor: int | None = None
    article_code: str = ""
    min_value: Decimal | None = None
    max_value: Decimal | None = None
    default_limit: Decimal | None = None
    is_builtin: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> OfferingComponent:
        return cls(
            uuid=norm_uuid(d.get("uuid")) or "",
            type=_str(d.get("type")),
            name=_str(d.get("name")),
            measured_unit=_str(d.get("measured_unit")),
            billing_type=_str(d.get("billing_type")),
            description=_str(d.get("description")),
            limit_period=_opt_str(d.get("limit_period")),
            limit_amount=parse_decimal(d.get("limit_amount")),
            unit_factor=_int(d.get("unit_factor")),
            article_code=_str(d.get("article_code")),
            min_value=parse_decimal(d.get("min_value")),
            max_value=parse_decimal(d.get("max_value")),
            default_limit=parse_decimal(d.get("default_limit")),
            is_builtin=_bool(d.get("is_builtin")),
            raw=dict(d),
        )


@dataclass(frozen=True)
class Plan:
    uuid: str
    name: str = ""
    unit: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Plan:
        return cls(uuid=norm_uuid(d.get("uuid")) or "", name=_str(d.get("name")), unit=_str(d.get("unit")), raw=dict(d))


@dataclass(frozen=True)
class Offering:
    uuid: str
    name: str = ""
    type: str = ""
    state: str = ""
    customer_uuid: str | None = None
    customer_name: str = ""
    backend_id: str = ""
    components: tuple[OfferingComponent, ...] = ()
    plans: tuple[Plan, ...] = ()
    plugin_options: dict[str, Any] = field(default_factory=dict)
    secret_options: dict[str, Any] = field(default_factory=dict, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def components_by_type(self) -> dict[str, OfferingComponent]:
        return {c.type: c for c in self.components}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Offering:
        comps = d.get("components")
        plans = d.get("plans")
        return cls(
            uuid=norm_uuid(d.get("uuid")) or "",
            name=_str(d.get("name")),
            type=_str(d.get("type")),
            state=_str(d.get("state")),
            customer_uuid=norm_uuid(d.get("customer_uuid")) or uuid_from_url(d.get("customer")),
            customer_name=_str(d.get("customer_name")),
            backend_id=_str(d.get("backend_id")),
            components=tuple(
                OfferingComponent.from_json(c) for c in (comps if isinstance(comps, list) else []) if isinstance(c, Mapping)
            ),
            plans=tuple(Plan.from_json(p) for p in (plans if isinstance(plans, list) else []) if isinstance(p, Mapping)),
            plugin_options=_dict(d.get("plugin_options")),
            secret_options=_dict(d.get("secret_options")),
            raw=dict(d),
        )


@dataclass(frozen=True)
class ComponentUsage:
    """The reported value of one component for one resource and billing month (``usage`` in Waldur units)."""

    uuid: str
    resource_uuid: str | None
    type: str
    usage: Decimal
    billing_period: dt.date | None = None
    date: dt.datetime | None = None
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ComponentUsage:
        return cls(
            uuid=norm_uuid(d.get("uuid")) or "",
            resource_uuid=norm_uuid(d.get("resource_uuid")),
            type=_str(d.get("type")),
            usage=parse_decimal(d.get("usage")) or Decimal("0"),
            billing_period=parse_date(d.get("billing_period")),
            date=parse_datetime(d.get("date")),
            description=_str(d.get("description")),
            raw=dict(d),
        )


@dataclass(frozen=True)
class UserUsage:
    """Per-user share of a ComponentUsage (``username`` is the cluster login that was reported)."""

    uuid: str
    component_usage_uuid: str | None
    username: str
    usage: Decimal
    component_type: str = ""
    resource_uuid: str | None = None
    billing_period: dt.date | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> UserUsage:
        return cls(
            uuid=norm_uuid(d.get("uuid")) or "",
            component_usage_uuid=uuid_from_url(d.get("component_usage")),
            username=_str(d.get("username")),
            usage=parse_decimal(d.get("usage")) or Decimal("0"),
            component_type=_str(d.get("component_type")),
            resource_uuid=norm_uuid(d.get("resource_uuid")),
            billing_period=parse_date(d.get("billing_period")),
            raw=dict(d),
        )


@dataclass(frozen=True)
class PlanPeriod:
    uuid: str
    plan_uuid: str | None = None
    plan_name: str = ""
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PlanPeriod:
        return cls(
            uuid=norm_uuid(d.get("uuid")) or "",
            plan_uuid=norm_uuid(d.get("plan_uuid")),
            plan_name=_str(d.get("plan_name")),
            start=parse_datetime(d.get("start")),
            end=parse_datetime(d.get("end")),
            raw=dict(d),
        )


@dataclass(frozen=True)
class CurrentUser:
    """``/api/users/me/``: who the token belongs to."""

    uuid: str
    username: str = ""
    full_name: str = ""
    is_staff: bool = False
    token_expires_at: dt.datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CurrentUser:
        raw = {k: v for k, v in d.items() if k != "token"}  # never keep the token around
        return cls(
            uuid=norm_uuid(d.get("uuid")) or "",
            username=_str(d.get("username")),
            full_name=_str(d.get("full_name")),
            is_staff=_bool(d.get("is_staff")),
            token_expires_at=parse_datetime(d.get("token_expires_at")),
            raw=raw,
        )
