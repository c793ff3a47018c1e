"""The Waldur side of the agent: ``WaldurClient`` (the facade), its models and its errors."""

from .errors import (
    WaldurAuthError,
    WaldurConflict,
    WaldurError,
    WaldurNotFound,
    WaldurPermanentError,
    WaldurTransientError,
)

__all__ = [
    "WaldurAuthError",
    "WaldurConflict",
    "WaldurError",
    "WaldurNotFound",
    "WaldurPermanentError",
    "WaldurTransientError",
]
