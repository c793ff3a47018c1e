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

from collections.abc import Iterable, Mapping, Sequence

from waldur_slurm.domain import naming
from waldur_slurm.domain.naming import NamingError
from waldur_slurm.domain.values import BadValue
from waldur_slurm.pull.intents import Work
from waldur_slurm.pull.model import (
    Decision,
    CREATE,
    EXECUTING,
    PENDING,
    AgentMisconfigured,
    OrderContext,
    OrderInvalid,
    OrderPlan,
    PlanConfig,
    PullPlan,
    StateLike,
)
from waldur_slurm.pull.orders import PLANNERS, sort_key
from waldur_slurm.pull.users import ambiguous_usernames, offering_users_by_user
from waldur_slurm.slurm.errors import InvalidValue
from waldur_slurm.waldur.models import OfferingUser, Order, Resource, TeamMember


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
    work = Work(state, config)
    plan = PullPlan()
    for res in resources.values():
        if res.backend_id:
            work.claimed[naming.normalise_backend_id(res.backend_id)] = res.uuid

    seen_resources: set[str] = set()
    ordered = sorted(orders, key=sort_key)
    # Creates first: a Terminate in the same project must see the accounts they add.
    ordered.sort(key=lambda o: 0 if o.type == CREATE else 1)
    for order in ordered:
        op_plan = OrderPlan(order=order)
        plan.orders.append(op_plan)
        pending = order.state == PENDING and order.uuid not in approved
        if order.state not in (PENDING, EXECUTING):
            op_plan.decide(Decision.SKIP, f"state {order.state!r} is not processed")
            continue
        planner = PLANNERS.get(order.type)
        if planner is None:
            message = f"type {order.type!r} is not supported (expected {', '.join(PLANNERS)})"
            if pending:
                op_plan.decide(Decision.REJECT, message)
            else:
                op_plan.decide(Decision.SKIP, message)
            continue
        if not order.resource_uuid:
            message = "marketplace_resource_uuid is missing"
            if pending:
                op_plan.decide(Decision.REJECT, message)
            else:
                op_plan.decide(Decision.ERRED, message)
            continue
        if order.resource_uuid in seen_resources:
            op_plan.decide(Decision.SKIP, "another order of this resource is processed first")
            continue
        seen_resources.add(order.resource_uuid)
        op_plan.approve = pending
        resource = resources.get(order.resource_uuid)
        # Plan this order in a transaction: if it turns out invalid, none of its intents stay.
        work.begin()
        try:
            planner(op_plan, work, OrderContext(resource, teams.get(order.resource_uuid), by_user, ambiguous))
        except (OrderInvalid, AgentMisconfigured, NamingError, InvalidValue, BadValue) as exc:
            work.rollback()
            op_plan.approve = False
            op_plan.actions.clear()
            op_plan.account = None
            if pending and isinstance(exc, AgentMisconfigured):
                op_plan.decide(Decision.HOLD, str(exc))
            elif pending:
                op_plan.decide(Decision.REJECT, str(exc))
            else:
                op_plan.decide(Decision.ERRED, str(exc))
            continue
        work.commit()
        if config.allocation_after_approval and order.type == CREATE and order.state == EXECUTING and not order.allocation_uuid:
            # The server makes the allocation in a task after approval; the slurm-remote calls answer 404
            # until then. Never wait inside the cycle: the SLURM part runs now, Waldur's next cycle.
            op_plan.decide(Decision.DEFER, "the server has not created the SLURM allocation yet")
    plan.ops = work.ops()
    return plan
