"""The CLI backend's rendering of neutral ops: sacctmgr command lines, ``sacctmgr load`` files, argv.

Ops (``waldur_slurm.slurm.ops``) say what must change and validate every name at construction; only this
module knows how SLURM's command-line tools spell it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from waldur_slurm.slurm.ops import (
    CLEAR,
    AddAccounts,
    AddQos,
    CancelUserJobs,
    SetAccountQos,
    SetJobLimits,
    AddAccountsDescribed,
    AddAccountTree,
    AddUsers,
    CancelJobs,
    CreateHomedirs,
    LoadUser,
    MoveAccounts,
    Op,
    RemoveAccounts,
    RemoveUsers,
    SetDefaultAccount,
    SetLimits,
    format_limits,
    validate_account,
)

# ops that become lines of one ``sacctmgr -i`` stdin batch; loads and the other tools run as their own process
# Linux refuses a single argv string above 128 KiB (MAX_ARG_STRLEN).
MAX_ACCOUNTS_ARG = 100_000

SACCTMGR_OPS = (
    AddAccounts, RemoveAccounts, MoveAccounts, AddUsers, RemoveUsers, SetLimits, SetDefaultAccount, SetJobLimits, AddQos,
    SetAccountQos,
)


def is_sacctmgr(op: Op) -> bool:
    return isinstance(op, SACCTMGR_OPS)


def _quote(text: str) -> str:
    return f'"{text}"'


def _cluster_opt(cluster: str | None) -> str:
    return f" cluster={cluster}" if cluster else ""


def sacctmgr_lines(op: Op, cluster: str | None) -> list[str]:
    """The sacctmgr command lines of a batched op."""
    c = _cluster_opt(cluster)
    match op:
        case AddAccounts():
            parts = [f"add account {','.join(op.names)}{c} parent={op.parent}"]
            if op.description:
                parts.append(f"description={_quote(op.description)}")
            if op.organization:
                parts.append(f"organization={_quote(op.organization)}")
            limits = {k: v for k, v in op.limits.items() if v is not None}
            if limits:
                parts.append(f"GrpTRESMins={format_limits(limits)}")
            return [" ".join(parts)]
        case RemoveAccounts():
            return [f"remove account where name={','.join(op.names)}{c}"]
        case MoveAccounts():
            return [f"modify account where name={','.join(op.names)}{c} set parent={op.parent}"]
        case AddUsers():
            line = f"add user {','.join(op.users)} account={','.join(op.accounts)}{c}"
            return [line + (f" DefaultAccount={op.default_account}" if op.default_account else "")]
        case RemoveUsers():
            return [f"remove user where name={','.join(op.users)} account={','.join(op.accounts)}{c}"]
        case SetLimits():
            return [f"modify account where name={','.join(op.accounts)}{c} set GrpTRESMins={format_limits(op.limits)}"]
        case SetDefaultAccount():
            return [f"modify user where name={','.join(op.users)}{c} set DefaultAccount={op.account}"]
        case SetJobLimits():
            return [f"modify account where name={','.join(op.accounts)}{c} set {op.settings_text()}"]
        case AddQos():
            return [f"add qos {op.name}"]  # QoS are global: no cluster option
        case SetAccountQos():
            line = f"modify account where name={','.join(op.accounts)}{c} set qos={','.join(op.qos)}"
            if op.default_qos is not None:
                line += f" defaultqos={op.default_qos or CLEAR}"
            return [line]
    raise TypeError(f"{type(op).__name__} is not a sacctmgr batch op")


def _load_user_line(user: LoadUser) -> str:
    line = f"User - '{user.user}'"
    return line + (f":DefaultAccount='{user.default_account}'" if user.default_account else "")


def load_file(op: AddAccountsDescribed, cluster: str) -> str:
    """The flat file ``sacctmgr -i load file=/dev/stdin`` reads: one transaction for every line."""
    lines = [f"Cluster - '{validate_account(cluster, 'cluster')}'"]
    if isinstance(op, AddAccountTree):
        for group in op.groups:
            lines.extend(load_file(group, cluster).splitlines()[1:])  # each group's lines minus its Cluster line
        account = None
        for u in sorted(op.users, key=lambda u: (u.account, u.user)):
            if u.account != account:
                account = u.account
                lines.append(f"Parent - '{account}'")
            lines.append(_load_user_line(u))
        return "\n".join(lines) + "\n"
    lines.append(f"Parent - '{op.parent}'")
    for name, desc in op.entries:
        opts = [f"Account - '{name}'"]
        if desc:
            opts.append(f"Description='{desc}'")
        if op.organization:
            opts.append(f"Organization='{op.organization}'")
        if op.limits:
            opts.append(f"GrpTRESMins={format_limits(op.limits)}")
        lines.append(":".join(opts))
    return "\n".join(lines) + "\n"


def argv(op: CancelJobs | CancelUserJobs | CreateHomedirs) -> list[str]:
    """The argv of an op that runs as its own process."""
    if isinstance(op, CancelJobs):
        return ["scancel", f"--account={','.join(op.accounts)}"]
    if isinstance(op, CancelUserJobs):
        # scancel takes one account and one user per call: one shell runs them all; a failing pair is named
        script = ('while [ $# -gt 1 ]; do scancel --account="$1" --user="$2" || echo "wsa-scancel-failed $1 $2"; '
                  'shift 2; done')
        return ["sh", "-c", script, "sh", *(x for pair in op.pairs for x in pair)]
    # One shell for all users; a failing user is reported by name and the rest go on.
    script = 'm=$1; shift; for u; do mkhomedir_helper "$u" "$m" || echo "wsa-homedir-failed $u $?"; done'
    return ["sh", "-c", script, "sh", op.umask, *op.users]


# ------------------------------------------------------------------ removals and defaults (sacctmgr 22.05)
_LOAD_PARENT = re.compile(r"^Parent - '([^']*)'")
_LOAD_ACCOUNT = re.compile(r"^Account - '([^']*)'")


def load_parents(load_file: str) -> dict[str, str]:
    """account -> parent as a sacctmgr load file places it (pure)."""
    parent = "root"
    placed: dict[str, str] = {}
    for line in load_file.splitlines():
        if m := _LOAD_PARENT.match(line):
            parent = m.group(1)
        elif m := _LOAD_ACCOUNT.match(line):
            placed[m.group(1)] = parent
    return placed


def removal_lines(op: RemoveUsers, defaults: Mapping[str, str | None] | None, where_cluster: str = "") -> list[str]:
    """The ``remove user`` commands of one op (pure).

    slurmdbd 22.05 refuses, all or nothing, a removal whose accounts include a user's DefaultAccount, and
    takes the same removal one account per command. Each command is its own transaction (0.39 s each
    measured: 100 removals took 39.4 s one per command, 1.1 s as one command). So the accounts that are no
    user's default go in one command (split only at the command-line limit) and each default account in
    its own; when the defaults are not known (``None``), one command per account.
    """
    users = ",".join(op.users)
    if defaults is None or any(u in defaults and defaults[u] is None for u in op.users):
        return [f"remove user where name={users} account={a}{where_cluster}" for a in op.accounts]
    own = {defaults.get(u) for u in op.users}
    shared = [a for a in op.accounts if a not in own]
    lines = [f"remove user where name={users} account={','.join(chunk)}{where_cluster}"
             for chunk in chunk_names(shared, MAX_ACCOUNTS_ARG) if chunk]
    lines += [f"remove user where name={users} account={a}{where_cluster}" for a in op.accounts if a in own]
    return lines


def track_defaults(defaults: dict[str, str | None], op: Op) -> None:
    """Update user -> DefaultAccount for an applied op (None: unknown). A user added without an explicit
    default gets one from SLURM only when it had none: which one is not known here."""
    if isinstance(op, SetDefaultAccount):
        for user in op.users:
            defaults[user] = op.account
    elif isinstance(op, AddUsers):
        for user in op.users:
            if op.default_account:
                defaults[user] = op.default_account
            elif not defaults.get(user):
                defaults[user] = None
    elif isinstance(op, RemoveUsers):
        for user in op.users:
            if defaults.get(user) in op.accounts:
                defaults[user] = ""  # SLURM leaves an empty default (module docstring)
    elif isinstance(op, RemoveAccounts):
        for user, account in list(defaults.items()):
            if account in op.names:
                defaults[user] = ""


def chunk_names(names: list[str], limit: int) -> list[list[str]]:
    chunks: list[list[str]] = [[]]
    size = 0
    for name in names:
        if chunks[-1] and size + len(name) + 1 > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(name)
        size += len(name) + 1
    return chunks
