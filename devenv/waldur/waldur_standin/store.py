"""In-memory state of the stand-in and the Mastermind rules that act on it.

No HTTP here: handlers in ``api.py`` check auth, parse the request, and call these methods. A rule violation
raises ``ApiError(status, body)`` with the body Mastermind answers (DRF style). Everything is stored as plain
JSON-able dicts (timestamps as ISO strings, decimals as strings), so ``dump()``/``load()`` are trivial; the
indexes are rebuilt on load.

Two profiles:
- ``"8"``: the 8.x marketplace API (offering-user state machine, provider set_limits/set_as_ok/set_as_erred);
- ``"2024"``: the Oct-2024 server of ``waldur-2024-server-behaviour.md``: a SLURM allocation per resource,
  created by a server task after approval and driven through ``/api/marketplace-slurm-remote/``, with
  auto-completion of the order when the allocation goes creating→ok or updating→ok.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import uuid as uuid_mod
from collections import defaultdict
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable

PROFILES = ("8", "2024")

ORDER_STATES_8 = (
    "pending-consumer",
    "pending-provider",
    "pending-project",
    "pending-start-date",
    "executing",
    "done",
    "erred",
    "canceled",
    "rejected",
)
ORDER_STATES_2024 = tuple(s for s in ORDER_STATES_8 if s != "pending-start-date")
ORDER_TYPES_8 = ("Create", "Update", "Terminate", "Restore")
ORDER_TYPES_2024 = ("Create", "Update", "Terminate")
RESOURCE_STATES = ("Creating", "OK", "Erred", "Updating", "Terminating", "Terminated")
OFFERING_USER_STATES = (
    "Requested",
    "Creating",
    "Pending account linking",
    "Pending additional validation",
    "OK",
    "Requested deletion",
    "Deleting",
    "Deleted",
    "Error creating",
    "Error deleting",
)
BILLING_TYPES = ("fixed", "usage", "limit", "one", "few")
LIMIT_PERIODS = ("month", "quarterly", "annual", "total")
COMPONENT_TYPE_RE = re.compile(r"^[a-zA-Z0-9_\-/:]+$")

# Waldur core StateMixin codes; the 2024 server's 409 messages print these numbers.
ALLOC_UPDATE_SCHEDULED, ALLOC_UPDATING, ALLOC_OK, ALLOC_ERRED = 1, 2, 3, 4
ALLOC_CREATION_SCHEDULED, ALLOC_CREATING, ALLOC_DELETION_SCHEDULED, ALLOC_DELETING = 5, 6, 7, 8
ALLOC_STATE_NAMES = {
    1: "Update Scheduled",
    2: "Updating",
    3: "OK",
    4: "Erred",
    5: "Creation Scheduled",
    6: "Creating",
    7: "Deletion Scheduled",
    8: "Deleting",
}
# slurm-remote set_state value -> (target code, allowed source codes); None = any source
ALLOC_TRANSITIONS: dict[str, tuple[int, frozenset[int] | None]] = {
    "creating": (ALLOC_CREATING, frozenset({ALLOC_CREATION_SCHEDULED})),
    "updating": (ALLOC_UPDATING, frozenset({ALLOC_UPDATE_SCHEDULED})),
    "update_scheduled": (ALLOC_UPDATE_SCHEDULED, frozenset({ALLOC_OK, ALLOC_ERRED})),
    "deletion_scheduled": (ALLOC_DELETION_SCHEDULED, frozenset({ALLOC_OK, ALLOC_ERRED})),
    "deleting": (ALLOC_DELETING, frozenset({ALLOC_DELETION_SCHEDULED})),
    "ok": (
        ALLOC_OK,
        frozenset({ALLOC_CREATION_SCHEDULED, ALLOC_CREATING, ALLOC_UPDATE_SCHEDULED, ALLOC_UPDATING, ALLOC_ERRED}),
    ),
    "erred": (ALLOC_ERRED, None),
}

PERMISSION_DENIED = {"detail": "You do not have permission to perform this action."}


class ApiError(Exception):
    """An HTTP error answer with a DRF-style JSON body."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body


class ServerError(ApiError):
    """An unhandled exception in Mastermind: Django's HTML 500 page. The stand-in raises it where the server's
    exception happens: before any change where the server rolls the request back, after the write where it
    does not (slurm-remote set_limits)."""

    def __init__(self, cause: str) -> None:
        super().__init__(500, None)
        self.cause = cause


def not_found(what: str = "No matching object found.") -> ApiError:
    return ApiError(404, {"detail": what})


def valid_states_error(states: Iterable[str]) -> ApiError:
    return ApiError(409, {"detail": "Valid states for operation: " + ", ".join(states) + "."})


def new_uuid() -> str:
    return uuid_mod.uuid4().hex


def new_token() -> str:
    return secrets.token_hex(20)


