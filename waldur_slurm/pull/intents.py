"""The planner's working state: the SLURM snapshot plus every intent planned so far, with an undo journal per order."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from waldur_slurm.domain import naming
from waldur_slurm.pull.model import PlanConfig, PlannedOp, StateLike
from waldur_slurm.slurm.ops import (
    AddAccountsDescribed,
    AddAccountTree,
    AddUsers,
    CancelJobs,
    CancelUserJobs,
    CreateHomedirs,
    LoadUser,
    MoveAccounts,
    RemoveAccounts,
    RemoveUsers,
    SetDefaultAccount,
    SetLimits,
)

# --------------------------------------------------------------------------------------------------
# Working state: the snapshot plus what this plan already decided


class Work:
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
