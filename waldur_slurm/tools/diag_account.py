"""``--diag-account NAME_OR_RESOURCE_UUID``: one allocation as Waldur and SLURM see it, every difference marked,
and the ``sacctmgr`` commands that would make SLURM match Waldur (printed, never run).

What "should be" comes from the daemons' own planners, not from a second copy of their rules: the users from
the membership planner (``pull_plan.plan_membership``: team members with an offering username, minus ambiguous
and unusable names; also a moved project's account and bad default accounts), the GrpTRESMins from the order
planner's conversion (``pull_plan.validate_limits`` + ``create_limits``), this month's usage from the push
reporter's ``sacct`` read and conversion, and the commands from the ops' own rendering
(``SlurmClient.command_lines``, what ``apply`` would feed to ``sacctmgr -i``).

Reads: Waldur (the offering's resources, the resource, its team, the offering users, this month's usage records;
on the 2024 server the allocation's associations) and SLURM (one ``sacctmgr`` dump, one ``sacct``).
Pure planning (``resolve``, ``compare``, ``render_text``) is kept apart from the reads (``collect``).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from waldur_slurm.domain import naming
from waldur_slurm.pull.limits import create_limits, validate_limits
from waldur_slurm.pull.membership import plan_membership
from waldur_slurm.pull.model import OrderInvalid, PlanConfig
from waldur_slurm.slurm.cli import render as cli_render
from waldur_slurm.slurm.ops import MoveAccounts, Op, SetDefaultAccount, SetLimits
from waldur_slurm.push.usage import ResourceUsage, to_waldur_usage

if TYPE_CHECKING:
    from waldur_slurm.domain.components import Component
    from waldur_slurm.config import Settings
    from waldur_slurm.slurm.cli.client import SlurmClient
    from waldur_slurm.slurm.model import SlurmState
    from waldur_slurm.push.usage import BillingWindow
    from waldur_slurm.waldur.client import WaldurClient
    from waldur_slurm.waldur.models import ComponentUsage, OfferingUser, Resource, TeamMember, UserUsage

OPTION = "--diag-account"
_UUID_RE = re.compile(r"^[0-9a-f]{32}$")
SCHEMA_VERSION = 1


class UnknownAllocation(LookupError):
    """No (or no single) resource of the offering is named by the argument; the message says which."""


def resolve(target: str, resources: Sequence[Resource]) -> Resource:
    """The offering's resource named by ``target``: a resource UUID (with or without dashes) or its SLURM account
    (``backend_id``, case-insensitive)."""
    text = target.strip().lower()
    as_uuid = text.replace("-", "")
    if _UUID_RE.match(as_uuid):
        for res in resources:
            if res.uuid == as_uuid:
                return res
        raise UnknownAllocation(f"{OPTION} {target!r}: no resource with this UUID in the offering")
    matches = [r for r in resources if r.backend_id.strip().lower() == text and text]
    if not matches:
        raise UnknownAllocation(f"{OPTION} {target!r}: no resource of the offering has this SLURM account as its backend_id")
    if len(matches) > 1:
        raise UnknownAllocation(f"{OPTION} {target!r}: the backend_id of {len(matches)} resources "
                                f"({', '.join(sorted(r.uuid for r in matches))}); name one by its UUID")
    return matches[0]


# --------------------------------------------------------------------------------------------------
# The comparison (pure)


@dataclass
class Difference:
    what: str  # "account", "tree", "users", "limits", "associations", "usage"
    detail: str
    waldur: Any = None
    slurm: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"what": self.what, "detail": self.detail, "waldur": self.waldur, "slurm": self.slurm}


@dataclass
class WaldurSide:
    resource: Resource
    team: Sequence[TeamMember]
    offering_users: Sequence[OfferingUser]
    usages: Sequence[ComponentUsage]  # this month's records of the resource (one per plan period)
    user_usages: Sequence[UserUsage]
    associations: frozenset[str] | None  # 2024 only


@dataclass
class SlurmSide:
    state: SlurmState
    usage: ResourceUsage | None  # this month, in Waldur units; None when the account has no jobs read


@dataclass
class AccountDiag:
    resource: Resource
    account: str
    period: str
    flavour: str
    waldur: dict[str, Any] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        r = self.resource
        return {
            "schema": SCHEMA_VERSION,
            "resource": {"uuid": r.uuid, "name": r.name, "state": r.state, "backend_id": r.backend_id,
                         "project_uuid": r.project_uuid, "customer_uuid": r.customer_uuid},
            "account": self.account,
            "period": self.period,
            "server_flavour": self.flavour,
            "waldur": self.waldur,
            "slurm": self.slurm,
            "differences": [d.as_dict() for d in self.differences],
            "commands": list(self.commands),
            "notes": list(self.notes),
            "match": not self.differences,
        }


def _amounts(values: Mapping[str, Decimal]) -> dict[str, str]:
    return {k: f"{v:.2f}" for k, v in sorted(values.items())}


def _month_totals(usages: Iterable[ComponentUsage], user_usages: Iterable[UserUsage]) -> ResourceUsage:
    """What Waldur bills for the month: the sum over its records (one per plan period after a plan switch)."""
    totals: dict[str, Decimal] = {}
    types: dict[str, str] = {}
    for cu in usages:
        totals[cu.type] = totals.get(cu.type, Decimal(0)) + cu.usage
        types[cu.uuid] = cu.type
    per_user: dict[str, dict[str, Decimal]] = {}
    for uu in user_usages:
        ctype = types.get(uu.component_usage_uuid or "") or uu.component_type
        if ctype and uu.username:
            users = per_user.setdefault(ctype, {})
            users[uu.username] = users.get(uu.username, Decimal(0)) + uu.usage
    return ResourceUsage(totals=totals, per_user=per_user)


def _tree(state: SlurmState, account: str) -> list[str]:
    """root ... account, following parents (stops at a loop or a missing parent)."""
    path = [account]
    seen = {account}
    current = state.accounts.get(account)
    while current is not None and current.parent and current.parent not in seen:
        path.append(current.parent)
        seen.add(current.parent)
        current = state.accounts.get(current.parent)
    return list(reversed(path))


def compare(
    waldur: WaldurSide,
    slurm: SlurmSide,
    config: PlanConfig,
    usage_components: Mapping[str, Component],
    window: BillingWindow,
    render: Callable[[Op], list[str]],
) -> AccountDiag:
    """Both views of one allocation, every difference, and the sacctmgr commands that would make SLURM match."""
    res = waldur.resource
    account = naming.account_of(res.backend_id) or ""
    diag = AccountDiag(res, account, f"{window.period:%Y-%m}", "2024" if config.keeps_associations else "8")

    # Waldur's view
    expected_limits: dict[str, int] | None
    try:
        slurm_limits, _kept, limit_notes = validate_limits(res.limits, config.components)
        expected_limits = create_limits(slurm_limits, config.components)
        diag.notes.extend(limit_notes)
    except OrderInvalid as exc:
        expected_limits = None
        diag.notes.append(f"Waldur's limits cannot be converted: {exc}")
    held = _month_totals(waldur.usages, waldur.user_usages)
    plan = plan_membership([res], slurm.state, config, teams={res.uuid: list(waldur.team)},
                           offering_users=list(waldur.offering_users)) if account else None
    diag.waldur = {
        "state": res.state,
        "limits": {k: (str(v) if isinstance(v, Decimal) else v) for k, v in sorted(res.limits.items())},
        "grp_tres_mins": expected_limits,
        "team": sorted(m.username for m in waldur.team),
        "expected_users": None,
        "tree": None,
        "associations": sorted(waldur.associations) if waldur.associations is not None else None,
        "usage": {"totals": _amounts(held.totals),
                  "per_user": {k: _amounts(v) for k, v in sorted(held.per_user.items())}},
    }

    slurm_account = slurm.state.accounts.get(account) if account else None
    if not account:
        diag.differences.append(Difference("account", f"backend_id {res.backend_id!r} is not a SLURM account name",
                                           res.backend_id, None))
    elif slurm_account is None:
        diag.differences.append(Difference("account", f"SLURM has no account {account}; the pull daemon creates it "
                                           "only for a Create order", account, None))
    # SLURM's view
    slurm_usage = slurm.usage or to_waldur_usage(None, usage_components)
    diag.slurm = {
        "exists": slurm_account is not None,
        "tree": _tree(slurm.state, account) if slurm_account is not None else None,
        "users": sorted(slurm_account.users) if slurm_account is not None else None,
        "grp_tres_mins": dict(sorted(slurm_account.limits.items())) if slurm_account is not None else None,
        "usage": {"totals": _amounts(slurm_usage.totals),
                  "per_user": {k: _amounts(v) for k, v in sorted(slurm_usage.per_user.items()) if v}},
    }
    if slurm_account is not None and plan is not None:
        desired = (set(slurm_account.users) | set(plan.added.get(res.uuid, []))) - set(plan.removed.get(res.uuid, []))
        diag.waldur["expected_users"] = sorted(desired)
        diag.notes.extend(n.removeprefix(f"resource {res.uuid}: ") for n in plan.notes)
        if plan.added.get(res.uuid) or plan.removed.get(res.uuid):
            diag.differences.append(Difference(
                "users", f"missing in SLURM: {', '.join(plan.added.get(res.uuid, [])) or '-'}; "
                         f"not in the team: {', '.join(plan.removed.get(res.uuid, [])) or '-'}",
                sorted(desired), sorted(slurm_account.users)))
        if config.naming and res.project_uuid and res.customer_uuid:
            try:
                wanted_tree = [config.default_account, naming.customer_account(config.naming, res.customer_uuid),
                               naming.project_account(config.naming, res.project_uuid), account]
            except naming.NamingError:
                wanted_tree = []
            diag.waldur["tree"] = wanted_tree or None
            tree = diag.slurm["tree"] or []
            if wanted_tree and tree[-len(wanted_tree):] != wanted_tree:
                diag.differences.append(Difference("tree", f"expected under {' > '.join(wanted_tree[:-1])}",
                                                   wanted_tree, tree))
        ops = [p.op for p in plan.ops]
        for op in ops:
            # every command printed has its difference marked
            if isinstance(op, SetDefaultAccount):
                diag.differences.append(Difference(
                    "default_account", f"user(s) {', '.join(op.users)}: no usable DefaultAccount (none, root, "
                    f"SLURM_DEFAULT_ACCOUNT or an account they are not in); the membership pass sets {op.account}",
                    op.account, [slurm.state.default_account.get(u, "") for u in op.users]))
            elif isinstance(op, MoveAccounts) and not any(d.what == "tree" for d in diag.differences):
                diag.differences.append(Difference("tree", op.describe(), op.parent, list(op.names)))
        if expected_limits is not None and not slurm_account.limits_problem:
            wrong = {k: v for k, v in expected_limits.items() if slurm_account.limits.get(k) != v}
            if wrong:
                diag.differences.append(Difference(
                    "limits", "GrpTRESMins differ: " + ", ".join(
                        f"{k} Waldur {v} / SLURM {slurm_account.limits.get(k, '-')}" for k, v in sorted(wrong.items())),
                    expected_limits, dict(slurm_account.limits)))
                ops.append(SetLimits((account,), wrong))
        elif slurm_account.limits_problem:
            diag.notes.append(f"SLURM's GrpTRESMins cannot be read exactly: {slurm_account.limits_problem}")
        for op in ops:
            if cli_render.is_sacctmgr(op):
                diag.commands.extend(f"sacctmgr -i {line}" for line in render(op))
            else:
                diag.notes.append(f"also (not a sacctmgr command): {op.describe()}")
        if waldur.associations is not None and set(waldur.associations) != set(slurm_account.users):
            diag.differences.append(Difference(
                "associations", "Waldur's associations differ from SLURM's users (the push daemon reports them)",
                sorted(waldur.associations), sorted(slurm_account.users)))
    for key in sorted(usage_components):
        w, s = held.totals.get(key, Decimal(0)), slurm_usage.totals.get(key, Decimal(0))
        if w != s:
            diag.differences.append(Difference(
                "usage", f"{key} this month: Waldur {w:.2f} / SLURM {s:.2f} (the push daemon reports SLURM's value; "
                         "no sacctmgr command changes usage)", f"{w:.2f}", f"{s:.2f}"))
        w_users = held.per_user.get(key, {})
        s_users = {u: v for u, v in slurm_usage.per_user.get(key, {}).items() if v}
        for user in sorted(set(w_users) | set(s_users)):
            wu, su = w_users.get(user, Decimal(0)), s_users.get(user, Decimal(0))
            if wu != su:
                diag.differences.append(Difference("usage", f"{key} {user} this month: Waldur {wu:.2f} / SLURM {su:.2f}",
                                                   f"{wu:.2f}", f"{su:.2f}"))
    if not config.keeps_associations:
        diag.notes.append("associations: Waldur 8.x keeps none (the per-user usage records carry the users)")
    return diag


def render_text(diag: AccountDiag) -> list[str]:
    """The human form: both views side by side, ✘ on every difference, then the commands."""
    r = diag.resource
    w, s = diag.waldur, diag.slurm
    marks = {d.what for d in diag.differences}

    def row(label: str, left: object, right: object, what: str) -> str:
        mark = "✘" if what in marks else "✔"
        return f"{mark} {label:<14} Waldur: {left}\n  {'':<14} SLURM:  {right}"

    def fmt(value: object) -> str:
        if value is None:
            return "—"
        if isinstance(value, dict):
            return ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
        if isinstance(value, list):
            return ", ".join(map(str, value)) or "none"
        return str(value)

    lines = [f"allocation {diag.account or r.backend_id!r}: resource {r.uuid} {r.name!r} ({r.state}), "
             f"server {diag.flavour}, usage month {diag.period}"]
    lines.append(row("account", diag.account or r.backend_id, "exists" if s.get("exists") else "missing", "account"))
    lines.append(row("tree", "... > " + " > ".join(w.get("tree") or ["default", "customer", "project", "allocation"]),
                     " > ".join(s.get("tree") or []) or "—", "tree"))
    lines.append(row("users", fmt(w.get("expected_users")) + f"  (team: {fmt(w.get('team'))})", fmt(s.get("users")), "users"))
    if w.get("associations") is not None:
        lines.append(row("associations", fmt(w.get("associations")), fmt(s.get("users")), "associations"))
    lines.append(row("GrpTRESMins", fmt(w.get("grp_tres_mins")) + f"  (limits: {fmt(w.get('limits'))})",
                     fmt(s.get("grp_tres_mins")), "limits"))
    lines.append(row("usage", fmt(w["usage"]["totals"]), fmt(s["usage"]["totals"]), "usage"))
    for d in diag.differences:
        lines.append(f"  ✘ {d.what}: {d.detail}")
    if diag.commands:
        lines.append("sacctmgr commands that would make SLURM match Waldur (not run):")
        lines.extend(f"  {c}" for c in diag.commands)
    else:
        lines.append("no sacctmgr command needed")
    lines.extend(f"note: {n}" for n in diag.notes)
    return lines


# --------------------------------------------------------------------------------------------------
# I/O


def _associations(waldur: WaldurClient, res: Resource) -> frozenset[str] | None:
    """The usernames Waldur associates with the resource's allocation (2024); None where the server keeps none."""
    if not waldur.capabilities.keeps_associations or not res.allocation_uuid:
        return None
    found = waldur.list_offering_associations([res.allocation_uuid]).get(res.allocation_uuid, frozenset())
    if isinstance(found, Exception):
        raise found
    return found


