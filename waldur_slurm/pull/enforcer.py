"""The enforcement step of the pull cycle (Waldur 8): read the flags, plan (``enforcement``), apply in one batch.

Runs at the end of every pull cycle. Cost per cycle: one resource listing (HTTP); nothing else while no
resource is flagged and nothing is recorded. Otherwise the cycle's SLURM snapshot (or one ``read_state``
when the cycle changed SLURM or read nothing), the offering users (one listing, only while a restriction is
set or recorded), and ONE ``sacctmgr -i`` process for every change of every account (plus one ``scancel``
in a cycle that pauses accounts, only with SLURM_CANCEL_JOBS_OF_PAUSED).

On the 2024 server nothing runs: its resources show the three flags (always false) but it has no action
that sets them (``set_paused`` & co. answer 404 on the Oct-2024 Mastermind).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from waldur_slurm.daemon.cycle import CycleReport
from waldur_slurm.pull.enforcement import (
    FLAGS,
    RESTRICTED,
    EnforceConfig,
    EnforcementPlan,
    any_flag,
    plan_enforcement,
)
from waldur_slurm.pull.enforcement_store import EnforcementStore
from waldur_slurm.pull.users import offering_usernames
from waldur_slurm.slurm.model import SlurmState
from waldur_slurm.slurm.errors import CommandNotFound, ContainerMissing, SlurmError, SlurmTransientError
from waldur_slurm.waldur.errors import WaldurTransientError
from waldur_slurm.waldur.models import Resource

log = logging.getLogger("waldur_slurm.pull.enforcement")
# Resources whose account may carry a flag: everything but Terminated (as the pull cycle lists them).
RESOURCE_STATES = ("Creating", "OK", "Erred", "Updating", "Terminating")
FIELDS = ("uuid", "state", "backend_id", "paused", "downscaled", "restrict_member_access")


class Enforcer:
    def __init__(self, reconciler: Any, store: EnforcementStore) -> None:
        self.r = reconciler
        self.store = store
        self.cycle_state: SlurmState | None = None  # the pull cycle's snapshot while still current
        self.last_plan: EnforcementPlan | None = None

    @property
    def supported(self) -> bool:
        return self.r.waldur.capabilities.resource_flags

    def run(self, report: CycleReport, dry_run: bool) -> None:
        if not self.supported:
            return
        waldur, slurm = self.r.waldur, self.r.slurm
        try:
            resources: list[Resource] = waldur.list_resources(states=RESOURCE_STATES, fields=FIELDS)
        except WaldurTransientError as exc:
            report.unreachable.append(f"Waldur unreachable: enforcement: resources not listed: {exc}")
            return
        if not any_flag(resources) and not self.store.records:
            report.enforced = dict.fromkeys(FLAGS, 0)
            return
        state = self.cycle_state
        if state is None:
            try:
                state = slurm.read_state()
            except (SlurmTransientError, CommandNotFound, ContainerMissing) as exc:
                report.unreachable.append(f"SLURM unreachable: enforcement: {exc}")
                return
        members: set[str] = set()
        if any(r.restrict_member_access for r in resources) or any(RESTRICTED in f for f in self.store.records.values()):
            try:
                members = offering_usernames(waldur.list_offering_users())
            except WaldurTransientError as exc:
                report.unreachable.append(f"Waldur unreachable: enforcement: offering users not listed: {exc}")
                return
        plan = plan_enforcement(resources, state, self.store.records, EnforceConfig.from_settings(self.r.settings),
                                members=members, added_by_agent=self.r.ledger.accounts)
        self.last_plan = plan
        report.enforced = plan.counts()
        for note in plan.notes:
            log.info("enforcement: %s", note)
        if dry_run:
            if plan.steps or plan.changes:
                self.r.print_plan(plan.describe(), report)
            return
        if not plan.steps:
            self.store.save(plan.records)
            return
        failed: set[tuple[str, str]] = set()
        try:
            results = slurm.apply(plan.ops)
        except SlurmError as exc:
            report.unreachable.append(f"SLURM: enforcement not applied: {exc}")
            return  # nothing ran: the records stay as they were, the next cycle plans the same
        self.r.ledger.update(res.op for res in results if res.ok)
        report.writes += len(plan.steps)
        for step, result in zip(plan.steps, results):
            if not result.ok:
                failed |= step.keys
                report.failed += 1
                log.warning("enforcement: %s failed: %s", step.describe(), result.error)
        self.store.save(plan.records_after(failed))
        if failed:
            report.enforced = _counts(self.store.records)
        for change in plan.changes:
            log.info("enforcement: %s", change)

    def membership_filter(self, resources: Sequence[Resource], report: CycleReport) -> list[Resource]:
        """The membership pass leaves restricted accounts alone: enforcement removed their members on purpose,
        and restores them itself when the restriction is cleared."""
        restricted = {a for a, flags in self.store.records.items() if RESTRICTED in flags}
        kept = []
        for r in resources:
            if (self.supported and r.restrict_member_access) or (r.backend_id or "").strip().lower() in restricted:
                report.notes.append(f"resource {r.uuid}: member access restricted: membership left alone")
                continue
            kept.append(r)
        return kept


def _counts(records: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {flag: sum(1 for f in records.values() if flag in f) for flag in FLAGS}
