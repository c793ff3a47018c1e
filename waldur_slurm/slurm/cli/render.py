"""The CLI backend's rendering of neutral ops: sacctmgr command lines, ``sacctmgr load`` files, argv.

Ops (``waldur_slurm.slurm.ops``) say what must change and validate every name at construction; only this
module knows how SLURM's command-line tools spell it.
"""

from __future__ import annotations

from waldur_slurm.slurm.ops import (
    AddAccounts,
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
SACCTMGR_OPS = (AddAccounts, RemoveAccounts, MoveAccounts, AddUsers, RemoveUsers, SetLimits, SetDefaultAccount)


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


def argv(op: CancelJobs | CreateHomedirs) -> list[str]:
    """The argv of an op that runs as its own process."""
    if isinstance(op, CancelJobs):
        return ["scancel", f"--account={','.join(op.accounts)}"]
    # One shell for all users; a failing user is reported by name and the rest go on.
    script = 'm=$1; shift; for u; do mkhomedir_helper "$u" "$m" || echo "wsa-homedir-failed $u $?"; done'
    return ["sh", "-c", script, "sh", op.umask, *op.users]
