"""``WaldurClient``: the calls the agent makes to Waldur, named in the agent's terms.

This is the only module that imports ``waldur_api_client``. Requests are built by the SDK's generated endpoint
functions (their ``_get_kwargs``: method, path, query and JSON body exactly as the SDK sends them) and sent
through ``Transport`` over the SDK's own ``httpx`` client (``AuthenticatedClient.get_httpx_client()``), which
adds timeouts, safe retries, typed errors and request counting. Answers are read from the raw JSON into the
tolerant dataclasses of ``models.py``, never through the SDK's strict models, so an unknown enum value, an
extra field, a missing field or an empty action body from another server version cannot crash the agent.

The server flavour is detected once (``flavour``): ``"8"`` for 8.x, ``"2024"`` for an Oct-2024 (7.x) server
that still has ``/api/marketplace-slurm-remote/``. Methods pick the calls of that flavour:

| method | 8.x | 2024 |
|---|---|---|
| set_backend_id | provider-resources set_backend_id | the same, plus slurm-remote set_backend_id |
| set_limits | provider-resources set_limits ``{"limits": {...}}`` | slurm-remote set_limits with the bare dict |
| complete_order | set_state_done | allocation creating/updating→ok (auto-completes), then set_state_done if still needed |
| mark_resource_erred/ok | set_as_erred / set_as_ok | slurm-remote set_state erred / ok |
| set_user_usages | one bulk call | one set_user_usage per user |
| associations, allocation state | no-ops | slurm-remote |

Non-idempotent writes (approve, reject, set_state_done, set_state_erred, create_component, ...) are never sent
twice: on an ambiguous failure (timeout, dropped connection, 5xx) the facade re-reads the object; if the
action took effect it is a success, otherwise the ``WaldurTransientError`` propagates and the agent tries again
next cycle.
"""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
import logging
import re
import ssl
import time
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import httpx

from .sdk_models import install_lazy_models

install_lazy_models()  # before the first SDK import: the eager models package weighs ~100 MB

from waldur_api_client import AuthenticatedClient  # noqa: E402
from waldur_api_client.api.marketplace_component_usages import (
    marketplace_component_usages_list,
    marketplace_component_usages_set_usage,
    marketplace_component_usages_set_user_usage,
    marketplace_component_usages_set_user_usages,
)
from waldur_api_client.api.marketplace_component_user_usages import marketplace_component_user_usages_list
from waldur_api_client.api.marketplace_offering_users import (
    marketplace_offering_users_create,
    marketplace_offering_users_list,
    marketplace_offering_users_partial_update,
)
from waldur_api_client.api.marketplace_orders import (
    marketplace_orders_approve_by_provider,
    marketplace_orders_list,
    marketplace_orders_reject_by_provider,
    marketplace_orders_retrieve,
    marketplace_orders_set_state_done,
    marketplace_orders_set_state_erred,
)
from waldur_api_client.api.marketplace_provider_offerings import (
    marketplace_provider_offerings_create_offering_component,
    marketplace_provider_offerings_remove_offering_component,
    marketplace_provider_offerings_retrieve,
    marketplace_provider_offerings_update_offering_component,
)
from waldur_api_client.api.marketplace_provider_resources import (
    marketplace_provider_resources_list,
    marketplace_provider_resources_plan_periods_list,
    marketplace_provider_resources_retrieve,
    marketplace_provider_resources_set_as_erred,
    marketplace_provider_resources_set_as_ok,
    marketplace_provider_resources_set_backend_id,
    marketplace_provider_resources_set_backend_metadata,
    marketplace_provider_resources_set_limits,
    marketplace_provider_resources_team_list,
)
from waldur_api_client.api.users import users_me_retrieve
from waldur_api_client.api.version import version_retrieve
from waldur_api_client.models import (
    BillingTypeEnum,
    ComponentUsageCreateRequest,
    ComponentUsageFieldEnum,
    ComponentUsageItemRequest,
    ComponentUserUsageBulkCreateRequest,
    ComponentUserUsageCreateRequest,
    ComponentUserUsageFieldEnum,
    LimitPeriodEnum,
    OfferingComponentRequest,
    OfferingUserFieldEnum,
    OfferingUserRequest,
    OfferingUserState,
    OfferingUserStateTransitionRequest,
    OrderApproveByProviderRequest,
    OrderDetailsFieldEnum,
    OrderErrorDetailsRequest,
    OrderProviderRejectionRequest,
    OrderState,
    PatchedOfferingUserRequest,
    RemoveOfferingComponentRequest,
    RequestTypes,
    ResourceBackendIDRequest,
    ResourceBackendMetadataRequest,
    ResourceBackendMetadataRequestBackendMetadata,
    ResourceFieldEnum,
    ResourceSetLimitsRequest,
    ResourceSetLimitsRequestLimits,
    ResourceSetStateErredRequest,
    ResourceState,
    UpdateOfferingComponentRequest,
)
from waldur_api_client.types import UNSET