def parse_uuid(value: Any) -> str | None:
    try:
        return uuid_mod.UUID(str(value)).hex
    except (ValueError, TypeError, AttributeError):
        return None


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def parse_iso(value: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def slugify(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return s[:40] or "item"


def month_start(t: dt.datetime | dt.date) -> dt.date:
    return dt.date(t.year, t.month, 1)


class Clock:
    """The server's clock: real time, shifted or frozen through the control API (UTC is the server zone)."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)
        self.frozen: dt.datetime | None = None

    def now(self) -> dt.datetime:
        if self.frozen is not None:
            return self.frozen
        return dt.datetime.now(dt.timezone.utc) + self.offset

    def set(self, now: dt.datetime | None, frozen: bool = False) -> None:
        if now is None:
            self.offset, self.frozen = dt.timedelta(0), None
        elif frozen:
            self.frozen = now
        else:
            self.frozen = None
            self.offset = now - dt.datetime.now(dt.timezone.utc)


COLLECTIONS = (
    "users",
    "customers",
    "projects",
    "categories",
    "offerings",
    "components",
    "plans",
    "orders",
    "resources",
    "allocations",
    "associations",
    "offering_users",
    "plan_periods",
    "usages",
    "user_usages",
)


class Store:
    def __init__(self, profile: str = "8") -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
        self.profile = profile
        self.clock = Clock()
        self.worker_up = True
        self.pending_tasks: list[dict[str, str]] = []
        self.closed_periods: set[str] = set()
        self.version = "8.0.5" if profile == "8" else "7.1.3"
        for name in COLLECTIONS:
            setattr(self, name, {})
        self.users: dict[str, dict[str, Any]]
        self.customers: dict[str, dict[str, Any]]
        self.projects: dict[str, dict[str, Any]]
        self.categories: dict[str, dict[str, Any]]
        self.offerings: dict[str, dict[str, Any]]
        self.components: dict[str, dict[str, Any]]
        self.plans: dict[str, dict[str, Any]]
        self.orders: dict[str, dict[str, Any]]
        self.resources: dict[str, dict[str, Any]]
        self.allocations: dict[str, dict[str, Any]]
        self.associations: dict[str, dict[str, Any]]
        self.offering_users: dict[str, dict[str, Any]]
        self.plan_periods: dict[str, dict[str, Any]]
        self.usages: dict[str, dict[str, Any]]
        self.user_usages: dict[str, dict[str, Any]]
        self._reindex()

    # ------------------------------------------------------------------ persistence and indexes
    def _reindex(self) -> None:
        self.tokens: dict[str, str] = {}
        self.next_user_id = 1
        self.orders_by_offering: dict[str, list[str]] = defaultdict(list)
        self.orders_by_resource: dict[str, list[str]] = defaultdict(list)
        self.resources_by_offering: dict[str, list[str]] = defaultdict(list)
        self.resources_by_project: dict[str, list[str]] = defaultdict(list)
        self.ou_by_offering: dict[str, list[str]] = defaultdict(list)
        self.ou_by_pair: dict[tuple[str, str], str] = {}
        self.pp_by_resource: dict[str, list[str]] = defaultdict(list)
        self.usage_by_key: dict[tuple[str, str, str], str] = {}
        self.usages_by_offering: dict[str, list[str]] = defaultdict(list)
        self.uu_by_key: dict[tuple[str, str], str] = {}
        self.uu_by_usage: dict[str, list[str]] = defaultdict(list)
        self.assoc_by_alloc: dict[str, dict[str, str]] = defaultdict(dict)
        for u in self.users.values():
            if u.get("token"):
                self.tokens[u["token"]] = u["uuid"]
            self.next_user_id = max(self.next_user_id, u["id"] + 1)
        for o in self.orders.values():
            self.orders_by_offering[o["offering_uuid"]].append(o["uuid"])
            if o.get("resource_uuid"):
                self.orders_by_resource[o["resource_uuid"]].append(o["uuid"])
        for r in self.resources.values():
            self.resources_by_offering[r["offering_uuid"]].append(r["uuid"])
            self.resources_by_project[r["project_uuid"]].append(r["uuid"])
        for ou in self.offering_users.values():
            self.ou_by_offering[ou["offering_uuid"]].append(ou["uuid"])
            self.ou_by_pair[(ou["offering_uuid"], ou["user_uuid"])] = ou["uuid"]
        for pp in self.plan_periods.values():
            self.pp_by_resource[pp["resource_uuid"]].append(pp["uuid"])
        for cu in self.usages.values():
            self.usage_by_key[(cu["resource_uuid"], cu["type"], cu["billing_period"])] = cu["uuid"]
            self.usages_by_offering[self.resources[cu["resource_uuid"]]["offering_uuid"]].append(cu["uuid"])
        for uu in self.user_usages.values():
            self.uu_by_key[(uu["component_usage_uuid"], uu["username"])] = uu["uuid"]
            self.uu_by_usage[uu["component_usage_uuid"]].append(uu["uuid"])
        for a in self.associations.values():
            self.assoc_by_alloc[a["allocation_uuid"]][a["username"]] = a["uuid"]

    def dump(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: getattr(self, name) for name in COLLECTIONS}
        data["profile"] = self.profile
        data["worker_up"] = self.worker_up
        data["pending_tasks"] = self.pending_tasks
        data["closed_periods"] = sorted(self.closed_periods)
        data["clock"] = {
            "offset_seconds": self.clock.offset.total_seconds(),
            "frozen": iso(self.clock.frozen) if self.clock.frozen else None,
        }
        return data

    def load(self, data: dict[str, Any]) -> None:
        if data.get("profile", self.profile) != self.profile:
            raise ApiError(400, {"detail": f"state is for profile {data.get('profile')}, server runs {self.profile}"})
        for name in COLLECTIONS:
            setattr(self, name, dict(data.get(name, {})))
        self.worker_up = bool(data.get("worker_up", True))
        self.pending_tasks = list(data.get("pending_tasks", []))
        self.closed_periods = set(data.get("closed_periods", []))
        clock = data.get("clock") or {}
        self.clock.offset = dt.timedelta(seconds=float(clock.get("offset_seconds", 0)))
        self.clock.frozen = parse_iso(clock["frozen"]) if clock.get("frozen") else None
        self._reindex()

    def now(self) -> dt.datetime:
        return self.clock.now()

    def now_iso(self) -> str:
        return iso(self.now())

    # ------------------------------------------------------------------ setup (control API)
    def add_user(
        self,
        username: str,
        *,
        full_name: str = "",
        email: str = "",
        is_staff: bool = False,
        token: str | None = None,
        with_token: bool = True,
    ) -> dict[str, Any]:
        if any(u["username"] == username for u in self.users.values()):
            raise ApiError(400, {"username": ["A user with that username already exists."]})
        first, _, last = (full_name or username).partition(" ")
        user = {
            "uuid": new_uuid(),
            "id": self.next_user_id,
            "username": username,
            "full_name": full_name or username,
            "first_name": first,
            "last_name": last,
            "email": email or f"{username}@example.org",
            "is_staff": is_staff,
            "token": (token or new_token()) if with_token else None,
            "token_expired": False,
            "date_joined": self.now_iso(),
        }
        self.next_user_id += 1
        self.users[user["uuid"]] = user
        if user["token"]:
            if user["token"] in self.tokens:
                raise ApiError(400, {"token": ["Token already in use."]})
            self.tokens[user["token"]] = user["uuid"]
        return user

    def add_customer(self, name: str, *, abbreviation: str = "", email: str = "") -> dict[str, Any]:
        c = {
            "uuid": new_uuid(),
            "name": name,
            "slug": slugify(name),
            "abbreviation": abbreviation or name[:8],
            "email": email,
            "owners": [],
            "managers": [],
            "created": self.now_iso(),
        }
        self.customers[c["uuid"]] = c
        return c

    def add_customer_role(self, customer_uuid: str, user_uuid: str, role: str) -> None:
        c = self.get(self.customers, customer_uuid, "customer")
        self.get(self.users, user_uuid, "user")
        key = {"owner": "owners", "manager": "managers", "service_manager": "managers"}.get(role)
        if key is None:
            raise ApiError(400, {"role": [f"unknown customer role {role!r}"]})
        if user_uuid not in c[key]:
            c[key].append(user_uuid)

    def add_project(self, customer_uuid: str, name: str, *, description: str = "") -> dict[str, Any]:
        self.get(self.customers, customer_uuid, "customer")
        p = {
            "uuid": new_uuid(),
            "name": name,
            "slug": slugify(name),
            "description": description,
            "customer_uuid": customer_uuid,
            "members": {},
            "created": self.now_iso(),
        }
        self.projects[p["uuid"]] = p
        return p

    def move_project(self, project_uuid: str, customer_uuid: str) -> None:
        """Waldur's staff action ``POST /api/projects/{uuid}/move_project/``: the project, its resources and
        orders now belong to another customer (they name it from then on)."""
        p = self.get(self.projects, project_uuid, "project")
        self.get(self.customers, customer_uuid, "customer")
        p["customer_uuid"] = customer_uuid

    def add_team_member(self, project_uuid: str, user_uuid: str, role: str = "member") -> None:
        p = self.get(self.projects, project_uuid, "project")
        self.get(self.users, user_uuid, "user")
        if role not in ("admin", "manager", "member"):
            raise ApiError(400, {"role": [f"unknown project role {role!r}"]})
        p["members"][user_uuid] = role
        # Access to the project's live resources gives the user an offering user (auto-created).
        for rid in self.resources_by_project.get(project_uuid, []):
            r = self.resources[rid]
            if r["state"] in ("OK", "Updating", "Erred", "Terminating"):
                self._ensure_offering_user(r["offering_uuid"], user_uuid)

    def remove_team_member(self, project_uuid: str, user_uuid: str) -> None:
        p = self.get(self.projects, project_uuid, "project")
        if p["members"].pop(user_uuid, None) is None:
            raise not_found("User is not a member of the project.")

    def _default_category(self) -> str:
        for c in self.categories.values():
            return c["uuid"]
        c = {"uuid": new_uuid(), "title": "HPC", "icon": None}
        self.categories[c["uuid"]] = c
        return c["uuid"]

    def add_offering(
        self,
        customer_uuid: str,
        name: str,
        *,
        type: str = "Marketplace.Slurm",
        components: list[dict[str, Any]] | None = None,
        plans: list[dict[str, Any]] | None = None,
        plugin_options: dict[str, Any] | None = None,
        secret_options: dict[str, Any] | None = None,
        state: str = "Active",
        backend_id: str = "",
    ) -> dict[str, Any]:
        self.get(self.customers, customer_uuid, "customer")
        off = {
            "uuid": new_uuid(),
            "name": name,
            "slug": slugify(name),
            "customer_uuid": customer_uuid,
            "category_uuid": self._default_category(),
            "type": type,
            "state": state,
            "plugin_options": {"username_generation_policy": "service_provider", **(plugin_options or {})},
            "secret_options": {"service_provider_can_create_offering_user": True, **(secret_options or {})},
            "backend_id": backend_id,
            "shared": True,
            "billable": True,
            "managers": [],
            "components": [],
            "plans": [],
            "created": self.now_iso(),
            "description": "",
        }
        self.offerings[off["uuid"]] = off
        for spec in components or []:
            self.create_component(off["uuid"], spec)
        for spec in plans if plans is not None else [{"name": "Default"}]:
            plan = {
                "uuid": new_uuid(),
                "offering_uuid": off["uuid"],
                "name": spec.get("name", "Default"),
                "unit": spec.get("unit", "month"),
                "description": spec.get("description", ""),
                "archived": False,
            }
            self.plans[plan["uuid"]] = plan
            off["plans"].append(plan["uuid"])
        return off

    def update_offering(self, offering_uuid: str, changes: dict[str, Any]) -> dict[str, Any]:
        off = self.get(self.offerings, offering_uuid, "offering")
        for key in ("name", "state", "type", "backend_id"):
            if key in changes:
                off[key] = changes[key]
        for key in ("plugin_options", "secret_options"):
            if key in changes:
                off[key] = {**off[key], **changes[key]}
        for user_uuid in changes.get("managers", []):
            if user_uuid not in off["managers"]:
                off["managers"].append(user_uuid)
        return off

    # ------------------------------------------------------------------ lookups and permissions
    @staticmethod
    def get(coll: dict[str, dict[str, Any]], key: Any, what: str = "object") -> dict[str, Any]:
        u = parse_uuid(key)
        obj = coll.get(u) if u else None
        if obj is None:
            raise not_found(f"No {what} matches the given query." if what != "object" else "Not found.")
        return obj

    def user_by_token(self, token: str) -> dict[str, Any] | None:
        uid = self.tokens.get(token)
        return self.users.get(uid) if uid else None

    def is_owner(self, user: dict[str, Any], customer_uuid: str) -> bool:
        return user["is_staff"] or user["uuid"] in self.customers[customer_uuid]["owners"]

    def provider_role(self, user: dict[str, Any], offering: dict[str, Any]) -> str | None:
        """'staff', 'owner', 'manager' (service manager) or 'offering_manager'; None for non-providers."""
        if user["is_staff"]:
            return "staff"
        c = self.customers[offering["customer_uuid"]]
        if user["uuid"] in c["owners"]:
            return "owner"
        if user["uuid"] in c["managers"]:
            return "manager"
        if user["uuid"] in offering["managers"]:
            return "offering_manager"
        return None

    def can_process_orders(self, user: dict[str, Any], offering: dict[str, Any]) -> bool:
        """ORDER.APPROVE/REJECT and set_state_*: the 2024 server checks the provider customer's owner only."""
        role = self.provider_role(user, offering)
        if self.profile == "2024":
            return role in ("staff", "owner")
        return role in ("staff", "owner", "manager", "offering_manager")

    def can_manage_offering(self, user: dict[str, Any], offering: dict[str, Any]) -> bool:
        return self.provider_role(user, offering) in ("staff", "owner", "manager", "offering_manager")

    def can_set_usage(self, user: dict[str, Any], offering: dict[str, Any]) -> bool:
        return self.provider_role(user, offering) in ("staff", "owner", "offering_manager", "manager")

    def is_consumer(self, user: dict[str, Any], project: dict[str, Any]) -> bool:
        return user["uuid"] in project["members"] or self.is_owner(user, project["customer_uuid"])

    def can_see_order(self, user: dict[str, Any], order: dict[str, Any]) -> bool:
        off = self.offerings[order["offering_uuid"]]
        return self.provider_role(user, off) is not None or self.is_consumer(user, self.projects[order["project_uuid"]])

    def visible_offerings(self, user: dict[str, Any]) -> set[str]:
        return {o for o, off in self.offerings.items() if self.provider_role(user, off) is not None}

    # ------------------------------------------------------------------ offering components
    def _validate_component(self, spec: dict[str, Any], partial_of: dict[str, Any] | None = None) -> dict[str, Any]:
        errors: dict[str, list[str]] = {}
        base = dict(partial_of or {})
        base.update({k: v for k, v in spec.items() if k != "uuid"})
        for key in ("type", "name", "billing_type"):
            if not base.get(key):
                errors[key] = ["This field is required."]
        if base.get("type") and not COMPONENT_TYPE_RE.match(str(base["type"])):
            errors["type"] = ["Enter a valid value."]
        if base.get("billing_type") and base["billing_type"] not in BILLING_TYPES:
            errors["billing_type"] = [f'"{base["billing_type"]}" is not a valid choice.']
        if base.get("limit_period") not in (None, "", *LIMIT_PERIODS):
            errors["limit_period"] = [f'"{base["limit_period"]}" is not a valid choice.']
        for key in ("limit_amount", "min_value", "max_value", "max_available_limit", "default_limit"):
            if base.get(key) is not None:
                try:
                    Decimal(str(base[key]))
                except InvalidOperation:
                    errors[key] = ["A valid number is required."]
        if base.get("unit_factor") is not None and not isinstance(base["unit_factor"], int):
            errors["unit_factor"] = ["A valid integer is required."]
        if errors:
            raise ApiError(400, errors)
        return base

    def create_component(self, offering_uuid: str, spec: dict[str, Any]) -> dict[str, Any]:
        off = self.get(self.offerings, offering_uuid, "offering")
        base = self._validate_component(spec)
        if any(self.components[c]["type"] == base["type"] for c in off["components"]):
            # Mastermind has no serializer check here; the DB unique (offering, type) constraint fires.
            raise ApiError(400, {"non_field_errors": ["The fields offering, type must make a unique set."]})
        comp = {
            "uuid": new_uuid(),
            "offering_uuid": off["uuid"],
            "type": base["type"],
            "name": base["name"],
            "description": base.get("description", ""),
            "measured_unit": base.get("measured_unit", ""),
            "billing_type": base["billing_type"],
            "limit_period": base.get("limit_period") or None,
            "limit_amount": base.get("limit_amount"),
            "limit_decimal_places": base.get("limit_decimal_places", 0),
            "unit_factor": base.get("unit_factor", 1),
            "article_code": base.get("article_code", ""),
            "min_value": base.get("min_value"),
            "max_value": base.get("max_value"),
            "max_available_limit": base.get("max_available_limit"),
            "default_limit": base.get("default_limit"),
            "is_boolean": bool(base.get("is_boolean", False)),
            "is_prepaid": bool(base.get("is_prepaid", False)),
            "is_builtin": bool(base.get("is_builtin", False)),
        }
        self.components[comp["uuid"]] = comp
        off["components"].append(comp["uuid"])
        return comp

    def update_component(self, offering_uuid: str, spec: dict[str, Any]) -> dict[str, Any]:
        off = self.get(self.offerings, offering_uuid, "offering")
        cid = parse_uuid(spec.get("uuid"))
        if not spec.get("uuid"):
            raise ApiError(400, {"uuid": ["This field is required."]})
        if cid not in off["components"]:
            raise not_found("Component not found.")
        comp = self.components[cid]
        base = self._validate_component(spec, partial_of=comp)
        if base["type"] != comp["type"] and any(
            self.components[c]["type"] == base["type"] for c in off["components"] if c != cid
        ):
            raise ApiError(400, {"non_field_errors": ["The fields offering, type must make a unique set."]})
        for key in comp:
            if key in base and key not in ("uuid", "offering_uuid"):
                comp[key] = base[key]
        return comp

    def remove_component(self, offering_uuid: str, component_uuid: Any) -> None:
        off = self.get(self.offerings, offering_uuid, "offering")
        cid = parse_uuid(component_uuid)
        if not component_uuid:
            raise ApiError(400, {"uuid": ["This field is required."]})
        if cid not in off["components"]:
            raise not_found("Component not found.")
        if self.components[cid]["is_builtin"]:
            raise ApiError(400, {"detail": "Built-in components cannot be removed."})
        if self.resources_by_offering.get(off["uuid"]):
            raise ApiError(400, {"detail": "The component cannot be removed because the offering has resources."})
        off["components"].remove(cid)
        del self.components[cid]

    def offering_components(self, offering_uuid: str) -> list[dict[str, Any]]:
        return [self.components[c] for c in self.offerings[offering_uuid]["components"]]

    # ------------------------------------------------------------------ orders (consumer side, control API)
    def _new_order(self, offering: dict[str, Any], project: dict[str, Any], type_: str, **fields: Any) -> dict[str, Any]:
        now = self.now_iso()
        order = {
            "uuid": new_uuid(),
            "type": type_,
            "state": "pending-provider",
            "offering_uuid": offering["uuid"],
            "project_uuid": project["uuid"],
            "plan_uuid": fields.get("plan_uuid"),
            "resource_uuid": fields.get("resource_uuid"),
            "limits": fields.get("limits") or {},
            "attributes": fields.get("attributes") or {},
            "created": now,
            "modified": now,
            "completed_at": None,
            "error_message": "",
            "error_traceback": "",
            "backend_id": "",
            "created_by": fields.get("created_by"),
            "consumer_reviewed_by": None,
            "consumer_reviewed_at": None,
            "provider_reviewed_by": None,
            "provider_reviewed_at": None,
            "provider_rejection_comment": "",
            "output": "",
            "cost": "0.0000000000",
            "old_plan_uuid": None,
            "new_plan_uuid": None,
        }
        self.orders[order["uuid"]] = order
        self.orders_by_offering[offering["uuid"]].append(order["uuid"])
        return order

    def order_in_progress(self, resource_uuid: str) -> dict[str, Any] | None:
        for oid in reversed(self.orders_by_resource.get(resource_uuid, [])):
            o = self.orders[oid]
            if o["state"] in ("pending-consumer", "pending-provider", "pending-project", "pending-start-date", "executing"):
                return o
        return None

    def place_order(
        self,
        *,
        offering_uuid: str,
        type: str = "Create",
        project_uuid: str | None = None,
        resource_uuid: str | None = None,
        plan_uuid: str | None = None,
        limits: dict[str, Any] | None = None,
        attributes: dict[str, Any] | None = None,
        state: str = "pending-provider",
        created_by: str | None = None,
    ) -> dict[str, Any]:
        off = self.get(self.offerings, offering_uuid, "offering")
        if state not in ("pending-consumer", "pending-provider"):
            raise ApiError(400, {"state": ["A new order is pending-consumer or pending-provider."]})
        if type in ("Create",):
            if project_uuid is None:
                raise ApiError(400, {"project": ["This field is required."]})
            project = self.get(self.projects, project_uuid, "project")
            plan = plan_uuid or (off["plans"][0] if off["plans"] else None)
            attrs = dict(attributes or {})
            attrs.setdefault("name", f"alloc-{len(self.resources) + 1}")
            order = self._new_order(off, project, type, plan_uuid=plan, limits=limits, attributes=attrs, created_by=created_by)
            now = self.now_iso()
            res = {
                "uuid": new_uuid(),
                "name": attrs["name"],
                "slug": slugify(attrs["name"]),
                "description": attrs.get("description", ""),
                "offering_uuid": off["uuid"],
                "project_uuid": project["uuid"],
                "plan_uuid": plan,
                "state": "Creating",
                "backend_id": "",
                "effective_id": "",
                "limits": dict(limits or {}),
                "attributes": attrs,
                "backend_metadata": {},
                "current_usages": {},
                "error_message": "",
                "error_traceback": "",
                "created": now,
                "modified": now,
                "last_sync": now,
                "creation_order_uuid": order["uuid"],
                "end_date": None,
                "allocation_uuid": None,
                "restrict_member_access": False,
                "paused": False,
                "downscaled": False,
            }
            self.resources[res["uuid"]] = res
            self.resources_by_offering[off["uuid"]].append(res["uuid"])
            self.resources_by_project[project["uuid"]].append(res["uuid"])
            order["resource_uuid"] = res["uuid"]
        elif type in ("Update", "Terminate", "Restore"):
            res = self.get(self.resources, resource_uuid, "resource")
            if res["offering_uuid"] != off["uuid"]:
                raise ApiError(400, {"resource": ["Resource does not belong to the offering."]})
            if self.order_in_progress(res["uuid"]):
                raise ApiError(409, {"detail": "Resource already has an order in progress."})
            allowed = {"Update": ("OK",), "Terminate": ("OK", "Erred"), "Restore": ("Terminated",)}[type]
            if res["state"] not in allowed:
                raise ApiError(409, {"detail": f"Resource is not in {' or '.join(allowed)} state."})
            project = self.projects[res["project_uuid"]]
            attrs = dict(attributes or {})
            new_limits = dict(limits or {})
            if type == "Update":
                attrs["old_limits"] = dict(res["limits"])
            order = self._new_order(
                off, project, type, plan_uuid=res["plan_uuid"], limits=new_limits, attributes=attrs,
                resource_uuid=res["uuid"], created_by=created_by,
            )
        else:
            raise ApiError(400, {"type": [f'"{type}" is not a valid choice.']})
        order["state"] = state
        self.orders_by_resource[order["resource_uuid"]].append(order["uuid"])
        return order

    def approve_by_consumer(self, order_uuid: str, user_uuid: str | None = None) -> dict[str, Any]:
        order = self.get(self.orders, order_uuid, "order")
        if order["state"] != "pending-consumer":
            raise valid_states_error(["pending-consumer"])
        order["state"] = "pending-provider"
        order["consumer_reviewed_by"] = user_uuid
        order["consumer_reviewed_at"] = self.now_iso()
        order["modified"] = self.now_iso()
        return order

    # ------------------------------------------------------------------ orders (provider actions)
    def _touch(self, obj: dict[str, Any]) -> None:
        obj["modified"] = self.now_iso()

    def _resource_of(self, order: dict[str, Any]) -> dict[str, Any] | None:
        return self.resources.get(order["resource_uuid"]) if order.get("resource_uuid") else None

    def approve_by_provider(self, order: dict[str, Any], user: dict[str, Any]) -> None:
        if order["state"] != "pending-provider":
            raise valid_states_error(["pending-provider"])
        order["state"] = "executing"
        order["provider_reviewed_by"] = user["uuid"]
        order["provider_reviewed_at"] = self.now_iso()
        self._touch(order)
        res = self._resource_of(order)
        if res is not None:
            if order["type"] == "Update":
                res["state"] = "Updating"
            elif order["type"] == "Terminate":
                res["state"] = "Terminating"
            elif order["type"] in ("Create", "Restore"):
                res["state"] = "Creating"
            self._touch(res)
        if self.profile == "2024" and order["type"] in ("Create", "Update"):
            self.pending_tasks.append({"kind": "process_order", "order_uuid": order["uuid"]})
            self.run_tasks()

    def reject_by_provider(self, order: dict[str, Any], user: dict[str, Any], comment: str = "") -> None:
        if order["state"] != "pending-provider":
            raise valid_states_error(["pending-provider"])
        order["state"] = "rejected"
        order["provider_reviewed_by"] = user["uuid"]
        order["provider_reviewed_at"] = self.now_iso()
        order["provider_rejection_comment"] = comment
        self._touch(order)
        res = self._resource_of(order)
        if res is not None and order["type"] == "Create":
            res["state"] = "Terminated"
            self._touch(res)

    def set_state_executing(self, order: dict[str, Any]) -> None:
        if self.offerings[order["offering_uuid"]]["type"] != "Marketplace.Slurm":
            raise ApiError(405, {"detail": 'Method "POST" not allowed.'})
        if order["state"] not in ("pending-consumer", "pending-provider", "erred"):
            raise valid_states_error(["pending-consumer", "pending-provider", "erred"])
        order["state"] = "executing"
        self._touch(order)

    def set_state_done(self, order: dict[str, Any]) -> None:
        if order["state"] != "executing":
            raise valid_states_error(["executing"])
        self._check_update_completion(order)
        self._complete_order(order)

    def _check_update_completion(self, order: dict[str, Any]) -> None:
        """The 2024 server's fault in completing an Update (``callbacks.resource_update_succeeded``): it formats
        the resource's current limits and the order's limits for a notification with
        ``format_limits_list(offering.get_limit_components(), limits)``, which looks each key up among the
        offering's *limit-type* components. A key that is not one (a usage-type component written by an agent's
        set_limits, or a removed component) raises KeyError: HTTP 500, the transaction rolls back, the order
        stays executing and the resource Updating. Both set_state_done and the allocation's updating->ok
        auto-completion run that callback. It runs only when the order has limits (``if order and order.limits``)."""
        if self.profile != "2024" or order["type"] != "Update" or not order["limits"]:
            return
        res = self._resource_of(order)
        if res is None:
            return
        limit_types = {c["type"] for c in self.offering_components(order["offering_uuid"]) if c["billing_type"] == "limit"}
        for key in [*res["limits"], *order["limits"]]:
            if key not in limit_types:
                raise ServerError(f"KeyError: {key!r} in format_limits_list")

    def _complete_order(self, order: dict[str, Any]) -> None:
        order["state"] = "done"
        order["completed_at"] = self.now_iso()
        self._touch(order)
        res = self._resource_of(order)
        if res is None:
            return
        if order["type"] in ("Create", "Restore"):
            self._resource_ok(res)
            self._open_plan_period(res)
        elif order["type"] == "Update":
            res["limits"] = dict(order["limits"])
            self._resource_ok(res)
        elif order["type"] == "Terminate":
            res["state"] = "Terminated"
            for pid in self.pp_by_resource.get(res["uuid"], []):
                if self.plan_periods[pid]["end"] is None:
                    self.plan_periods[pid]["end"] = self.now_iso()
        self._touch(res)

    def _resource_ok(self, res: dict[str, Any]) -> None:
        res["state"] = "OK"
        res["error_message"] = ""
        res["error_traceback"] = ""
        project = self.projects[res["project_uuid"]]
        for user_uuid in project["members"]:
            self._ensure_offering_user(res["offering_uuid"], user_uuid)

    def set_state_erred(self, order: dict[str, Any], message: str, traceback: str) -> None:
        # No state check, as in Mastermind: the resource changes even when the order does not.
        if order["state"] == "executing":
            order["state"] = "erred"
        order["error_message"] = message
        order["error_traceback"] = traceback
        self._touch(order)
        res = self._resource_of(order)
        if res is not None:
            if order["type"] == "Terminate":
                res["state"] = "OK"
            else:
                res["state"] = "Erred"
                res["error_message"] = message
                res["error_traceback"] = traceback
            self._touch(res)

    def set_order_backend_id(self, order: dict[str, Any], backend_id: str) -> None:
        order["backend_id"] = backend_id
        self._touch(order)

    def _open_plan_period(self, res: dict[str, Any]) -> None:
        if not res.get("plan_uuid"):
            return
        for pid in self.pp_by_resource.get(res["uuid"], []):
            if self.plan_periods[pid]["end"] is None:
                return
        pp = {
            "uuid": new_uuid(),
            "resource_uuid": res["uuid"],
            "plan_uuid": res["plan_uuid"],
            "start": self.now_iso(),
            "end": None,
        }
        self.plan_periods[pp["uuid"]] = pp
        self.pp_by_resource[res["uuid"]].append(pp["uuid"])

    def visible_plan_periods(self, resource_uuid: str) -> list[dict[str, Any]]:
        """Open periods and those ending this month, like Mastermind's plan_periods action."""
        this_month = month_start(self.now())
        out = []
        for pid in self.pp_by_resource.get(resource_uuid, []):
            pp = self.plan_periods[pid]
            if pp["end"] is None or month_start(parse_iso(pp["end"])) >= this_month:
                out.append(pp)
        return out

    # ------------------------------------------------------------------ 2024 server task and allocation
    def set_worker(self, up: bool) -> None:
        self.worker_up = up
        self.run_tasks()

    def run_tasks(self) -> None:
        if not self.worker_up:
            return
        tasks, self.pending_tasks = self.pending_tasks, []
        for task in tasks:
            order = self.orders.get(task["order_uuid"])
            if order is not None and order["state"] == "executing":
                self._process_order_task(order)

    def _process_order_task(self, order: dict[str, Any]) -> None:
        res = self._resource_of(order)
        if res is None:
            return
        now = self.now_iso()
        if order["type"] == "Create":
            if res.get("allocation_uuid") is None:
                alloc = {
                    "uuid": new_uuid(),
                    "resource_uuid": res["uuid"],
                    "name": res["name"],
                    "state": ALLOC_CREATION_SCHEDULED,
                    "backend_id": "",
                    "created": now,
                    "modified": now,
                    "cpu_limit": 0,
                    "gpu_limit": 0,
                    "ram_limit": 0,
                }
                self.allocations[alloc["uuid"]] = alloc
                res["allocation_uuid"] = alloc["uuid"]
        elif order["type"] == "Update":
            alloc = self.allocations.get(res.get("allocation_uuid") or "")
            if alloc is None or alloc["state"] not in (ALLOC_OK, ALLOC_ERRED):
                code = alloc["state"] if alloc else 0
                order["state"] = "erred"
                order["error_message"] = f"Can't switch from state '{code}' using method 'schedule_updating'"
                self._touch(order)
                return
            alloc["state"] = ALLOC_UPDATE_SCHEDULED
            alloc["modified"] = now

    def allocation_of(self, res: dict[str, Any]) -> dict[str, Any]:
        alloc = self.allocations.get(res.get("allocation_uuid") or "")
        if alloc is None:
            raise not_found("No Resource matches the given query.")
        return alloc

    def set_allocation_state(self, res: dict[str, Any], state: str) -> None:
        alloc = self.allocation_of(res)
        if state not in ALLOC_TRANSITIONS:
            raise ApiError(400, ["Invalid state: a corresponding method for transition is absent"])
        target, sources = ALLOC_TRANSITIONS[state]
        source = alloc["state"]
        if sources is not None and source not in sources:
            raise ApiError(409, {"detail": f"Allocation state can not be changed from {source} to {state}."})
        order = self.order_in_progress(res["uuid"])
        executing = order if order is not None and order["state"] == "executing" else None
        if target == ALLOC_OK and source == ALLOC_UPDATING and executing is not None:
            self._check_update_completion(executing)  # before any change: the server rolls the request back
        alloc["state"] = target
        alloc["modified"] = self.now_iso()
        if target == ALLOC_OK:
            if executing is not None and (
                (source == ALLOC_CREATING and executing["type"] == "Create")
                or (source == ALLOC_UPDATING and executing["type"] == "Update")
            ):
                self._complete_order(executing)  # the 2024 auto-complete
            elif source == ALLOC_ERRED and res["state"] == "Erred":
                self._resource_ok(res)
                self._touch(res)
        elif target == ALLOC_ERRED:
            if executing is not None:
                executing["state"] = "erred"
                self._touch(executing)
            res["state"] = "Erred"
            self._touch(res)
        res["backend_metadata"] = {
            **res["backend_metadata"],
            "state": res["state"],
            "action": None,
            "runtime_state": None,
            "action_details": None,
        }

    def set_allocation_backend_id(self, res: dict[str, Any], backend_id: str) -> None:
        alloc = self.allocation_of(res)
        alloc["backend_id"] = backend_id
        alloc["modified"] = self.now_iso()

    def create_association(self, res: dict[str, Any], username: str) -> bool:
        alloc = self.allocation_of(res)
        existing = self.assoc_by_alloc[alloc["uuid"]]
        if username in existing:
            return False
        a = {"uuid": new_uuid(), "allocation_uuid": alloc["uuid"], "username": username, "created": self.now_iso()}
        self.associations[a["uuid"]] = a
        existing[username] = a["uuid"]
        for ouid in self.ou_by_offering.get(res["offering_uuid"], []):
            ou = self.offering_users[ouid]
            if ou["username"] == username:
                ou["propagation_date"] = self.now_iso()
        return True

    def delete_association(self, res: dict[str, Any], username: str) -> bool:
        alloc = self.allocation_of(res)
        aid = self.assoc_by_alloc[alloc["uuid"]].pop(username, None)
        if aid is None:
            return False
        del self.associations[aid]
        return True

    # ------------------------------------------------------------------ provider resources
    def set_backend_id(self, res: dict[str, Any], backend_id: str) -> bool:
        changed = res["backend_id"] != backend_id
        res["backend_id"] = backend_id
        if changed:
            self._touch(res)
        return changed

    def set_limits(self, res: dict[str, Any], limits: dict[str, Any]) -> None:
        res["limits"] = dict(limits)
        self._touch(res)

    def set_as_ok(self, res: dict[str, Any]) -> None:
        if res["state"] == "Terminated":
            raise ApiError(409, {"detail": "Resource is terminated."})
        self._resource_ok(res)
        self._touch(res)

    def set_as_erred(self, res: dict[str, Any], message: str, traceback: str) -> None:
        if res["state"] == "Terminated":
            raise ApiError(409, {"detail": "Resource is terminated."})
        res["state"] = "Erred"
        res["error_message"] = message
        res["error_traceback"] = traceback
        self._touch(res)

    # ------------------------------------------------------------------ offering users
    def _ensure_offering_user(self, offering_uuid: str, user_uuid: str) -> dict[str, Any] | None:
        key = (offering_uuid, user_uuid)
        if key in self.ou_by_pair:
            return self.offering_users[self.ou_by_pair[key]]
        off = self.offerings[offering_uuid]
        if self.profile == "2024":
            if not off["secret_options"].get("service_provider_can_create_offering_user"):
                return None
            return self._new_offering_user(off, user_uuid, username="", state=None)
        policy = off["plugin_options"].get("username_generation_policy", "service_provider")
        if policy == "service_provider":
            return self._new_offering_user(off, user_uuid, username=None, state="Requested")
        return self._new_offering_user(off, user_uuid, username=self.users[user_uuid]["username"], state="OK")

    def _new_offering_user(
        self, off: dict[str, Any], user_uuid: str, *, username: str | None, state: str | None
    ) -> dict[str, Any]:
        now = self.now_iso()
        ou = {
            "uuid": new_uuid(),
            "offering_uuid": off["uuid"],
            "user_uuid": user_uuid,
            "username": username,
            "state": state,
            "is_restricted": False,
            "propagation_date": None,
            "service_provider_comment": "",
            "created": now,
            "modified": now,
        }
        self.offering_users[ou["uuid"]] = ou
        self.ou_by_offering[off["uuid"]].append(ou["uuid"])
        self.ou_by_pair[(off["uuid"], user_uuid)] = ou["uuid"]
        return ou

    def create_offering_user(self, off: dict[str, Any], user_uuid: str, username: str | None, *, by_provider: bool) -> dict[str, Any]:
        if by_provider and not off["secret_options"].get("service_provider_can_create_offering_user"):
            raise ApiError(400, {"detail": "It is not allowed to create users for current offering."})
        if (off["uuid"], user_uuid) in self.ou_by_pair:
            raise ApiError(400, {"non_field_errors": ["The fields offering, user must make a unique set."]})
        if self.profile == "2024":
            return self._new_offering_user(off, user_uuid, username=username or "", state=None)
        return self._new_offering_user(off, user_uuid, username=username, state="OK" if username else "Requested")

    def set_offering_user_username(self, ou: dict[str, Any], username: str | None) -> None:
        ou["username"] = username if username is not None else ("" if self.profile == "2024" else None)
        if self.profile == "8" and username and ou["state"] in ("Creating", "Error creating"):
            ou["state"] = "OK"
        self._touch(ou)

    # 8.x offering-user state machine: action -> (allowed sources, target)
    OU_ACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
        "begin_creating": (("Requested", "Error creating"), "Creating"),
        "set_ok": (
            ("Requested", "Creating", "Pending account linking", "Pending additional validation", "Error creating"),
            "OK",
        ),
        "set_error_creating": (("Requested", "Creating", "Pending account linking", "Pending additional validation"), "Error creating"),
        "set_pending_account_linking": (("Requested", "Creating", "Error creating"), "Pending account linking"),
        "set_pending_additional_validation": (("Requested", "Creating", "Error creating"), "Pending additional validation"),
        "set_validation_complete": (("Pending account linking", "Pending additional validation"), "OK"),
        "request_deletion": (("OK", "Error deleting"), "Requested deletion"),
        "set_deleting": (("Requested deletion", "OK", "Error deleting"), "Deleting"),
        "set_deleted": (("Deleting", "Requested deletion"), "Deleted"),
        "set_error_deleting": (("Deleting", "Requested deletion"), "Error deleting"),
    }

    def offering_user_action(self, ou: dict[str, Any], action: str, comment: str = "") -> None:
        sources, target = self.OU_ACTIONS[action]
        if ou["state"] not in sources:
            raise valid_states_error(sources)
        ou["state"] = target
        if comment:
            ou["service_provider_comment"] = comment
        self._touch(ou)

    # ------------------------------------------------------------------ usage
    def set_usage(self, user: dict[str, Any], body: dict[str, Any]) -> None:
        usages = body.get("usages")
        if not isinstance(usages, list) or not usages:
            raise ApiError(400, {"usages": ["This field is required."]})
        item_errors: list[dict[str, list[str]]] = []
        parsed: list[tuple[str, Decimal, dict[str, Any]]] = []
        for item in usages:
            err: dict[str, list[str]] = {}
            if not isinstance(item, dict):
                item_errors.append({"non_field_errors": ["Invalid data. Expected a dictionary."]})
                continue
            if not item.get("type"):
                err["type"] = ["This field is required."]
            amount = check_decimal(item.get("amount"), err, "amount")
            item_errors.append(err)
            if not err and amount is not None:
                parsed.append((str(item["type"]), amount, item))
        if any(item_errors):
            raise ApiError(400, {"usages": item_errors})

        plan_period = None
        if body.get("plan_period"):
            pp_uuid = parse_uuid(body["plan_period"])
            plan_period = self.plan_periods.get(pp_uuid or "")
            if plan_period is None:
                raise ApiError(400, {"plan_period": [f"Object with uuid={body['plan_period']} does not exist."]})
            res = self.resources[plan_period["resource_uuid"]]
        elif body.get("resource"):
            rid = parse_uuid(body["resource"])
            res = self.resources.get(rid or "")
            if res is None:
                raise ApiError(400, {"resource": [f"Object with uuid={body['resource']} does not exist."]})
        else:
            raise ApiError(400, {"non_field_errors": ["Either plan_period or resource should be provided."]})
        off = self.offerings[res["offering_uuid"]]
        if not self.can_set_usage(user, off):
            raise ApiError(403, PERMISSION_DENIED)
        if res["state"] not in ("OK", "Updating", "Terminating"):
            raise ApiError(
                400, {"non_field_errors": [f"Usage can not be reported for a resource in state {res['state']}."]}
            )
        if plan_period is None:
            open_pps = [self.plan_periods[p] for p in self.pp_by_resource.get(res["uuid"], []) if self.plan_periods[p]["end"] is None]
            if not res.get("plan_uuid") or not open_pps:
                raise ApiError(400, {"non_field_errors": ["Resource must have a plan to report usage."]})
            plan_period = open_pps[-1]
        comps = {c["type"]: c for c in self.offering_components(off["uuid"]) if c["billing_type"] in ("usage", "limit")}
        invalid = [t for t, _, _ in parsed if t not in comps]
        if invalid:
            raise ApiError(400, {"non_field_errors": [f"These components are invalid: {', '.join(invalid)}."]})
        when = self.now()
        # The Oct 2024 serializer has no `date` field: the server ignores it and files the report under the
        # month it receives it in (tests/mastermind/test_mm_load_usage.py shows it); 8.x uses the date's month.
        if body.get("date") and self.profile != "2024":
            try:
                when = parse_iso(str(body["date"]))
            except ValueError:
                raise ApiError(400, {"date": ["Datetime has wrong format."]}) from None
        period = month_start(when)
        current = month_start(self.now())
        if period < current and not user["is_staff"]:
            for t, _, _ in parsed:
                if comps[t]["billing_type"] == "usage" and not comps[t]["is_prepaid"]:
                    raise ApiError(
                        400,
                        {
                            "non_field_errors": [
                                "Service providers can only specify date for limit-based or prepaid billing "
                                "components when backfilling past billing periods"
                            ]
                        },
                    )
        if period.isoformat()[:7] in self.closed_periods:
            raise ApiError(400, {"non_field_errors": ["Billing period is closed."]})
        now = self.now_iso()
        for t, amount, item in parsed:
            key = (res["uuid"], t, period.isoformat())
            value = f"{amount:.2f}"
            policy = item.get("missing_usage_policy") or ("reuse" if item.get("recurring") else "none")
            if key in self.usage_by_key:
                cu = self.usages[self.usage_by_key[key]]
                cu.update(usage=value, date=iso(when), description=item.get("description", ""), modified=now,
                          modified_by=user["id"], missing_usage_policy=policy, recurring=policy == "reuse",
                          plan_period_uuid=plan_period["uuid"])
            else:
                cu = {
                    "uuid": new_uuid(),
                    "resource_uuid": res["uuid"],
                    "type": t,
                    "plan_period_uuid": plan_period["uuid"],
                    "billing_period": period.isoformat(),
                    "date": iso(when),
                    "usage": value,
                    "description": item.get("description", ""),
                    "created": now,
                    "modified": now,
                    "recurring": policy == "reuse",
                    "missing_usage_policy": policy,
                    "modified_by": user["id"],
                }
                self.usages[cu["uuid"]] = cu
                self.usage_by_key[key] = cu["uuid"]
                self.usages_by_offering[off["uuid"]].append(cu["uuid"])
            if period == current:
                res["current_usages"][t] = float(amount)

    def set_user_usage(self, user: dict[str, Any], cu: dict[str, Any], item: dict[str, Any]) -> None:
        res = self.resources[cu["resource_uuid"]]
        off = self.offerings[res["offering_uuid"]]
        if not self.can_set_usage(user, off):
            raise ApiError(403, PERMISSION_DENIED)
        self._upsert_user_usage(cu, self._validate_user_usage(item))

    def set_user_usages(self, user: dict[str, Any], cu: dict[str, Any], items: Any) -> None:
        res = self.resources[cu["resource_uuid"]]
        off = self.offerings[res["offering_uuid"]]
        if not self.can_set_usage(user, off):
            raise ApiError(403, PERMISSION_DENIED)
        if not isinstance(items, list):
            raise ApiError(400, {"usages": ["This field is required."]})
        validated, errors = [], []
        for item in items:
            try:
                validated.append(self._validate_user_usage(item))
                errors.append({})
            except ApiError as e:
                errors.append(e.body)
        if any(errors):
            raise ApiError(400, {"usages": errors})
        for v in validated:
            self._upsert_user_usage(cu, v)

    def _validate_user_usage(self, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise ApiError(400, {"non_field_errors": ["Invalid data. Expected a dictionary."]})
        err: dict[str, list[str]] = {}
        if not item.get("username"):
            err["username"] = ["This field is required."]
        amount = check_decimal(item.get("usage", "0"), err, "usage")
        ou_uuid = None
        if item.get("user"):
            ou_uuid = next((parse_uuid(s) for s in reversed(str(item["user"]).rstrip("/").split("/")) if parse_uuid(s)), None)
            if ou_uuid not in self.offering_users:
                err["user"] = ["Invalid hyperlink - Object does not exist."]
        if err:
            raise ApiError(400, err)
        return {"username": str(item["username"]), "usage": amount, "ou": ou_uuid, "description": item.get("description", "")}

    def _upsert_user_usage(self, cu: dict[str, Any], v: dict[str, Any]) -> None:
        now = self.now_iso()
        key = (cu["uuid"], v["username"])
        value = f"{v['usage']:.2f}"
        if key in self.uu_by_key:
            uu = self.user_usages[self.uu_by_key[key]]
            uu.update(usage=value, modified=now, date=now)
            if v["ou"]:
                uu["offering_user_uuid"] = v["ou"]
            return
        uu = {
            "uuid": new_uuid(),
            "component_usage_uuid": cu["uuid"],
            "username": v["username"],
            "offering_user_uuid": v["ou"],
            "usage": value,
            "description": v["description"],
            "created": now,
            "modified": now,
            "date": now,
            "backend_id": "",
        }
        self.user_usages[uu["uuid"]] = uu
        self.uu_by_key[key] = uu["uuid"]
        self.uu_by_usage[cu["uuid"]].append(uu["uuid"])

    # ------------------------------------------------------------------ bulk setup for tests and benchmarks
    def bulk_resources(
        self,
        *,
        offering_uuid: str,
        project_uuid: str,
        count: int,
        state: str = "OK",
        name_prefix: str = "res",
        backend_ids: list[str] | None = None,
        limits: dict[str, Any] | None = None,
    ) -> list[str]:
        """Resources that went through a completed Create order, without driving each order over HTTP."""
        if state not in RESOURCE_STATES:
            raise ApiError(400, {"state": [f'"{state}" is not a valid choice.']})
        out = []
        for i in range(count):
            order = self.place_order(
                offering_uuid=offering_uuid,
                project_uuid=project_uuid,
                limits=limits,
                attributes={"name": f"{name_prefix}-{i}"},
            )
            order["state"] = "executing"
            res = self.resources[order["resource_uuid"]]
            if self.profile == "2024":
                self._process_order_task(order)
                self.allocations[res["allocation_uuid"]]["state"] = ALLOC_OK
            self._complete_order(order)
            res["state"] = state
            if backend_ids is not None:
                res["backend_id"] = backend_ids[i]
            out.append(res["uuid"])
        return out


def check_decimal(value: Any, err: dict[str, list[str]], key: str) -> Decimal | None:
    """DRF DecimalField(decimal_places=2) with a minimum of 0."""
    if value is None or value == "":
        err[key] = ["This field is required."]
        return None
    if isinstance(value, bool):
        err[key] = ["A valid number is required."]
        return None
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        err[key] = ["A valid number is required."]
        return None
    if not d.is_finite():
        err[key] = ["A valid number is required."]
        return None
    exponent = d.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        err[key] = ["Ensure that there are no more than 2 decimal places."]
        return None
    if d < 0:
        err[key] = ["Ensure this value is greater than or equal to 0."]
        return None
    return d
