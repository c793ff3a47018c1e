"""Pull planning types: the plan of one cycle (per-order outcome, Waldur actions, SLURM ops and their owners)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from waldur_slurm.domain.components import Component
from waldur_slurm.domain.naming import NamingRules
from waldur_slurm.waldur.models import OfferingUser, Order, Resource, TeamMember

CREATE, UPDATE, TERMINATE = "Create", "Update", "Terminate"
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
    """What planning needs from the settings, plus what the Waldur server does (``Capabilities``)."""

    naming: NamingRules
    default_account: str
    components: Mapping[str, Component]
    enable_homedir: bool = False
    homedir_umask: int = 0o077
    # see waldur.client.Capabilities
    keeps_associations: bool = False
    allocation_after_approval: bool = False
    cancel_jobs_of_leaving_members: bool = False
    # SLURM_IGNORE_ACCOUNTS / SLURM_IGNORE_USERS: never added, removed or changed, accounts never adopted
    ignore_accounts: frozenset[str] = frozenset()
    ignore_users: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Any, capabilities: Any = None) -> PlanConfig:
        return cls(
            naming=NamingRules.from_settings(settings),
            default_account=settings.default_account,
            components=dict(settings.components),
            enable_homedir=bool(settings.enable_homedir),
            homedir_umask=int(settings.homedir_umask),
            keeps_associations=bool(capabilities and capabilities.keeps_associations),
            allocation_after_approval=bool(capabilities and capabilities.allocation_after_approval),
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


class Decision(Enum):
    """What the planner decided for one order; every decision but WORK carries a reason."""

    WORK = "work"  # approve if pending, run its SLURM ops, then its Waldur actions
    DEFER = "defer"  # the SLURM part runs now, the Waldur actions wait (the 2024 allocation does not exist yet)
    REJECT = "reject"  # a pending order that can never succeed
    ERRED = "erred"  # an executing order that can never succeed
    SKIP = "skip"  # not ours to touch (another state, another order of the resource first)
    HOLD = "hold"  # not approved: the agent's own setup prevents it; counted as failed, the operator must act


@dataclass
class OrderPlan:
    """What happens to one order this cycle: one ``decision`` with its ``reason``, and for work the approval,
    the account, and the Waldur ``actions`` that follow the SLURM ops listing this order as an owner."""

    order: Order
    approve: bool = False
    decision: Decision = Decision.WORK
    reason: str = ""
    account: str | None = None
    actions: list[WaldurAction] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def decide(self, decision: Decision, reason: str) -> None:
        self.decision, self.reason = decision, reason

    @property
    def works(self) -> bool:
        return self.decision in (Decision.WORK, Decision.DEFER)

    @property
    def outcome(self) -> str:
        return self.decision.value

    def describe(self) -> list[str]:
        o = self.order
        head = f"order {o.uuid} ({o.type}, {o.state}, resource {o.resource_uuid})"
        if not self.works:
            verb = {Decision.ERRED: "mark erred", Decision.HOLD: "hold (not approved)"}.get(self.decision, self.decision.value)
            return [f"{head}: {verb}: {self.reason}"]
        lines = [f"{head}: account {self.account or '-'}"]
        if self.approve:
            lines.append("  approve")
        if self.decision is Decision.DEFER:
            lines.append(f"  then wait for the next cycle: {self.reason}")
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


@dataclass(frozen=True)
class OrderContext:
    """What an order's planner may read besides the order and the working state."""

    resource: Resource | None
    team: Sequence[TeamMember] | None = None
    offering_users: Mapping[str, OfferingUser] = field(default_factory=dict)  # by Waldur username
    ambiguous: Collection[str] = ()  # logins that must not reach SLURM (see users.ambiguous_usernames)


# planner(plan, work, context): records intents in the working state and Waldur actions in the plan
Planner = Callable[["OrderPlan", Any, OrderContext], None]
