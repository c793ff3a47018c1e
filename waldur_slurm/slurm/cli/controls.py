"""The account associations' own job limits and QoS (pure): what enforcement sets and later restores.

Read in the same ``sacctmgr`` process as the rest of ``read_state`` with
``list association WOPLimits where user= format=CONTROLS_FORMAT``: ``user=`` keeps only the account
associations (one row per account, not per user), and WOPLimits shows each association's OWN values, so an
empty field means "none of its own" (inherited), which is exactly what has to be restored.
"""

from __future__ import annotations

from ..model import AccountControls
from .parsing import SlurmParseError, split_rows

CONTROLS_FORMAT = "account,grpjobs,grpsubmitjobs,qos,defaultqos,cluster"


def controls_command(cluster: str | None) -> str:
    where = f" cluster={cluster}" if cluster else ""
    return f"list association WOPLimits where user={where} format={CONTROLS_FORMAT}"


def _count(text: str, what: str) -> int | None:
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise SlurmParseError(f"{what} {text!r} is not an integer") from None
    return value


def parse_controls(text: str, *, cluster: str | None = None) -> dict[str, AccountControls]:
    """account -> its controls; a row SLURM printed oddly leaves that account out (it is then not enforced)."""
    out: dict[str, AccountControls] = {}
    for line in text.splitlines():
        try:
            rows = split_rows(line, 6)
        except SlurmParseError:
            continue  # this read must never fail the whole state: the account is just not enforced on
        if not rows:
            continue
        account, grp_jobs, grp_submit, qos, default_qos, row_cluster = rows[0]
        if not row_cluster or (cluster and row_cluster != cluster) or account == "root":
            continue
        try:
            out[account] = AccountControls(
                grp_jobs=_count(grp_jobs, "GrpJobs"),
                grp_submit_jobs=_count(grp_submit, "GrpSubmitJobs"),
                qos=tuple(q for q in qos.split(",") if q),
                default_qos=default_qos,
            )
        except SlurmParseError:
            continue
    return out
