"""HTTP plumbing shared by the API and the control routes: JSON answers, Django-style error pages, filters,
DRF pagination, the request log, fault injection and response overrides."""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import hashlib
import itertools
import json
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from aiohttp import web

from .store import ApiError, ServerError, parse_uuid

# Typed storage keys where aiohttp has them (3.12+); plain strings before.
JSON_KEY: Any = web.ResponseKey("json", object) if hasattr(web, "ResponseKey") else "json"
USER_KEY: Any = web.RequestKey("username", str) if hasattr(web, "RequestKey") else "username"

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 300

# Django's default error pages (django.views.defaults.ERROR_PAGE_TEMPLATE), byte for byte: they start with a newline.
HTML_404 = (
    '\n<!doctype html>\n<html lang="en">\n<head>\n  <title>Not Found</title>\n</head>\n<body>\n'
    "  <h1>Not Found</h1><p>The requested resource was not found on this server.</p>\n</body>\n</html>\n"
)
HTML_500 = '\n<!doctype html>\n<html lang="en">\n<head>\n  <title>Server Error (500)</title>\n</head>\n<body>\n  <h1>Server Error (500)</h1><p></p>\n</body>\n</html>\n'
PROXY_PAGES = {
    502: "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
    503: "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
    504: "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # bytes, so the type is "application/json" without "; charset=utf-8", as Django REST framework sends it
    resp = web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(), status=status, content_type="application/json", headers=headers
    )
    resp[JSON_KEY] = data
    return resp


def empty_response(status: int = 200) -> web.Response:
    """Action endpoints of Mastermind answer with no body at all."""
    resp = web.Response(status=status)
    resp[JSON_KEY] = None
    return resp


def error_response(err: ApiError) -> web.Response:
    if isinstance(err, ServerError):
        return web.Response(text=HTML_500, status=500, content_type="text/html")
    headers = {"WWW-Authenticate": "Token"} if err.status == 401 else None
    return json_response(err.body, err.status, headers)


def html_404() -> web.Response:
    return web.Response(text=HTML_404, status=404, content_type="text/html")


def fault_page(status: int) -> web.Response:
    if status in PROXY_PAGES:
        return web.Response(text=PROXY_PAGES[status], status=status, content_type="text/html")
    if status == 500:
        return web.Response(text=HTML_500, status=500, content_type="text/html")
    return json_response({"detail": "Injected fault."}, status)


