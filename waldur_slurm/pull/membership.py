"""The membership pass: team changes of OK resources -> associations to add and remove (pure)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from waldur_slurm.pull.intents import Work
from waldur_slurm.pull.model import Associate, PlanConfig, PlannedOp, StateLike
from waldur_slurm.pull.orders import follow_moved_project, own_account
from waldur_slurm.pull.users import (
    ambiguous_usernames,
    offering_usernames,
    offering_users_by_user,
    resource_users,
)
from waldur_slurm.waldur.models import OfferingUser, Resource, TeamMember

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
    work = Work(state, config)
    plan = MembershipPlan()
    # an ambiguous name is neither added nor removed: whose association it is cannot be told
    ambiguous = ambiguous_usernames(offering_users)
    known = offering_usernames(offering_users) - ambiguous
    by_user = offering_users_by_user(offering_users)
    for resource in sorted(resources, key=lambda r: r.uuid):
        if resource.uuid not in teams:
            continue
        account, problem = own_account(work, resource.uuid, resource.backend_id)
        if account is None:
            if problem:
                plan.notes.append(f"resource {resource.uuid}: {problem}")
            elif resource.backend_id:
                plan.notes.append(f"resource {resource.uuid}: account {resource.backend_id!r} not found in SLURM")
            continue
        followed = follow_moved_project(work, account, resource)
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
        if config.keeps_associations and (to_add or to_remove):
            plan.actions[resource.uuid] = [Associate(resource.uuid, u) for u in to_add] + [
                Associate(resource.uuid, u, add=False) for u in to_remove
            ]
    plan.ops = work.ops()
    return plan


def team_readers(resources: Sequence[Resource]) -> dict[str, str]:
    """resource uuid -> the resource whose team is read for it. Waldur's team of a resource is its project's
    users with their logins in the resource's offering (one offering here), so one read per project serves
    all of the project's resources; a resource without a project uuid is read on its own."""
    first: dict[str, str] = {}
    return {r.uuid: first.setdefault(r.project_uuid or r.uuid, r.uuid) for r in resources}