from .. import USER_AGENT
from ..concurrency import run_bounded
from .errors import (
    WaldurAllocationPending,
    WaldurAuthError,
    WaldurConflict,
    WaldurError,
    WaldurNotFound,
    WaldurPermanentError,
    WaldurTransientError,
)
from .models import (
    ComponentUsage,
    CurrentUser,
    Offering,
    OfferingUser,
    Order,
    PlanPeriod,
    Resource,
    TeamMember,
    UserUsage,
    norm_uuid,
    uuid_from_url,
)
from .transport import Transport

log = logging.getLogger("waldur_slurm.waldur")

FLAVOUR_8 = "8"
FLAVOUR_2024 = "2024"
API_ROOT = "/api/"
SLURM_REMOTE_PREFIX = "marketplace-slurm-remote"
SLURM_REMOTE = f"/api/{SLURM_REMOTE_PREFIX}/"
ASSOCIATIONS = "/api/slurm-associations/"
MAX_PAGE_SIZE = 300
_LINK_RE = re.compile(r'<([^>]*)>\s*;\s*rel="?([A-Za-z]+)"?')

# ``field=`` of every list the agent reads: only what the models parse and the agent uses. A full resource
# costs the server far more than these (2.3-5.4 s per page of 300 on the 2024 server, against 0.2-0.3 s).
# Servers ignore names their serializer lacks (the 2024 offering user has no ``state``), and lists whose
# serializer has no field selection answer every field anyway (the 2024 usages and associations).
ORDER_FIELDS = (
    "uuid", "type", "state", "offering_uuid", "marketplace_resource_uuid", "resource_uuid", "resource_name",
    "attributes", "project_uuid", "customer_uuid", "limits", "created", "modified", "error_message", "plan_uuid",
    "old_plan_uuid",
)  # fmt: skip
RESOURCE_FIELDS = (
    "uuid", "name", "state", "backend_id", "limits", "offering_uuid", "project_uuid", "customer_uuid", "resource_uuid",
    "paused", "downscaled", "restrict_member_access",  # Waldur 8 enforcement flags (the 2024 server shows them false)
)  # fmt: skip
OFFERING_USER_FIELDS = ("uuid", "user_uuid", "user", "username", "state", "offering_uuid", "user_username", "is_restricted")
COMPONENT_USAGE_FIELDS = ("uuid", "resource_uuid", "type", "usage", "billing_period")
USER_USAGE_FIELDS = ("uuid", "component_usage", "username", "usage", "component_type", "resource_uuid", "billing_period")

# order states that mean "approved by the provider" once approve_by_provider was sent
_APPROVED_STATES = frozenset({"executing", "done", "erred"})


def host_root(api_url: str) -> str:
    """``https://h/api/`` -> ``https://h``: the SDK's paths already start with ``/api/``.

    ``removesuffix``, never ``rstrip("/api")``, which strips characters and mangles hosts ending in a/p/i.
    """
    url = api_url.strip()
    if url.endswith("/api/"):
        url = url.removesuffix("/api/")
    elif url.endswith("/api"):
        url = url.removesuffix("/api")
    return url.removesuffix("/")


def _json_int(text: str) -> int | Decimal:
    return int(text) if len(text) <= 4000 else Decimal(text)


def json_number(value: Any) -> int | float:
    """Limits go out as JSON numbers: integral values as int, others as float."""
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    d = Decimal(str(value))
    if d == d.to_integral_value():
        return int(d)
    return float(d)


