"""The pull reconciler: Waldur orders into SLURM accounts, associations and limits.

One cycle (``run_cycle``):

1. list the offering's orders in pending-provider and executing (all pages); nothing to do ends here,
   without touching SLURM;
2. read SLURM once (``read_state``: one process), and from Waldur only what the orders need: the
   offering's resources (backend_ids), the teams of Create orders' resources, the offering users;
3. plan (pure, ``pull_plan``); ``dry_run`` prints the plan and stops;
4. reject what can never succeed, approve the rest, re-plan with the re-read orders;
5. apply every SLURM op in one batch (``SlurmBackend.apply``);
6. run each order's Waldur actions (backend_id, limits, associations, complete).

Failures stay with their order. Transient ones (SLURM or docker unreachable, timeouts, Waldur 5xx, the
2024 server's allocation not created yet) leave the order for the next cycle and mark nothing erred.
Permanent ones mark that order erred (only if it is executing) with a message naming the cause. When a
grouped op fails, the orders it served are retried one by one against a fresh state, so one bad order
cannot fail the others. Nothing ever sleeps inside a cycle.

``run_membership`` is the periodic membership pass over OK resources.
"""

from __future__ import annotations

import logging
import traceback as tb
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from waldur_slurm.daemon.cycle import CycleReport
from waldur_slurm.domain import naming
from waldur_slurm.domain.outcome import Outcomes, Status, retry_later
from waldur_slurm.pull.ledger import Ledger
from waldur_slurm.pull.membership import plan_membership, team_readers
from waldur_slurm.pull.model import (
    Associate,
    Decision,
    CompleteOrder,
    OrderPlan,
    PlanConfig,
    PlannedOp,
    PullPlan,
    SetBackendId,
    SetResourceLimits,
)
from waldur_slurm.pull.plan import plan_orders
from waldur_slurm.pull.stuck import StuckOrders, counts_as_stuck
from waldur_slurm.push.reporter import PushReporter
from waldur_slurm.slurm.backend import SlurmBackend
from waldur_slurm.slurm.model import OpResult, SlurmState
from waldur_slurm.slurm.errors import (
    CommandNotFound,
    ContainerMissing,
    SlurmError,
    SlurmTransientError,
)
from waldur_slurm.slurm.ops import CancelUserJobs, CreateHomedirs
from waldur_slurm.pull.enforcement_store import EnforcementStore
from waldur_slurm.pull.enforcer import Enforcer
from waldur_slurm.waldur.errors import (
    WaldurAuthError,
    WaldurError,
    WaldurTransientError,
)
from waldur_slurm.waldur.models import OfferingUser, Order, Resource, TeamMember

if TYPE_CHECKING:
    from waldur_slurm.config import Settings
    from waldur_slurm.waldur.client import WaldurClient

log = logging.getLogger("waldur_slurm.pull.reconciler")

ORDER_STATES = ("pending-provider", "executing")
# Resources whose backend_id may matter: everything but Terminated.
RESOURCE_STATES = ("Creating", "OK", "Erred", "Updating", "Terminating")


