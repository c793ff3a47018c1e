"""JSON bodies as Mastermind renders them, per profile.

Hyperlinked fields are absolute URLs built from the request's host (``base``). The 8 profile renders the
fields the 8.x serializers have (so ``waldur-api-client`` 8.x models parse every body); the 2024 profile
leaves out what the Oct-2024 server did not send (see the tables of ``waldur-2024-server-behaviour.md``) and
adds what it sent in addition.
"""

from __future__ import annotations

import uuid as uuid_mod
from typing import Any

from .store import ALLOC_STATE_NAMES, Store

ORDER_FIELDS_MISSING_2024 = (
    "completed_at",
    "created_by_username",
    "consumer_reviewed_by_username",
    "provider_reviewed_by_username",
    "old_plan_name",
    "old_plan_uuid",
    "error_traceback",
)
RESOURCE_FIELDS_MISSING_2024 = (
    "customer_slug",
    "project_slug",
    "offering_slug",
    "offering_backend_id",
    "last_sync",
    "parent_uuid",
    "parent_name",
    "parent_offering_uuid",
    "parent_offering_name",
    "parent_offering_slug",
    "service_settings_uuid",
)
# The real server's resource *list* serializer has neither of these (the retrieve has both); ``field=`` cannot ask
# for them either, it drops names it does not know.
RESOURCE_FIELDS_NOT_LISTED_2024 = ("order_in_progress", "creation_order")
OFFERING_FIELDS_MISSING_2024 = (
    "access_url",
    "parent_description",
    "parent_name",
    "parent_uuid",
    "project_name",
    "project_uuid",
    "quotas",
    "scope_name",
    "scope_state",
    "scope_uuid",
)