def diagnose(settings: Settings, waldur: WaldurClient, slurm: SlurmClient, target: str, now: datetime) -> AccountDiag:
    """Read both sides and compare them. Raises UnknownAllocation, WaldurError or SlurmError; writes nothing."""
    from waldur_slurm.daemon.cycle import CycleReport
    from waldur_slurm.push.reporter import PushReporter
    from waldur_slurm.push.usage import billing_window

    res = waldur.get_resource(resolve(target, waldur.list_resources(fields=("uuid", "backend_id"))).uuid)
    window = billing_window(now, settings.billing_timezone)
    reporter = PushReporter(settings, waldur, slurm, now=lambda: now, echo=lambda line: None)
    usage_components, _ = reporter._components(waldur.get_offering(), CycleReport(kind="diag-account"))
    side = WaldurSide(
        resource=res,
        team=waldur.team(res.uuid),
        offering_users=waldur.list_offering_users(),
        usages=waldur.list_component_usages(window.period, resource_uuid=res.uuid),
        user_usages=waldur.list_user_usages(window.period, resource_uuid=res.uuid),
        associations=_associations(waldur, res),
    )
    account = naming.account_of(res.backend_id)
    state = slurm.read_state()
    usage = None
    if account and account in state.accounts:
        agg = reporter._read_usage([account], window)
        usage = to_waldur_usage(agg.accounts.get(account), usage_components)
    config = PlanConfig.from_settings(settings, waldur.capabilities)
    return compare(side, SlurmSide(state, usage), config, usage_components, window, slurm.command_lines)


