"""The ``--diag`` line of enforcement: what Waldur flags now and what the agent holds enforced (from its records)."""

from __future__ import annotations

from typing import Any

from waldur_slurm.pull.enforcement import DOWNSCALED, FLAGS, PAUSED, RESTRICTED
from waldur_slurm.pull.enforcement_store import EnforcementStore

NAME = "enforcement (paused, downscaled, restrict_member_access)"
NOT_AVAILABLE_2024 = ("not available on this server: 2024 servers show paused, downscaled and restrict_member_access "
                      "on resources (always false) but have no action that sets them; nothing is enforced")


def enforcement_check(settings: Any, waldur: Any) -> tuple[bool, str]:
    """(ok, detail). Not ok only when the flags cannot be read from an 8.x server."""
    if not waldur.capabilities.resource_flags:
        return True, NOT_AVAILABLE_2024
    from waldur_slurm.pull.enforcer import FIELDS, RESOURCE_STATES

    try:
        resources = waldur.list_resources(states=RESOURCE_STATES, fields=FIELDS)
    except Exception as exc:  # noqa: BLE001 - the check reports any failure
        return False, f"cannot list the resources' flags: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}"
    flagged = {flag: sum(1 for r in resources if getattr(r, flag)) for flag in FLAGS}
    records = EnforcementStore.in_dir(settings.state_dir).records
    held = {flag: sum(1 for f in records.values() if flag in f) for flag in FLAGS}
    return True, (
        f"Waldur flags {flagged[PAUSED]} paused, {flagged[DOWNSCALED]} downscaled, {flagged[RESTRICTED]} restricted; "
        f"the agent holds {held[PAUSED]} paused (GrpJobs=0 GrpSubmitJobs=0), {held[DOWNSCALED]} in QoS "
        f"{settings.downscaled_qos}, {held[RESTRICTED]} with members removed"
        + (f" (records in {settings.state_dir})" if settings.state_dir else " (no WALDUR_STATE_DIR: records in memory only)")
        + ("; jobs of paused accounts are cancelled" if settings.cancel_jobs_of_paused else "")
    )
