"""The planners of Create, Update and Terminate orders (pure): one function per order type."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from waldur_slurm.domain import naming
from waldur_slurm.domain.components import parse_amount
from waldur_slurm.domain.naming import NamingError
from waldur_slurm.pull.intents import Work
from waldur_slurm.pull.limits import create_limits, limits_differ, validate_limits
from waldur_slurm.pull.model import (
    CREATE,
    TERMINATE,
    UPDATE,
    AgentMisconfigured,
    Associate,
    CompleteOrder,
    OrderContext,
    OrderInvalid,
    OrderPlan,
    Planner,
    SetBackendId,
    SetResourceLimits,
)
from waldur_slurm.pull.users import resource_users
from waldur_slurm.slurm.ops import (
    validate_account,
)
from waldur_slurm.waldur.models import Order, Resource

# --------------------------------------------------------------------------------------------------
# Orders


def sort_key(order: Order) -> tuple[str, str]:
    return (order.created.isoformat() if order.created else "", order.uuid)


def own_account(work: Work, resource_uuid: str, backend_id: str) -> tuple[str | None, str | None]:
    """(account, problem): the account that belongs to this resource, if any.

    An account whose description names this resource is ours. The resource's backend_id also counts
    when its account carries no marker at all (an account made by hand or by the original agent), but
    never when the marker names another resource.
    """
    backend_id = naming.normalise_backend_id(backend_id)
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


def adoption_refusal(work: Work, name: str) -> str | None:
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


def _parent_account(work: Work, name: str, parent: str, description: str, organization: str,
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


def _move_project(work: Work, project: str, customer: str, owner: str) -> str:
    """Plan the move of a project account under ``customer``; the note that says so."""
    note = f"project account {project} moves from {work.parent_of(project)} to {customer} (the project changed customer)"
    work.move(project, customer, owner)
    return note


def _movable(work: Work, project: str, customer: str) -> bool:
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


def follow_moved_project(work: Work, account: str, resource: Resource) -> tuple[str, bool] | None:
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


def plan_create(plan: OrderPlan, work: Work, ctx: OrderContext) -> None:
    order, cfg, resource = plan.order, work.config, ctx.resource
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

    account, problem = own_account(work, resource_uuid, backend_id)
    wanted = naming.normalise_backend_id(backend_id)
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

    users, user_notes = resource_users(ctx.team, ctx.offering_users, ctx.ambiguous)
    plan.notes.extend(user_notes)
    users -= cfg.ignore_users
    present = work.users_of(account)
    for user in sorted(users - present):
        work.join(user, account, owner)
    for user in sorted(users & present):
        if work.bad_default(user):
            work.prefer_default(user, account, owner)

    if naming.normalise_backend_id(backend_id) != account:
        plan.actions.append(SetBackendId(resource_uuid, account))
    if waldur_limits and (resource is None or not _same_limits(resource.limits, waldur_limits)):
        plan.actions.append(SetResourceLimits(resource_uuid, waldur_limits))
    if cfg.keeps_associations:
        # every desired user, not only new ones: a retry after a crash fills in what is missing
        plan.actions.extend(Associate(resource_uuid, user) for user in sorted(users))
    plan.actions.append(CompleteOrder(order))


def _taken(work: Work, resource_uuid: str) -> Callable[[str], bool]:
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


def plan_update(plan: OrderPlan, work: Work, ctx: OrderContext) -> None:
    order, cfg, resource = plan.order, work.config, ctx.resource
    slurm_limits, _waldur_limits, notes = validate_limits(order.limits, cfg.components)
    plan.notes.extend(notes)
    resource_uuid = naming.normalise_uuid(order.resource_uuid, "marketplace_resource_uuid")
    backend_id = resource.backend_id if resource is not None else ""
    account, problem = own_account(work, resource_uuid, backend_id)
    if account is None:
        raise OrderInvalid(problem or f"resource {resource_uuid} has no SLURM account (backend_id {backend_id!r})")
    plan.account = account
    work.reserve(account)
    diff = limits_differ(work.accounts[account].limits, slurm_limits)
    if diff:
        work.limit(account, diff, order.uuid)
    if naming.normalise_backend_id(backend_id) != account:
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


def plan_terminate(plan: OrderPlan, work: Work, ctx: OrderContext) -> None:
    order, cfg, resource = plan.order, work.config, ctx.resource
    resource_uuid = naming.normalise_uuid(order.resource_uuid, "marketplace_resource_uuid")
    backend_id = resource.backend_id if resource is not None else ""
    account, problem = own_account(work, resource_uuid, backend_id)
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


def _remove_empty_parents(work: Work, candidates: list[str], owner: str) -> None:
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


# The one place that knows which order types the agent handles: a new type is a planner above (it records
# intents in ``work`` and Waldur actions in ``plan``, or raises OrderInvalid naming the field and the value)
# plus one entry here.
PLANNERS: dict[str, Planner] = {CREATE: plan_create, UPDATE: plan_update, TERMINATE: plan_terminate}