def run(settings: Settings, target: str, *, as_json: bool = False, echo: Callable[[str], None] = print,
        err: Callable[[str], None] | None = None, now: Callable[[], datetime] | None = None) -> int:
    """0: Waldur and SLURM agree; 1: they differ (every difference printed); 2: no such allocation;
    3: the token was refused; 4: Waldur or SLURM unreachable."""
    from waldur_slurm.daemon.wiring import make_slurm_client, make_waldur_client
    from waldur_slurm.domain.outcome import tool_failure
    from waldur_slurm.slurm.errors import SlurmError
    from waldur_slurm.waldur.errors import WaldurError

    def fail(line: str) -> None:
        (err or (lambda text: print(text, file=sys.stderr)))(line)

    waldur = make_waldur_client(settings)
    slurm = make_slurm_client(settings)
    try:
        diag = diagnose(settings, waldur, slurm, target, (now or (lambda: datetime.now(timezone.utc)))())
    except UnknownAllocation as exc:
        fail(f"waldur-slurm-agent: {exc}")
        return 2
    except (WaldurError, SlurmError) as exc:
        code, words = tool_failure(exc)
        fail(f"waldur-slurm-agent: {words}")
        return code
    finally:
        waldur.close()
    if as_json:
        echo(json.dumps(diag.as_dict(), indent=2, sort_keys=True))
    else:
        for line in render_text(diag):
            echo(line)
    return 0 if not diag.differences else 1