class Renderer:
    def __init__(self, store: Store, base: str) -> None:
        self.s = store
        self.base = base.rstrip("/")
        self.v8 = store.profile == "8"

    def url(self, path: str) -> str:
        return f"{self.base}/api/{path}"

    # ------------------------------------------------------------------ shared blocks
    def _offering_block(self, off: dict[str, Any]) -> dict[str, Any]:
        provider = self.s.customers[off["customer_uuid"]]
        cat = self.s.categories[off["category_uuid"]]
        d = {
            "offering": self.url(f"marketplace-public-offerings/{off['uuid']}/"),
            "offering_name": off["name"],
            "offering_uuid": off["uuid"],
            "offering_description": off["description"],
            "offering_image": None,
            "offering_thumbnail": None,
            "offering_type": off["type"],
            "offering_terms_of_service": "",
            "offering_shared": off["shared"],
            "offering_billable": off["billable"],
            "offering_plugin_options": off["plugin_options"],
            "provider_name": provider["name"],
            "provider_uuid": provider["uuid"],
            "category_title": cat["title"],
            "category_uuid": cat["uuid"],
            "category_icon": None,
        }
        if self.v8:
            d["provider_slug"] = provider["slug"]
            d["provider_description"] = ""
            del d["offering_terms_of_service"]
        return d

    def _plan_block(self, off: dict[str, Any], plan_uuid: str | None) -> dict[str, Any]:
        plan = self.s.plans.get(plan_uuid or "")
        if plan is None:
            return {"plan": None, "plan_unit": None, "plan_name": None, "plan_uuid": None, "plan_description": None}
        return {
            "plan": self.url(f"marketplace-public-offerings/{off['uuid']}/plans/{plan['uuid']}/"),
            "plan_unit": plan["unit"],
            "plan_name": plan["name"],
            "plan_uuid": plan["uuid"],
            "plan_description": plan["description"],
        }

    def _user_name(self, user_uuid: str | None) -> tuple[str | None, str | None, str | None]:
        u = self.s.users.get(user_uuid or "")
        if u is None:
            return None, None, None
        return self.url(f"users/{u['uuid']}/"), u["full_name"], u["username"]

    # ------------------------------------------------------------------ orders
    def order(self, o: dict[str, Any]) -> dict[str, Any]:
        s = self.s
        off = s.offerings[o["offering_uuid"]]
        project = s.projects[o["project_uuid"]]
        customer = s.customers[project["customer_uuid"]]
        res = s.resources.get(o.get("resource_uuid") or "")
        alloc = s.allocations.get((res or {}).get("allocation_uuid") or "") if not self.v8 else None
        consumer_url, consumer_full, consumer_username = self._user_name(o["consumer_reviewed_by"])
        provider_url, provider_full, provider_username = self._user_name(o["provider_reviewed_by"])
        _, creator_full, creator_username = self._user_name(o["created_by"])
        d: dict[str, Any] = {
            **self._offering_block(off),
            **self._plan_block(off, o["plan_uuid"]),
            "attributes": o["attributes"],
            "limits": o["limits"],
            "uuid": o["uuid"],
            "created": o["created"],
            "modified": o["modified"],
            "resource_uuid": alloc["uuid"] if alloc else None,
            "resource_type": "SLURM.Allocation" if alloc else None,
            "resource_name": res["name"] if res else o["attributes"].get("name", ""),
            "cost": o["cost"],
            "state": o["state"],
            "output": o["output"],
            "marketplace_resource_uuid": o["resource_uuid"],
            "error_message": o["error_message"],
            "error_traceback": o["error_traceback"],
            "callback_url": None,
            "completed_at": o["completed_at"],
            "type": o["type"],
            "url": self.url(f"marketplace-orders/{o['uuid']}/"),
            "consumer_reviewed_by": consumer_url,
            "consumer_reviewed_by_full_name": consumer_full,
            "consumer_reviewed_by_username": consumer_username,
            "consumer_reviewed_at": o["consumer_reviewed_at"],
            "provider_reviewed_by": provider_url,
            "provider_reviewed_by_full_name": provider_full,
            "provider_reviewed_by_username": provider_username,
            "provider_reviewed_at": o["provider_reviewed_at"],
            "created_by_username": creator_username or "",
            "created_by_full_name": creator_full or "",
            "created_by_civil_number": None,
            "customer_name": customer["name"],
            "customer_uuid": customer["uuid"],
            "customer_slug": customer["slug"],
            "project_name": project["name"],
            "project_uuid": project["uuid"],
            "project_description": project["description"],
            "project_slug": project["slug"],
            "old_plan_name": None,
            "new_plan_name": None,
            "old_plan_uuid": o["old_plan_uuid"],
            "new_plan_uuid": o["new_plan_uuid"],
            "old_cost_estimate": 0.0,
            "new_cost_estimate": "0.00",
            "can_terminate": False,
            "fixed_price": 0.0,
            "activation_price": 0.0,
            "termination_comment": None,
            "backend_id": o["backend_id"],
            "issue": None,
        }
        if self.v8:
            d.update(
                slug=o["uuid"][:8],
                request_comment=None,
                attachment=None,
                start_date=None,
                output_updated_at=None,
                error_updated_at=None,
                created_by_email=None,
                provider_rejection_comment=o["provider_rejection_comment"],
                consumer_rejection_comment="",
                auto_approved=False,
                order_subtype=None,
            )
        else:
            for key in ORDER_FIELDS_MISSING_2024:
                d.pop(key, None)
            del d["url"]  # the Oct-2024 order serializer has no url
            d["new_cost_estimate"] = 0.0  # a number there, a decimal string on 8.x
        return d

    # ------------------------------------------------------------------ resources
    def resource_listed(self, r: dict[str, Any]) -> dict[str, Any]:
        """A resource as the provider-resources *list* renders it."""
        d = self.resource(r)
        if not self.v8:
            for key in RESOURCE_FIELDS_NOT_LISTED_2024:
                del d[key]
        return d

    def resource(self, r: dict[str, Any]) -> dict[str, Any]:
        s = self.s
        off = s.offerings[r["offering_uuid"]]
        project = s.projects[r["project_uuid"]]
        customer = s.customers[project["customer_uuid"]]
        alloc = s.allocations.get(r.get("allocation_uuid") or "") if not self.v8 else None
        in_progress = s.order_in_progress(r["uuid"])
        creation = s.orders.get(r.get("creation_order_uuid") or "")
        comps = s.offering_components(off["uuid"])
        d: dict[str, Any] = {
            **self._offering_block(off),
            **self._plan_block(off, r["plan_uuid"]),
            "attributes": r["attributes"],
            "limits": r["limits"],
            "uuid": r["uuid"],
            "created": r["created"],
            "modified": r["modified"],
            "url": self.url(f"marketplace-resources/{r['uuid']}/"),
            "scope": self.url(f"slurm-allocations/{alloc['uuid']}/") if alloc else None,
            "description": r["description"],
            "state": r["state"],
            "resource_uuid": alloc["uuid"] if alloc else None,
            "backend_id": r["backend_id"],
            "effective_id": r["effective_id"],
            "resource_type": "SLURM.Allocation" if alloc else None,
            "project": self.url(f"projects/{project['uuid']}/"),
            "project_uuid": project["uuid"],
            "project_name": project["name"],
            "project_description": project["description"],
            "project_end_date": None,
            "project_end_date_requested_by": None,
            "customer_uuid": customer["uuid"],
            "customer_name": customer["name"],
            "customer_slug": customer["slug"],
            "project_slug": project["slug"],
            "offering_slug": off["slug"],
            "offering_backend_id": off["backend_id"],
            "backend_metadata": r["backend_metadata"],
            "is_usage_based": any(c["billing_type"] == "usage" for c in comps),
            "is_limit_based": any(c["billing_type"] == "limit" for c in comps),
            "name": r["name"],
            "slug": r["slug"],
            "current_usages": r["current_usages"],
            "can_terminate": r["state"] in ("OK", "Erred"),
            "report": [],
            "end_date": r["end_date"],
            "end_date_requested_by": None,
            "username": None,
            "limit_usage": {c["type"]: None for c in comps if c["billing_type"] == "limit"},
            "downscaled": r["downscaled"],
            "restrict_member_access": r["restrict_member_access"],
            "paused": r["paused"],
            "endpoints": [],
            "error_message": r["error_message"],
            "error_traceback": r["error_traceback"],
            "offering_customer_uuid": off["customer_uuid"],
            "options": None,
            "available_actions": [],
            "last_sync": r["last_sync"],
            "order_in_progress": self.order(in_progress) if in_progress else None,
            "creation_order": self.order(creation) if creation else None,
        }
        if self.v8:
            d.update(
                project_start_date=None,
                project_effective_end_date=None,
                resource_effective_end_date=None,
                project_is_in_grace_period=False,
                end_date_updated_at=None,
                offering_state=off["state"],
                offering_components=[self.component(c) for c in comps],
                user_requires_reconsent=False,
                has_api_keys=False,
            )
            del d["offering_customer_uuid"]
        else:
            for key in RESOURCE_FIELDS_MISSING_2024:
                d.pop(key, None)
        return d

    def allocation(self, a: dict[str, Any]) -> dict[str, Any]:
        s = self.s
        r = s.resources[a["resource_uuid"]]
        off = s.offerings[r["offering_uuid"]]
        project = s.projects[r["project_uuid"]]
        customer = s.customers[project["customer_uuid"]]
        return {
            "url": self.url(f"slurm-allocations/{a['uuid']}/"),
            "uuid": a["uuid"],
            "name": a["name"],
            "description": "",
            "service_name": "SLURM remote service settings",
            "service_settings": None,
            "service_settings_uuid": None,
            "service_settings_state": "OK",
            "service_settings_error_message": "",
            "project": self.url(f"projects/{project['uuid']}/"),
            "project_name": project["name"],
            "project_uuid": project["uuid"],
            "customer": self.url(f"customers/{customer['uuid']}/"),
            "customer_uuid": customer["uuid"],
            "customer_name": customer["name"],
            "error_message": "",
            "error_traceback": "",
            "resource_type": "SLURM.Allocation",
            "state": ALLOC_STATE_NAMES[a["state"]],
            "created": a["created"],
            "modified": a["modified"],
            "backend_id": a["backend_id"],
            "access_url": None,
            "cpu_limit": a["cpu_limit"],
            "cpu_usage": 0,
            "gpu_limit": a["gpu_limit"],
            "gpu_usage": 0,
            "ram_limit": a["ram_limit"],
            "ram_usage": 0,
            "username": None,
            "gateway": None,
            "is_active": True,
            "marketplace_offering_uuid": off["uuid"],
            "marketplace_offering_name": off["name"],
            "marketplace_offering_plugin_options": off["plugin_options"],
            "marketplace_category_uuid": off["category_uuid"],
            "marketplace_category_name": s.categories[off["category_uuid"]]["title"],
            "marketplace_resource_uuid": r["uuid"],
            "marketplace_plan_uuid": r["plan_uuid"],
            "marketplace_resource_state": r["state"],
            "is_usage_based": True,
            "is_limit_based": True,
        }

    def association(self, a: dict[str, Any]) -> dict[str, Any]:
        return {
            "uuid": a["uuid"],
            "username": a["username"],
            "allocation": self.url(f"slurm-allocations/{a['allocation_uuid']}/"),
        }

    # ------------------------------------------------------------------ offerings
    def component(self, c: dict[str, Any]) -> dict[str, Any]:
        def num(v: Any) -> Any:
            if v is None:
                return None
            return float(v) if self.v8 else int(float(v))

        d = {
            "uuid": c["uuid"],
            "billing_type": c["billing_type"],
            "type": c["type"],
            "name": c["name"],
            "description": c["description"],
            "measured_unit": c["measured_unit"],
            "limit_period": c["limit_period"],
            "limit_amount": num(c["limit_amount"]),
            "article_code": c["article_code"],
            "max_value": num(c["max_value"]),
            "min_value": num(c["min_value"]),
            "max_available_limit": num(c["max_available_limit"]),
            "is_boolean": c["is_boolean"],
            "default_limit": num(c["default_limit"]),
            "factor": None,
            "is_builtin": c["is_builtin"],
        }
        if self.v8:
            d.update(
                offering_uuid=c["offering_uuid"],
                unit_factor=c["unit_factor"],
                limit_decimal_places=c["limit_decimal_places"],
                is_prepaid=c["is_prepaid"],
                overage_component=None,
            )
        return d

    def plan(self, off: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
        comps = self.s.offering_components(off["uuid"])
        return {
            "url": self.url(f"marketplace-public-offerings/{off['uuid']}/plans/{p['uuid']}/"),
            "uuid": p["uuid"],
            "name": p["name"],
            "description": p["description"],
            "article_code": "",
            "max_amount": None,
            "archived": p["archived"],
            "is_active": not p["archived"],
            "unit_price": "0.0000000",
            "unit": p["unit"],
            "init_price": 0.0,
            "switch_price": 0.0,
            "backend_id": "",
            "organization_groups": [],
            "prices": {c["type"]: 0.0 for c in comps},
            "future_prices": {},
            "quotas": {c["type"]: 0 for c in comps},
            "resources_count": 0,
            "plan_type": "usage-based",
            "minimal_price": 0.0,
        }

    def offering(self, off: dict[str, Any], *, provider_view: bool = True) -> dict[str, Any]:
        s = self.s
        customer = s.customers[off["customer_uuid"]]
        cat = s.categories[off["category_uuid"]]
        d: dict[str, Any] = {
            "url": self.url(f"marketplace-provider-offerings/{off['uuid']}/"),
            "uuid": off["uuid"],
            "created": off["created"],
            "name": off["name"],
            "slug": off["slug"],
            "description": off["description"],
            "full_description": "",
            "terms_of_service": "",
            "terms_of_service_link": "",
            "privacy_policy_link": "",
            "access_url": "",
            "endpoints": [],
            "customer": self.url(f"customers/{customer['uuid']}/"),
            "customer_uuid": customer["uuid"],
            "customer_name": customer["name"],
            "project": None,
            "project_uuid": None,
            "project_name": None,
            "category": self.url(f"marketplace-categories/{cat['uuid']}/"),
            "category_uuid": cat["uuid"],
            "category_title": cat["title"],
            "attributes": {},
            "options": {"order": [], "options": {}},
            "resource_options": {"order": [], "options": {}},
            "components": [self.component(c) for c in s.offering_components(off["uuid"])],
            "plugin_options": off["plugin_options"],
            "state": off["state"],
            "vendor_details": "",
            "getting_started": "",
            "integration_guide": "",
            "thumbnail": None,
            "order_count": len(s.orders_by_offering.get(off["uuid"], [])),
            "plans": [self.plan(off, s.plans[p]) for p in off["plans"]],
            "screenshots": [],
            "type": off["type"],
            "shared": off["shared"],
            "billable": off["billable"],
            "scope": None,
            "scope_uuid": None,
            "scope_name": None,
            "scope_state": None,
            "files": [],
            "quotas": [],
            "paused_reason": "",
            "citation_count": -1,
            "latitude": None,
            "longitude": None,
            "country": "",
            "backend_id": off["backend_id"],
            "organization_groups": [],
            "image": None,
            "total_customers": None,
            "total_cost": None,
            "total_cost_estimated": None,
            "parent_description": None,
            "parent_uuid": None,
            "parent_name": None,
            "backend_metadata": {},
        }
        if provider_view:
            d["secret_options"] = off["secret_options"]
        if self.v8:
            d.update(
                billing_period_applies={},
                software_catalogs=[],
                partitions=[],
                can_update_integration=True,
                can_update_options=True,
                tags=[],
                has_compliance_requirements=False,
                integration_status=None,
            )
            del d["terms_of_service"], d["terms_of_service_link"]
        else:
            for key in OFFERING_FIELDS_MISSING_2024:
                del d[key]
            d.update(
                native_name="",
                native_description="",
                rating=None,
                datacite_doi="",
                google_calendar_is_public=None,
                google_calendar_link=None,
                integration_status=[],
                roles=[],
                service_attributes={},
            )
        return d

    # ------------------------------------------------------------------ people
    def team_member(self, user: dict[str, Any], role: str, offering_uuid: str) -> dict[str, Any]:
        ou_uuid = self.s.ou_by_pair.get((offering_uuid, user["uuid"]))
        ou = self.s.offering_users.get(ou_uuid or "")
        d: dict[str, Any] = {
            "url": self.url(f"users/{user['uuid']}/"),
            "uuid": user["uuid"],
            "username": user["username"],
            "full_name": user["full_name"],
            "email": user["email"],
            "role": role,
            "expiration_time": None,
            "offering_user_username": ou["username"] if ou else None,
        }
        if self.v8:
            d["offering_user_state"] = ou["state"] if ou else None
        return d

    def offering_user(self, ou: dict[str, Any]) -> dict[str, Any]:
        s = self.s
        user = s.users[ou["user_uuid"]]
        off = s.offerings[ou["offering_uuid"]]
        customer = s.customers[off["customer_uuid"]]
        d: dict[str, Any] = {
            "url": self.url(f"marketplace-offering-users/{ou['uuid']}/"),
            "uuid": ou["uuid"],
            "user": self.url(f"users/{user['uuid']}/"),
            "offering": self.url(f"marketplace-provider-offerings/{off['uuid']}/"),
            "username": ou["username"],
            "offering_uuid": off["uuid"],
            "offering_name": off["name"],
            "user_uuid": user["uuid"],
            "user_username": user["username"],
            "user_full_name": user["full_name"],
            "created": ou["created"],
            "modified": ou["modified"],
            "customer_uuid": customer["uuid"],
            "customer_name": customer["name"],
            "is_restricted": ou["is_restricted"],
        }
        if self.v8:
            d.update(
                user_first_name=user["first_name"],
                user_last_name=user["last_name"],
                user_email=user["email"],
                state=ou["state"],
                runtime_state="Active",
                service_provider_comment=ou["service_provider_comment"],
                service_provider_comment_url="",
                has_consent=True,
                requires_reconsent=False,
                is_profile_complete=True,
                missing_profile_attributes=[],
                uidnumber=None,
                primarygroup=None,
                login_shell=None,
                home_directory=None,
            )
        else:
            d["propagation_date"] = ou["propagation_date"]
        return d

    def user_me(self, u: dict[str, Any]) -> dict[str, Any]:
        d = {
            "url": self.url(f"users/{u['uuid']}/"),
            "uuid": u["uuid"],
            "username": u["username"],
            "full_name": u["full_name"],
            "first_name": u["first_name"],
            "last_name": u["last_name"],
            "email": u["email"],
            "is_staff": u["is_staff"],
            "is_active": True,
            "is_support": False,
            "token": u["token"],
            "token_lifetime": None,
            "token_expires_at": None,
            "date_joined": u["date_joined"],
            "registration_method": "default",
            "civil_number": None,
            "description": "",
            "job_title": "",
            "organization": "",
            "phone_number": "",
            "preferred_language": "",
            "notifications_enabled": True,
            "agreement_date": u["date_joined"],
        }
        if self.v8:
            d["permissions"] = []
            d["slug"] = u["username"]
            return d
        # Oct 2024: the serializer shows these only to staff, has no token expiry or notification fields, and
        # lists the user's roles and identity provider.
        del d["token_expires_at"], d["notifications_enabled"]
        if not u["is_staff"]:
            del d["is_staff"], d["is_active"], d["is_support"], d["description"]
        d.update(
            slug=u["username"],
            native_name="",
            permissions=self.permissions(u),
            requested_email=None,
            affiliations=[],
            identity_provider_name="Local DB",
            identity_provider_label="Local DB",
            identity_provider_management_url="",
            identity_provider_fields=[],
            image=None,
            identity_source="",
        )
        return d

    def permissions(self, u: dict[str, Any]) -> list[dict[str, Any]]:
        """The 2024 ``permissions`` of /users/me/: one entry per customer and project role of the user."""
        roles: list[tuple[str, str, str, str, str]] = []
        for c in self.s.customers.values():
            if u["uuid"] in c["owners"]:
                roles.append(("CUSTOMER.OWNER", "Organization owner", "customer", c["uuid"], c["name"]))
            if u["uuid"] in c["managers"]:
                roles.append(("CUSTOMER.MANAGER", "Customer manager", "customer", c["uuid"], c["name"]))
        for p in self.s.projects.values():
            role = p["members"].get(u["uuid"])
            if role is not None:
                name = {"admin": "PROJECT.ADMIN", "manager": "PROJECT.MANAGER", "member": "PROJECT.MEMBER"}[role]
                roles.append((name, name.split(".")[1].title(), "project", p["uuid"], p["name"]))
        return [
            {
                "user_uuid": u["uuid"],
                "user_name": u["full_name"],
                "user_slug": u["username"],
                "created": u["date_joined"],
                "expiration_time": None,
                "created_by_full_name": "",
                "created_by_username": "",
                "role_name": name,
                "role_description": description,
                "role_uuid": uuid_mod.uuid5(uuid_mod.NAMESPACE_URL, f"waldur-role:{name}").hex,
                "scope_type": scope_type,
                "scope_uuid": scope_uuid,
                "scope_name": scope_name,
            }
            for name, description, scope_type, scope_uuid, scope_name in roles
        ]

    # ------------------------------------------------------------------ usage
    def plan_period(self, pp: dict[str, Any]) -> dict[str, Any]:
        s = self.s
        plan = s.plans.get(pp["plan_uuid"] or "")
        comps = []
        res = s.resources[pp["resource_uuid"]]
        comp_by_type = {c["type"]: c for c in s.offering_components(res["offering_uuid"])}
        for (rid, t, _period), cu_uuid in s.usage_by_key.items():
            if rid != res["uuid"]:
                continue
            cu = s.usages[cu_uuid]
            if cu["plan_period_uuid"] != pp["uuid"]:
                continue
            comp = comp_by_type.get(t, {})
            comps.append(
                {
                    "uuid": cu["uuid"],
                    "created": cu["created"],
                    "description": cu["description"],
                    "type": t,
                    "name": comp.get("name", t),
                    "measured_unit": comp.get("measured_unit", ""),
                    "usage": cu["usage"],
                    "date": cu["date"],
                    "recurring": cu["recurring"],
                }
            )
            if self.v8:
                comps[-1]["billing_period"] = cu["billing_period"]
        return {
            "uuid": pp["uuid"],
            "plan_name": plan["name"] if plan else None,
            "plan_uuid": pp["plan_uuid"],
            "start": pp["start"],
            "end": pp["end"],
            "components": comps,
        }

    def component_usage(self, cu: dict[str, Any]) -> dict[str, Any]:
        s = self.s
        res = s.resources[cu["resource_uuid"]]
        off = s.offerings[res["offering_uuid"]]
        project = s.projects[res["project_uuid"]]
        customer = s.customers[project["customer_uuid"]]
        comp = next((c for c in s.offering_components(off["uuid"]) if c["type"] == cu["type"]), {})
        d = {
            "uuid": cu["uuid"],
            "created": cu["created"],
            "description": cu["description"],
            "type": cu["type"],
            "name": comp.get("name", cu["type"]),
            "measured_unit": comp.get("measured_unit", ""),
            "usage": cu["usage"],
            "date": cu["date"],
            "recurring": cu["recurring"],
            "resource_name": res["name"],
            "resource_uuid": res["uuid"],
            "offering_name": off["name"],
            "offering_uuid": off["uuid"],
            "project_name": project["name"],
            "project_uuid": project["uuid"],
            "customer_name": customer["name"],
            "customer_uuid": customer["uuid"],
            "billing_period": cu["billing_period"],
            "modified_by": cu["modified_by"],
        }
        if self.v8:
            d["missing_usage_policy"] = cu["missing_usage_policy"]
        return d

    def user_usage(self, uu: dict[str, Any]) -> dict[str, Any]:
        s = self.s
        cu = s.usages[uu["component_usage_uuid"]]
        res = s.resources[cu["resource_uuid"]]
        off = s.offerings[res["offering_uuid"]]
        project = s.projects[res["project_uuid"]]
        customer = s.customers[project["customer_uuid"]]
        comp = next((c for c in s.offering_components(off["uuid"]) if c["type"] == cu["type"]), {})
        d = {
            "uuid": uu["uuid"],
            "user": self.url(f"marketplace-offering-users/{uu['offering_user_uuid']}/") if uu["offering_user_uuid"] else None,
            "username": uu["username"],
            "component_usage": self.url(f"marketplace-component-usages/{cu['uuid']}/"),
            "usage": uu["usage"],
            "measured_unit": comp.get("measured_unit", ""),
            "description": uu["description"],
            "created": uu["created"],
            "modified": uu["modified"],
            "backend_id": uu["backend_id"],
            "resource_name": res["name"],
            "resource_uuid": res["uuid"],
            "offering_name": off["name"],
            "offering_uuid": off["uuid"],
            "project_name": project["name"],
            "project_uuid": project["uuid"],
            "customer_name": customer["name"],
            "customer_uuid": customer["uuid"],
            "component_type": cu["type"],
            "date": uu["date"],
        }
        if self.v8:
            d["billing_period"] = cu["billing_period"]
        return d
