"""Pull planning: from Waldur orders and one SLURM snapshot to a plan (pure: no I/O, no clock).

``plan_orders`` turns the cycle's orders into

- per order: whether to approve or reject it, the Waldur actions that follow the SLURM batch
  (set_backend_id, set_limits, complete), or why it is erred, deferred or skipped;
- one list of SLURM ops for all orders, grouped so that identical work is one command: new accounts
  under the same parent in one load, the same users joining the same accounts in one ``add user``,
  the same limits on several accounts in one ``modify``. Each op records which orders it serves, so a
  failing op fails (or defers) exactly those orders.

``plan_membership`` does the same for the periodic membership pass over OK resources.

Every decision is made from the state, never from memory, so a cycle that finds the work half done
(an account with our marker but no backend_id in Waldur, an order done in SLURM but not in Waldur)
finishes it and redoes nothing: an account whose description names this resource is adopted, missing
accounts, limits and associations are added, and what is already right produces no op.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from waldur_slurm import naming
from waldur_slurm.components import Component, parse_amount
from waldur_slurm.values import BadValue, show
from waldur_slurm.naming import NamingError, NamingRules
from waldur_slurm.slurm.errors import InvalidValue
from waldur_slurm.slurm.ops import (
    AddAccountsDescribed,
    AddAccountTree,
    LoadUser,
    AddUsers,
    CancelJobs,
    CancelUserJobs,
    CreateHomedirs,
    MoveAccounts,
    RemoveAccounts,
    RemoveUsers,
    SetDefaultAccount,
    SetLimits,
    validate_account,
    validate_user,
)
from waldur_slurm.waldur.models import OfferingUser, Order, Resource, TeamMember

CREATE, UPDATE, TERMINATE = "Create", "Update", "Terminate"
SUPPORTED_TYPES = (CREATE, UPDATE, TERMINATE)
PENDING, EXECUTING = "pending-provider", "executing"
# GrpTRESMins is a uint64 in SLURM and the top values mean INFINITE / NO_VAL; stay far below them.
MAX_TRES_MINUTES = 2**62
# Users the agent never associates or removes, whatever Waldur says.
IGNORED_USERS = frozenset({"root"})


# --------------------------------------------------------------------------------------------------
# Inputs


class AccountLike(Protocol):
    name: str
    parent: str
    description: str
    organization: str
    limits: Mapping[str, int]
    users: frozenset[str]


class StateLike(Protocol):
    accounts: Mapping[str, AccountLike]
    default_account: Mapping[str, str]


@dataclass(frozen=True)
class PlanConfig:
    """What planning needs from the settings, plus the Waldur server flavour ("8" or "2024")."""

    naming: NamingRules
    default_account: str
    components: Mapping[str, Component]
    enable_homedir: bool = False
    homedir_umask: int = 0o077
    flavour: str = "8"
    cancel_jobs_of_leaving_members: bool = False
    # SLURM_IGNORE_ACCOUNTS / SLURM_IGNORE_USERS: never added, removed or changed, accounts never adopted
    ignore_accounts: frozenset[str] = frozenset()
    ignore_users: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Any, flavour: str = "8") -> PlanConfig:
        return cls(
            naming=NamingRules.from_settings(settings),
            default_account=settings.default_account,
            components=dict(settings.components),
            enable_homedir=bool(settings.enable_homedir),
            homedir_umask=int(settings.homedir_umask),
            flavour=flavour,
            ignore_accounts=frozenset(getattr(settings, "ignore_accounts", ())),
            ignore_users=frozenset(getattr(settings, "ignore_users", ())),
            cancel_jobs_of_leaving_members=bool(getattr(settings, "cancel_jobs_of_leaving_members", False)),
        )

    @property
    def umask(self) -> str:
        return f"{self.homedir_umask:04o}"


# --------------------------------------------------------------------------------------------------
# Outputs


@dataclass(frozen=True)
class SetBackendId:
    resource_uuid: str
    backend_id: str

    def describe(self) -> str:
        return f"set backend_id of resource {self.resource_uuid} to {self.backend_id!r}"


@dataclass(frozen=True)
class SetResourceLimits:
    resource_uuid: str
    limits: Mapping[str, Any]  # Waldur units, as the order gave them

    def describe(self) -> str:
        return f"set limits of resource {self.resource_uuid} to {dict(self.limits)}"


@dataclass(frozen=True)
class CompleteOrder:
    order: Order

    def describe(self) -> str:
        return f"complete {self.order.type} order {self.order.uuid}"


@dataclass(frozen=True)
class Associate:
    """2024 servers keep a list of the allocation's usernames (slurm-remote create/delete_association)."""

    resource_uuid: str
    username: str
    add: bool = True

    def describe(self) -> str:
        verb = "record" if self.add else "drop"
        return f"{verb} association of {self.username} with resource {self.resource_uuid} in Waldur"


WaldurAction = SetBackendId | SetResourceLimits | Associate | CompleteOrder


@dataclass
class OrderPlan:
    """What happens to one order this cycle.

    Exactly one outcome: ``reject`` (pending order that can never succeed), ``erred`` (executing order
    that can never succeed), ``skip`` (not ours to touch), or work: ``approve`` first if pending, the
    SLURM ops that list this order as an owner, then ``actions`` in order. ``defer`` set on a work plan
    means the SLURM part runs now but the Waldur actions wait for the next cycle (the 2024 server has
    not created the allocation yet).
    """

    order: Order
    approve: bool = False
    reject: str | None = None
    erred: str | None = None
    skip: str | None = None
    defer: str | None = None
    account: str | None = None
    actions: list[WaldurAction] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: bool = False  # a skip caused by a problem the operator must fix (counted as failed)

    @property
    def works(self) -> bool:
        return self.reject is None and self.erred is None and self.skip is None

    @property
    def outcome(self) -> str:
        if self.reject is not None:
            return "reject"
        if self.erred is not None:
            return "erred"
        if self.skip is not None:
            return "skip"
        if self.defer is not None:
            return "defer"
        return "work"

    def describe(self) -> list[str]:
        o = self.order
        head = f"order {o.uuid} ({o.type}, {o.state}, resource {o.resource_uuid})"
        if self.reject is not None:
            return [f"{head}: reject: {self.reject}"]
        if self.erred is not None:
            return [f"{head}: mark erred: {self.erred}"]
        if self.skip is not None:
            return [f"{head}: skip: {self.skip}"]
        lines = [f"{head}: account {self.account or '-'}"]
        if self.approve:
            lines.append("  approve")
        if self.defer is not None:
            lines.append(f"  then wait for the next cycle: {self.defer}")
        lines.extend(f"  {a.describe()}" for a in self.actions)
        lines.extend(f"  note: {n}" for n in self.notes)
        return lines