async def read_json(request: web.Request, *, any_json: bool = False) -> Any:
    """The JSON body (``{}`` when empty); an object unless ``any_json`` (views that read ``request.data`` raw)."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ApiError(400, {"detail": f"JSON parse error - {e}"}) from None
    if not isinstance(data, dict) and not any_json:
        raise ApiError(400, {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]})
    return data


class Filters:
    """django-filter semantics: repeated parameters for multi-valued filters; unknown parameters ignored."""

    def __init__(self, request: web.Request) -> None:
        self.q = request.query

    def values(self, name: str) -> list[str]:
        return [v for v in self.q.getall(name, []) if v != ""]

    def uuids(self, name: str) -> set[str] | None:
        vals = self.values(name)
        if not vals:
            return None
        out = set()
        for v in vals:
            u = parse_uuid(v)
            if u is None:
                raise ApiError(400, {name: ["Enter a valid UUID."]})
            out.add(u)
        return out

    def choices(self, name: str, allowed: Sequence[str]) -> set[str] | None:
        vals = self.values(name)
        if not vals:
            return None
        for v in vals:
            if v not in allowed:
                raise ApiError(400, {name: [f"Select a valid choice. {v} is not one of the available choices."]})
        return set(vals)

    def text(self, name: str) -> str | None:
        vals = self.values(name)
        return vals[-1] if vals else None

    def boolean(self, name: str) -> bool | None:
        v = self.text(name)
        if v is None:
            return None
        if v.lower() in ("true", "1", "yes"):
            return True
        if v.lower() in ("false", "0", "no"):
            return False
        raise ApiError(400, {name: ["Enter a valid boolean."]})

    def date(self, name: str) -> dt.date | None:
        v = self.text(name)
        if v is None:
            return None
        try:
            return dt.date.fromisoformat(v[:10])
        except ValueError:
            raise ApiError(400, {name: ["Enter a valid date."]}) from None

    def integer(self, name: str) -> int | None:
        v = self.text(name)
        if v is None:
            return None
        try:
            return int(v)
        except ValueError:
            raise ApiError(400, {name: ["Enter a number."]}) from None

    def fields(self) -> list[str] | None:
        vals = self.values("field")
        return vals or None


def sparse(item: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    if not fields:
        return item
    return {k: v for k, v in item.items() if k in fields}


def _page_url(request: web.Request, page: int | None) -> str:
    """DRF's replace_query_param / remove_query_param: parameters sorted by name (the values of one name keep
    their order), no ``page`` for the first page."""
    pairs = [(k, v) for k, v in request.query.items() if k != "page"]
    if page is not None:
        pairs.append(("page", str(page)))
    pairs.sort(key=lambda kv: kv[0])
    url = request.url.with_query(pairs) if pairs else request.url.with_query(None)
    return str(url.with_scheme(request.scheme).with_host(request.url.host or "localhost"))


def mastermind_username_order(items: Sequence[dict[str, Any]], request: web.Request) -> list[dict[str, Any]]:
    """Associations as Mastermind pages them: ``order_by("username")`` and nothing else, so PostgreSQL
    breaks ties differently for each LIMIT/OFFSET query. Measured on the Oct-2024 server: paging 1,233 rows
    returned 1,068 distinct ones. Ties are broken here by a hash of the row and the requested page, so
    rows that share a username across a page boundary are skipped or repeated the same way."""
    page = f"{request.query.get('page', '1')}/{request.query.get('page_size', '')}"
    return sorted(items, key=lambda a: (a["username"], hashlib.sha256(f"{page}/{a['uuid']}".encode()).digest()))


def paginated(request: web.Request, items: Sequence[Any], render: Callable[[Any], dict[str, Any]]) -> web.Response:
    """DRF LinkHeaderPagination as Waldur configures it: page_size default 10, max 300, 404 past the end."""
    q = request.query
    try:
        page_size = int(q.get("page_size", DEFAULT_PAGE_SIZE))
        if page_size <= 0:
            page_size = DEFAULT_PAGE_SIZE
    except ValueError:
        page_size = DEFAULT_PAGE_SIZE
    page_size = min(page_size, MAX_PAGE_SIZE)
    count = len(items)
    num_pages = max(1, -(-count // page_size))
    raw_page = q.get("page", "1")
    if raw_page == "last":
        page = num_pages
    else:
        try:
            page = int(raw_page)
        except ValueError:
            raise ApiError(404, {"detail": "Invalid page."}) from None
    if page < 1 or page > num_pages:
        raise ApiError(404, {"detail": "Invalid page."})
    links = {
        "first": _page_url(request, None),
        "prev": _page_url(request, page - 1 if page > 2 else None) if page > 1 else None,
        "next": _page_url(request, page + 1) if page < num_pages else None,
        "last": _page_url(request, num_pages),
    }
    headers = {
        "X-Result-Count": str(count),
        "Link": ", ".join(f'<{url}>; rel="{rel}"' for rel, url in links.items() if url),
        "Access-Control-Expose-Headers": "Link, X-Result-Count",
    }
    if request.method == "HEAD":
        resp = web.Response(status=200, headers=headers)
        resp[JSON_KEY] = None
        return resp
    fields = Filters(request).fields()
    start = (page - 1) * page_size
    data = [sparse(render(x), fields) for x in items[start : start + page_size]]
    return json_response(data, headers=headers)


# ---------------------------------------------------------------------- request log, faults, overrides
FAULT_KINDS = ("status", "delay", "drop")


@dataclass
class Fault:
    id: int
    path: str = "*"
    method: str | None = None
    kind: str = "status"
    status: int = 503
    delay: float = 0.0
    when: str = "before"
    remaining: int | None = 1
    skip: int = 0  # matching requests that pass untouched before the fault starts

    def matches(self, method: str, path: str, template: str | None) -> bool:
        if self.method and self.method.upper() != method:
            return False
        return fnmatch.fnmatchcase(path, self.path) or (template is not None and fnmatch.fnmatchcase(template, self.path))

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class Override:
    """Rewrites JSON answers (each object of a list answer): simulates a newer or older server."""

    id: int
    path: str = "*"
    method: str | None = None
    set: dict[str, Any] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)
    remaining: int | None = None

    def matches(self, method: str, path: str, template: str | None) -> bool:
        if self.method and self.method.upper() != method:
            return False
        return fnmatch.fnmatchcase(path, self.path) or (template is not None and fnmatch.fnmatchcase(template, self.path))

    def apply(self, data: Any) -> Any:
        def one(obj: Any) -> Any:
            if isinstance(obj, dict):
                obj = {k: v for k, v in obj.items() if k not in self.remove}
                obj.update(self.set)
            return obj

        return [one(x) for x in data] if isinstance(data, list) else one(data)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class Recorder:
    def __init__(self, log_bodies: bool = False, maxlen: int = 200_000) -> None:
        self.log_bodies = log_bodies
        self.entries: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self.counters: Counter[str] = Counter()
        self.seq = itertools.count(1)
        self.faults: list[Fault] = []
        self.overrides: list[Override] = []
        self.ids = itertools.count(1)

    def add_fault(self, spec: dict[str, Any]) -> Fault:
        kind = spec.get("kind", "status")
        if kind not in FAULT_KINDS:
            raise ApiError(400, {"kind": [f"one of {FAULT_KINDS}"]})
        when = spec.get("when", "before")
        if when not in ("before", "after"):
            raise ApiError(400, {"when": ["before or after"]})
        count = spec.get("count", 1)
        skip = spec.get("skip", 0)
        if not isinstance(skip, int) or isinstance(skip, bool) or skip < 0:
            raise ApiError(400, {"skip": ["a whole number >= 0"]})
        f = Fault(
            id=next(self.ids),
            path=spec.get("path", "*"),
            method=spec.get("method"),
            kind=kind,
            status=int(spec.get("status", 503)),
            delay=float(spec.get("delay", 0.0)),
            when=when,
            remaining=None if count is None else int(count),
            skip=skip,
        )
        self.faults.append(f)
        return f

    def add_override(self, spec: dict[str, Any]) -> Override:
        count = spec.get("count")
        o = Override(
            id=next(self.ids),
            path=spec.get("path", "*"),
            method=spec.get("method"),
            set=dict(spec.get("set") or {}),
            remove=list(spec.get("remove") or []),
            remaining=None if count is None else int(count),
        )
        self.overrides.append(o)
        return o

    def _take(self, items: list[Any], method: str, path: str, template: str | None) -> Any:
        for it in items:
            if it.matches(method, path, template):
                if getattr(it, "skip", 0) > 0:
                    it.skip -= 1
                    continue
                if it.remaining is not None:
                    it.remaining -= 1
                    if it.remaining <= 0:
                        items.remove(it)
                return it
        return None

    def take_fault(self, method: str, path: str, template: str | None) -> Fault | None:
        result: Fault | None = self._take(self.faults, method, path, template)
        return result

    def take_override(self, method: str, path: str, template: str | None) -> Override | None:
        result: Override | None = self._take(self.overrides, method, path, template)
        return result


def route_template(request: web.Request) -> str | None:
    route = request.match_info.route
    resource = getattr(route, "resource", None)
    return resource.canonical if resource is not None else None


def recording_middleware(recorder: Recorder) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/api"):
            return await handler(request)  # control API: not logged, no faults
        template = route_template(request)
        method = request.method
        entry: dict[str, Any] = {
            "seq": next(recorder.seq),
            "time": time.time(),
            "method": method,
            "path": request.path,
            "query": request.query_string,
            "route": template,
            "status": None,
            "user": None,
            "fault": None,
            "user_agent": request.headers.get("User-Agent"),
        }
        recorder.entries.append(entry)
        recorder.counters[f"{method} {template or request.path}"] += 1
        request_body = await request.read() if recorder.log_bodies else b""
        fault = recorder.take_fault(method, request.path, template)
        if fault is not None:
            entry["fault"] = f"{fault.kind}:{fault.when}" + (f":{fault.status}" if fault.kind == "status" else "")
            if fault.kind == "delay":
                if fault.when == "before":
                    await asyncio.sleep(fault.delay)
            elif fault.when == "before":
                return _apply_fault(request, fault, entry)
        resp = await _dispatch(request, handler)
        if fault is not None and fault.kind == "delay" and fault.when == "after":
            # applied now, answered late: a slow server that did the work after the client gave up
            await asyncio.sleep(fault.delay)
        elif fault is not None and fault.kind != "delay" and fault.when == "after":
            return _apply_fault(request, fault, entry)
        override = recorder.take_override(method, request.path, template) if resp.get(JSON_KEY) is not None else None
        if override is not None and isinstance(resp, web.Response):
            data = override.apply(resp[JSON_KEY])
            resp.body = json.dumps(data, separators=(",", ":")).encode()
            resp[JSON_KEY] = data
        entry["status"] = resp.status
        entry["user"] = request.get(USER_KEY)
        if recorder.log_bodies:
            entry["request_body"] = request_body.decode("utf-8", "replace")
            body = resp.body if isinstance(resp, web.Response) else None
            entry["response_body"] = body.decode("utf-8", "replace") if isinstance(body, bytes) else ""
            entry["content_type"] = resp.content_type
        entry["finished"] = time.time()
        return resp

    return middleware


def _apply_fault(request: web.Request, fault: Fault, entry: dict[str, Any]) -> web.StreamResponse:
    if fault.kind == "drop":
        entry["status"] = 0
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)
    entry["status"] = fault.status
    return fault_page(fault.status)


async def _dispatch(request: web.Request, handler: Any) -> web.StreamResponse:
    exc = request.match_info.http_exception
    if exc is not None:
        if exc.status == 405:
            return json_response({"detail": f'Method "{request.method}" not allowed.'}, 405)
        return html_404()  # Django's page for a route the server does not have
    try:
        return await handler(request)
    except ApiError as e:
        return error_response(e)
    except web.HTTPException:
        raise
    except ConnectionResetError:  # the client went away mid-body (a killed agent): nothing was applied
        return web.Response(status=499, text="client closed request")
    except Exception:  # a bug in the stand-in: answer like Django does, and show the traceback
        import traceback

        traceback.print_exc()
        return web.Response(text=HTML_500, status=500, content_type="text/html")


def ordered(ids: Iterable[str], newest_first: bool = True) -> list[str]:
    lst = list(ids)
    return lst[::-1] if newest_first else lst
