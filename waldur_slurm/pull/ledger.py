"""The associations this agent added, kept in a small file, so that a login it added can be removed later.

The membership pass removes only users the offering knows, so that an administrator's manual association
survives. But a login that is no longer any offering user's username (the provider changed it from `carol`
to `dave`) is unknown too, and would keep its access for good. The ledger remembers which (account, user)
associations the agent itself added; those are the agent's to remove whatever Waldur says now.

It is written after each SLURM batch (atomically: a temporary file, then rename). Losing it is safe: the agent
then falls back to removing only users the offering knows. ``path=None`` keeps it in memory only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from waldur_slurm.slurm.ops import AddAccountTree, AddUsers, RemoveAccounts, RemoveUsers

log = logging.getLogger("waldur_slurm.pull.ledger")


def after_ops(ledger: Mapping[str, frozenset[str]], succeeded: Iterable[object]) -> dict[str, frozenset[str]]:
    """The ledger once ``succeeded`` ops (in order) have been applied to SLURM (pure)."""
    out = {account: set(users) for account, users in ledger.items()}
    for op in succeeded:
        if isinstance(op, AddUsers):
            for account in op.accounts:
                out.setdefault(account, set()).update(op.users)
        elif isinstance(op, AddAccountTree):
            for u in op.users:
                out.setdefault(u.account, set()).add(u.user)
        elif isinstance(op, RemoveUsers):
            for account in op.accounts:
                out.get(account, set()).difference_update(op.users)
        elif isinstance(op, RemoveAccounts):
            for account in op.names:
                out.pop(account, None)
    return {account: frozenset(users) for account, users in out.items() if users}


class Ledger:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.accounts: dict[str, frozenset[str]] = self._load()

    def _load(self) -> dict[str, frozenset[str]]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text())
            return {str(a): frozenset(str(u) for u in users) for a, users in raw["accounts"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ledger %s unreadable (%s): only users the offering knows are removed", self.path, exc)
            return {}

    def update(self, succeeded: Iterable[object]) -> None:
        new = after_ops(self.accounts, succeeded)
        if new == self.accounts:
            return
        self.accounts = new
        if self.path is None:
            return
        try:
            write_json_atomic(self.path, {"accounts": {a: sorted(u) for a, u in sorted(new.items())}})
        except OSError as exc:
            log.warning("ledger %s not written (%s); kept in memory", self.path, exc)


def write_json_atomic(path: Path, data: object) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename: a crash leaves the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ledger-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
