"""The plumbing of the Waldur facade: transport, counters, JSON and paging helpers, server capabilities.

See ``client.py`` for the calls themselves; only this package imports ``waldur_api_client``.
"""

from __future__ import annotations

from dataclasses import dataclass

import logging
import re
import ssl
import time
from decimal import Decimal
from typing import Any, Callable, Self
from urllib.parse import parse_qs, urlsplit

import httpx

from .sdk_models import install_lazy_models

install_lazy_models()  # before the first SDK import: the eager models package weighs ~100 MB

from waldur_api_client import AuthenticatedClient  # noqa: E402
from waldur_api_client.api.users import users_me_retrieve
from waldur_api_client.api.version import version_retrieve

from .. import USER_AGENT
from .errors import (
    WaldurPermanentError,
    WaldurTransientError,
)
from .models import (
    CurrentUser,
    norm_uuid,
)
from .transport import Transport
from ..domain.components import to_cents
from ..domain.urls import host_root

log = logging.getLogger("waldur_slurm.waldur")

FLAVOUR_8 = "8"
FLAVOUR_2024 = "2024"
API_ROOT = "/api/"
SLURM_REMOTE_PREFIX = "marketplace-slurm-remote"
SLURM_REMOTE = f"/api/{SLURM_REMOTE_PREFIX}/"
ASSOCIATIONS = "/api/slurm-associations/"
# the 2024 server's 400 to delete_association of a username the allocation has no association for
ASSOCIATION_GONE = "Association between the allocation and the username does not exist."
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
    return str(to_cents(Decimal(str(value))))


@dataclass(frozen=True)
class Capabilities:
    """What the connected server does, for the planners and the reporter."""

    era: str  # shown by --diag only
    # The server keeps each allocation's SLURM associations (2024 slurm-remote): the agent records them.
    keeps_associations: bool
    # The server creates the SLURM allocation in a task after approval (2024): Waldur steps wait for it.
    allocation_after_approval: bool
    # A usage report's ``date`` files it under that month (8.x); the 2024 server ignores it (current month).
    backdated_usage: bool
    # Resources carry paused/downscaled/restrict_member_access that staff set (8.x); 2024 shows them, always false.
    resource_flags: bool


CAPABILITIES = {
    FLAVOUR_8: Capabilities(era="8.x", keeps_associations=False, allocation_after_approval=False, backdated_usage=True,
                            resource_flags=True),
    FLAVOUR_2024: Capabilities(
        era="2024 (marketplace-slurm-remote)", keeps_associations=True, allocation_after_approval=True, backdated_usage=False,
        resource_flags=False,
    ),
}


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


class WaldurBase:
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

    def __enter__(self) -> Self:
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

    @property
    def capabilities(self) -> Capabilities:
        """What the server does, in the agent's terms; the flavour string stays inside this package."""
        return CAPABILITIES[self.flavour]

    def server_version(self) -> str:
        data = self._object(self._send(version_retrieve))
        return str(data.get("version", ""))

    def whoami(self) -> CurrentUser:
        return CurrentUser.from_json(self._object(self._send(users_me_retrieve)))