@dataclass(frozen=True)
class PlannedOp:
    """A SLURM op and the keys (order or resource UUIDs) it serves."""

    op: Any
    owners: frozenset[str]

    def describe(self) -> str:
        return self.op.describe()


@dataclass
class PullPlan:
    orders: list[OrderPlan] = field(default_factory=list)
    ops: list[PlannedOp] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def by_uuid(self) -> dict[str, OrderPlan]:
        return {p.order.uuid: p for p in self.orders}

    def ops_of(self, order_uuid: str) -> list[PlannedOp]:
        return [p for p in self.ops if order_uuid in p.owners]

    def describe(self) -> list[str]:
        lines = [f"pull plan: {len(self.orders)} order(s), {len(self.ops)} SLURM op(s)"]
        for plan in self.orders:
            lines.extend(plan.describe())
        if self.ops:
            lines.append("SLURM:")
            lines.extend(f"  {p.describe()}" for p in self.ops)
        lines.extend(f"note: {n}" for n in self.notes)
        return lines


class OrderInvalid(ValueError):
    """The order can never succeed; the message names the field and the value."""


class AgentMisconfigured(ValueError):
    """The agent's own setup (not the order) prevents the work: a pending order is left pending."""


# --------------------------------------------------------------------------------------------------
# Validation and conversion


def validate_limits(raw: object, components: Mapping[str, Component]) -> tuple[dict[str, int], dict[str, Any], list[str]]:
    """The order's limits as (GrpTRESMins for limit-type components, the Waldur values kept, notes).

    Raises OrderInvalid naming the field and the value for unknown components, non-numbers, NaN or
    infinity, negative and too-large values. A null value means "not given". Values for usage-type
    components are ignored: their GrpTRESMins comes from the components file.
    """
    if raw is None:
        return {}, {}, []
    if not isinstance(raw, Mapping):
        raise OrderInvalid(f"limits {show(raw)} is not a mapping of component to number")
    slurm: dict[str, int] = {}
    waldur: dict[str, Any] = {}
    notes: list[str] = []
    for key in sorted(raw, key=str):
        value = raw[key]
        field_name = f"limits.{key}"
        component = components.get(key) if isinstance(key, str) else None
        if component is None:
            known = ", ".join(sorted(components)) or "none"
            raise OrderInvalid(f"{field_name} = {show(value)}: unknown component {show(key)} (known: {known})")
        if value is None:
            notes.append(f"{field_name} is null: treated as not given")
            continue
        try:
            minutes = component.to_slurm(value, field_name)
        except BadValue as exc:
            raise OrderInvalid(str(exc)) from None
        if minutes >= MAX_TRES_MINUTES:
            raise OrderInvalid(f"{field_name} = {show(value)} is too large ({minutes} TRES-minutes)")
        if component.accounting_type != "limit":
            notes.append(f"{field_name} ignored: {key} is a usage component, its limit comes from the components file")
            continue
        slurm[key] = minutes
        waldur[key] = value
    return slurm, waldur, notes


def create_limits(order_limits: Mapping[str, int], components: Mapping[str, Component]) -> dict[str, int]:
    """GrpTRESMins of a new account: the order's value for limit components, the file's otherwise."""
    limits: dict[str, int] = {}
    for key, component in sorted(components.items()):
        if component.accounting_type == "limit" and key in order_limits:
            limits[key] = order_limits[key]
        elif component.slurm_limit is not None:
            limits[key] = component.slurm_limit
    return limits


def limits_differ(current: Mapping[str, int], target: Mapping[str, int]) -> dict[str, int]:
    """The part of ``target`` that is not already set on the account."""
    return {k: v for k, v in target.items() if current.get(k) != v}


def _norm_user(name: str | None) -> str | None:
    """SLURM lower-cases user names; an unusable name gives None."""
    if not name:
        return None
    lowered = name.strip().lower()
    try:
        return validate_user(lowered)
    except InvalidValue:
        return None


def offering_users_by_user(offering_users: Iterable[OfferingUser]) -> dict[str, OfferingUser]:
    """The offering users by Waldur user UUID (a later one wins)."""
    return {ou.user_uuid: ou for ou in offering_users if ou.user_uuid}


# Words sacctmgr reads as part of a command wherever they appear (``add user where account=x`` does not add
# a user named "where"), so such a user name can never be given to it safely.
SACCTMGR_KEYWORDS = frozenset({
    "where", "set", "name", "names", "user", "users", "account", "accounts", "cluster", "clusters", "format",
    "withassoc", "withdeleted", "withcoord", "withsubaccounts", "tree", "parent", "partition", "qos", "wckey",
    "wckeys", "defaultaccount", "adminlevel", "defaultwckey", "coordinator", "coordinators", "association",
    "associations", "assoc", "tres", "event", "events", "problem", "problems", "transaction", "transactions",
    "runawayjobs", "stats", "configuration", "federation", "reservation", "resource", "archive", "dump",
    "load", "list", "show", "add", "create", "modify", "update", "delete", "remove", "exit", "quit", "help",
    "oneliner", "quiet", "verbose", "readonly", "immediate", "parsable", "parsable2", "noheader", "version",
})


def ambiguous_usernames(offering_users: Iterable[OfferingUser]) -> set[str]:
    """SLURM user names that several offering usernames map to (``Bob`` and ``bob``: SLURM lower-cases both).

    Such a name belongs to nobody: adding it would let two people share one login's associations.
    """
    spellings: dict[str, set[str]] = {}
    for ou in offering_users:
        if ou.username:
            name = _norm_user(ou.username)
            if name is not None:
                spellings.setdefault(name, set()).add(ou.username.strip())
    return {name for name, seen in spellings.items() if len(seen) > 1}


