"""Planned SLURM writes as frozen dataclasses (pure data, validated on construction).

A planner builds a list of ops; `SlurmClient.apply(ops)` runs them batched;
`describe()` is the `--dry-run` text. Every value is checked here, before it can reach
a command line: names and users against SLURM's character set, limits as non-negative
integers (sacctmgr silently turns `cpu=abc` into 0), and free text (description,
organization) reduced to a charset that cannot form `where`/`set`/`=` clauses, quotes,
or the `:` separator of sacctmgr's load-file format.

Values are lower-case because sacctmgr lower-cases names, users, descriptions and
organizations; keeping them lower-case here lets a planner compare with `read_state()`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from waldur_slurm.domain.naming import ACCOUNT_RE, MAX_ACCOUNT_LEN, USER_RE

from .errors import InvalidValue

TRES_KEY_RE = re.compile(r"^[a-z]+(/[a-z0-9_.-]+)?$")
UMASK_RE = re.compile(r"^0?[0-7]{3}$")
MAX_NAME_LEN = MAX_ACCOUNT_LEN
MAX_TEXT_LEN = 200


def format_limits(limits: Mapping[str, int | None]) -> str:
    """TRES limits as SLURM writes them (``cpu=1,mem=5``); None clears the TRES (-1)."""
    return ",".join(f"{k}={-1 if v is None else v}" for k, v in sorted(limits.items()))
_TEXT_DROP = re.compile(r"[^a-z0-9 ._@+/-]")


def validate_account(name: object, field_name: str = "account") -> str:
    if not isinstance(name, str) or not ACCOUNT_RE.match(name) or len(name) > MAX_NAME_LEN:
        raise InvalidValue(field_name, name, f"must match {ACCOUNT_RE.pattern} and be at most {MAX_NAME_LEN} chars")
    return name


def validate_user(name: object, field_name: str = "user") -> str:
    if not isinstance(name, str) or not USER_RE.match(name) or len(name) > MAX_NAME_LEN:
        raise InvalidValue(field_name, name, f"must match {USER_RE.pattern} and be at most {MAX_NAME_LEN} chars")
    return name


def validate_limits(limits: Mapping[str, int | None], field_name: str = "limits") -> dict[str, int | None]:
    """TRES -> non-negative int TRES-minutes (mem in MB); None clears that TRES."""
    if not isinstance(limits, Mapping):
        raise InvalidValue(field_name, limits, "must be a mapping of TRES to integers")
    out: dict[str, int | None] = {}
    for key, value in limits.items():
        if not isinstance(key, str) or not TRES_KEY_RE.match(key):
            raise InvalidValue(f"{field_name} TRES name", key, "must look like cpu, mem or gres/gpu")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise InvalidValue(f"{field_name}[{key}]", value, "must be a non-negative integer or None")
        out[key] = value
    return out


def sanitize_text(text: object, field_name: str = "description") -> str:
    """Lower-case, keep `[a-z0-9 ._@+/-]`, collapse spaces, cap the length.

    What is left can be double-quoted on a sacctmgr line and single-quoted in a load
    file; it holds no quote, `=`, `:`, `,` or newline, so it can never end the value and
    start a `where`/`set` clause.
    """
    if text is None:
        return ""
    if not isinstance(text, str):
        raise InvalidValue(field_name, text, "must be a string")
    cleaned = _TEXT_DROP.sub(" ", text.lower())
    return " ".join(cleaned.split())[:MAX_TEXT_LEN].strip()


def _names(values: Sequence[str] | str, validator, field_name: str) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    if isinstance(values, str):
        values = (values,)
    result = tuple(validator(v, field_name) for v in values)
    if not result:
        raise InvalidValue(field_name, values, "must not be empty")
    # keep the caller's order, drop duplicates
    return tuple(dict.fromkeys(result))


def _short_list(names: Sequence[str], limit: int = 8) -> str:
    if len(names) <= limit:
        return ",".join(names)
    return ",".join(names[:limit]) + f",... ({len(names)} total)"


@dataclass(frozen=True)
class AddAccounts:
    """Accounts that share parent, description, organization and limits: ONE command."""

    names: tuple[str, ...]
    parent: str
    description: str = ""
    organization: str = ""
    limits: Mapping[str, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", _names(self.names, validate_account, "account"))
        validate_account(self.parent, "parent")
        object.__setattr__(self, "description", sanitize_text(self.description, "description"))
        object.__setattr__(self, "organization", sanitize_text(self.organization, "organization"))
        object.__setattr__(self, "limits", validate_limits(self.limits))

    def describe(self) -> str:
        extra = f" GrpTRESMins={format_limits(dict(self.limits))}" if self.limits else ""
        return (
            f"add account(s) {_short_list(self.names)} under {self.parent}"
            f" (description={self.description!r}, organization={self.organization!r}){extra}"
        )


@dataclass(frozen=True)
class AddAccountsDescribed:
    """New accounts under one parent, each with ITS OWN description, in ONE transaction.

    Runs `sacctmgr -i load file=/dev/stdin` with a flat file (measured: 100 accounts in
    0.9 s versus 52.9 s for 100 `add account` lines, which commit one by one). The load
    is all-or-nothing: one bad line commits nothing.

    CAUTION: load also *updates* accounts that already exist: their description,
    organization, limits, and even their parent (an account elsewhere is MOVED under
    `parent`). Put only names that are new or already under `parent` in here.
    """

    entries: tuple[tuple[str, str], ...]  # (name, description)
    parent: str
    organization: str = ""
    limits: Mapping[str, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        entries = tuple(
            (validate_account(name, "account"), sanitize_text(desc, "description")) for name, desc in self.entries
        )
        if not entries:
            raise InvalidValue("entries", self.entries, "must not be empty")
        names = [n for n, _ in entries]
        if len(set(names)) != len(names):
            raise InvalidValue("entries", names, "account names must be unique")
        object.__setattr__(self, "entries", entries)
        validate_account(self.parent, "parent")
        object.__setattr__(self, "organization", sanitize_text(self.organization, "organization"))
        limits = validate_limits(self.limits)
        if any(v is None for v in limits.values()):
            raise InvalidValue("limits", limits, "a new account has no limit to clear; leave the TRES out")
        object.__setattr__(self, "limits", limits)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.entries)

    def describe(self) -> str:
        extra = f" GrpTRESMins={format_limits(dict(self.limits))}" if self.limits else ""
        shown = ", ".join(f"{n} ({d!r})" for n, d in self.entries[:8])
        more = f", ... ({len(self.entries)} total)" if len(self.entries) > 8 else ""
        return f"add account(s) {shown}{more} under {self.parent} (organization={self.organization!r}){extra}"


@dataclass(frozen=True)
class LoadUser:
    """A user's association in an account created by the same load.

    ``default_account`` only for a user SLURM does not know yet (a load line with ``DefaultAccount`` for an
    existing user would change their default).
    """

    account: str
    user: str
    default_account: str | None = None

    def __post_init__(self) -> None:
        validate_account(self.account, "account")
        validate_user(self.user, "user")
        if self.default_account is not None:
            validate_account(self.default_account, "default_account")


@dataclass(frozen=True)
class AddAccountTree(AddAccountsDescribed):
    """Several ``AddAccountsDescribed`` groups (customers, projects, allocations, each under its own
    parent) and the users of the new accounts in ONE load file: one process and one transaction for every
    new account and new-account association of the cycle.

    A sacctmgr load file may switch parents with further ``Parent -`` lines (checked on 22.05: a
    customer, two projects under it and an allocation under each in one load, 0.9 s); ``User -`` lines
    after ``Parent - '<account>'`` add associations (measured on 22.05: 100 new accounts with two new users
    each, see docs/benchmarks.md; as ``add user`` commands each association commits on its own, ~0.7 s per
    command). Groups are in parent-before-child order, users last. ``SlurmClient.apply`` runs it as any
    ``AddAccountsDescribed``; the pull planner builds it.
    """

    groups: tuple[AddAccountsDescribed, ...] = ()
    users: tuple[LoadUser, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        names = set(self.names)
        for u in self.users:
            if u.account not in names:
                raise InvalidValue("account", u.account, "a load adds users only to the accounts it creates")
        defaults: dict[str, str] = {}
        for u in self.users:
            if u.default_account is not None and defaults.setdefault(u.user, u.default_account) != u.default_account:
                raise InvalidValue("default_account", u.default_account, f"user {u.user} has two defaults in one load")

    @classmethod
    def of(cls, groups: Sequence[AddAccountsDescribed], users: Sequence[LoadUser] = ()) -> AddAccountsDescribed:
        if len(groups) == 1 and not users:
            return groups[0]
        entries = tuple(e for g in groups for e in g.entries)
        return cls(entries=entries, parent=groups[0].parent, groups=tuple(groups), users=tuple(users))

    def describe(self) -> str:
        users = ""
        if self.users:
            shown = ", ".join(
                f"{u.user} -> {u.account}" + (" (default)" if u.default_account else "") for u in self.users[:8]
            )
            more = f", ... ({len(self.users)} total)" if len(self.users) > 8 else ""
            users = f"; add user(s) {shown}{more}"
        return "one load: " + "; ".join(g.describe() for g in self.groups) + users


@dataclass(frozen=True)
class RemoveAccounts:
    """Remove accounts (their associations and the users' associations in them)."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", _names(self.names, validate_account, "account"))
        if "root" in self.names:
            raise InvalidValue("account", "root", "the root account is never removed")

    def describe(self) -> str:
        return f"remove account(s) {_short_list(self.names)}"


@dataclass(frozen=True)
class MoveAccounts:
    """Put accounts (with their subtrees) under another parent: a project moved to another customer."""

    names: tuple[str, ...]
    parent: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", _names(self.names, validate_account, "account"))
        validate_account(self.parent, "parent")
        if "root" in self.names:
            raise InvalidValue("account", "root", "the root account is never moved")
        if self.parent in self.names:
            raise InvalidValue("parent", self.parent, "an account cannot be its own parent")

    def describe(self) -> str:
        return f"move account(s) {_short_list(self.names)} under {self.parent}"


@dataclass(frozen=True)
class AddUsers:
    """Every user in `users` gets an association in every account in `accounts`."""

    users: tuple[str, ...]
    accounts: tuple[str, ...]
    default_account: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", _names(self.users, validate_user, "user"))
        object.__setattr__(self, "accounts", _names(self.accounts, validate_account, "account"))
        if self.default_account is not None:
            validate_account(self.default_account, "default_account")

    def describe(self) -> str:
        extra = f" (default account {self.default_account})" if self.default_account else ""
        return f"add user(s) {_short_list(self.users)} to account(s) {_short_list(self.accounts)}{extra}"


@dataclass(frozen=True)
class RemoveUsers:
    """Remove the associations of `users` in `accounts` (a user record goes with its last one)."""

    users: tuple[str, ...]
    accounts: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", _names(self.users, validate_user, "user"))
        object.__setattr__(self, "accounts", _names(self.accounts, validate_account, "account"))

    def describe(self) -> str:
        return f"remove user(s) {_short_list(self.users)} from account(s) {_short_list(self.accounts)}"


@dataclass(frozen=True)
class SetLimits:
    """Set account-level GrpTRESMins; only the given TRES change, None clears one."""

    accounts: tuple[str, ...]
    limits: Mapping[str, int | None]

    def __post_init__(self) -> None:
        object.__setattr__(self, "accounts", _names(self.accounts, validate_account, "account"))
        limits = validate_limits(self.limits)
        if not limits:
            raise InvalidValue("limits", limits, "must not be empty")
        object.__setattr__(self, "limits", limits)

    def describe(self) -> str:
        return f"set GrpTRESMins={format_limits(dict(self.limits))} on account(s) {_short_list(self.accounts)}"


@dataclass(frozen=True)
class SetDefaultAccount:
    users: tuple[str, ...]
    account: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", _names(self.users, validate_user, "user"))
        validate_account(self.account, "account")

    def describe(self) -> str:
        return f"set default account {self.account} for user(s) {_short_list(self.users)}"


# -1 is sacctmgr's "clear this limit" (the association then has none of its own).
CLEAR = -1


def _job_count(value: object, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < CLEAR:
        raise InvalidValue(field_name, value, "must be an integer >= 0, or -1 to clear the limit")
    return value


@dataclass(frozen=True)
class SetJobLimits:
    """Set the account associations' GrpJobs and/or GrpSubmitJobs (0 pauses, -1 clears, None: unchanged).

    Grp limits of an account association bound every job of the account and its users; running jobs are
    never stopped by them (measured on 22.05: see waldur_slurm/enforcement.py).
    """

    accounts: tuple[str, ...]
    grp_jobs: int | None = None
    grp_submit_jobs: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "accounts", _names(self.accounts, validate_account, "account"))
        if self.grp_jobs is None and self.grp_submit_jobs is None:
            raise InvalidValue("GrpJobs", None, "GrpJobs or GrpSubmitJobs must be given")
        if self.grp_jobs is not None:
            _job_count(self.grp_jobs, "GrpJobs")
        if self.grp_submit_jobs is not None:
            _job_count(self.grp_submit_jobs, "GrpSubmitJobs")
        if "root" in self.accounts:
            raise InvalidValue("account", "root", "the root account's limits are never changed")

    def settings_text(self) -> str:
        parts = []
        if self.grp_jobs is not None:
            parts.append(f"GrpJobs={self.grp_jobs}")
        if self.grp_submit_jobs is not None:
            parts.append(f"GrpSubmitJobs={self.grp_submit_jobs}")
        return " ".join(parts)

    def describe(self) -> str:
        return f"set {self.settings_text()} on account(s) {_short_list(self.accounts)}"


@dataclass(frozen=True)
class AddQos:
    """Create a QoS (no limits: the operator sets them); "Nothing new added" when it exists."""

    name: str

    def __post_init__(self) -> None:
        validate_account(self.name, "qos")

    def describe(self) -> str:
        return f"create QoS {self.name} if missing"


@dataclass(frozen=True)
class SetAccountQos:
    """Set the account associations' QOS list (empty: inherit the parent's) and, unless None, DefaultQOS
    ("" clears it). User associations without a QOS of their own inherit the account's."""

    accounts: tuple[str, ...]
    qos: tuple[str, ...]
    default_qos: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "accounts", _names(self.accounts, validate_account, "account"))
        qos = tuple(validate_account(q, "qos") for q in self.qos)
        object.__setattr__(self, "qos", tuple(dict.fromkeys(qos)))
        if self.default_qos:
            validate_account(self.default_qos, "default_qos")
            if self.qos and self.default_qos not in self.qos:
                raise InvalidValue("default_qos", self.default_qos, f"must be one of the QOS list {list(self.qos)}")
        if "root" in self.accounts:
            raise InvalidValue("account", "root", "the root account's QOS is never changed")

    def describe(self) -> str:
        qos = ",".join(self.qos) or "(inherited)"
        extra = "" if self.default_qos is None else f" DefaultQOS={self.default_qos or '(none)'}"
        return f"set QOS={qos}{extra} on account(s) {_short_list(self.accounts)}"


