"""Typed errors of the Waldur client layer.

Callers decide by type, never by parsing messages:

- ``WaldurTransientError``: network trouble, timeouts, 5xx, 429. Leave the item alone and retry next cycle.
  ``maybe_applied`` says whether a write may have reached the server (a timeout after sending, a dropped
  connection, a 5xx): the facade re-reads the object before deciding anything.
- ``WaldurPermanentError``: a 4xx with the server's own message (``detail``); retrying the same request
  will fail the same way. ``WaldurNotFound`` (404) and ``WaldurConflict`` (409) are subclasses.
- ``WaldurAuthError``: 401/403. Not a subclass of ``WaldurPermanentError`` on purpose: a bad token must stop
  the daemon with a clear message, not fail one order after another.

Messages name the HTTP method and the path only; they never contain the token or request headers.
"""

from __future__ import annotations


class WaldurError(Exception):
    """Base class of every error the Waldur facade raises."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        method: str | None = None,
        path: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.method = method
        self.path = path
        self.detail = detail


class WaldurTransientError(WaldurError):
    """Network error, timeout, 5xx or 429: try again later."""

    def __init__(self, message: str, *, maybe_applied: bool = False, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.maybe_applied = maybe_applied


class WaldurAllocationPending(WaldurTransientError):
    """2024: the server's task has not created the order's SLURM allocation yet (its task queue may be down
    or may have lost the task)."""


class WaldurPermanentError(WaldurError):
    """A 4xx answer: the request itself is wrong for the server's current state."""


class WaldurNotFound(WaldurPermanentError):
    """404: the object does not exist or the token cannot see it."""


class WaldurConflict(WaldurPermanentError):
    """409: the object is not in a state that allows the action."""


class WaldurAuthError(WaldurError):
    """401 or 403: the token is missing, invalid, expired, or lacks the provider role."""
