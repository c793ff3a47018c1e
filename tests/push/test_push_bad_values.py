"""Issue 12: a value held by Waldur that is not a number fails only its own resource, never the push cycle."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone

import pytest

from tests.push.conftest import MINUTES_COMPONENTS, PushEnv
from tests.support.slurm import submit_job, wait_jobs_in_sacct
from waldur_slurm.push.usage import billing_window

pytestmark = pytest.mark.slurm
# limit-type components: the only ones whose limits push reports (their usage is reported too)
LIMIT_COMPONENTS = [{**c, "billing_type": "limit"} for c in MINUTES_COMPONENTS]


def test_junk_held_limit_fails_only_its_resource(push_env_8: PushEnv) -> None:
    env = push_env_8.setup(LIMIT_COMPONENTS)
    users = {"good": ["wsa_alice"], "junk": ["wsa_bob"]}
    accounts = env.add_accounts(list(users), users=users, limits={"cpu": 600})
    good, junk = (env.add_resources([acc], limits=lim)[0] for acc, lim in zip(accounts, ({"cpu": 60}, {"cpu": "abc"})))
    jobs = [submit_job(members[0], env.account(s), cpus=1, mem_mb=50, seconds=1) for s, members in users.items()]
    wait_jobs_in_sacct(jobs)
    now = datetime.now(timezone.utc)
    period = billing_window(now, env.settings().billing_timezone).period.isoformat()

    report = env.reporter(now=lambda: now).run_cycle()  # before the fix: InvalidOperation escaped here

    assert report.failed == 1, report.notes
    [note] = [n for n in report.notes if junk in n]
    assert "limits.cpu = 'abc' is not a finite number" in note
    # the good resource gets its limits and usage; the junk one still gets its usage (no bill lost)
    assert env.resource(good)["limits"]["cpu"] == 600
    assert env.resource(junk)["limits"]["cpu"] == "abc"
    reported = {r for (r, t), v in env.usages(period).items() if t == "cpu" and v > 0}
    assert reported == {good, junk}


def test_limit_sacctmgr_cannot_print_exactly_fails_only_its_account(push_env_8: PushEnv) -> None:
    """sacctmgr 22.05 has no raw-number option (no --noconvert; dump converts too) and prints sizes of
    1024 PB or more with a '?' unit: such a limit fails only its own account's limits, never the read."""
    env = push_env_8.setup(LIMIT_COMPONENTS)
    exact, lossy = env.add_accounts(["exact", "lossy"], limits={"cpu": 600})
    good, bad = env.add_resources([exact, lossy], limits={"cpu": 1})
    try:
        # 1 TB-minute is printed "mem=1T" (exact); 1024^4 MB-minutes is printed "mem=1?" (unreadable)
        assert subprocess.run(["sacctmgr", "-i", "modify", "account", exact, "set", "GrpTRESMins=mem=1048576"],
                              capture_output=True, timeout=60).returncode == 0
        assert subprocess.run(["sacctmgr", "-i", "modify", "account", lossy, "set", "GrpTRESMins=mem=1099511627776"],
                              capture_output=True, timeout=60).returncode == 0
        state = env.slurm.read_state()  # before the fix: SlurmParseError for the whole cluster
        assert state.accounts[exact].limits == {"cpu": 600, "mem": 1048576}
        assert state.accounts[lossy].limits == {} and "'1?'" in (state.accounts[lossy].limits_problem or "")
        report = env.reporter().run_cycle()
    finally:
        subprocess.run(["sacctmgr", "-i", "modify", "account", lossy, "set", "GrpTRESMins=mem=-1"],
                       capture_output=True, timeout=60)
    assert report.failed == 1, report.notes
    [note] = [n for n in report.notes if bad in n]
    assert "limits not reported" in note and "unknown unit suffix '?'" in note
    assert env.resource(good)["limits"] == {"cpu": 600, "mem": 1048576}
    assert env.resource(bad)["limits"] == {"cpu": 1}