@dataclass(frozen=True)
class CancelJobs:
    """Cancel every pending/running job charged to these accounts (one scancel)."""

    accounts: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "accounts", _names(self.accounts, validate_account, "account"))

    def describe(self) -> str:
        return f"cancel the jobs of account(s) {_short_list(self.accounts)}"


@dataclass(frozen=True)
class CancelUserJobs:
    """Cancel the pending/running jobs of each (account, user) pair: members leaving an account.

    scancel takes one account and one user per call, so the pairs run through ONE shell (one process, one
    docker exec); a failing pair is reported by name (``wsa-scancel-failed``) and the rest go on.
    """

    pairs: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        pairs = tuple(dict.fromkeys((validate_account(a, "account"), validate_user(u, "user")) for a, u in self.pairs))
        if not pairs:
            raise InvalidValue("pairs", self.pairs, "must not be empty")
        object.__setattr__(self, "pairs", pairs)

    def describe(self) -> str:
        shown = ", ".join(f"{u} in {a}" for a, u in self.pairs[:8])
        more = f", ... ({len(self.pairs)} total)" if len(self.pairs) > 8 else ""
        return f"cancel the jobs of {shown}{more}"


@dataclass(frozen=True)
class CreateHomedirs:
    """Create missing home directories with mkhomedir_helper (one process for all users)."""

    users: tuple[str, ...]
    umask: str = "0077"

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", _names(self.users, validate_user, "user"))
        if not isinstance(self.umask, str) or not UMASK_RE.match(self.umask):
            raise InvalidValue("umask", self.umask, "must be an octal umask like 0077")

    def describe(self) -> str:
        return f"create home directories (umask {self.umask}) for user(s) {_short_list(self.users)}"


Op = AddAccounts | AddAccountsDescribed | RemoveAccounts | AddUsers | RemoveUsers | MoveAccounts | SetLimits | SetDefaultAccount | SetJobLimits | AddQos | SetAccountQos | CancelJobs | CancelUserJobs | CreateHomedirs
