"""``WaldurClient``: the calls the agent makes to Waldur, named in the agent's terms.

This is the only module that imports ``waldur_api_client``. Requests are built by the SDK's generated endpoint
functions (their ``_get_kwargs``: method, path, query and JSON body exactly as the SDK sends them) and sent
through ``Transport`` over the SDK's own ``httpx`` client (``AuthenticatedClient.get_httpx_client()``), which
adds timeouts, safe retries, typed errors and request counting. Answers are read from the raw JSON into the
tolerant dataclasses of ``models.py``, never through the SDK's strict models, so an unknown enum value, an
extra field, a missing field or an empty action body from another server version cannot crash the agent.

The server flavour ("8" for 8.x, "2024" for an Oct-2024 server with ``/api/marketplace-slurm-remote/``) is
detected once; outside this package only ``Capabilities`` is seen. Which call each method makes per flavour:
docs/architecture.md.

Non-idempotent writes (approve, reject, set_state_done, set_state_erred, create_component, ...) are never sent
twice: on an ambiguous failure (timeout, dropped connection, 5xx) the facade re-reads the object; if the
action took effect it is a success, otherwise the ``WaldurTransientError`` propagates and the agent tries again
next cycle.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any, Iterable, Mapping
from uuid import UUID

import httpx

from . import association_pages as pages

from .base import (  # isort: skip  (first: it makes the SDK's models package lazy before any SDK import)
    ASSOCIATION_GONE, ASSOCIATIONS, COMPONENT_USAGE_FIELDS, FLAVOUR_8, FLAVOUR_2024, OFFERING_USER_FIELDS,
    ORDER_FIELDS, RESOURCE_FIELDS, SLURM_REMOTE, USER_USAGE_FIELDS, _APPROVED_STATES, Capabilities,
    WaldurBase, _next_page, host_root, json_number, usage_amount,
)

from waldur_api_client.api.marketplace_component_usages import (
    marketplace_component_usages_list,
    marketplace_component_usages_set_usage,
    marketplace_component_usages_set_user_usage,
    marketplace_component_usages_set_user_usages,
)
from waldur_api_client.api.marketplace_component_user_usages import marketplace_component_user_usages_list
from waldur_api_client.api.marketplace_offering_users import (
    marketplace_offering_users_list,
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
    marketplace_provider_resources_set_limits,
    marketplace_provider_resources_team_list,
)
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
    OfferingUserState,
    OrderApproveByProviderRequest,
    OrderDetailsFieldEnum,
    OrderErrorDetailsRequest,
    OrderProviderRejectionRequest,
    OrderState,
    RemoveOfferingComponentRequest,
    RequestTypes,
    ResourceBackendIDRequest,
    ResourceFieldEnum,
    ResourceSetLimitsRequest,
    ResourceSetLimitsRequestLimits,
    ResourceSetStateErredRequest,
    ResourceState,
    UpdateOfferingComponentRequest,
)
from waldur_api_client.types import UNSET

from ..daemon.concurrency import run_bounded
from .errors import (
    WaldurAllocationPending,
    WaldurAuthError,
    WaldurConflict,
    WaldurError,
    WaldurNotFound,
    WaldurPermanentError,
)
from .models import (
    ComponentUsage,
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

log = logging.getLogger("waldur_slurm.waldur")


class WaldurClient(WaldurBase):
    """The calls the agent makes to Waldur (see the module docstring)."""

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
        """2024 only. True when deleted now; False when there was none (the server answers 400 for that: after
        a retried delete whose first attempt went through, or a read that is a cycle old, gone is done)."""
        if self.flavour != FLAVOUR_2024:
            return False
        resp = self._slurm_remote(resource_uuid, "delete_association", {"username": username}, idempotent=True,
                                  ok_statuses=(400,))
        if resp.status_code == 400:
            answer = self._json(resp)
            if isinstance(answer, list) and ASSOCIATION_GONE in answer:
                log.info("association %s of resource %s was already gone", username, resource_uuid)
                return False
            raise WaldurPermanentError(
                f"Waldur POST slurm-remote delete_association for resource {norm_uuid(resource_uuid)}: HTTP 400: "
                f"{answer}", status=400, method="POST", path=str(resp.request.url.path))
        return True

    def list_offering_associations(
        self, allocation_uuids: Iterable[str], *, workers: int = 1
    ) -> dict[str, frozenset[str] | WaldurError]:
        """2024: the usernames associated with each of these allocations, exactly; {} on 8.x without a request.

        ``/api/slurm-associations/`` is neither scoped nor stably ordered on the 2024 server: every token sees
        every association of the server, sorted by username only, so rows sharing a username are skipped or
        repeated across pages (1,233 rows paged into 1,068 distinct ones). The whole list is still read
        exactly (``association_pages``): its pages, then one window per username whose rows straddle a page
        boundary. When that costs more requests than one read per allocation (a server full of other
        offerings' associations), or the pages contradict each other (the table changed meanwhile), each
        allocation is read on its own with ``allocation_uuid=``, ``workers`` at a time: within one allocation
        usernames are unique, so its pages are exact.

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
        total = _result_count(first)
        known: dict[str, frozenset[str]] = {}
        if total is not None and pages.worth_reading_whole(total, self.page_size, len(wanted)):
            try:
                read = self._whole_association_list(first, total, workers)
            except WaldurAuthError:
                raise
            except WaldurError as exc:
                log.info("associations: the whole list could not be read (%s); reading per allocation", exc)
                read = None
            if read is not None:
                rows, uncertain = read
                whole = _usernames_by_allocation(rows)
                known = {a: held for a in wanted if not pages.needs_own_read(held := whole.get(a, frozenset()), uncertain)}
                if uncertain:
                    log.debug("associations: %d allocation(s) read on their own: %s in more rows than a page holds",
                             len(wanted) - len(known), ", ".join(sorted(uncertain)))
        out: dict[str, frozenset[str] | WaldurError] = dict(known)

        def one(alloc: str) -> None:
            try:
                rows = _association_pages(self, {"allocation_uuid": alloc})
            except WaldurAuthError:
                raise
            except WaldurError as exc:
                out[alloc] = exc
                return
            out[alloc] = _usernames_by_allocation(rows).get(alloc, frozenset())

        run_bounded(one, [a for a in wanted if a not in known], workers, name="waldur-read")
        return {a: out[a] for a in wanted}

    def _whole_association_list(
        self, first: httpx.Response, total: int, workers: int
    ) -> tuple[list[dict[str, Any]], frozenset[str]] | None:
        """Every association of the server once, and the logins whose rows may be incomplete; None when the
        pages contradict each other (the list changed while it was read)."""
        size = self.page_size
        got: dict[int, list[dict[str, Any]]] = {1: self._items(first)}
        counts: set[int | None] = {total}

        def page(number: int) -> None:
            resp = self._raw("GET", ASSOCIATIONS, params={"page": number, "page_size": size})
            counts.add(_result_count(resp))
            got[number] = self._items(resp)

        run_bounded(page, list(range(2, pages.page_count(total, size) + 1)), workers, name="waldur-read")
        ordered = [got[n] for n in sorted(got)]
        reading = pages.resolve(ordered, total, size) if counts == {total} else None
        if reading is None:
            log.info("associations: the list changed while it was read; reading per allocation")
            return None
        fixed: dict[str, list[dict[str, Any]]] = {}
        bad: list[str] = []

        def reread(window: pages.Window) -> None:
            resp = self._raw("GET", ASSOCIATIONS, params={"page": window.page, "page_size": window.page_size})
            rows = pages.run_rows(window, self._items(resp), total) if _result_count(resp) == total else None
            if rows is None:
                bad.append(window.run.username)
            else:
                fixed[window.run.username] = [dict(r) for r in rows]

        run_bounded(reread, list(reading.windows), workers, name="waldur-read")
        if bad:
            log.info("associations: the list changed while it was read; reading per allocation")
            return None
        log.debug("associations: %d rows in %d pages and %d windows", total, len(ordered), len(reading.windows))
        return [dict(r) for r in pages.merge(ordered, fixed)], reading.uncertain


def _result_count(resp: httpx.Response) -> int | None:
    try:
        return int(resp.headers.get("X-Result-Count", ""))
    except ValueError:
        return None


def _allocation_of(item: Mapping[str, Any]) -> str | None:
    return uuid_from_url(item.get("allocation")) or norm_uuid(item.get("allocation_uuid"))


def _usernames_by_allocation(rows: Iterable[Mapping[str, Any]]) -> dict[str, frozenset[str]]:
    return pages.usernames_by_allocation(rows, _allocation_of)


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


__all__ = ["FLAVOUR_2024", "FLAVOUR_8", "Capabilities", "WaldurClient", "WaldurError", "host_root"]
