"""SLURM account names for Waldur customers, projects and resources (pure).

Rules (the original agent's, with its collision bug B3 fixed):

- customer account: ``customer_prefix + customer_uuid`` (32 lower-case hex digits);
- project account: ``project_prefix + project_uuid``;
- allocation account: ``sanitise(allocation_prefix + uuid[:5] + "_" + resource_name)``, cut to
  ``allocation_name_max_len`` and lower-cased, where ``uuid`` is the **marketplace resource** UUID.
  Sanitising drops every character outside ``[a-zA-Z0-9_-]`` (so ``Ääkköset`` gives ``kkset``).

Every account the agent creates carries a marker in its description naming the Waldur object it
belongs to (``waldur resource <uuid>`` and so on). That is how a retry after a crash recognises and
adopts its own account, and how a name that belongs to another resource is recognised as taken: then
the UUID part is lengthened (6, 7, ... hex digits) and, if the length limit leaves no room for that,
a numeric suffix is added. The choice is deterministic for a given set of taken names.
"""

from __future__ import annotations

import re
import uuid as uuid_module
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass

ALLOWED_CHARACTERS = "a-zA-Z0-9-_"
_DISALLOWED = re.compile(r"[^a-zA-Z0-9_-]")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
# sacctmgr lower-cases descriptions and the op layer turns "_" into a space, so accept both spellings.
_MARKER = re.compile(r"(?<![0-9a-z])waldur[ _](resource|project|customer)[ _]([0-9a-f]{32})(?![0-9a-z])")
# What may reach a SLURM command line as an account or a user name (the op layer checks every name
# against these; the planner and push check first, to fail one order or resource with a clear message).
ACCOUNT_RE = re.compile(r"^[a-z0-9_][a-z0-9_-]*$")
USER_RE = re.compile(r"^[a-z0-9_][a-z0-9_.-]*$")
# Longest name we put on a command line; SLURM itself has no small limit.
MAX_ACCOUNT_LEN = 64
SHORT_UUID_LEN = 5
MAX_SUFFIX = 999


class NamingError(ValueError):
    """No usable account name: the message names the field and the value."""


@dataclass(frozen=True)
class NamingRules:
    customer_prefix: str = "hpc_"
    project_prefix: str = "hpc_"
    allocation_prefix: str = "hpc_"
    allocation_name_max_len: int = 34

    @classmethod
    def from_settings(cls, settings: object) -> NamingRules:
        return cls(
            customer_prefix=getattr(settings, "customer_prefix"),
            project_prefix=getattr(settings, "project_prefix"),
            allocation_prefix=getattr(settings, "allocation_prefix"),
            allocation_name_max_len=int(getattr(settings, "allocation_name_max_len")),
        )


def sanitise(text: str) -> str:
    """Drop every character outside ``[a-zA-Z0-9_-]`` (the original rule; non-ASCII letters go too)."""
    return _DISALLOWED.sub("", text)


def normalise_uuid(value: object, field: str = "uuid") -> str:
    """32 lower-case hex digits, from a hex or dashed UUID; NamingError otherwise."""
    if isinstance(value, uuid_module.UUID):
        return value.hex
    if not isinstance(value, str) or not value.strip():
        raise NamingError(f"{field} {value!r} is missing or not a UUID")
    try:
        return uuid_module.UUID(value.strip()).hex
    except ValueError:
        raise NamingError(f"{field} {value!r} is not a UUID") from None


def _checked(name: str, setting: str) -> str:
    if len(name) > MAX_ACCOUNT_LEN:
        raise NamingError(f"{setting} makes the account name {name!r} longer than {MAX_ACCOUNT_LEN} characters")
    if name.startswith("-"):
        raise NamingError(f"{setting} makes the account name {name!r} start with '-'")
    return name


def customer_account(rules: NamingRules, customer_uuid: object) -> str:
    name = (sanitise(rules.customer_prefix) + normalise_uuid(customer_uuid, "customer_uuid")).lower()
    return _checked(name, "SLURM_CUSTOMER_PREFIX")


def project_account(rules: NamingRules, project_uuid: object) -> str:
    name = (sanitise(rules.project_prefix) + normalise_uuid(project_uuid, "project_uuid")).lower()
    return _checked(name, "SLURM_PROJECT_PREFIX")