def resource_users(
    team: Iterable[TeamMember] | None,
    offering_users: Iterable[OfferingUser] | Mapping[str, OfferingUser],
    ambiguous: Collection[str] = (),
) -> tuple[set[str], list[str]]:
    """SLURM users of a resource: its team members that have an offering user with a username.

    Intersected by Waldur user UUID; restricted offering users are left out. Returns (users, notes).
    ``offering_users`` may be the index ``offering_users_by_user`` makes: a planner builds it once, not per
    resource (per resource it made a membership pass over 8,400 resources take minutes).
    """
    by_user = offering_users if isinstance(offering_users, Mapping) else offering_users_by_user(offering_users)
    users: set[str] = set()
    notes: list[str] = []
    for member in team or ():
        ou = by_user.get(member.uuid)
        if ou is None or not ou.username or ou.is_restricted:
            continue
        name = _norm_user(ou.username)
        if name is None:
            notes.append(f"offering username {ou.username!r} is not a valid SLURM user name: not added")
        elif name in SACCTMGR_KEYWORDS:
            notes.append(f"offering username {ou.username!r} is a sacctmgr keyword: sacctmgr would read it as "
                         "part of the command, not as a user name; not added")
        elif name in ambiguous:
            notes.append(f"offering username {ou.username!r}: another offering user's name differs only in case "
                         f"and SLURM would make both {name!r}: not added (rename one of them in Waldur)")
        elif name not in IGNORED_USERS:
            users.add(name)
    return users, notes


def offering_usernames(offering_users: Iterable[OfferingUser]) -> set[str]:
    """Every SLURM user the offering knows about (restricted ones too): the only users we may remove."""
    names = {_norm_user(ou.username) for ou in offering_users if ou.username}
    return {n for n in names if n is not None} - IGNORED_USERS


# --------------------------------------------------------------------------------------------------
# Working state: the snapshot plus what this plan already decided


