"""The marketplace subset of the Mastermind REST API that the agent uses, for both profiles."""

from __future__ import annotations

from typing import Any, Callable

from aiohttp import web

from .http import USER_KEY, Filters, empty_response, json_response, mastermind_username_order, ordered, paginated, read_json
from .render import Renderer
from .store import (
    OFFERING_USER_STATES,
    ORDER_STATES_8,
    ORDER_STATES_2024,
    ORDER_TYPES_8,
    ORDER_TYPES_2024,
    PERMISSION_DENIED,
    RESOURCE_STATES,
    ApiError,
    ServerError,
    Store,
    not_found,
    parse_uuid,
)

Handler = Callable[[web.Request], Any]

HEAD_ROUTES = frozenset(
    {
        "/api/users/me/",
        "/api/marketplace-orders/",
        "/api/marketplace-provider-resources/",
        "/api/marketplace-offering-users/",
        "/api/marketplace-component-usages/",
        "/api/marketplace-component-user-usages/",
        "/api/slurm-associations/",
    }
)


class Api:
    def __init__(self, holder: Any) -> None:
        self.holder = holder  # holds .store; the control API can swap the store (reset/load)

    @property
    def s(self) -> Store:
        store: Store = self.holder.store
        return store

    def r(self, request: web.Request) -> Renderer:
        return Renderer(self.s, f"{request.scheme}://{request.host}")

    # ------------------------------------------------------------------ auth
    def user(self, request: web.Request) -> dict[str, Any]:
        header = request.headers.get("Authorization", "")
        if not header:
            raise ApiError(401, {"detail": "Authentication credentials were not provided."})
        keyword, _, token = header.partition(" ")
        if keyword.lower() != "token" or not token.strip():
            raise ApiError(401, {"detail": "Authentication credentials were not provided."})
        user = self.s.user_by_token(token.strip())
        if user is None:
            raise ApiError(401, {"detail": "Invalid token."})
        if user["token_expired"]:
            raise ApiError(401, {"detail": "Token has expired."})
        request[USER_KEY] = user["username"]
        return user

    # ------------------------------------------------------------------ routes
    def routes(self) -> list[web.RouteDef]:
        v8 = self.s.profile == "8"
        o = "/api/marketplace-orders/{uuid}/"
        pr = "/api/marketplace-provider-resources/{uuid}/"
        po = "/api/marketplace-provider-offerings/{uuid}/"
        ou = "/api/marketplace-offering-users/{uuid}/"
        cu = "/api/marketplace-component-usages/{uuid}/"
        rs = [
            web.get("/api/", self.api_root),
            web.get("/api/version/", self.version),
            web.get("/api/users/me/", self.users_me),
            web.get(po, self.offering_retrieve),
            web.post(po + "create_offering_component/", self.component_create),
            web.post(po + "update_offering_component/", self.component_update),
            web.post(po + "remove_offering_component/", self.component_remove),
            web.get("/api/marketplace-orders/", self.orders_list),
            web.get(o, self.order_retrieve),
            web.post(o + "approve_by_provider/", self.order_approve),
            web.post(o + "reject_by_provider/", self.order_reject),
            web.post(o + "set_state_executing/", self.order_set_executing),
            web.post(o + "set_state_done/", self.order_set_done),
            web.post(o + "set_state_erred/", self.order_set_erred),
            web.get("/api/marketplace-provider-resources/", self.resources_list),
            web.get(pr, self.resource_retrieve),
            web.post(pr + "set_backend_id/", self.resource_set_backend_id),
            web.post(pr + "set_backend_metadata/", self.resource_set_backend_metadata),
            web.get(pr + "team/", self.resource_team),
            web.get(pr + "plan_periods/", self.resource_plan_periods),
            web.get("/api/marketplace-offering-users/", self.offering_users_list),
            web.post("/api/marketplace-offering-users/", self.offering_user_create),
            web.get(ou, self.offering_user_retrieve),
            web.patch(ou, self.offering_user_patch),
            web.post("/api/marketplace-component-usages/set_usage/", self.set_usage),
            web.get("/api/marketplace-component-usages/", self.usages_list),
            web.get(cu, self.usage_retrieve),
            web.post(cu + "set_user_usage/", self.set_user_usage),
            web.get("/api/marketplace-component-user-usages/", self.user_usages_list),
        ]
        if v8:
            rs += [
                web.post(o + "set_backend_id/", self.order_set_backend_id),
                web.post(pr + "set_limits/", self.resource_set_limits),
                web.post(pr + "set_as_ok/", self.resource_set_as_ok),
                web.post(pr + "set_state_ok/", self.resource_set_state_ok),
                web.post(pr + "set_as_erred/", self.resource_set_as_erred),
                web.post(pr + "refresh_last_sync/", self.resource_refresh_last_sync),
                web.post(pr + "set_paused/", self._resource_flag("paused")),
                web.post(pr + "set_downscaled/", self._resource_flag("downscaled")),
                web.post(pr + "set_restrict_member_access/", self._resource_flag("restrict_member_access")),
                web.post(cu + "set_user_usages/", self.set_user_usages),
            ]
            rs += [web.post(ou + action + "/", self._ou_action(action)) for action in Store.OU_ACTIONS]
        else:
            sr = "/api/marketplace-slurm-remote/{uuid}/"
            rs += [
                web.get(pr + "details/", self.resource_details),
                web.get("/api/marketplace-slurm-remote/", self.slurm_remote_list),
                web.get(sr, self.slurm_remote_list),
                web.post(sr + "set_state/", self.slurm_set_state),
                web.post(sr + "set_backend_id/", self.slurm_set_backend_id),
                web.post(sr + "set_limits/", self.slurm_set_limits),
                web.post(sr + "create_association/", self.slurm_create_association),
                web.post(sr + "delete_association/", self.slurm_delete_association),
                web.get("/api/slurm-associations/", self.associations_list),
            ]
        # HEAD answers the count on list routes (and /users/me/), as the schema documents; other GET routes
        # get no HEAD route, so everything served is something the schema or the 2024 table lists.
        out = []
        for r in rs:
            if r.method == "GET":
                out.append(web.get(r.path, r.handler, allow_head=r.path in HEAD_ROUTES))
            else:
                out.append(r)
        return out

    # ------------------------------------------------------------------ misc
    async def api_root(self, request: web.Request) -> web.Response:
        """DRF's router root, as Mastermind serves it: every registered list prefix -> its URL (auth required).
        Only router prefixes are listed (``/api/version/`` is a plain URL pattern, so it is not)."""
        self.user(request)
        prefixes = sorted({
            r.path.split("/")[2] for r in self.routes() if r.path.count("/") >= 3 and r.path.split("/")[2] not in ("", "version")
        })
        base = f"{request.scheme}://{request.host}/api/"
        return json_response({p: f"{base}{p}/" for p in prefixes})

    async def version(self, request: web.Request) -> web.Response:
        if self.s.profile == "2024":
            # Oct 2024: IsStaffOrSupportUser (401 without a token, 403 to everyone else); "unknown" in this packaging
            user = self.user(request)
            if not (user["is_staff"] or user.get("is_support")):
                raise ApiError(403, PERMISSION_DENIED)
            return json_response({"version": "unknown"})
        return json_response({"version": self.s.version, "latest_version": None})

    async def users_me(self, request: web.Request) -> web.Response:
        return json_response(self.r(request).user_me(self.user(request)))

    # ------------------------------------------------------------------ offering and components
    def _managed_offering(self, request: web.Request, user: dict[str, Any]) -> dict[str, Any]:
        off = self.s.get(self.s.offerings, request.match_info["uuid"], "Offering")
        if self.s.provider_role(user, off) is None:
            raise not_found("No Offering matches the given query.")
        return off

    async def offering_retrieve(self, request: web.Request) -> web.Response:
        user = self.user(request)
        off = self._managed_offering(request, user)
        data = self.r(request).offering(off)
        fields = Filters(request).fields()
        return json_response({k: v for k, v in data.items() if not fields or k in fields})

    async def component_create(self, request: web.Request) -> web.Response:
        user = self.user(request)
        off = self._managed_offering(request, user)
        if not self.s.can_manage_offering(user, off):
            raise ApiError(403, PERMISSION_DENIED)
        self.s.create_component(off["uuid"], await read_json(request))
        return empty_response(201)

    async def component_update(self, request: web.Request) -> web.Response:
        user = self.user(request)
        off = self._managed_offering(request, user)
        if not self.s.can_manage_offering(user, off):
            raise ApiError(403, PERMISSION_DENIED)
        self.s.update_component(off["uuid"], await read_json(request))
        return empty_response(200)

    async def component_remove(self, request: web.Request) -> web.Response:
        user = self.user(request)
        off = self._managed_offering(request, user)
        if not self.s.can_manage_offering(user, off):
            raise ApiError(403, PERMISSION_DENIED)
        body = await read_json(request)
        self.s.remove_component(off["uuid"], body.get("uuid"))
        return empty_response(200)

    # ------------------------------------------------------------------ orders
    async def orders_list(self, request: web.Request) -> web.Response:
        user = self.user(request)
        s = self.s
        f = Filters(request)
        offerings = f.uuids("offering_uuid")
        states = f.choices("state", ORDER_STATES_8 if s.profile == "8" else ORDER_STATES_2024)
        types = f.choices("type", ORDER_TYPES_8 if s.profile == "8" else ORDER_TYPES_2024)
        resources = f.uuids("resource_uuid")
        projects = f.uuids("project_uuid")
        customers = f.uuids("customer_uuid")
        providers = f.uuids("provider_uuid")
        if offerings is not None:
            ids = [oid for off in offerings for oid in s.orders_by_offering.get(off, [])]
            ids.sort(key=lambda i: s.orders[i]["created"])
        else:
            ids = list(s.orders)
        out = []
        for oid in ordered(ids, newest_first=f.text("o") != "created"):
            order = s.orders[oid]
            if states is not None and order["state"] not in states:
                continue
            if types is not None and order["type"] not in types:
                continue
            if resources is not None and order["resource_uuid"] not in resources:
                continue
            if projects is not None and order["project_uuid"] not in projects:
                continue
            if customers is not None and s.projects[order["project_uuid"]]["customer_uuid"] not in customers:
                continue
            if providers is not None and s.offerings[order["offering_uuid"]]["customer_uuid"] not in providers:
                continue
            if not s.can_see_order(user, order):
                continue
            out.append(order)
        return paginated(request, out, self.r(request).order)

    def _order(self, request: web.Request, user: dict[str, Any]) -> dict[str, Any]:
        order = self.s.get(self.s.orders, request.match_info["uuid"], "Order")
        if not self.s.can_see_order(user, order):
            raise not_found("No Order matches the given query.")
        return order

    def _processable_order(self, request: web.Request) -> tuple[dict[str, Any], dict[str, Any]]:
        user = self.user(request)
        order = self._order(request, user)
        if not self.s.can_process_orders(user, self.s.offerings[order["offering_uuid"]]):
            raise ApiError(403, PERMISSION_DENIED)
        return order, user

    async def order_retrieve(self, request: web.Request) -> web.Response:
        user = self.user(request)
        data = self.r(request).order(self._order(request, user))
        fields = Filters(request).fields()
        return json_response({k: v for k, v in data.items() if not fields or k in fields})

    async def order_approve(self, request: web.Request) -> web.Response:
        order, user = self._processable_order(request)
        if self.s.profile == "8":
            await read_json(request)  # 8.x takes an optional {"attributes": ...}
        self.s.approve_by_provider(order, user)
        if self.s.profile == "8":
            return json_response({"detail": "Order has been approved."})
        return empty_response(200)

    async def order_reject(self, request: web.Request) -> web.Response:
        order, user = self._processable_order(request)
        body = await read_json(request)
        self.s.reject_by_provider(order, user, str(body.get("provider_rejection_comment", "")))
        return empty_response(200)

    async def order_set_executing(self, request: web.Request) -> web.Response:
        order, _ = self._processable_order(request)
        self.s.set_state_executing(order)
        return empty_response(200)

    async def order_set_done(self, request: web.Request) -> web.Response:
        order, _ = self._processable_order(request)
        self.s.set_state_done(order)
        return empty_response(200)

    async def order_set_erred(self, request: web.Request) -> web.Response:
        order, _ = self._processable_order(request)
        body = await read_json(request)
        if self.s.profile == "2024" and not {"error_message", "error_traceback"} <= body.keys():
            # the Oct-2024 view reads validated_data["error_traceback"] (and error_message) of optional fields
            raise ServerError("KeyError in set_state_erred")
        self.s.set_state_erred(order, str(body.get("error_message", "")), str(body.get("error_traceback", "")))
        return empty_response(200)

    async def order_set_backend_id(self, request: web.Request) -> web.Response:
        order, _ = self._processable_order(request)
        body = await read_json(request)
        if "backend_id" not in body:
            raise ApiError(400, {"backend_id": ["This field is required."]})
        self.s.set_order_backend_id(order, str(body["backend_id"]))
        return json_response({"status": "Order backend_id has been changed."})

    # ------------------------------------------------------------------ provider resources
    async def resources_list(self, request: web.Request) -> web.Response:
        user = self.user(request)
        s = self.s
        f = Filters(request)
        offerings = f.uuids("offering_uuid")
        states = f.choices("state", RESOURCE_STATES)
        backend_id = f.text("backend_id")
        projects = f.uuids("project_uuid")
        customers = f.uuids("customer_uuid")
        visible = s.visible_offerings(user)
        wanted = visible if offerings is None else visible & offerings
        ids = [rid for off in wanted for rid in s.resources_by_offering.get(off, [])]
        if len(wanted) > 1:
            ids.sort(key=lambda i: s.resources[i]["created"])
        out = []
        for rid in ordered(ids, newest_first=f.text("o") != "created"):
            res = s.resources[rid]
            if states is not None and res["state"] not in states:
                continue
            if backend_id is not None and res["backend_id"] != backend_id:
                continue
            if projects is not None and res["project_uuid"] not in projects:
                continue
            if customers is not None and s.projects[res["project_uuid"]]["customer_uuid"] not in customers:
                continue
            out.append(res)
        return paginated(request, out, self.r(request).resource_listed)

    def _resource(self, request: web.Request, user: dict[str, Any]) -> dict[str, Any]:
        res = self.s.get(self.s.resources, request.match_info["uuid"], "Resource")
        if self.s.provider_role(user, self.s.offerings[res["offering_uuid"]]) is None:
            raise not_found("No Resource matches the given query.")
        return res

    def _settable_resource(self, request: web.Request) -> tuple[dict[str, Any], dict[str, Any]]:
        user = self.user(request)
        res = self._resource(request, user)
        if not self.s.can_manage_offering(user, self.s.offerings[res["offering_uuid"]]):
            raise ApiError(403, PERMISSION_DENIED)
        return res, user

    async def resource_retrieve(self, request: web.Request) -> web.Response:
        user = self.user(request)
        data = self.r(request).resource(self._resource(request, user))
        fields = Filters(request).fields()
        return json_response({k: v for k, v in data.items() if not fields or k in fields})

    async def resource_set_backend_id(self, request: web.Request) -> web.Response:
        res, _ = self._settable_resource(request)
        body = await read_json(request)
        if "backend_id" not in body or not isinstance(body["backend_id"], str):
            raise ApiError(400, {"backend_id": ["This field is required."]})
        changed = self.s.set_backend_id(res, body["backend_id"])
        return json_response(
            {"status": "Resource backend_id has been changed." if changed else "Resource backend_id is not changed."}
        )

    async def resource_set_backend_metadata(self, request: web.Request) -> web.Response:
        res, _ = self._settable_resource(request)
        body = await read_json(request)
        meta = body.get("backend_metadata")
        if not isinstance(meta, dict):
            raise ApiError(400, {"backend_metadata": ["This field is required."]})
        res["backend_metadata"] = {**res["backend_metadata"], **meta}
        self.s._touch(res)
        if self.s.profile == "2024":
            return json_response({"status": "The backend metadata is updated"})
        return json_response({"status": "Resource backend metadata has been updated."})

    async def resource_set_limits(self, request: web.Request) -> web.Response:
        res, _ = self._settable_resource(request)
        body = await read_json(request)
        limits = body.get("limits")
        if not isinstance(limits, dict):
            raise ApiError(400, {"limits": ["This field is required."]})
        bad = [k for k, v in limits.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
        if bad:
            raise ApiError(400, {"limits": [f"A valid number is required for {', '.join(bad)}."]})
        self.s.set_limits(res, limits)
        return json_response({"status": "Resource limits have been updated."})

    async def resource_set_as_ok(self, request: web.Request) -> web.Response:
        res, _ = self._settable_resource(request)
        self.s.set_as_ok(res)
        return empty_response(200)

    async def resource_set_state_ok(self, request: web.Request) -> web.Response:
        res, _ = self._settable_resource(request)
        self.s.set_as_ok(res)
        return json_response({"status": "Resource state has been changed to OK."})

    async def resource_set_as_erred(self, request: web.Request) -> web.Response:
        res, _ = self._settable_resource(request)
        body = await read_json(request)
        self.s.set_as_erred(res, str(body.get("error_message", "")), str(body.get("error_traceback", "")))
        return empty_response(200)

    async def resource_refresh_last_sync(self, request: web.Request) -> web.Response:
        res, _ = self._settable_resource(request)
        res["last_sync"] = self.s.now_iso()
        return empty_response(200)

    def _resource_flag(self, flag: str) -> Handler:
        """8.x ``set_paused`` / ``set_downscaled`` / ``set_restrict_member_access``: "Requires staff permissions"
        (the schema); the body's boolean is DRF's BooleanField (also "true"/"false", 1/0)."""

        async def handler(request: web.Request) -> web.Response:
            user = self.user(request)
            res = self._resource(request, user)
            if not user["is_staff"]:
                raise ApiError(403, PERMISSION_DENIED)
            body = await read_json(request)
            if flag not in body:
                raise ApiError(400, {flag: ["This field is required."]})
            value = _drf_boolean(body[flag])
            if value is None:
                raise ApiError(400, {flag: ["Must be a valid boolean."]})
            res[flag] = value
            self.s._touch(res)
            return json_response({"status": f"Resource {flag} flag has been updated."})

        return handler

    async def resource_team(self, request: web.Request) -> web.Response:
        user = self.user(request)
        res = self._resource(request, user)
        project = self.s.projects[res["project_uuid"]]
        r = self.r(request)
        data = [
            r.team_member(self.s.users[uid], role, res["offering_uuid"])
            for uid, role in project["members"].items()
        ]
        return json_response(data)

    async def resource_plan_periods(self, request: web.Request) -> web.Response:
        user = self.user(request)
        res = self._resource(request, user)
        r = self.r(request)
        return json_response([r.plan_period(pp) for pp in self.s.visible_plan_periods(res["uuid"])])

    async def resource_details(self, request: web.Request) -> web.Response:
        user = self.user(request)
        res = self._resource(request, user)
        alloc = self.s.allocations.get(res.get("allocation_uuid") or "")
        if alloc is None:
            raise not_found()
        return json_response(self.r(request).allocation(alloc))

    # ------------------------------------------------------------------ 2024 slurm-remote
    def _slurm_resource(self, request: web.Request) -> dict[str, Any]:
        user = self.user(request)
        s = self.s
        res = s.resources.get(parse_uuid(request.match_info["uuid"]) or "")
        # This viewset only sees resources that have an allocation (scope), and only for providers.
        if res is None or not res.get("allocation_uuid") or s.provider_role(user, s.offerings[res["offering_uuid"]]) is None:
            raise not_found("No Resource matches the given query.")
        if s.provider_role(user, s.offerings[res["offering_uuid"]]) not in ("staff", "owner", "manager"):
            raise ApiError(403, PERMISSION_DENIED)
        return res

    async def slurm_remote_list(self, request: web.Request) -> web.Response:
        """The Oct-2024 viewset has actions only, no list or retrieve: an authenticated GET answers 405 (HEAD too)."""
        self.user(request)
        raise ApiError(405, {"detail": f'Method "{request.method}" not allowed.'})

    async def slurm_set_state(self, request: web.Request) -> web.Response:
        res = self._slurm_resource(request)
        body = await read_json(request)
        state = _required_text(body, "state")
        self.s.set_allocation_state(res, state)
        return json_response({"detail": f"Allocation state has been changed to {state}"})

    async def slurm_set_backend_id(self, request: web.Request) -> web.Response:
        res = self._slurm_resource(request)
        body = await read_json(request)
        if not isinstance(body.get("backend_id"), str):
            raise ApiError(400, {"backend_id": ["This field is required."]})
        self.s.set_allocation_backend_id(res, body["backend_id"])
        return json_response({"status": "Allocation backend_id has been changed."})

    async def slurm_set_limits(self, request: web.Request) -> web.Response:
        res = self._slurm_resource(request)
        body = await read_json(request, any_json=True)
        if not isinstance(body, dict):
            raise ApiError(400, [f"The payload must have dictionary type, not {_python_type(body)}."])
        # Stored verbatim; then the server's save hooks turn every value into a number, and one that is not
        # (None, a list, "x") raises after the write: 500 with the limits changed. "5" and true pass.
        self.s.set_limits(res, body)
        for value in body.values():
            try:
                float(value)
            except (TypeError, ValueError):
                raise ServerError(f"limits value {value!r} is not a number") from None
        return json_response({"status": "Limits are successfully set."})

    async def slurm_create_association(self, request: web.Request) -> web.Response:
        res = self._slurm_resource(request)
        body = await read_json(request)
        if self.s.create_association(res, _required_text(body, "username")):
            return json_response(
                {"detail": "Association between the allocation and the username has been successfully created."}, 201
            )
        return json_response({"detail": "Association between the allocation and the username already exists."})

    async def slurm_delete_association(self, request: web.Request) -> web.Response:
        res = self._slurm_resource(request)
        body = await read_json(request)
        if not self.s.delete_association(res, _required_text(body, "username")):
            raise ApiError(400, ["Association between the allocation and the username does not exist."])
        return json_response({"detail": "Association between the allocation and the username has been successfully deleted."})

    async def associations_list(self, request: web.Request) -> web.Response:
        self.user(request)
        s = self.s
        allocs = Filters(request).uuids("allocation_uuid")
        # Mastermind's Association model has no Permissions class, so every token sees every association
        # of the server, not only its offerings' (waldur_slurm.views.AssociationViewSet, Oct 2024).
        out = [a for a in s.associations.values() if allocs is None or a["allocation_uuid"] in allocs]
        return paginated(request, mastermind_username_order(out, request), self.r(request).association)

    # ------------------------------------------------------------------ offering users
    async def offering_users_list(self, request: web.Request) -> web.Response:
        user = self.user(request)
        s = self.s
        f = Filters(request)
        offerings = f.uuids("offering_uuid")
        states = f.choices("state", OFFERING_USER_STATES) if s.profile == "8" else None
        user_uuids = f.uuids("user_uuid")
        username = f.text("username")
        user_username = f.text("user_username")
        restricted = f.boolean("is_restricted")
        visible = s.visible_offerings(user)
        wanted = visible if offerings is None else visible & offerings
        ids = [i for off in wanted for i in s.ou_by_offering.get(off, [])]
        items = [s.offering_users[i] for i in ordered(ids, newest_first=f.text("o") != "created")]
        out = []
        for ou in items:
            if states is not None and ou["state"] not in states:
                continue
            if user_uuids is not None and ou["user_uuid"] not in user_uuids:
                continue
            if username is not None and ou["username"] != username:
                continue
            if user_username is not None and s.users[ou["user_uuid"]]["username"] != user_username:
                continue
            if restricted is not None and ou["is_restricted"] != restricted:
                continue
            out.append(ou)
        if f.text("o") in ("username", "-username"):
            out.sort(key=lambda x: x["username"] or "", reverse=f.text("o") == "-username")
        return paginated(request, out, self.r(request).offering_user)

    def _offering_user(self, request: web.Request, user: dict[str, Any]) -> dict[str, Any]:
        ou = self.s.get(self.s.offering_users, request.match_info["uuid"], "OfferingUser")
        if self.s.provider_role(user, self.s.offerings[ou["offering_uuid"]]) is None and ou["user_uuid"] != user["uuid"]:
            raise not_found("No OfferingUser matches the given query.")
        return ou

    async def offering_user_retrieve(self, request: web.Request) -> web.Response:
        user = self.user(request)
        return json_response(self.r(request).offering_user(self._offering_user(request, user)))

    async def offering_user_patch(self, request: web.Request) -> web.Response:
        user = self.user(request)
        ou = self._offering_user(request, user)
        if self.s.provider_role(user, self.s.offerings[ou["offering_uuid"]]) not in ("staff", "owner", "offering_manager", "manager"):
            raise ApiError(403, PERMISSION_DENIED)
        body = await read_json(request)
        if "username" in body:
            if body["username"] is not None and not isinstance(body["username"], str):
                raise ApiError(400, {"username": ["Not a valid string."]})
            self.s.set_offering_user_username(ou, body["username"])
        return json_response(self.r(request).offering_user(ou))

    async def offering_user_create(self, request: web.Request) -> web.Response:
        user = self.user(request)
        body = await read_json(request)
        s = self.s
        off_uuid = parse_uuid(body.get("offering_uuid")) or _uuid_from_url(body.get("offering"))
        user_uuid = parse_uuid(body.get("user_uuid")) or _uuid_from_url(body.get("user"))
        errors = {}
        if off_uuid not in s.offerings:
            errors["offering"] = ["Invalid hyperlink - Object does not exist."]
        if user_uuid not in s.users:
            errors["user"] = ["Invalid hyperlink - Object does not exist."]
        if errors:
            raise ApiError(400, errors)
        off = s.offerings[off_uuid]  # type: ignore[index]
        if s.provider_role(user, off) not in ("staff", "owner", "offering_manager"):
            raise ApiError(403, PERMISSION_DENIED)
        ou = s.create_offering_user(off, user_uuid, body.get("username"), by_provider=True)  # type: ignore[arg-type]
        return json_response(self.r(request).offering_user(ou), 201)

    def _ou_action(self, action: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            user = self.user(request)
            ou = self._offering_user(request, user)
            if self.s.provider_role(user, self.s.offerings[ou["offering_uuid"]]) not in ("staff", "owner", "offering_manager", "manager"):
                raise ApiError(403, PERMISSION_DENIED)
            body = await read_json(request)
            self.s.offering_user_action(ou, action, str(body.get("comment", "")))
            return empty_response(200)

        return handler

    # ------------------------------------------------------------------ usage
    async def set_usage(self, request: web.Request) -> web.Response:
        user = self.user(request)
        self.s.set_usage(user, await read_json(request))
        return empty_response(201)

    def _usage(self, request: web.Request, user: dict[str, Any]) -> dict[str, Any]:
        cu = self.s.get(self.s.usages, request.match_info["uuid"], "ComponentUsage")
        res = self.s.resources[cu["resource_uuid"]]
        if self.s.provider_role(user, self.s.offerings[res["offering_uuid"]]) is None and not self.s.is_consumer(
            user, self.s.projects[res["project_uuid"]]
        ):
            raise not_found("No ComponentUsage matches the given query.")
        return cu

    async def usage_retrieve(self, request: web.Request) -> web.Response:
        user = self.user(request)
        return json_response(self.r(request).component_usage(self._usage(request, user)))

    async def usages_list(self, request: web.Request) -> web.Response:
        user = self.user(request)
        s = self.s
        f = Filters(request)
        offerings = f.uuids("offering_uuid")
        resources = f.uuids("resource_uuid")
        types = set(f.values("type"))
        period = f.date("billing_period")
        year, month = f.integer("billing_period_year"), f.integer("billing_period_month")
        date_after, date_before = f.date("date_after"), f.date("date_before")
        visible = s.visible_offerings(user)
        wanted = visible if offerings is None else visible & offerings
        ids = [i for off in wanted for i in s.usages_by_offering.get(off, [])]
        out = []
        for cid in ordered(ids):
            cu = s.usages[cid]
            if resources is not None and cu["resource_uuid"] not in resources:
                continue
            if types and cu["type"] not in types:
                continue
            if period is not None and cu["billing_period"] != period.replace(day=1).isoformat():
                continue
            if year is not None and int(cu["billing_period"][:4]) != year:
                continue
            if month is not None and int(cu["billing_period"][5:7]) != month:
                continue
            if date_after is not None and cu["date"][:10] < date_after.isoformat():
                continue
            if date_before is not None and cu["date"][:10] > date_before.isoformat():
                continue
            out.append(cu)
        return paginated(request, out, self.r(request).component_usage)

    async def set_user_usage(self, request: web.Request) -> web.Response:
        user = self.user(request)
        cu = self._usage(request, user)
        self.s.set_user_usage(user, cu, await read_json(request))
        return empty_response(201)

    async def set_user_usages(self, request: web.Request) -> web.Response:
        user = self.user(request)
        cu = self._usage(request, user)
        body = await read_json(request)
        self.s.set_user_usages(user, cu, body.get("usages"))
        return empty_response(201)

    async def user_usages_list(self, request: web.Request) -> web.Response:
        user = self.user(request)
        s = self.s
        f = Filters(request)
        offerings = f.uuids("offering_uuid")
        resources = f.uuids("resource_uuid")
        username = f.text("username")
        types = set(f.values("type"))
        period = f.date("component_usage__billing_period")
        year, month = f.integer("billing_period_year"), f.integer("billing_period_month")
        visible = s.visible_offerings(user)
        wanted = visible if offerings is None else visible & offerings
        out = []
        for cid in [i for off in wanted for i in s.usages_by_offering.get(off, [])]:
            cu = s.usages[cid]
            if resources is not None and cu["resource_uuid"] not in resources:
                continue
            if types and cu["type"] not in types:
                continue
            if period is not None and cu["billing_period"] != period.replace(day=1).isoformat():
                continue
            if year is not None and int(cu["billing_period"][:4]) != year:
                continue
            if month is not None and int(cu["billing_period"][5:7]) != month:
                continue
            for uid in s.uu_by_usage.get(cid, []):
                uu = s.user_usages[uid]
                if username is None or uu["username"] == username:
                    out.append(uu)
        return paginated(request, out, self.r(request).user_usage)


def _drf_boolean(value: Any) -> bool | None:
    """DRF's BooleanField.to_internal_value: its true/false spellings, None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        if value in ("true", "True", "TRUE", "on", "On", "ON", "yes", "Yes", "YES", "y", "Y", "1"):
            return True
        if value in ("false", "False", "FALSE", "off", "Off", "OFF", "no", "No", "NO", "n", "N", "0"):
            return False
    return None


def _required_text(body: dict[str, Any], name: str) -> str:
    """A DRF CharField: 400 when missing or blank."""
    value = body.get(name)
    if value is None:
        raise ApiError(400, {name: ["This field is required."]})
    if not str(value).strip():
        raise ApiError(400, {name: ["This field may not be blank."]})
    return str(value)


def _python_type(value: Any) -> str:
    return f"<class '{type(value).__name__}'>"


def _uuid_from_url(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    for part in reversed([p for p in value.split("/") if p]):
        u = parse_uuid(part)
        if u:
            return u
    return None
