"""Sending one HTTP request to Waldur: timeout, bounded retries with backoff, typed errors, counting.

Retry rule: a request is retried (exponential backoff with jitter, ``max_retries`` times) on connection errors,
timeouts, 429, 502, 503 and 504 only when it is safe to send twice:
- reads, and writes the caller marks ``idempotent`` (overwrites such as set_backend_id, set_limits, set_usage);
- any request that certainly never reached the server (connect error or connect timeout).
Everything else fails at once with ``WaldurTransientError(maybe_applied=True)``; the facade then re-reads the
object to decide. The backoff is short and bounded because the daemon tries again next cycle anyway.

Nothing here logs headers, and error messages carry method and path only, so the token never leaks.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import ssl
import threading
import time
from collections import Counter
from typing import Any, Callable

import httpx

from waldur_slurm.domain.urls import mask_url

from .errors import (
    WaldurAuthError,
    WaldurConflict,
    WaldurError,
    WaldurNotFound,
    WaldurPermanentError,
    WaldurTransientError,
)

log = logging.getLogger("waldur_slurm.waldur")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def server_message(resp: httpx.Response, limit: int = 500) -> str:
    """The server's own error text: DRF ``detail``, field errors, or a short cut of a non-JSON body."""
    if not resp.content:
        return ""
    try:
        data = resp.json()
    except ValueError:
        ctype = resp.headers.get("content-type", "")
        if "html" in ctype:
            return f"{resp.status_code} {resp.reason_phrase} (HTML page)"
        return resp.text[:limit]
    if isinstance(data, dict):
        if "detail" in data and len(data) == 1:
            return str(data["detail"])[:limit]
        parts = []
        for key, value in data.items():
            msgs = value if isinstance(value, list) else [value]
            text = "; ".join(json.dumps(m) if not isinstance(m, str) else m for m in msgs)
            parts.append(text if key in ("non_field_errors", "detail") else f"{key}: {text}")
        return " | ".join(parts)[:limit]
    if isinstance(data, list):
        return "; ".join(str(x) for x in data)[:limit]
    return str(data)[:limit]


class Transport:
    def __init__(
        self,
        http: httpx.Client,
        *,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.http = http
        self.max_retries = max(0, max_retries)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.sleep = sleep
        self.rng = rng
        self.request_counts: Counter[str] = Counter()
        self.retries = 0
        self._lock = threading.Lock()  # push may share one client between threads; counts must stay exact

    @property
    def requests_total(self) -> int:
        return sum(self.request_counts.values())

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        base = min(self.backoff_max, self.backoff_base * (2**attempt))
        delay = base * (0.5 + self.rng() / 2)  # jitter: between half and all of the exponential step
        if retry_after:
            hinted = _retry_after_seconds(retry_after)
            if hinted is not None:
                delay = max(delay, min(hinted, self.backoff_max))
        return delay

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Any = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        idempotent: bool | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send, retrying where safe; raise a typed error for any non-2xx not listed in ``ok_statuses``."""
        method = method.upper()
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "OPTIONS")
        path = httpx.URL(url).path
        attempt = 0
        while True:
            with self._lock:
                self.request_counts[method] += 1
            started = time.monotonic()
            try:
                kwargs: dict[str, Any] = {"params": params, "headers": headers}
                if json_body is not None:
                    kwargs["json"] = json_body
                resp = self.http.request(method, url, **kwargs)
            except httpx.TransportError as e:
                if _tls_verification_failed(e):
                    # A certificate problem does not fix itself on retry; say what to change.
                    raise WaldurPermanentError(
                        f"Waldur {method} {path}: TLS certificate verification failed ({e}); "
                        "point the CA bundle setting at the server's CA, or fix the server certificate",
                        method=method,
                        path=path,
                    ) from e
                not_sent = isinstance(e, NOT_SENT_ERRORS)
                kind = type(e).__name__
                if (idempotent or not_sent) and attempt < self.max_retries:
                    delay = self._delay(attempt, None)
                    log.warning("waldur %s %s: %s; retry %d/%d in %.1fs", method, path, kind, attempt + 1, self.max_retries, delay)
                    with self._lock:
                        self.retries += 1
                    self.sleep(delay)
                    attempt += 1
                    continue
                raise WaldurTransientError(
                    f"Waldur {method} {path}: {kind}: {e}" if str(e) else f"Waldur {method} {path}: {kind}",
                    maybe_applied=not not_sent and method not in ("GET", "HEAD"),
                    method=method,
                    path=path,
                ) from e
            elapsed = time.monotonic() - started
            log.debug("waldur %s %s -> %d (%.3fs)", method, path, resp.status_code, elapsed)
            status = resp.status_code
            if 300 <= status < 400 and status not in ok_statuses:
                # Redirects are not followed (a POST must not silently become a GET, and the token must not
                # go to another host); a 3xx body is no answer either, so say where the server points.
                raise redirect_error(resp, method, path)
            if status < 400 or status in ok_statuses:
                return resp
            if status in RETRY_STATUSES and idempotent and attempt < self.max_retries:
                delay = self._delay(attempt, resp.headers.get("Retry-After"))
                log.warning("waldur %s %s: HTTP %d; retry %d/%d in %.1fs", method, path, status, attempt + 1, self.max_retries, delay)
                with self._lock:
                    self.retries += 1
                self.sleep(delay)
                attempt += 1
                continue
            raise error_for(resp, method, path)


def redirect_error(resp: httpx.Response, method: str, path: str) -> WaldurPermanentError:
    """A 3xx answer as an error naming the Location (passwords masked), with the likely fix."""
    location = mask_url(resp.headers.get("location", "")) or "(no Location header)"
    return WaldurPermanentError(
        f"Waldur {method} {path}: HTTP {resp.status_code} redirect to {location}; redirects are not followed: "
        "set WALDUR_API_URL to the address the server redirects to (for example https:// instead of http://)",
        status=resp.status_code,
        method=method,
        path=path,
    )


def error_for(resp: httpx.Response, method: str, path: str) -> WaldurError:
    status = resp.status_code
    detail = server_message(resp)
    text = f"Waldur {method} {path}: HTTP {status}" + (f": {detail}" if detail else "")
    if status in (401, 403):
        hint = (
            "the API token is missing, invalid or expired"
            if status == 401
            else "the token's user lacks the permission (the agent needs an owner of the provider organisation)"
        )
        return WaldurAuthError(f"{text} ({hint})", status=status, method=method, path=path, detail=detail)
    if status == 404:
        return WaldurNotFound(text, status=status, method=method, path=path, detail=detail)
    if status == 409:
        return WaldurConflict(text, status=status, method=method, path=path, detail=detail)
    if status == 429 or status >= 500:
        return WaldurTransientError(
            text, maybe_applied=method not in ("GET", "HEAD") and status != 429, status=status, method=method, path=path, detail=detail
        )
    return WaldurPermanentError(text, status=status, method=method, path=path, detail=detail)


def _tls_verification_failed(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(cur):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _retry_after_seconds(value: str) -> float | None:
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