class PullReconciler:
    """``run_cycle`` processes orders; ``run_membership`` keeps associations in line with teams."""

    def __init__(
        self,
        settings: Settings,
        waldur: WaldurClient,
        slurm: SlurmBackend,
        *,
        out: Callable[[str], None] = print,
    ) -> None:
        self.settings = settings
        self.waldur = waldur
        self.slurm = slurm
        self.out = out
        self.stuck = StuckOrders(settings.order_max_failed_cycles)
        state_dir = getattr(settings, "state_dir", None)
        self.ledger = Ledger(Path(state_dir) / "associations.json" if state_dir else None)
        self.enforcer = Enforcer(self, EnforcementStore.in_dir(state_dir))

    # ------------------------------------------------------------------ helpers
    def _config(self) -> PlanConfig:
        return PlanConfig.from_settings(self.settings, self.waldur.capabilities)

    def _counters(self) -> tuple[int, int]:
        return self.slurm.process_count, self.waldur.requests_total

    def _finish(self, report: CycleReport, start: tuple[int, int]) -> CycleReport:
        procs, reqs = self._counters()
        report.slurm_processes = procs - start[0]
        report.http_requests = reqs - start[1]
        return report  # the loop logs the one summary line

    def print_plan(self, lines: Iterable[str], report: CycleReport) -> None:
        """A dry run's plan (orders, membership, enforcement): printed, and kept in the cycle's notes."""
        for line in lines:
            self.out(line)
            report.notes.append(line)

    # ------------------------------------------------------------------ orders
    def run_cycle(self, dry_run: bool = False) -> CycleReport:
        report = CycleReport(kind="pull")
        start = self._counters()
        self.enforcer.cycle_state = None
        try:
            self._cycle(report, dry_run)
            if not report.unreachable:
                self.enforcer.run(report, dry_run)
        finally:
            report.stuck = self.stuck.held_count
            self._finish(report, start)
        return report

    def _cycle(self, report: CycleReport, dry_run: bool) -> None:
        try:
            orders = self.waldur.list_orders(states=ORDER_STATES)
        except WaldurTransientError as exc:
            report.unreachable.append(f"Waldur unreachable: orders not listed: {exc}")
            report.deferred += 1
            return
        report.seen = len(orders)
        self.stuck.keep_only({o.uuid for o in orders})
        orders = [o for o in orders if not self._held(o, report)]
        if not orders:
            return
        try:
            state = self.slurm.read_state()
        except (SlurmTransientError, CommandNotFound, ContainerMissing) as exc:
            report.unreachable.append(f"SLURM unreachable: {exc}")
            report.deferred += len(orders)
            return

        self.enforcer.cycle_state = state  # enforcement reuses it unless this cycle changes SLURM
        outcome = Outcomes()
        try:
            config = self._config()
            resources, teams, offering_users = self._waldur_inputs(orders, state, config, outcome)
        except WaldurTransientError as exc:
            report.unreachable.append(f"Waldur unreachable: {exc}")
            report.deferred += len(orders)
            return
        active = [o for o in orders if not outcome.settled(o.uuid)]
        plan = plan_orders(active, state, config, resources=resources, teams=teams, offering_users=offering_users)
        if dry_run:
            self.print_plan(plan.describe(), report)
            report.skipped = len(orders)
            return

        # Settle what needs no work, and approve the rest, before touching SLURM.
        refreshed: dict[str, Order] = {}
        for p in plan.orders:
            self._pre_work(p, outcome, refreshed)
        if refreshed or any(outcome.status(p.order.uuid) in (Status.FAILED, Status.DEFERRED) for p in plan.orders):
            remaining = [refreshed.get(p.order.uuid, p.order) for p in plan.orders if p.works and not outcome.settled(p.order.uuid)]
            plan = plan_orders(remaining, state, config, resources=resources, teams=teams, offering_users=offering_users)
            for p in plan.orders:  # a re-read order may have moved on
                if not p.works:
                    self._pre_work(p, outcome, refreshed)
        workers = [p for p in plan.orders if p.works and not outcome.settled(p.order.uuid)]
        if plan.ops:
            self.enforcer.cycle_state = None

        # SLURM, in one batch; failures are isolated per order.
        ok = self._apply_slurm(plan, workers, outcome, config, resources, teams, offering_users)
        report.writes += len(plan.ops)
        self._report_final_usage(workers, ok, outcome, resources)

        # Waldur, per order.
        for p in workers:
            uuid = p.order.uuid
            if outcome.settled(uuid) or uuid not in ok:
                continue
            if p.decision is Decision.DEFER:
                outcome.defer(uuid, p.reason)
                continue
            self._waldur_actions(ok[uuid], outcome, report)

        report.done = outcome.count(Status.DONE)
        report.failed = outcome.count(Status.FAILED)
        report.deferred = outcome.count(Status.DEFERRED)
        report.skipped = outcome.count(Status.SKIPPED)
        for uuid, why in outcome.reasons(Status.FAILED).items():
            report.notes.append(f"order {uuid} failed: {why}")
        for uuid, why in outcome.reasons(Status.DEFERRED).items():
            report.notes.append(f"order {uuid} deferred: {why}")

    def _waldur_inputs(
        self, orders: Sequence[Order], state: SlurmState, config: PlanConfig, outcome: Outcomes
    ) -> tuple[dict[str, Resource], dict[str, list[TeamMember]], list[OfferingUser]]:
        """Resources, teams and offering users, fetched only when an order needs them."""
        dry = plan_orders(orders, state, config)
        # Any order that will be looked at needs backend_ids (an Update of an account made by hand, say).
        working = [p for p in dry.orders if p.decision not in (Decision.SKIP, Decision.HOLD)]
        resources: dict[str, Resource] = {}
        if working:
            resources = {r.uuid: r for r in self.waldur.list_resources(states=RESOURCE_STATES)}
        creates = [p.order for p in working if p.order.type == "Create" and p.works]
        teams: dict[str, list[TeamMember]] = {}
        offering_users: list[OfferingUser] = []
        if creates:
            offering_users = self.waldur.list_offering_users()
            read = self.waldur.teams([o.resource_uuid for o in creates if o.resource_uuid], workers=self.settings.read_concurrency)
            for order in creates:
                assert order.resource_uuid is not None
                team = read.get(order.resource_uuid)
                if isinstance(team, list):
                    teams[order.resource_uuid] = team
                    continue
                outcome.defer(order.uuid, f"team not read: {team}")
                if not isinstance(team, WaldurTransientError):
                    log.warning("order %s: cannot read the team of %s: %s", order.uuid, order.resource_uuid, team)
        return resources, teams, offering_users

    def _pre_work(self, p: OrderPlan, outcome: Outcomes, refreshed: dict[str, Order]) -> None:
        """Reject, err or skip what needs no SLURM work; approve pending orders that have work."""
        order = p.order
        uuid = order.uuid
        for note in p.notes:
            log.info("order %s: %s", uuid, note)
        try:
            if p.decision is Decision.REJECT:
                log.warning("order %s (%s): rejected: %s", uuid, order.type, p.reason)
                self.waldur.reject_order(uuid, p.reason)
                outcome.done(uuid)
            elif p.decision is Decision.ERRED:
                self._err(order, p.reason, outcome)
            elif p.decision in (Decision.SKIP, Decision.HOLD):
                if p.decision is Decision.HOLD:
                    outcome.fail(uuid, f"not approved: {p.reason}")
                    log.error("order %s: %s", uuid, f"not approved: {p.reason}")
                else:
                    outcome.skip(uuid)
                    log.info("order %s: skipped: %s", uuid, p.reason)
            elif p.approve:
                refreshed[uuid] = self.waldur.approve_order(uuid)
                log.info("order %s (%s): approved", uuid, order.type)
        except WaldurAuthError:
            raise
        except WaldurTransientError as exc:
            self._order_step_failed(order, "approve" if p.approve else "reject", exc, outcome)
        except WaldurError as exc:
            outcome.fail(uuid, f"Waldur refused: {exc}")
            log.error("order %s: Waldur refused: %s", uuid, exc)

    def _err(self, order: Order, message: str, outcome: Outcomes, cause: BaseException | None = None) -> None:
        """Mark an executing order erred (the facade checks it is executing right now)."""
        text = f"{order.type} failed: {message}"
        trace = "".join(tb.format_exception(cause)) if cause is not None else ""
        log.error("order %s (resource %s): %s", order.uuid, order.resource_uuid, text)
        outcome.fail(order.uuid, message)
        try:
            self.waldur.mark_order_erred(order.uuid, text, trace)
        except WaldurAuthError:
            raise
        except WaldurError as exc:
            log.warning("order %s: could not be marked erred (%s); tried again next cycle", order.uuid, exc)

    def _held(self, order: Order, report: CycleReport) -> bool:
        """An order given up earlier and unchanged since: one line for the operator, no request for it."""
        f = self.stuck.held(order.uuid, order.modified)
        if f is None:
            return False
        log.error(
            "order %s (%s of resource %s) is given up: %s failed in %d pull cycles in a row (%s); it could not be "
            "marked erred and is not tried again until it changes in Waldur or the agent restarts",
            order.uuid, order.type, order.resource_uuid, f.step, f.cycles, f.error,
        )
        return True

    def _order_step_failed(self, order: Order, step: str, exc: WaldurTransientError, outcome: Outcomes) -> None:
        """A transient failure of one order's own step: the order waits for the next cycle, unless the same
        step has now failed with a server error ``order_max_failed_cycles`` times in a row."""
        outcome.defer(order.uuid, f"Waldur: {exc}")
        if not counts_as_stuck(exc):
            log.warning("order %s: %s: %s; next cycle", order.uuid, step, exc)
            return
        f = self.stuck.record(order.uuid, order.modified, step, str(exc))
        if not self.stuck.reached(f):
            log.warning("order %s: %s failed (%s); next cycle (%d of %d before the order is given up)",
                             order.uuid, step, exc, f.cycles, self.stuck.limit)
            return
        message = f"{step} failed in {f.cycles} pull cycles in a row with a server error: {exc}"
        try:
            marked = self.waldur.mark_order_erred(order.uuid, f"{order.type} failed: {message}")
            why = "the order is not executing"
        except WaldurAuthError:
            raise
        except WaldurError as err:
            marked, why = False, str(err)
        if marked:
            # The SLURM side stays as it is: the consumer and the operator see the error in Waldur.
            outcome.fail(order.uuid, message)
            self.stuck.succeeded(order.uuid)
            log.error("order %s (%s of resource %s) given up and marked erred: %s",
                           order.uuid, order.type, order.resource_uuid, message)
            return
        self.stuck.hold(order.uuid)
        log.error("order %s (%s of resource %s) given up: %s; not marked erred (%s)",
                       order.uuid, order.type, order.resource_uuid, message, why)

    # ------------------------------------------------------------------ SLURM
    def _apply_slurm(
        self,
        plan: PullPlan,
        workers: list[OrderPlan],
        outcome: Outcomes,
        config: PlanConfig,
        resources: dict[str, Resource],
        teams: dict[str, list[TeamMember]],
        offering_users: list[OfferingUser],
    ) -> dict[str, OrderPlan]:
        """Run the plan's ops; returns the order plans whose SLURM part succeeded (by order UUID)."""
        ok = {p.order.uuid: p for p in workers}
        if not plan.ops:
            return ok
        failures = self._run_ops(plan.ops)
        if failures is None:
            return ok
        suspects: dict[str, BaseException] = {}
        for planned, error in failures:
            for uuid in planned.owners:
                if uuid not in ok:
                    continue
                if retry_later(error):
                    outcome.defer(uuid, f"SLURM: {error}")
                    ok.pop(uuid)
                else:
                    suspects.setdefault(uuid, error)
        if not suspects:
            return ok
        # Retry each order alone, against a fresh state, before blaming it: a grouped op fails for all its
        # orders when one of them is bad, and a daemon that died mid-batch looks like a plain failure.
        log.warning("pull: SLURM ops of %d order(s) failed; retrying them one by one", len(suspects))
        try:
            state = self.slurm.read_state()
        except SlurmTransientError as exc:
            for uuid in suspects:
                outcome.defer(uuid, f"SLURM: {exc}")
                ok.pop(uuid)
            return ok
        for uuid in sorted(suspects):
            p = ok.pop(uuid)
            single = plan_orders([p.order], state, config, resources=resources, teams=teams, offering_users=offering_users)
            (alone,) = single.orders
            if not alone.works:
                self._pre_work(alone, outcome, {})
                continue
            again = self._run_ops(single.ops)
            if not again:
                ok[uuid] = alone
                state = self.slurm.read_state()
                continue
            _planned, error = again[0]
            if retry_later(error):
                outcome.defer(uuid, f"SLURM: {error}")
            else:
                self._err(p.order, f"SLURM: {error}", outcome, error)
        return ok

    def _run_ops(self, ops: Sequence[PlannedOp]) -> list[tuple[PlannedOp, BaseException]] | None:
        """Apply ops; the failed ones with their error. Homedir failures are only logged."""
        try:
            results: list[OpResult] = self.slurm.apply([p.op for p in ops])
        except SlurmError as exc:
            return [(p, exc) for p in ops]
        self.ledger.update(r.op for r in results if r.ok)
        failures: list[tuple[PlannedOp, BaseException]] = []
        for planned, result in zip(ops, results):
            if result.ok:
                continue
            error: BaseException = result.error or SlurmError(f"{planned.describe()} failed")
            if isinstance(planned.op, CreateHomedirs):
                # A missing Linux user or an unwritable home never undoes the accounts.
                log.warning("homedirs: %s", error)
                continue
            if isinstance(planned.op, CancelUserJobs):
                # the removal that follows meets the jobs still running and waits for a later pass
                log.warning("leaving members' jobs: %s", error)
                continue
            log.warning("SLURM op failed: %s: %s", planned.describe(), error)
            failures.append((planned, error))
        return failures or None

    # ------------------------------------------------------------------ Terminate: final usage
    def _report_final_usage(
        self, workers: Sequence[OrderPlan], ok: dict[str, OrderPlan], outcome: Outcomes, resources: dict[str, Resource]
    ) -> None:
        """Report the last usage of every account a Terminate of this cycle removed, before the order completes.

        Push reports only live resources and the server refuses usage for a Terminated one, so the usage since
        the last push (with the jobs the Terminate cancelled) is reported here, while the order still runs. It
        runs after the SLURM batch: slurmdbd removes an account only once none of its jobs runs any more, so
        the cancelled jobs' records are final by then; sacct keeps them after the account is gone, which also
        lets a retry report them. One sacct for all Terminates of the cycle (the push daemon's own code).

        A transient failure (sacct, Waldur 5xx) defers the order: the next cycle reports and completes it, and
        nothing is lost. A permanent refusal marks the order erred with the reason, so the usage is never
        dropped silently: an operator reports it (or retries the Terminate) and the resource stays visible.
        """
        finals: dict[str, str] = {}
        plans: dict[str, OrderPlan] = {}
        for p in workers:
            order = p.order
            if order.type != "Terminate" or order.uuid not in ok or outcome.settled(order.uuid) or not order.resource_uuid:
                continue
            resource = resources.get(order.resource_uuid)
            account = p.account or (naming.account_of(resource.backend_id) if resource is not None else None)
            if account:
                finals[order.resource_uuid] = account
                plans[order.resource_uuid] = p
        if not finals:
            return
        reporter = PushReporter(self.settings, self.waldur, self.slurm, echo=self.out)
        try:
            results = reporter.report_final(finals)
        except WaldurAuthError:
            raise
        except (SlurmError, WaldurError) as exc:
            for p in plans.values():
                outcome.defer(p.order.uuid, f"final usage not reported yet: {exc}")
            log.warning("pull: final usage of %d terminated account(s) not reported (%s); next cycle", len(plans), exc)
            return
        for resource_uuid, error in results.items():
            order = plans[resource_uuid].order
            if error is None:
                continue
            if retry_later(error):
                outcome.defer(order.uuid, f"final usage not reported yet: {error}")
                log.warning("order %s: final usage not reported (%s); next cycle", order.uuid, error)
            else:
                self._err(order, f"final usage of {finals[resource_uuid]} not reported: {error}", outcome, error)

    # ------------------------------------------------------------------ Waldur
    def _waldur_actions(self, p: OrderPlan, outcome: Outcomes, report: CycleReport) -> None:
        order = p.order
        step = "Waldur actions"
        try:
            for action in p.actions:
                step = type(action).__name__
                if isinstance(action, SetBackendId):
                    self.waldur.set_backend_id(action.resource_uuid, action.backend_id)
                elif isinstance(action, SetResourceLimits):
                    self.waldur.set_limits(action.resource_uuid, action.limits)
                elif isinstance(action, Associate):
                    if action.add:
                        self.waldur.create_association(action.resource_uuid, action.username)
                    else:
                        self.waldur.delete_association(action.resource_uuid, action.username)
                elif isinstance(action, CompleteOrder):
                    self.waldur.complete_order(order)
                report.writes += 1
        except WaldurAuthError:
            raise
        except WaldurTransientError as exc:
            self._order_step_failed(order, step, exc, outcome)
            return
        except WaldurError as exc:
            self._err(order, f"Waldur refused: {exc}", outcome, exc)
            return
        self.stuck.succeeded(order.uuid)
        outcome.done(order.uuid)
        log.info("order %s (%s) done: account %s", order.uuid, order.type, p.account or "-")

    # ------------------------------------------------------------------ membership
    def run_membership(self, dry_run: bool = False) -> CycleReport:
        report = CycleReport(kind="membership")
        start = self._counters()
        try:
            self._membership(report, dry_run)
        finally:
            self._finish(report, start)
        return report

    def _membership(self, report: CycleReport, dry_run: bool) -> None:
        try:
            resources = [r for r in self.waldur.list_resources(states=["OK"])]
        except WaldurTransientError as exc:
            report.unreachable.append(f"Waldur unreachable: resources not listed: {exc}")
            report.deferred += 1
            return
        report.seen = len(resources)
        if not resources:
            return
        config = self._config()
        try:
            state = self.slurm.read_state()
        except (SlurmTransientError, CommandNotFound, ContainerMissing) as exc:
            report.unreachable.append(f"SLURM unreachable: {exc}")
            report.deferred = len(resources)
            return
        owned = {naming.resource_owner(a.description) for a in state.accounts.values()}
        names = {n.lower() for n in state.accounts}
        managed = [r for r in resources if r.uuid in owned or (r.backend_id and r.backend_id.lower() in names)]
        managed = self.enforcer.membership_filter(managed, report)
        teams: dict[str, list[TeamMember]] = {}
        try:
            offering_users = self.waldur.list_offering_users() if managed else []
        except WaldurTransientError as exc:
            report.unreachable.append(f"Waldur unreachable: offering users not listed: {exc}")
            report.deferred = len(resources)
            return
        readers = team_readers(managed)
        read = self.waldur.teams(sorted(set(readers.values())), workers=self.settings.read_concurrency)
        for uuid, reader in readers.items():
            team = read[reader]
            if isinstance(team, list):
                teams[uuid] = team
            else:
                report.deferred += 1
                log.warning("membership: team of %s not read (%s)", uuid, team)
        plan = plan_membership(managed, state, config, teams=teams, offering_users=offering_users,
                               added_by_agent=self.ledger.accounts)
        for note in plan.notes:
            log.info("membership: %s", note)
        if dry_run:
            self.print_plan(plan.describe(), report)
            return
        failed: set[str] = set()
        deferred: set[str] = set()
        if plan.ops:
            failures = self._run_ops(plan.ops)
            report.writes += len(plan.ops)
            for planned, error in failures or []:
                (deferred if retry_later(error) else failed).update(planned.owners)
        failed -= deferred
        report.deferred += len(deferred)
        for uuid, actions in plan.actions.items():
            if uuid in failed or uuid in deferred:
                continue
            try:
                for action in actions:
                    if action.add:
                        self.waldur.create_association(action.resource_uuid, action.username)
                    else:
                        self.waldur.delete_association(action.resource_uuid, action.username)
                    report.writes += 1
            except WaldurAuthError:
                raise
            except WaldurError as exc:
                log.warning("membership: associations of %s not recorded in Waldur (%s)", uuid, exc)
        changed = set(plan.added) | set(plan.removed) | set(plan.moved)
        report.done = len(changed - failed - deferred)
        report.failed = len(failed & changed)
        for uuid, users in plan.added.items():
            log.info("membership: resource %s: added %s", uuid, ", ".join(users))
        for uuid, users in plan.removed.items():
            log.info("membership: resource %s: removed %s", uuid, ", ".join(users))


__all__ = ["PullReconciler", "ORDER_STATES"]
