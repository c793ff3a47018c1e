"""Who should be in an allocation: team members mapped to offering-user logins, hostile logins refused (pure)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from waldur_slurm.pull.model import IGNORED_USERS
from waldur_slurm.slurm.errors import InvalidValue
from waldur_slurm.slurm.ops import (
    validate_user,
)
from waldur_slurm.waldur.models import OfferingUser, TeamMember


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