class _Work:
    """Collects intents from every order, then groups them into few ops."""

    def __init__(self, state: StateLike, config: PlanConfig) -> None:
        self.state = state
        self.config = config
        self.accounts = {name.lower(): acc for name, acc in state.accounts.items()}
        self.defaults = {u.lower(): a.lower() for u, a in state.default_account.items()}
        # account name -> (parent, description, organization, limits, depth) planned this cycle
        self.new_accounts: dict[str, tuple[str, str, str, tuple[tuple[str, int], ...], int]] = {}
        self.new_owners: dict[str, set[str]] = defaultdict(set)
        self.set_limits: dict[str, dict[str, int]] = {}
        self.moves: dict[str, str] = {}  # existing account -> its new parent
        self.move_owners: dict[str, set[str]] = defaultdict(set)
        self.limit_owners: dict[str, set[str]] = defaultdict(set)
        self.joins: dict[str, set[str]] = defaultdict(set)  # user -> accounts
        self.join_owners: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.new_defaults: dict[str, str] = {}  # user -> account (set after the adds)
        self.default_owners: dict[str, set[str]] = defaultdict(set)
        self.homedirs: dict[str, set[str]] = defaultdict(set)
        self.cancel: dict[str, set[str]] = defaultdict(set)
        self.cancel_pairs: dict[tuple[str, str], set[str]] = defaultdict(set)  # (account, user) -> owners
        self.leaves: dict[tuple[str, str], set[str]] = defaultdict(set)  # (user, account) -> owners
        self.removals: dict[str, tuple[int, set[str]]] = {}  # account -> (depth, owners)
        self.reserved: set[str] = set()
        self.claimed: dict[str, str] = {}  # backend_id -> resource UUID
        self._journal: list[Callable[[], None]] | None = None  # undo steps of the order being planned
        # Indexes of the snapshot (it never changes while planning): every order asks these, and a scan of
        # the whole snapshot per order made planning quadratic (300 orders on 8,700 accounts: seconds).
        self._children: dict[str, set[str]] = defaultdict(set)  # parent -> accounts
        self._marked: dict[str, list[str]] = defaultdict(list)  # resource UUID -> accounts with its marker
        self._user_accounts: dict[str, set[str]] = defaultdict(set)  # user -> accounts
        for name, acc in self.accounts.items():
            self._children[acc.parent.lower()].add(name)
            owner = naming.resource_owner(acc.description)
            if owner is not None:
                self._marked[owner].append(name)
            for user in acc.users:
                self._user_accounts[user].add(name)

    # -- queries over snapshot + plan

    def exists(self, name: str) -> bool:
        return name in self.accounts or name in self.new_accounts

    def removed(self, name: str) -> bool:
        return name in self.removals

    def users_of(self, account: str) -> set[str]:
        acc = self.accounts.get(account)
        current = set(acc.users) if acc is not None else set()
        joined = {u for u, accts in self.joins.items() if account in accts}
        left = {u for (u, a) in self.leaves if a == account}
        return (current | joined) - left

    def accounts_of(self, user: str) -> set[str]:
        """The user's accounts after this plan (snapshot + joins - leaves - removed accounts)."""
        current = self._user_accounts.get(user, set())
        result = (current | self.joins.get(user, set())) - {a for (u, a) in self.leaves if u == user}
        return {a for a in result if not self.removed(a)}

    def parent_of(self, account: str) -> str:
        """The account's parent after this plan."""
        if account in self.moves:
            return self.moves[account]
        acc = self.accounts.get(account)
        if acc is not None:
            return acc.parent.lower()
        spec = self.new_accounts.get(account)
        return spec[0] if spec is not None else ""

    def marked_for(self, resource_uuid: str) -> list[str]:
        """Accounts of the snapshot whose marker names this resource, and that this plan keeps."""
        return sorted(n for n in self._marked.get(resource_uuid, ()) if not self.removed(n))

    def children_of(self, account: str) -> set[str]:
        children = (self._children.get(account, set()) - self.moves.keys()) | {
            name for name, parent in self.moves.items() if parent == account}
        children |= {name for name, spec in self.new_accounts.items() if spec[0] == account}
        return {c for c in children if not self.removed(c)}

    def is_allocation(self, account: str) -> bool:
        acc = self.accounts.get(account)
        if acc is not None:
            return naming.resource_owner(acc.description) is not None
        spec = self.new_accounts.get(account)
        return spec is not None and naming.resource_owner(spec[1]) is not None

    def bad_default(self, user: str) -> bool:
        """No default, or one that is root, SLURM_DEFAULT_ACCOUNT, or not among the user's accounts."""
        default = self.new_defaults.get(user) or self.defaults.get(user) or ""
        if default in ("", "root", self.config.default_account):
            return True
        return default not in self.accounts_of(user)

    # -- the undo journal: an order is planned in a transaction, so that one found invalid midway leaves
    # none of its intents behind. Every intent below goes through these three primitives.

    def begin(self) -> None:
        self._journal = []

    def rollback(self) -> None:
        journal, self._journal = self._journal or [], None
        for undo in reversed(journal):
            undo()

    def commit(self) -> None:
        self._journal = None

    def _put(self, mapping: dict[Any, Any], key: Any, value: Any) -> None:
        if self._journal is not None:
            if key in mapping:
                old = mapping[key]
                self._journal.append(lambda: mapping.__setitem__(key, old))
            else:
                self._journal.append(lambda: mapping.pop(key, None))
        mapping[key] = value

    def _member(self, mapping: dict[Any, Any], key: Any, item: Any) -> None:
        """Add ``item`` to the set ``mapping[key]`` (created when missing)."""
        found = mapping.get(key)
        if found is None:
            self._put(mapping, key, {item})
        elif item not in found:
            found.add(item)
            if self._journal is not None:
                self._journal.append(lambda: found.discard(item))

    # -- intents

    def add_account(self, name: str, parent: str, description: str, organization: str,
                    limits: Mapping[str, int], depth: int, owner: str) -> None:
        if name not in self.new_accounts:
            self._put(self.new_accounts, name, (parent, description, organization, tuple(sorted(limits.items())), depth))
        self._member(self.new_owners, name, owner)

    def reserve(self, account: str) -> None:
        if account not in self.reserved:
            self.reserved.add(account)
            if self._journal is not None:
                self._journal.append(lambda: self.reserved.discard(account))

    def move(self, account: str, parent: str, owner: str) -> None:
        self._put(self.moves, account, parent)
        self._member(self.move_owners, account, owner)

    def limit(self, account: str, limits: Mapping[str, int], owner: str) -> None:
        self._put(self.set_limits, account, {**self.set_limits.get(account, {}), **limits})
        self._member(self.limit_owners, account, owner)

    def cancel_jobs(self, account: str, owner: str) -> None:
        self._member(self.cancel, account, owner)

    def prefer_default(self, user: str, account: str, owner: str) -> None:
        """``account`` becomes the user's default, unless this plan already chose one."""
        if user not in self.new_defaults:
            self._put(self.new_defaults, user, account)
        self._member(self.default_owners, user, owner)

    def join(self, user: str, account: str, owner: str) -> None:
        had_record = user in self.defaults or user in self.joins
        self._member(self.joins, user, account)
        self._member(self.join_owners, (user, account), owner)
        if self.config.enable_homedir:
            self._member(self.homedirs, user, owner)
        if not had_record or self.bad_default(user):
            # a user SLURM does not know yet gets its default in the add; others get a modify after it
            self.prefer_default(user, account, owner)

    def leave(self, user: str, account: str, owner: str) -> None:
        self._member(self.leaves, (user, account), owner)

    def remove_account(self, account: str, depth: int, owner: str) -> None:
        if account in self.removals:
            self._put(self.removals, account, (self.removals[account][0], self.removals[account][1] | {owner}))
            return
        self._put(self.removals, account, (depth, {owner}))

    def _new_default(self, user: str, remaining: set[str]) -> str | None:
        """Where a user's default goes when its account goes: one of their allocation accounts; else another
        account; SLURM_DEFAULT_ACCOUNT only as the last resort (sacctmgr refuses to remove a default
        association while the user keeps others); never root."""
        ranked = (
            [a for a in remaining if self.is_allocation(a)],
            [a for a in remaining if a not in ("root", self.config.default_account)],
            [a for a in remaining if a != "root"],
        )
        for candidates in ranked:
            if candidates:
                return sorted(candidates)[0]
        return None

    # -- grouping

    def ops(self) -> list[PlannedOp]:
        """Grouped ops in a safe order. scancel first and mkhomedir last: each is its own process, so
        everything sacctmgr does in between shares one ``sacctmgr -i`` (after the one load)."""
        out: list[PlannedOp] = []
        if self.cancel:
            accounts = sorted(self.cancel)
            out.append(PlannedOp(CancelJobs(accounts=tuple(accounts)), frozenset().union(*self.cancel.values())))
        if self.cancel_pairs:
            out.append(PlannedOp(CancelUserJobs(tuple(sorted(self.cancel_pairs))),
                                 frozenset().union(*self.cancel_pairs.values())))
        # New accounts: a group per (parent, organization, limits), parents before children, all in
        # one load file.
        groups: dict[tuple[int, str, str, tuple[tuple[str, int], ...]], list[str]] = defaultdict(list)
        for name, (parent, _desc, org, limits, depth) in self.new_accounts.items():
            groups[(depth, parent, org, limits)].append(name)
        loads: list[AddAccountsDescribed] = []
        for (_depth, parent, org, limits), names in sorted(groups.items()):
            names.sort()
            entries = tuple((n, self.new_accounts[n][1]) for n in names)
            loads.append(AddAccountsDescribed(entries=entries, parent=parent, organization=org, limits=dict(limits)))
        # Users of the new accounts join in the same load (one transaction; as `add user` commands each
        # commits on its own, ~0.7 s apiece). A user SLURM does not know yet whose default is an existing
        # account joins by `add user` instead, so the load never has to pick their default.
        in_load: list[LoadUser] = []
        load_owners: set[str] = set()
        for user, accounts in sorted(self.joins.items()):
            new_user = user not in self.defaults
            default = self.new_defaults.get(user) if new_user else None
            if new_user and default not in self.new_accounts:
                continue
            for account in sorted(accounts & self.new_accounts.keys()):
                in_load.append(LoadUser(account, user, default if account == default else None))
                load_owners |= self.join_owners[(user, account)]
        joins = {user: set(accounts) for user, accounts in self.joins.items()}
        for u in in_load:
            joins[u.user].discard(u.account)
        if loads:
            owners = frozenset().union(*self.new_owners.values(), load_owners)
            out.append(PlannedOp(AddAccountTree.of(loads, in_load), owners))
        # Moves after the load: the new parent may be one of its accounts.
        by_parent: dict[str, list[str]] = defaultdict(list)
        for account, parent in self.moves.items():
            by_parent[parent].append(account)
        for parent, accounts in sorted(by_parent.items()):
            accounts.sort()
            out.append(PlannedOp(
                MoveAccounts(names=tuple(accounts), parent=parent),
                frozenset().union(*(self.move_owners[a] for a in accounts)),
            ))
        # Limits: accounts that get the same values share one modify.
        by_limits: dict[tuple[tuple[str, int], ...], list[str]] = defaultdict(list)
        for account, limits in self.set_limits.items():
            by_limits[tuple(sorted(limits.items()))].append(account)
        for limits, accounts in sorted(by_limits.items()):
            accounts.sort()
            out.append(PlannedOp(
                SetLimits(accounts=tuple(accounts), limits=dict(limits)),
                frozenset().union(*(self.limit_owners[a] for a in accounts)),
            ))
        # Users: those joining the same set of accounts (with the same new default) share one add.
        adds: dict[tuple[tuple[str, ...], str | None], list[str]] = defaultdict(list)
        for user, accounts in joins.items():
            if not accounts:
                continue
            new_user = user not in self.defaults
            # a new user the load created already has its default
            default = self.new_defaults.get(user) if new_user and user not in {u.user for u in in_load} else None
            adds[(tuple(sorted(accounts)), default)].append(user)
        for (accounts, default), users in sorted(adds.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
            users.sort()
            owners = frozenset().union(*(self.join_owners[(u, a)] for u in users for a in accounts))
            out.append(PlannedOp(AddUsers(users=tuple(users), accounts=accounts, default_account=default), owners))
        fixes: dict[str, list[str]] = defaultdict(list)
        for user, account in self.new_defaults.items():
            if user in self.defaults:
                fixes[account].append(user)
        for account, users in sorted(fixes.items()):
            users.sort()
            owners = frozenset().union(*(self.default_owners[u] for u in users))
            out.append(PlannedOp(SetDefaultAccount(users=tuple(users), account=account), owners))
        # Removals: move defaults away, drop associations, then accounts, children first.
        # Defaults are moved once every intent is known (a move target may itself be going). sacctmgr
        # refuses a command that removes a user's default association while that user keeps others, and
        # (22.05) even one that mixes such users with users losing their last association: so users who
        # keep accounts leave first, after their default moved, and users who lose their last one leave
        # in a command of their own.
        lost: dict[str, set[str]] = defaultdict(set)
        for (user, account) in self.leaves:
            lost[user].add(account)
        moves: dict[str, list[str]] = defaultdict(list)
        keeps: set[str] = set()
        for user, accounts in lost.items():
            remaining = self.accounts_of(user)
            if not remaining:
                continue
            keeps.add(user)
            current = self.new_defaults.get(user) or self.defaults.get(user) or ""
            if current in accounts or self.removed(current) or current == "":
                target = self._new_default(user, remaining)
                if target is not None:
                    moves[target].append(user)
        for account, users in sorted(moves.items()):
            users.sort()
            owners = frozenset().union(*(self.leaves[(u, a)] for u in users for a in lost[u]))
            out.append(PlannedOp(SetDefaultAccount(users=tuple(users), account=account), owners))
        for keeping in (True, False):
            leaving: dict[str, set[str]] = defaultdict(set)  # account -> users
            for (user, account) in self.leaves:
                if (user in keeps) == keeping:
                    leaving[account].add(user)
            by_users: dict[tuple[str, ...], list[str]] = defaultdict(list)
            for account, users in leaving.items():
                by_users[tuple(sorted(users))].append(account)
            for users, accounts in sorted(by_users.items()):
                accounts.sort()
                owners = frozenset().union(*(self.leaves[(u, a)] for u in users for a in accounts))
                out.append(PlannedOp(RemoveUsers(users=users, accounts=tuple(accounts)), owners))
        by_depth: dict[int, list[str]] = defaultdict(list)
        for account, (depth, _owners) in self.removals.items():
            by_depth[depth].append(account)
        for depth in sorted(by_depth, reverse=True):
            accounts = sorted(by_depth[depth])
            owners = frozenset().union(*(self.removals[a][1] for a in accounts))
            out.append(PlannedOp(RemoveAccounts(names=tuple(accounts)), owners))
        if self.homedirs:
            users = sorted(self.homedirs)
            owners = frozenset().union(*self.homedirs.values())
            out.append(PlannedOp(CreateHomedirs(users=tuple(users), umask=self.config.umask), owners))
        return out


# --------------------------------------------------------------------------------------------------
# Orders


def _sort_key(order: Order) -> tuple[str, str]:
    return (order.created.isoformat() if order.created else "", order.uuid)


def _own_account(work: _Work, resource_uuid: str, backend_id: str) -> tuple[str | None, str | None]:
    """(account, problem): the account that belongs to this resource, if any.

    An account whose description names this resource is ours. The resource's backend_id also counts
    when its account carries no marker at all (an account made by hand or by the original agent), but
    never when the marker names another resource.
    """
    backend_id = (backend_id or "").strip().lower()
    marked = work.marked_for(resource_uuid)
    ignored = work.config.ignore_accounts
    for name in ([backend_id] if backend_id in marked else []) + marked[:1] + [backend_id]:
        if name and name in ignored:
            return None, f"account {name!r} is in SLURM_IGNORE_ACCOUNTS"
    if backend_id and backend_id in marked:
        return backend_id, None
    if marked:
        return marked[0], None
    if backend_id and backend_id in work.accounts and not work.removed(backend_id):
        owner = naming.resource_owner(work.accounts[backend_id].description)
        if owner is None:
            refusal = adoption_refusal(work, backend_id)
            return (None, refusal) if refusal else (backend_id, None)
        return None, f"backend_id {backend_id!r} is the account of another resource ({owner})"
    return None, None


def adoption_refusal(work: _Work, name: str) -> str | None:
    """Why an existing account the agent did not make for this resource may not become its account, or None.

    Adopting hands the account to Waldur: its limits, users and, on Terminate, its removal. So never the
    default account (or root), never an account above other accounts the agent manages (removing it would
    take them along), never an account the operator told the agent to ignore.
    """
    cfg = work.config
    if name in cfg.ignore_accounts:
        return f"account {name!r} is in SLURM_IGNORE_ACCOUNTS: not adopted"
    if name in ("root", cfg.default_account):
        return f"account {name!r} is the default account (SLURM_DEFAULT_ACCOUNT): not adopted"
    made = naming.owner_of(work.accounts[name].description) if name in work.accounts else None
    if made is not None:
        return f"account {name!r} is the agent's {made[0]} account of {made[1]}: not adopted"
    todo, seen = [name], {name}
    while todo:
        for child in sorted(work.children_of(todo.pop())):
            if child in seen:
                continue
            seen.add(child)
            if naming.owner_of(work.accounts[child].description if child in work.accounts else "") is not None:
                return f"account {name!r} is an ancestor of account {child!r}, which the agent manages: not adopted"
            todo.append(child)
    return None


def _parent_account(work: _Work, name: str, parent: str, description: str, organization: str,
                    depth: int, owner: str, kind: str) -> str | None:
    """Make sure a customer or project account exists under ``parent``; refuse one that belongs to
    something else. Returns a note for the order when the account stays somewhere unexpected."""
    acc = work.accounts.get(name)
    if acc is not None and not work.removed(name):
        found = naming.owner_of(acc.description)
        if found is not None and found[0] != kind:
            raise OrderInvalid(f"{kind} account {name!r} already exists as the account of {found[0]} {found[1]}")
        current = work.parent_of(name)
        if current == parent:
            return None
        if kind == "project" and _movable(work, name, parent):
            return _move_project(work, name, parent, owner)
        return f"{kind} account {name} is under {current!r}, not {parent!r}: left there"
    work.add_account(name, parent, description, organization, {}, depth, owner)
    return None


def _move_project(work: _Work, project: str, customer: str, owner: str) -> str:
    """Plan the move of a project account under ``customer``; the note that says so."""
    note = f"project account {project} moves from {work.parent_of(project)} to {customer} (the project changed customer)"
    work.move(project, customer, owner)
    return note


def _movable(work: _Work, project: str, customer: str) -> bool:
    """A project moved to another customer in Waldur: its account follows, when both it and the customer
    account it sits under are ours. Anything else was placed by hand and stays."""
    acc = work.accounts.get(project)
    if acc is None or work.removed(project) or project in work.config.ignore_accounts:
        return False
    found = naming.owner_of(acc.description)
    current = work.parent_of(project)
    old = work.accounts.get(current)
    old_owner = naming.owner_of(old.description) if old is not None else None
    return (current != customer and found is not None and found[0] == "project"
            and old_owner is not None and old_owner[0] == "customer")


def _follow_moved_project(work: _Work, account: str, resource: Resource) -> tuple[str, bool] | None:
    """Membership: move the project account of ``resource``'s allocation under its customer's, if it
    was moved in Waldur (see ``_movable``). Returns (a note, whether a move is planned), or None."""
    cfg = work.config
    if not resource.project_uuid or not resource.customer_uuid:
        return None
    try:
        project = naming.project_account(cfg.naming, resource.project_uuid)
        customer = naming.customer_account(cfg.naming, resource.customer_uuid)
    except NamingError:
        return None
    if work.parent_of(account) != project or not _movable(work, project, customer):
        return None
    try:
        _parent_account(work, customer, cfg.default_account, naming.customer_marker(resource.customer_uuid),
                        customer, 1, resource.uuid, "customer")
    except OrderInvalid as exc:
        return f"project account {project} not moved: {exc}", False
    return _move_project(work, project, customer, resource.uuid), True


def _plan_create(plan: OrderPlan, work: _Work, resource: Resource | None,
                 team: Sequence[TeamMember] | None, offering_users: Mapping[str, OfferingUser],
                 ambiguous: Collection[str] = ()) -> None:
    order, cfg = plan.order, work.config
    slurm_limits, waldur_limits, notes = validate_limits(order.limits, cfg.components)
    plan.notes.extend(notes)
    rules = cfg.naming
    customer = naming.customer_account(rules, order.customer_uuid)
    project = naming.project_account(rules, order.project_uuid)
    resource_uuid = naming.normalise_uuid(order.resource_uuid, "marketplace_resource_uuid")
    backend_id = resource.backend_id if resource is not None else ""
    # The dump leaves `root` out (it always exists), and `root` is a valid default account.
    if cfg.default_account != "root" and cfg.default_account not in work.accounts:
        raise AgentMisconfigured(f"SLURM_DEFAULT_ACCOUNT {cfg.default_account!r} does not exist in SLURM")

    account, problem = _own_account(work, resource_uuid, backend_id)
    wanted = (backend_id or "").strip().lower()
    if account is None and wanted in work.accounts and naming.resource_owner(work.accounts[wanted].description) is None:
        # the resource names an existing account the agent did not make: adopted only when allowed (above)
        raise OrderInvalid(problem or f"account {wanted!r} cannot be adopted")
    if problem is not None and backend_id:
        plan.notes.append(problem + "; a new account is created")
    owner = order.uuid
    for note in (
        _parent_account(work, customer, cfg.default_account, naming.customer_marker(order.customer_uuid),
                        customer, 1, owner, "customer"),
        _parent_account(work, project, customer, naming.project_marker(order.project_uuid), customer, 2, owner,
                        "project"),
    ):
        if note is not None:
            plan.notes.append(note)
    target = create_limits(slurm_limits, cfg.components)
    if account is None:
        name = order.resource_name or (resource.name if resource is not None else "")
        account = naming.allocation_account(rules, resource_uuid, name, _taken(work, resource_uuid))
        validate_account(account)
        work.reserve(account)
        work.add_account(account, project, naming.resource_marker(resource_uuid), customer, target, 3, owner)
    else:
        work.reserve(account)
        current = work.accounts[account]
        if current.parent.lower() != project:
            plan.notes.append(f"account {account} is under {current.parent!r}, not {project!r}: left there")
        diff = limits_differ(current.limits, target)
        if diff:
            work.limit(account, diff, owner)
    plan.account = account

    users, user_notes = resource_users(team, offering_users, ambiguous)
    plan.notes.extend(user_notes)
    users -= cfg.ignore_users
    present = work.users_of(account)
    for user in sorted(users - present):
        work.join(user, account, owner)
    for user in sorted(users & present):
        if work.bad_default(user):
            work.prefer_default(user, account, owner)

    if backend_id.lower() != account:
        plan.actions.append(SetBackendId(resource_uuid, account))
    if waldur_limits and (resource is None or not _same_limits(resource.limits, waldur_limits)):
        plan.actions.append(SetResourceLimits(resource_uuid, waldur_limits))
    if cfg.flavour == "2024":
        # every desired user, not only new ones: a retry after a crash fills in what is missing
        plan.actions.extend(Associate(resource_uuid, user) for user in sorted(users))
    plan.actions.append(CompleteOrder(order))


def _taken(work: _Work, resource_uuid: str) -> Callable[[str], bool]:
    """Names this allocation may not take: existing accounts (its own was adopted before naming),
    backend_ids other resources claim, and names this plan already gave out."""

    def taken(name: str) -> bool:
        if name in work.accounts or name in work.new_accounts or name in work.reserved:
            return True
        claimant = work.claimed.get(name)
        return claimant is not None and claimant != resource_uuid

    return taken


def _same_limits(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    for key, value in wanted.items():
        a, b = parse_amount(current.get(key)), parse_amount(value)
        if a is None or b is None or a != b:
            return False
    return True


def _plan_update(plan: OrderPlan, work: _Work, resource: Resource | None) -> None:
    order, cfg = plan.order, work.config
    slurm_limits, _waldur_limits, notes = validate_limits(order.limits, cfg.components)
    plan.notes.extend(notes)
    resource_uuid = naming.normalise_uuid(order.resource_uuid, "marketplace_resource_uuid")
    backend_id = resource.backend_id if resource is not None else ""
    account, problem = _own_account(work, resource_uuid, backend_id)
    if account is None:
        raise OrderInvalid(problem or f"resource {resource_uuid} has no SLURM account (backend_id {backend_id!r})")
    plan.account = account
    work.reserve(account)
    diff = limits_differ(work.accounts[account].limits, slurm_limits)
    if diff:
        work.limit(account, diff, order.uuid)
    if backend_id.lower() != account:
        plan.actions.append(SetBackendId(resource_uuid, account))
    stale = sorted(set(resource.limits) - set(order.limits)) if resource is not None and order.limits else []
    if stale:
        # The server completes an Update by formatting the resource's current limits with the offering's
        # limit-type components; a key outside them (an older agent wrote usage-type ones) makes it fail with
        # 500 on every try. The order's limits are what the resource holds after completion anyway.
        plan.notes.append(f"resource limits hold {', '.join(map(str, stale))}, which the order does not: "
                          "replaced by the order's limits before completion")
        plan.actions.append(SetResourceLimits(resource_uuid, dict(order.limits)))
    plan.actions.append(CompleteOrder(order))


def _plan_terminate(plan: OrderPlan, work: _Work, resource: Resource | None) -> None:
    order, cfg = plan.order, work.config
    resource_uuid = naming.normalise_uuid(order.resource_uuid, "marketplace_resource_uuid")
    backend_id = resource.backend_id if resource is not None else ""
    account, problem = _own_account(work, resource_uuid, backend_id)
    if problem is not None:
        plan.notes.append(problem + ": not removed")
    owner = order.uuid
    parents: list[str] = []
    kept = sorted(work.users_of(account) & cfg.ignore_users) if account is not None else []
    if account is not None and kept:
        # removing the account would remove their associations: it stays, with only theirs
        plan.account = account
        plan.notes.append(f"account {account} keeps the association(s) of {', '.join(kept)} (SLURM_IGNORE_USERS): "
                          "the account is not removed and its jobs are not cancelled; its other users are removed")
        for user in sorted(work.users_of(account) - cfg.ignore_users):
            work.leave(user, account, owner)
        account = None
    if account is not None:
        plan.account = account
        work.cancel_jobs(account, owner)
        for user in sorted(work.users_of(account)):
            work.leave(user, account, owner)
        work.remove_account(account, 3, owner)
        parent = work.accounts[account].parent.lower()
        parents.append(parent)
        if parent in work.accounts:
            parents.append(work.accounts[parent].parent.lower())
    # The project and customer accounts go when nothing else is under them. This also runs when the
    # allocation is already gone, so a retry after a crash cleans up what the first attempt left.
    for make, uuid in ((naming.project_account, order.project_uuid), (naming.customer_account, order.customer_uuid)):
        try:
            name = make(cfg.naming, uuid)
        except NamingError:
            continue
        if name not in parents:
            parents.append(name)
    _remove_empty_parents(work, parents, owner)
    plan.actions.append(CompleteOrder(order))


def _remove_empty_parents(work: _Work, candidates: list[str], owner: str) -> None:
    """Remove our project/customer accounts that have no child accounts and no users left."""
    changed = True
    while changed:
        changed = False
        for name in candidates:
            acc = work.accounts.get(name)
            if acc is None or work.removed(name) or name in work.config.ignore_accounts:
                continue
            found = naming.owner_of(acc.description)
            if found is None or found[0] not in ("project", "customer"):
                continue  # not made by this agent: never removed
            if work.children_of(name) or work.users_of(name):
                continue
            work.remove_account(name, 2 if found[0] == "project" else 1, owner)
            changed = True


def plan_orders(
    orders: Sequence[Order],
    state: StateLike,
    config: PlanConfig,
    *,
    resources: Mapping[str, Resource] | None = None,
    teams: Mapping[str, Sequence[TeamMember]] | None = None,
    offering_users: Sequence[OfferingUser] = (),
    approved: Iterable[str] = (),
) -> PullPlan:
    """Plan one pull cycle.

    ``resources`` (by UUID) gives backend_ids and names; ``teams`` (by resource UUID) the team of each
    Create order's resource; ``approved`` lists pending orders already approved this cycle (a re-plan
    after the approval step treats them as executing).
    """
    resources = resources or {}
    teams = teams or {}
    approved = set(approved)
    by_user = offering_users_by_user(offering_users)
    ambiguous = ambiguous_usernames(offering_users)
    work = _Work(state, config)
    plan = PullPlan()
    for res in resources.values():
        if res.backend_id:
            work.claimed[res.backend_id.strip().lower()] = res.uuid

    seen_resources: set[str] = set()
    ordered = sorted(orders, key=_sort_key)
    # Creates first: a Terminate in the same project must see the accounts they add.
    ordered.sort(key=lambda o: 0 if o.type == CREATE else 1)
    for order in ordered:
        op_plan = OrderPlan(order=order)
        plan.orders.append(op_plan)
        pending = order.state == PENDING and order.uuid not in approved
        if order.state not in (PENDING, EXECUTING):
            op_plan.skip = f"state {order.state!r} is not processed"
            continue
        if order.type not in SUPPORTED_TYPES:
            message = f"type {order.type!r} is not supported (expected Create, Update or Terminate)"
            if pending:
                op_plan.reject = message
            else:
                op_plan.skip = message
            continue
        if not order.resource_uuid:
            message = "marketplace_resource_uuid is missing"
            if pending:
                op_plan.reject = message
            else:
                op_plan.erred = message
            continue
        if order.resource_uuid in seen_resources:
            op_plan.skip = "another order of this resource is processed first"
            continue
        seen_resources.add(order.resource_uuid)
        op_plan.approve = pending
        resource = resources.get(order.resource_uuid)
        # Plan this order in a transaction: if it turns out invalid, none of its intents stay.
        work.begin()
        try:
            if order.type == CREATE:
                _plan_create(op_plan, work, resource, teams.get(order.resource_uuid), by_user, ambiguous)
            elif order.type == UPDATE:
                _plan_update(op_plan, work, resource)
            else:
                _plan_terminate(op_plan, work, resource)
        except (OrderInvalid, AgentMisconfigured, NamingError, InvalidValue, BadValue) as exc:
            work.rollback()
            op_plan.approve = False
            op_plan.actions.clear()
            op_plan.account = None
            if pending and isinstance(exc, AgentMisconfigured):
                op_plan.skip = f"not approved: {exc}"
                op_plan.failed = True
            elif pending:
                op_plan.reject = str(exc)
            else:
                op_plan.erred = str(exc)
            continue
        work.commit()
        if config.flavour == "2024" and order.type == CREATE and order.state == EXECUTING and not order.allocation_uuid:
            # The server makes the allocation in a task after approval; the slurm-remote calls answer 404
            # until then. Never wait inside the cycle: the SLURM part runs now, Waldur's next cycle.
            op_plan.defer = "the server has not created the SLURM allocation yet"
    plan.ops = work.ops()
    return plan


# --------------------------------------------------------------------------------------------------
# Membership


@dataclass
class MembershipPlan:
    ops: list[PlannedOp] = field(default_factory=list)
    actions: dict[str, list[Associate]] = field(default_factory=dict)  # resource -> Waldur actions (2024)
    added: dict[str, list[str]] = field(default_factory=dict)  # resource -> users
    removed: dict[str, list[str]] = field(default_factory=dict)
    moved: list[str] = field(default_factory=list)  # resources whose project account moves (changed customer)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        lines = [f"membership plan: {len(self.ops)} SLURM op(s)"]
        for res, users in sorted(self.added.items()):
            lines.append(f"  resource {res}: add {', '.join(users)}")
        for res, users in sorted(self.removed.items()):
            lines.append(f"  resource {res}: remove {', '.join(users)}")
        lines.extend(f"  {p.describe()}" for p in self.ops)
        lines.extend(f"note: {n}" for n in self.notes)
        return lines


def plan_membership(
    resources: Iterable[Resource],
    state: StateLike,
    config: PlanConfig,
    *,
    teams: Mapping[str, Sequence[TeamMember]],
    offering_users: Sequence[OfferingUser],
    added_by_agent: Mapping[str, Collection[str]] | None = None,
) -> MembershipPlan:
    """Make each OK resource's associations match its team (offering users with a username).

    Adds missing associations; removes only associations of users the offering knows, or that the agent
    added itself (``added_by_agent``, account -> users: a login whose offering user was renamed), never an
    admin's manual association; repairs default accounts that point at root or nowhere; moves the
    project account of a project that changed customer under the new customer's account.
    """
    work = _Work(state, config)
    plan = MembershipPlan()
    # an ambiguous name is neither added nor removed: whose association it is cannot be told
    ambiguous = ambiguous_usernames(offering_users)
    known = offering_usernames(offering_users) - ambiguous
    by_user = offering_users_by_user(offering_users)
    for resource in sorted(resources, key=lambda r: r.uuid):
        if resource.uuid not in teams:
            continue
        account, problem = _own_account(work, resource.uuid, resource.backend_id)
        if account is None:
            if problem:
                plan.notes.append(f"resource {resource.uuid}: {problem}")
            elif resource.backend_id:
                plan.notes.append(f"resource {resource.uuid}: account {resource.backend_id!r} not found in SLURM")
            continue
        followed = _follow_moved_project(work, account, resource)
        if followed is not None:
            plan.notes.append(f"resource {resource.uuid}: {followed[0]}")
            if followed[1]:
                plan.moved.append(resource.uuid)
        desired, notes = resource_users(teams[resource.uuid], by_user, ambiguous)
        plan.notes.extend(f"resource {resource.uuid}: {n}" for n in notes)
        desired -= config.ignore_users
        current = work.users_of(account)
        to_add = sorted(desired - current)
        ours = (known | set((added_by_agent or {}).get(account, ()))) - config.ignore_users
        to_remove = sorted((current & ours) - desired)
        for user in to_add:
            work.join(user, account, resource.uuid)
        for user in sorted(desired & current):
            if work.bad_default(user):
                work.prefer_default(user, account, resource.uuid)
        for user in to_remove:
            if config.cancel_jobs_of_leaving_members:
                work.cancel_pairs[(account, user)].add(resource.uuid)  # before the association goes
            work.leave(user, account, resource.uuid)
        if to_add:
            plan.added[resource.uuid] = to_add
        if to_remove:
            plan.removed[resource.uuid] = to_remove
        if config.flavour == "2024" and (to_add or to_remove):
            plan.actions[resource.uuid] = [Associate(resource.uuid, u) for u in to_add] + [
                Associate(resource.uuid, u, add=False) for u in to_remove
            ]
    plan.ops = work.ops()
    return plan


__all__ = [
    "Associate",
    "CompleteOrder",
    "MembershipPlan",
    "OrderInvalid",
    "OrderPlan",
    "PlanConfig",
    "PlannedOp",
    "PullPlan",
    "SetBackendId",
    "SetResourceLimits",
    "create_limits",
    "plan_membership",
    "plan_orders",
    "resource_users",
    "validate_limits",
]
