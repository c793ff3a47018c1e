"""The push daemon's previous-month re-read, per server flavour (real SLURM, the stand-in in both profiles).

8.x takes a backdated report for limit-based components from a provider, so in the first days of a month the
cycle re-reads the previous month (a third SLURM process) and reports it. The 2024 server has no report date and
would file it under the current month (tests/mastermind/test_mm_load_usage.py shows it on the real server), so
there the cycle neither re-reads nor reports the previous month.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.push.conftest import MINUTES_COMPONENTS, PushEnv, expected_usage, raw_sacct
from tests.support.slurm import submit_job, wait_jobs_in_sacct

pytestmark = pytest.mark.slurm
UTC = timezone.utc
COMPONENTS = [{**c, "billing_type": "limit"} if c["type"] == "mem" else c for c in MINUTES_COMPONENTS]


def test_previous_month_re_read_only_where_the_server_files_it_under_that_month(push_env: PushEnv) -> None:
    env = push_env.setup(COMPONENTS)
    (acc,) = env.add_accounts(["bf"], users={"bf": ["wsa_carol"]})
    (res,) = env.add_resources([acc])
    wait_jobs_in_sacct([submit_job("wsa_carol", acc, cpus=2, mem_mb=200, seconds=3)])
    today = datetime.now(UTC)
    start = today.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    totals, _ = expected_usage(raw_sacct([acc], start, today), {"mem": 1})
    # the 2nd of next month, in the grace period: this month is now "the previous month"
    later = (start + timedelta(days=32)).replace(day=2, hour=6)
    env.standin.set_clock(later.isoformat())
    report = env.reporter(now=lambda: later).run_cycle()
    assert report.failed == 0, report.notes
    period = f"{start:%Y-%m}-01"
    if env.profile == "2024":
        assert report.slurm_processes == 2  # dump and the current month's sacct: no re-read
        assert env.usages(period) == {}
    else:
        assert report.slurm_processes == 3  # dump, this month, the previous month
        assert env.usages(period) == {(res, "mem"): totals[(acc, "mem")]}
