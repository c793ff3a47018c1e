"""Issue 12 item 6: prefixes that can never make a valid account name end the agent at start (exit 2, one
line); empty means the default for every variable; set variables that look like ours but are not are warned
about with the closest known name. The entry point runs as a real process."""

from __future__ import annotations

import pytest

from tests.unit.test_cli import good_env, run  # noqa: F401  (fixture)
from waldur_slurm.config import load_settings, unknown_variable_warnings


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("SLURM_CUSTOMER_PREFIX", "-hpc_", "cannot start with '-'"),
        ("SLURM_PROJECT_PREFIX", "hpc.", "is invalid: use lower-case letters"),
        ("SLURM_CUSTOMER_PREFIX", "p" * 33, "is too long"),
        ("SLURM_ALLOCATION_PREFIX", "a" * 30, "SLURM_ALLOCATION_NAME_MAX_LEN='34' is too small for the prefix"),
    ],
)
def test_prefix_that_cannot_make_account_names_exits_2(good_env, tmp_path, name, value, problem):  # noqa: F811
    result = run(["--once", "--dry-run"], {**good_env, name: value}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert problem in result.stderr and (name in result.stderr)


def test_empty_means_the_default_for_prefixes_too(good_env):  # noqa: F811
    settings = load_settings({**good_env, "SLURM_CUSTOMER_PREFIX": "", "SLURM_PROJECT_PREFIX": "  ", "REQUESTS_TIMEOUT": ""})
    assert (settings.customer_prefix, settings.project_prefix, settings.http_timeout) == ("hpc_", "hpc_", 15)


def test_lookalike_variables_are_warned_about_at_start(good_env, tmp_path):  # noqa: F811
    env = {**good_env, "WALDUR_BILLING_TIMEZOME": "Europe/Tallinn", "SLURM_CONF": "/etc/slurm/slurm.conf",
           "SLURM_JOB_ID": "12", "SLURM_DEFAULT_ACCOUNTS": "x", "WALDUR_SOMETHING": "1"}
    result = run(["--diag"], env, tmp_path)  # Waldur is unreachable: the warnings come before that
    assert "WALDUR_BILLING_TIMEZOME is not a known variable and is ignored; did you mean WALDUR_BILLING_TIMEZONE?" in result.stderr
    assert "SLURM_DEFAULT_ACCOUNTS is not a known variable and is ignored; did you mean SLURM_DEFAULT_ACCOUNT?" in result.stderr
    assert "WALDUR_SOMETHING is not a known variable" in result.stderr
    assert "SLURM_CONF" not in result.stderr and "SLURM_JOB_ID" not in result.stderr


def test_slurm_client_variables_are_not_typos() -> None:
    env = {n: "1" for n in ("SLURM_CONF", "SLURM_JOB_ID", "SLURM_TIME_FORMAT", "SLURM_CLUSTERS", "SLURM_JOBID",
                            "SLURM_ACCOUNT", "SLURM_SUBMIT_DIR", "SLURM_CPUS_ON_NODE", "SLURM_NTASKS")}
    assert unknown_variable_warnings(env) == []