def allocation_candidates(rules: NamingRules, resource_uuid: object, resource_name: object) -> list[str]:
    """Every name the allocation may get, in order of preference (first = the original rule)."""
    return list(iter_allocation_candidates(rules, resource_uuid, resource_name))


def iter_allocation_candidates(rules: NamingRules, resource_uuid: object, resource_name: object) -> Iterator[str]:
    """``allocation_candidates`` one at a time: the first is nearly always free, and the list is long."""
    hex_uuid = normalise_uuid(resource_uuid, "marketplace_resource_uuid")
    name = resource_name if isinstance(resource_name, str) else ""
    prefix = sanitise(rules.allocation_prefix)
    if prefix.startswith("-"):
        raise NamingError(f"SLURM_ALLOCATION_PREFIX {prefix!r} makes account names start with '-'")
    max_len = min(rules.allocation_name_max_len, MAX_ACCOUNT_LEN)
    if len(prefix) + SHORT_UUID_LEN + 1 > max_len:
        raise NamingError(
            f"SLURM_ALLOCATION_NAME_MAX_LEN {max_len} leaves no room for the prefix {prefix!r} "
            f"and {SHORT_UUID_LEN} UUID digits"
        )
    tail = sanitise(name)
    seen: set[str] = set()
    base = ""
    for n in range(SHORT_UUID_LEN, len(hex_uuid) + 1):
        head = f"{prefix}{hex_uuid[:n]}_"
        if len(head) > max_len:
            break
        candidate = (head + tail)[:max_len].lower()
        if candidate not in seen:
            seen.add(candidate)
            base = base or candidate
            yield candidate
    for k in range(2, MAX_SUFFIX + 1):
        suffix = f"-{k}"
        yield base[: max_len - len(suffix)] + suffix


def allocation_account(
    rules: NamingRules,
    resource_uuid: object,
    resource_name: object,
    is_taken: Callable[[str], bool] | Container[str] = frozenset(),
) -> str:
    """The first candidate name that is not taken by another resource (or anyone else).

    ``is_taken(name)`` is true when an account of that name exists and does not belong to this
    resource, or another resource claims it as its backend_id. Pass lower-case names.
    """
    taken = is_taken if callable(is_taken) else is_taken.__contains__
    for candidate in iter_allocation_candidates(rules, resource_uuid, resource_name):
        if not taken(candidate):
            return candidate
    raise NamingError(f"no free account name for resource {resource_uuid!r} ({MAX_SUFFIX} candidates are taken)")


def resource_marker(resource_uuid: object) -> str:
    return f"waldur resource {normalise_uuid(resource_uuid, 'marketplace_resource_uuid')}"


def project_marker(project_uuid: object) -> str:
    return f"waldur project {normalise_uuid(project_uuid, 'project_uuid')}"


def customer_marker(customer_uuid: object) -> str:
    return f"waldur customer {normalise_uuid(customer_uuid, 'customer_uuid')}"


def owner_of(description: str) -> tuple[str, str] | None:
    """(kind, uuid) named by an account description made by this agent, else None.

    sacctmgr lower-cases descriptions; the marker is lower-case, so it survives the round trip.
    """
    match = _MARKER.search(description.lower())
    if match is None:
        return None
    return match.group(1), match.group(2)


def resource_owner(description: str) -> str | None:
    """The marketplace resource UUID an allocation account belongs to, if it is ours."""
    owner = owner_of(description)
    return owner[1] if owner is not None and owner[0] == "resource" else None


def normalise_backend_id(backend_id: str | None) -> str:
    """A resource's backend_id as the account name it refers to (SLURM lower-cases account names)."""
    return (backend_id or "").strip().lower()


def account_of(backend_id: str | None) -> str | None:
    """The SLURM account a backend_id names, or None if it must never reach a SLURM command line (B14)."""
    name = normalise_backend_id(backend_id)
    if not name or len(name) > MAX_ACCOUNT_LEN or not ACCOUNT_RE.match(name):
        return None
    return name


def is_account_name(name: str) -> bool:
    return bool(ACCOUNT_RE.match(name)) and len(name) <= MAX_ACCOUNT_LEN
