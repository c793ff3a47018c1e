"""The new variables are validated (one line naming the variable and value) and enforcement shows in /metrics."""

from __future__ import annotations

from tests.unit.test_config import env, error_of
from waldur_slurm.config import load_settings
from waldur_slurm.daemon.cycle import CycleReport
from waldur_slurm.tools.observability import Metrics


def test_defaults() -> None:
    s = load_settings(env())
    assert (s.ignore_accounts, s.ignore_users) == (frozenset(), frozenset())
    assert (s.downscaled_qos, s.cancel_jobs_of_paused, s.cancel_jobs_of_leaving_members) == ("waldur-downscaled", False, False)


def test_lists_are_split_trimmed_and_lower_cased() -> None:
    s = load_settings(env(SLURM_IGNORE_ACCOUNTS=" Physics, admin_acc ,,", SLURM_IGNORE_USERS="root,Ops.Admin",
                          SLURM_DOWNSCALED_QOS="slow", SLURM_CANCEL_JOBS_OF_PAUSED="yes",
                          SLURM_CANCEL_JOBS_OF_LEAVING_MEMBERS="true"))
    assert s.ignore_accounts == {"physics", "admin_acc"} and s.ignore_users == {"root", "ops.admin"}
    assert (s.downscaled_qos, s.cancel_jobs_of_paused, s.cancel_jobs_of_leaving_members) == ("slow", True, True)


def test_bad_values_name_the_variable_and_the_value() -> None:
    assert "SLURM_IGNORE_ACCOUNTS='a b' is invalid" in error_of(env(SLURM_IGNORE_ACCOUNTS="ok,a b"))
    assert "SLURM_IGNORE_USERS='x=y' is invalid" in error_of(env(SLURM_IGNORE_USERS="x=y"))
    assert "SLURM_DOWNSCALED_QOS='no way' is invalid" in error_of(env(SLURM_DOWNSCALED_QOS="no way"))
    assert "SLURM_CANCEL_JOBS_OF_PAUSED='maybe'" in error_of(env(SLURM_CANCEL_JOBS_OF_PAUSED="maybe"))
    assert "SLURM_CANCEL_JOBS_OF_LEAVING_MEMBERS='2'" in error_of(env(SLURM_CANCEL_JOBS_OF_LEAVING_MEMBERS="2"))


def test_enforced_accounts_are_a_gauge_per_flag_kept_from_the_last_enforcement() -> None:
    metrics = Metrics()
    metrics.record("pull", 0.5, CycleReport(kind="pull", enforced={"paused": 3, "downscaled": 1,
                                                                   "restrict_member_access": 0}))
    metrics.record("pull", 0.5, CycleReport(kind="pull"))  # a cycle that did not get to enforcement
    body = metrics.render()
    assert 'waldur_slurm_enforced_accounts{flag="paused"} 3' in body
    assert 'waldur_slurm_enforced_accounts{flag="downscaled"} 1' in body
    assert 'waldur_slurm_enforced_accounts{flag="restrict_member_access"} 0' in body
    assert "enforced" not in CycleReport(kind="pull", enforced={"paused": 3}).summary()  # not a counter