def usage_amount(value: Any) -> str:
    """Waldur accepts at most 2 decimal places; the amount goes out as a decimal string."""
    return str(Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


class WaldurClient:
    """Facade over ``waldur_api_client`` for one offering, in the agent's terms.

    ``api_url`` is the host root; a trailing ``/api/`` (the old agent's convention) is accepted and removed.
    ``request_counts`` counts HTTP requests by method (retries included); ``requests_total`` is their sum.
    """

    def __init__(
        self,
        api_url: str,
        token: str,
        offering_uuid: str,
        *,
        verify_ssl: bool = True,
        ca_bundle: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        user_agent: str = USER_AGENT,
        flavour: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        backoff_base: float = 0.5,
        backoff_max: float = 5.0,
        page_size: int = MAX_PAGE_SIZE,
    ) -> None:
        offering = norm_uuid(offering_uuid)
        if offering is None:
            raise ValueError("offering_uuid is not a UUID")
        # A malformed token would end up quoted in httpx's header error; refuse it before anything is sent.
        if not token or not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
            raise ValueError("the Waldur API token is empty or contains whitespace or non-printable characters")
        if flavour not in (None, FLAVOUR_8, FLAVOUR_2024):
            raise ValueError(f"flavour must be {FLAVOUR_8!r} or {FLAVOUR_2024!r}")
        self.base_url = host_root(api_url)
        self.offering_uuid = offering
        self.page_size = max(1, min(page_size, MAX_PAGE_SIZE))
        verify: bool | ssl.SSLContext = verify_ssl
        if verify_ssl and ca_bundle:
            verify = ssl.create_default_context(cafile=ca_bundle)
        self._sdk = AuthenticatedClient(
            base_url=self.base_url,
            token=token,
            headers={"User-Agent": user_agent, "Accept": "application/json"},
            timeout=httpx.Timeout(timeout),
            verify_ssl=verify,
            follow_redirects=False,
        )
        self._transport = Transport(
            self._sdk.get_httpx_client(),
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            sleep=sleep,
        )
        self._flavour = flavour

    def __repr__(self) -> str:  # never show the token
        return f"WaldurClient({self.base_url!r}, offering={self.offering_uuid}, flavour={self._flavour})"

    # ------------------------------------------------------------------ lifecycle and counters
    def close(self) -> None:
        self._sdk.get_httpx_client().close()

    def __enter__(self) -> WaldurClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def request_counts(self) -> dict[str, int]:
        """HTTP requests sent so far, by method (``{"GET": 12, "POST": 3}``); retries count."""
        return dict(self._transport.request_counts)

    @property
    def requests_total(self) -> int:
        return self._transport.requests_total

    @property
    def retries(self) -> int:
        return self._transport.retries

    def reset_counts(self) -> None:
        self._transport.request_counts.clear()
        self._transport.retries = 0

    # ------------------------------------------------------------------ plumbing
    def _send(
        self,
        endpoint: Any,
        *,
        idempotent: bool | None = None,
        ok_statuses: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> httpx.Response:
        req = endpoint._get_kwargs(**kwargs)
        return self._transport.request(
            req["method"],
            req["url"],
            params=req.get("params") or None,
            json_body=req.get("json"),
            headers=req.get("headers") or None,
            idempotent=idempotent,
            ok_statuses=ok_statuses,
        )

    def _raw(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Any = None,
        idempotent: bool | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> httpx.Response:
        """For routes the SDK has no function for (the 2024 slurm-remote endpoints)."""
        return self._transport.request(
            method, path, params=params, json_body=json_body, idempotent=idempotent, ok_statuses=ok_statuses
        )

    @staticmethod
    def _json(resp: httpx.Response) -> Any:
        if not resp.content:
            return None
        try:
            # parse_int: Python refuses int() of more than 4,300 digits; such a number (an order limit, say)
            # must fail only the object it is in, so it stays a Decimal for the validators to refuse
            return resp.json(parse_int=_json_int)
        except ValueError:
            raise WaldurPermanentError(
                f"Waldur {resp.request.method} {resp.request.url.path}: HTTP {resp.status_code} with a non-JSON body",
                status=resp.status_code,
            ) from None

    def _object(self, resp: httpx.Response) -> dict[str, Any]:
        data = self._json(resp)
        if not isinstance(data, dict):
            raise WaldurPermanentError(
                f"Waldur {resp.request.method} {resp.request.url.path}: expected a JSON object", status=resp.status_code
            )
        return data

    def _items(self, resp: httpx.Response) -> list[dict[str, Any]]:
        data = self._json(resp)
        if data is None:
            return []
        if not isinstance(data, list):
            raise WaldurPermanentError(
                f"Waldur {resp.request.method} {resp.request.url.path}: expected a JSON list", status=resp.status_code
            )
        return [x for x in data if isinstance(x, dict)]

    def _list_all(self, endpoint: Any, **filters: Any) -> list[dict[str, Any]]:
        """Every page of a DRF list: the largest page size, following ``Link: rel="next"``.

        Like the SDK's ``sync_all``, only the page number is taken from the Link URL; host and filters stay
        ours, so it works behind proxies that rewrite hosts.
        """
        out: list[dict[str, Any]] = []
        page: int | None = 1
        seen: set[int] = set()
        while page is not None and page not in seen:
            seen.add(page)
            resp = self._send(endpoint, page=page, page_size=self.page_size, **filters)
            out.extend(self._items(resp))
            page = _next_page(resp.headers.get("Link"))
        return out

    def _write_verified(self, send: Callable[[], Any], applied: Callable[[], bool], what: str) -> None:
        """Send a non-idempotent write once; on an ambiguous failure, re-read and decide."""
        try:
            send()
        except WaldurTransientError as e:
            if not e.maybe_applied:
                raise
            log.warning("%s: ambiguous failure (%s); re-reading to decide", what, e.message)
            if applied():
                log.info("%s: the server had applied it", what)
                return
            raise

    # ------------------------------------------------------------------ server
    @property
    def flavour(self) -> str:
        """``"8"`` or ``"2024"``, detected once from the API root (``GET /api/``, DRF's router index).

        The 2024 server registers ``marketplace-slurm-remote`` there; 8.x has no such route. The root answers
        200 on both, whereas probing the slurm-remote list itself costs a 405 on 2024 (its list action is
        disabled) and a 404 on 8.x, an error in the server's log at every start.
        """
        if self._flavour is None:
            root = self._json(self._raw("GET", API_ROOT))
            self._flavour = FLAVOUR_2024 if isinstance(root, dict) and SLURM_REMOTE_PREFIX in root else FLAVOUR_8
            log.info("Waldur server flavour: %s", self._flavour)
        return self._flavour

    def server_version(self) -> str:
        data = self._object(self._send(version_retrieve))
        return str(data.get("version", ""))

    def whoami(self) -> CurrentUser:
        return CurrentUser.from_json(self._object(self._send(users_me_retrieve)))

    # ------------------------------------------------------------------ offering and components
    def get_offering(self) -> Offering:
        return Offering.from_json(self._object(self._send(marketplace_provider_offerings_retrieve, uuid=self.offering_uuid)))

    @staticmethod
    def _component_fields(
        type: str,
        name: str,
        billing_type: str,
        measured_unit: str,
        description: str,
        limit_amount: Decimal | int | float | None,
        limit_period: str | None,
        unit_factor: int | None,
        article_code: str | None,
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "billing_type": BillingTypeEnum(billing_type),
            "type_": type,
            "name": name,
            "measured_unit": measured_unit,
            "description": description,
        }
        if limit_amount is not None:
            fields["limit_amount"] = json_number(limit_amount)
        if limit_period is not None:
            fields["limit_period"] = LimitPeriodEnum(limit_period)
        if unit_factor is not None:
            fields["unit_factor"] = int(unit_factor)
        if article_code is not None:
            fields["article_code"] = article_code
        return fields

    def create_component(
        self,
        type: str,
        name: str,
        billing_type: str,
        *,
        measured_unit: str = "",
        description: str = "",
        limit_amount: Decimal | int | float | None = None,
        limit_period: str | None = None,
        unit_factor: int | None = None,
        article_code: str | None = None,
    ) -> None:
        body = OfferingComponentRequest(
            **self._component_fields(type, name, billing_type, measured_unit, description, limit_amount, limit_period, unit_factor, article_code)
        )
        self._write_verified(
            lambda: self._send(marketplace_provider_offerings_create_offering_component, uuid=self.offering_uuid, body=body),
            lambda: type in self.get_offering().components_by_type(),
            f"create component {type}",
        )

    def update_component(
        self,
        component_uuid: str,
        type: str,
        name: str,
        billing_type: str,
        *,
        measured_unit: str = "",
        description: str = "",
        limit_amount: Decimal | int | float | None = None,
        limit_period: str | None = None,
        unit_factor: int | None = None,
        article_code: str | None = None,
    ) -> None:
        body = UpdateOfferingComponentRequest(
            uuid=UUID(component_uuid),
            **self._component_fields(type, name, billing_type, measured_unit, description, limit_amount, limit_period, unit_factor, article_code),
        )
        self._send(marketplace_provider_offerings_update_offering_component, uuid=self.offering_uuid, body=body, idempotent=True)

    def remove_component(self, component_uuid: str) -> None:
        body = RemoveOfferingComponentRequest(uuid=UUID(component_uuid))
        wanted = norm_uuid(component_uuid)
        self._write_verified(
            lambda: self._send(marketplace_provider_offerings_remove_offering_component, uuid=self.offering_uuid, body=body),
            lambda: all(c.uuid != wanted for c in self.get_offering().components),
            f"remove component {component_uuid}",
        )

    # ------------------------------------------------------------------ orders
    def list_orders(
        self,
        states: Iterable[str] = ("pending-provider", "executing"),
        types: Iterable[str] | None = None,
        modified_since: dt.datetime | None = None,
    ) -> list[Order]:
        """Orders of the offering in these states (all pages), optionally only those modified since a time."""
        filters: dict[str, Any] = {
            "offering_uuid": UUID(self.offering_uuid),
            "state": [OrderState(s) for s in states],
            "field": [OrderDetailsFieldEnum(f) for f in ORDER_FIELDS],
        }
        if types is not None:
            filters["type_"] = [RequestTypes(t) for t in types]
        if modified_since is not None:
            filters["modified"] = modified_since
        return [Order.from_json(d) for d in self._list_all(marketplace_orders_list, **filters)]

    def get_order(self, order_uuid: str) -> Order:
        return Order.from_json(self._object(self._send(marketplace_orders_retrieve, uuid=order_uuid)))

    def approve_order(self, order_uuid: str) -> Order:
        """approve_by_provider, then the order re-read (the 2024 server fills ``allocation_uuid`` after approval).

        409 on an order that is already past pending-provider (executing, done, erred) counts as approved.
        """
        resp: httpx.Response | None = None

        def send() -> None:
            nonlocal resp
            resp = self._send(
                marketplace_orders_approve_by_provider, uuid=order_uuid, body=OrderApproveByProviderRequest(), ok_statuses=(409,)
            )

        self._write_verified(send, lambda: self.get_order(order_uuid).state in _APPROVED_STATES, f"approve order {order_uuid}")
        order = self.get_order(order_uuid)
        if resp is not None and resp.status_code == 409 and order.state not in _APPROVED_STATES:
            raise WaldurConflict(
                f"approve order {order_uuid}: HTTP 409, order is {order.state}", status=409, detail=order.state
            )
        return order

    def reject_order(self, order_uuid: str, message: str) -> None:
        resp: httpx.Response | None = None

        def send() -> None:
            nonlocal resp
            resp = self._send(
                marketplace_orders_reject_by_provider,
                uuid=order_uuid,
                body=OrderProviderRejectionRequest(provider_rejection_comment=message),
                ok_statuses=(409,),
            )

        self._write_verified(send, lambda: self.get_order(order_uuid).state == "rejected", f"reject order {order_uuid}")
        if resp is not None and resp.status_code == 409:
            state = self.get_order(order_uuid).state
            if state != "rejected":
                raise WaldurConflict(f"reject order {order_uuid}: HTTP 409, order is {state}", status=409, detail=state)

    def mark_order_done(self, order_uuid: str) -> None:
        """set_state_done; a 409 on an order that is already ``done`` is success."""
        try:
            self._write_verified(
                lambda: self._send(marketplace_orders_set_state_done, uuid=order_uuid),
                lambda: self.get_order(order_uuid).state == "done",
                f"set order {order_uuid} done",
            )
        except WaldurConflict:
            state = self.get_order(order_uuid).state
            if state != "done":
                raise WaldurConflict(
                    f"set order {order_uuid} done: HTTP 409, order is {state}", status=409, detail=state
                ) from None

    def mark_order_erred(self, order_uuid: str, message: str, traceback: str = "") -> bool:
        """set_state_erred, but only on an order that is ``executing`` right now.

        Mastermind's set_state_erred has no state check: on a done or pending order it flips the resource to
        Erred while the order stays. So the order is re-read first; returns False (and sends nothing) unless it
        is executing.
        """
        order = self.get_order(order_uuid)
        if order.state != "executing":
            log.warning("not marking order %s erred: it is %s, not executing", order_uuid, order.state)
            return False
        body = OrderErrorDetailsRequest(error_message=message[:2000], error_traceback=traceback[:20000])
        self._write_verified(
            lambda: self._send(marketplace_orders_set_state_erred, uuid=order_uuid, body=body),
            lambda: self.get_order(order_uuid).state == "erred",
            f"set order {order_uuid} erred",
        )
        return True

    def complete_order(self, order: Order) -> None:
        """Finish an executing order after the backend work is done.

        8.x: set_state_done (409 with the order done = success). 2024, Create/Update/Restore: the allocation
        goes creating (updating) → ok, which auto-completes the order; the order is re-read and set_state_done
        is sent only if it is still executing (the server does not auto-complete from Creation Scheduled).
        409s from set_state are tolerated, so a retry after a crash half-way through works. Terminate:
        set_state_done in both flavours.
        """
        if self.flavour == FLAVOUR_8 or order.type == "Terminate":
            self.mark_order_done(order.uuid)
            return
        if order.resource_uuid is None:
            raise WaldurPermanentError(f"order {order.uuid} has no marketplace resource")
        if order.allocation_uuid is None:
            order = self.get_order(order.uuid)
            if order.state == "done":
                return
            if order.allocation_uuid is None:
                raise WaldurAllocationPending(
                    f"order {order.uuid}: the server has not created the SLURM allocation yet (its task queue may be down)"
                )
        first = "updating" if order.type == "Update" else "creating"
        self.set_allocation_state(order.resource_uuid, first, tolerate_conflict=True)
        self.set_allocation_state(order.resource_uuid, "ok", tolerate_conflict=True)
        state = self.get_order(order.uuid).state
        if state == "done":
            return
        if state != "executing":
            raise WaldurConflict(f"complete order {order.uuid}: order is {state}", status=409, detail=state)
        self.mark_order_done(order.uuid)

    # ------------------------------------------------------------------ resources
    def list_resources(
        self,
        states: Iterable[str] | None = None,
        fields: Iterable[str] | None = None,
        backend_id: str | None = None,
    ) -> list[Resource]:
        """Resources of the offering (all pages), with ``fields`` only (default: ``RESOURCE_FIELDS``)."""
        filters: dict[str, Any] = {"offering_uuid": [UUID(self.offering_uuid)]}
        if states is not None:
            filters["state"] = [ResourceState(s) for s in states]
        filters["field"] = [ResourceFieldEnum(f) for f in (RESOURCE_FIELDS if fields is None else fields)]
        if backend_id is not None:
            filters["backend_id"] = backend_id
        return [Resource.from_json(d) for d in self._list_all(marketplace_provider_resources_list, **filters)]

    def get_resource(self, resource_uuid: str) -> Resource:
        return Resource.from_json(self._object(self._send(marketplace_provider_resources_retrieve, uuid=resource_uuid)))

    def _slurm_remote(self, resource_uuid: str, action: str, body: Any, *, idempotent: bool, ok_statuses: tuple[int, ...] = ()) -> httpx.Response:
        uuid = norm_uuid(resource_uuid)
        try:
            return self._raw("POST", f"{SLURM_REMOTE}{uuid}/{action}/", json_body=body, idempotent=idempotent, ok_statuses=ok_statuses)
        except WaldurNotFound as e:
            # The viewset sees only resources whose allocation exists; the server creates it in a task after
            # approval, so a 404 here is "not yet" (or a stuck task queue), not "gone".
            raise WaldurAllocationPending(
                f"Waldur slurm-remote {action} for resource {uuid}: allocation not found (not created yet?)",
                status=404,
                method="POST",
                path=e.path,
            ) from e

    def set_backend_id(self, resource_uuid: str, backend_id: str) -> bool:
        """Record the SLURM account name; returns whether the marketplace value changed."""
        resp = self._send(
            marketplace_provider_resources_set_backend_id,
            uuid=resource_uuid,
            body=ResourceBackendIDRequest(backend_id=backend_id),
            idempotent=True,
        )
        status = str((self._json(resp) or {}).get("status", ""))
        if self.flavour == FLAVOUR_2024:
            self._slurm_remote(resource_uuid, "set_backend_id", {"backend_id": backend_id}, idempotent=True)
        return "not changed" not in status

    def set_limits(self, resource_uuid: str, limits: Mapping[str, Any]) -> None:
        """Overwrite ``resource.limits`` (Waldur units)."""
        payload = {str(k): json_number(v) for k, v in limits.items()}
        if self.flavour == FLAVOUR_2024:
            self._slurm_remote(resource_uuid, "set_limits", payload, idempotent=True)
            return
        body = ResourceSetLimitsRequest(limits=ResourceSetLimitsRequestLimits.from_dict(payload))
        self._send(marketplace_provider_resources_set_limits, uuid=resource_uuid, body=body, idempotent=True)

    def set_backend_metadata(self, resource_uuid: str, metadata: Mapping[str, Any]) -> None:
        body = ResourceBackendMetadataRequest(
            backend_metadata=ResourceBackendMetadataRequestBackendMetadata.from_dict(dict(metadata))
        )
        self._send(marketplace_provider_resources_set_backend_metadata, uuid=resource_uuid, body=body, idempotent=True)

    def set_allocation_state(self, resource_uuid: str, state: str, *, tolerate_conflict: bool = False) -> bool:
        """2024 only: drive the SLURM allocation (creating, updating, ok, erred, ...). No-op (False) on 8.x.

        Returns True when the server changed the state; with ``tolerate_conflict`` a 409 (transition not
        allowed from the current state) returns False instead of raising.
        """
        if self.flavour != FLAVOUR_2024:
            return False
        resp = self._slurm_remote(
            resource_uuid, "set_state", {"state": state}, idempotent=False, ok_statuses=(409,) if tolerate_conflict else ()
        )
        if resp.status_code == 409:
            log.info("allocation of %s: %s not applied (%s)", resource_uuid, state, (self._json(resp) or {}).get("detail", ""))
            return False
        return True

    def mark_resource_erred(self, resource_uuid: str, message: str) -> None:
        if self.flavour == FLAVOUR_2024:
            self.set_allocation_state(resource_uuid, "erred")
            return
        body = ResourceSetStateErredRequest(error_message=message[:2000], error_traceback="")
        self._send(marketplace_provider_resources_set_as_erred, uuid=resource_uuid, body=body, idempotent=True)

    def mark_resource_ok(self, resource_uuid: str) -> None:
        if self.flavour == FLAVOUR_2024:
            self.set_allocation_state(resource_uuid, "ok", tolerate_conflict=True)
            return
        self._send(marketplace_provider_resources_set_as_ok, uuid=resource_uuid, idempotent=True)

    def team(self, resource_uuid: str) -> list[TeamMember]:
        """Project members of the resource with their cluster login for this offering (one unpaginated call)."""
        resp = self._send(marketplace_provider_resources_team_list, uuid=resource_uuid)
        return [TeamMember.from_json(d) for d in self._items(resp)]

    def teams(self, resource_uuids: Iterable[str], *, workers: int = 1) -> dict[str, list[TeamMember] | WaldurError]:
        """``team`` of each resource, up to ``workers`` requests at once: Waldur has no offering-wide list of
        teams, and one request at a time costs N round trips per pass. A resource whose team cannot be read
        maps to its error; an authentication error (the token is refused) is raised."""
        uuids = list(dict.fromkeys(resource_uuids))
        out: dict[str, list[TeamMember] | WaldurError] = {}

        def one(uuid: str) -> None:
            try:
                out[uuid] = self.team(uuid)
            except WaldurAuthError:
                raise
            except WaldurError as exc:
                out[uuid] = exc

        run_bounded(one, uuids, workers, name="waldur-read")
        return out

    def plan_periods(self, resource_uuid: str) -> list[PlanPeriod]:
        resp = self._send(marketplace_provider_resources_plan_periods_list, uuid=resource_uuid)
        return [PlanPeriod.from_json(d) for d in self._items(resp)]

    # ------------------------------------------------------------------ offering users
    def list_offering_users(self, states: Iterable[str] | None = None) -> list[OfferingUser]:
        """Offering users of the offering (all pages). ``states`` only on 8.x; the 2024 server has none."""
        filters: dict[str, Any] = {
            "offering_uuid": [UUID(self.offering_uuid)],
            "field": [OfferingUserFieldEnum(f) for f in OFFERING_USER_FIELDS],
        }
        if states is not None and self.flavour == FLAVOUR_8:
            filters["state"] = [OfferingUserState(s) for s in states]
        return [OfferingUser.from_json(d) for d in self._list_all(marketplace_offering_users_list, **filters)]

    def set_offering_user_username(self, offering_user_uuid: str, username: str) -> OfferingUser:
        """PATCH the cluster login; on 8.x this also moves a Creating/Error creating user to OK."""
        resp = self._send(
            marketplace_offering_users_partial_update,
            uuid=offering_user_uuid,
            body=PatchedOfferingUserRequest(username=username),
            idempotent=True,
        )
        return OfferingUser.from_json(self._object(resp))

    def create_offering_user(self, user_uuid: str, username: str) -> OfferingUser:
        """For users Waldur did not create itself; 400 if the (offering, user) pair already exists."""
        body = OfferingUserRequest(offering_uuid=UUID(self.offering_uuid), user_uuid=UUID(user_uuid), username=username)
        resp = self._send(marketplace_offering_users_create, body=body)
        return OfferingUser.from_json(self._object(resp))

    def offering_user_action(self, offering_user_uuid: str, action: str, comment: str = "") -> bool:
        """8.x state actions (begin_creating, set_ok, set_error_creating, ...); False (nothing sent) on 2024."""
        if self.flavour != FLAVOUR_8:
            return False
        module = importlib.import_module(f"waldur_api_client.api.marketplace_offering_users.marketplace_offering_users_{action}")
        kwargs: dict[str, Any] = {"uuid": offering_user_uuid}
        if "body" in inspect.signature(module._get_kwargs).parameters:
            kwargs["body"] = OfferingUserStateTransitionRequest(comment=comment) if comment else OfferingUserStateTransitionRequest()
        self._send(module, **kwargs)
        return True

    # ------------------------------------------------------------------ usage
    def list_component_usages(self, billing_period: dt.date, resource_uuid: str | None = None) -> list[ComponentUsage]:
        """Reported usages of the month for the whole offering (or one resource), all pages."""
        filters: dict[str, Any] = {
            "offering_uuid": UUID(self.offering_uuid),
            "billing_period": billing_period.replace(day=1),
            "field": [ComponentUsageFieldEnum(f) for f in COMPONENT_USAGE_FIELDS],
        }
        if resource_uuid is not None:
            filters["resource_uuid"] = UUID(resource_uuid)
        return [ComponentUsage.from_json(d) for d in self._list_all(marketplace_component_usages_list, **filters)]

    def list_user_usages(self, billing_period: dt.date, resource_uuid: str | None = None) -> list[UserUsage]:
        filters: dict[str, Any] = {
            "offering_uuid": UUID(self.offering_uuid),
            "component_usage_billing_period": billing_period.replace(day=1),
            "field": [ComponentUserUsageFieldEnum(f) for f in USER_USAGE_FIELDS],
        }
        if resource_uuid is not None:
            filters["resource_uuid"] = UUID(resource_uuid)
        return [UserUsage.from_json(d) for d in self._list_all(marketplace_component_user_usages_list, **filters)]

    def set_usage(self, resource_uuid: str, usages: Mapping[str, Any], date: dt.datetime | None = None) -> None:
        """Set the month's total of each component (an upsert: send cumulative values, not increments).

        Amounts are rounded half-up to 2 decimal places. ``date`` picks the billing month (default: now on
        the server, in the server's timezone).
        """
        if not usages:
            return
        amounts = {str(t): usage_amount(a) for t, a in usages.items()}
        items = [ComponentUsageItemRequest(type_=t, amount=a) for t, a in amounts.items()]
        body = ComponentUsageCreateRequest(usages=items, resource=UUID(resource_uuid), date=date if date is not None else UNSET)
        period = (date or dt.datetime.now(dt.timezone.utc)).date()

        def applied() -> bool:
            held = {cu.type: cu.usage for cu in self.list_component_usages(period, resource_uuid=resource_uuid)}
            return all(held.get(t) == Decimal(a) for t, a in amounts.items())

        # Sent once, never retried blind: the month's first report makes the server build invoice items,
        # which took up to 15 s per call on the 2024 server, so a timeout often means "applied, answered
        # late". An ambiguous failure is checked by re-reading the month's usage; if it is not there, the
        # error stands and the next cycle (which re-reads what Waldur holds) sends it again.
        self._write_verified(
            lambda: self._send(marketplace_component_usages_set_usage, body=body, idempotent=False),
            applied,
            f"set usage of resource {resource_uuid}",
        )

    def set_user_usages(self, component_usage_uuid: str, usages: Mapping[str, Any]) -> None:
        """Per-user shares of one ComponentUsage (username -> amount): one bulk call on 8.x, one per user on 2024."""
        if not usages:
            return
        items = [ComponentUserUsageCreateRequest(username=u, usage=usage_amount(a)) for u, a in usages.items()]
        if self.flavour == FLAVOUR_8:
            body = ComponentUserUsageBulkCreateRequest(usages=items)
            self._send(marketplace_component_usages_set_user_usages, uuid=component_usage_uuid, body=body, idempotent=True)
            return
        for item in items:
            self._send(marketplace_component_usages_set_user_usage, uuid=component_usage_uuid, body=item, idempotent=True)

    # ------------------------------------------------------------------ 2024 associations
    def create_association(self, resource_uuid: str, username: str) -> bool:
        """2024 only (8.x has no associations in Waldur: no-op, False). True when newly created."""
        if self.flavour != FLAVOUR_2024:
            return False
        resp = self._slurm_remote(resource_uuid, "create_association", {"username": username}, idempotent=True)
        return resp.status_code == 201

    def delete_association(self, resource_uuid: str, username: str) -> bool:
        if self.flavour != FLAVOUR_2024:
            return False
        self._slurm_remote(resource_uuid, "delete_association", {"username": username}, idempotent=True)
        return True

    def list_associations(self, resource_uuid: str, allocation_uuid: str | None = None) -> list[str]:
        """Usernames associated with the resource's allocation (2024); [] on 8.x without a request."""
        if self.flavour != FLAVOUR_2024:
            return []
        alloc = allocation_uuid or self.get_resource(resource_uuid).allocation_uuid
        if alloc is None:
            return []
        return [str(d.get("username", "")) for d in _association_pages(self, {"allocation_uuid": alloc})]

    def list_offering_associations(
        self, allocation_uuids: Iterable[str], *, workers: int = 1
    ) -> dict[str, frozenset[str] | WaldurError]:
        """2024: the usernames associated with each of these allocations, exactly; {} on 8.x without a request.

        ``/api/slurm-associations/`` is neither scoped nor stably ordered on the 2024 server: every token sees
        every association of the server, sorted by username only, so rows sharing a username are skipped or
        repeated across pages (1,233 rows paged into 1,068 distinct ones). A paged read of it can neither
        prove an association absent (a removal would be missed) nor present (it would be created again).
        So: one request for the first page; when that is the whole list (no next page) it is one consistent
        query and is used. Otherwise each allocation is read on its own with ``allocation_uuid=``, ``workers``
        at a time: within one allocation usernames are unique, so its pages are exact.

        An allocation whose read failed maps to its error (its associations are left alone this cycle); an
        authentication error is raised.
        """
        if self.flavour != FLAVOUR_2024:
            return {}
        wanted = list(dict.fromkeys(a for a in (norm_uuid(x) for x in allocation_uuids) if a))
        if not wanted:
            return {}
        first = self._raw("GET", ASSOCIATIONS, params={"page": 1, "page_size": self.page_size})
        if _next_page(first.headers.get("Link")) is None:
            whole = _usernames_by_allocation(self._items(first))
            return {a: whole.get(a, frozenset()) for a in wanted}
        out: dict[str, frozenset[str] | WaldurError] = {}

        def one(alloc: str) -> None:
            try:
                rows = _association_pages(self, {"allocation_uuid": alloc})
            except WaldurAuthError:
                raise
            except WaldurError as exc:
                out[alloc] = exc
                return
            out[alloc] = _usernames_by_allocation(rows).get(alloc, frozenset())

        run_bounded(one, wanted, workers, name="waldur-read")
        return out


def _usernames_by_allocation(rows: Iterable[Mapping[str, Any]]) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for item in rows:
        alloc = uuid_from_url(item.get("allocation")) or norm_uuid(item.get("allocation_uuid"))
        username = item.get("username")
        if alloc and isinstance(username, str) and username:
            out.setdefault(alloc, set()).add(username)
    return {k: frozenset(v) for k, v in out.items()}


def _association_pages(client: WaldurClient, params: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    page: int | None = 1
    seen: set[int] = set()
    while page is not None and page not in seen:
        seen.add(page)
        resp = client._raw("GET", ASSOCIATIONS, params={**params, "page": page, "page_size": client.page_size})
        out.extend(client._items(resp))
        page = _next_page(resp.headers.get("Link"))
    return out


def _next_page(link_header: str | None) -> int | None:
    if not link_header:
        return None
    for url, rel in _LINK_RE.findall(link_header):
        if rel == "next":
            pages = parse_qs(urlsplit(url).query).get("page")
            if pages:
                try:
                    return int(pages[0])
                except ValueError:
                    return None
    return None


__all__ = ["FLAVOUR_2024", "FLAVOUR_8", "WaldurClient", "WaldurError", "host_root"]
