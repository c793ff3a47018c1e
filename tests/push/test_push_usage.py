"""Real jobs on the real cluster -> exact usage in the stand-in, both profiles."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from tests.push.conftest import PushEnv, expected_usage, raw_sacct, writes
from tests.support.slurm import submit_job, wait_jobs_in_sacct
from waldur_slurm.slurm.ops import SetLimits
from waldur_slurm.usage import billing_window

pytestmark = pytest.mark.slurm
UTC = timezone.utc
D = Decimal


def test_real_jobs_give_exact_usage_per_component_and_user_then_nothing_changes(push_env: PushEnv) -> None:
    env = push_env.setup()
    acc_a, acc_b = env.add_accounts(["a", "b"], users={"a": ["wsa_alice", "wsa_bob"], "b": ["wsa_carol"]})
    res_a, res_b = env.add_resources([acc_a, acc_b])
    jobs = [
        submit_job("wsa_alice", acc_a, cpus=3, mem_mb=300, gpus=1, seconds=4),
        submit_job("wsa_bob", acc_a, cpus=2, mem_mb=200, seconds=3),
        submit_job("wsa_alice", acc_a, cpus=1, mem_mb=1024, gpus=2, seconds=2),
        submit_job("wsa_carol", acc_b, cpus=4, mem_mb=512, gpus=1, seconds=5),
    ]
    wait_jobs_in_sacct(jobs)

    now = datetime.now(UTC)
    reporter = env.reporter(now=lambda: now)
    report = reporter.run_cycle()
    assert (report.failed, report.deferred, report.seen) == (0, 0, 2), report.notes
    assert report.slurm_processes == 2  # one dump, one sacct for both accounts

    window = billing_window(now, env.settings().billing_timezone)
    raw = raw_sacct([acc_a, acc_b], window.start, window.end)
    assert sorted(j.job_id for j in raw) == sorted(jobs)
    # the allocation is what the jobs asked for: mem in MB, GPUs as gres/gpu
    assert {(j.alloc["cpu"], j.alloc["mem"], j.alloc.get("gres/gpu", D(0))) for j in raw} == {
        (D(3), D(300), D(1)), (D(2), D(200), D(0)), (D(1), D(1024), D(2)), (D(4), D(512), D(1))
    }
    totals, users = expected_usage(raw, {"cpu": 1, "mem": 1, "gres/gpu": 1})
    period = window.period.isoformat()
    by_account = {acc_a: res_a, acc_b: res_b}
    assert env.usages(period) == {(by_account[acc], t): v for (acc, t), v in totals.items()}
    assert env.user_usages(period) == {(by_account[acc], t, u): v for (acc, t, u), v in users.items()}
    assert users[(acc_a, "gres/gpu", "wsa_alice")] > 0 and (acc_a, "gres/gpu", "wsa_bob") not in users

    if env.profile == "2024":
        st = env.standin.state()
        by_alloc = {}
        for a in st["associations"].values():
            by_alloc.setdefault(a["allocation_uuid"], set()).add(a["username"])
        assert by_alloc == {
            st["resources"][res_a]["allocation_uuid"]: {"wsa_alice", "wsa_bob"},
            st["resources"][res_b]["allocation_uuid"]: {"wsa_carol"},
        }

    # A second cycle with no new jobs: no writes at all.
    mark = env.mark()
    again = reporter.run_cycle()
    assert writes(env.requests_since(mark)) == []
    assert again.writes == 0 and again.failed == 0 and again.done == 2
    assert again.http_requests == len(env.requests_since(mark))

    # An admin changes GrpTRESMins in SLURM: reported once, with the flavour's call, then stable.
    (result,) = env.slurm.apply([SetLimits((acc_a,), {"cpu": 600, "mem": 123_456})])
    assert result.ok, result.error
    mark = env.mark()
    third = reporter.run_cycle()
    limit_route = (
        "POST /api/marketplace-provider-resources/{uuid}/set_limits/"
        if env.profile == "8"
        else "POST /api/marketplace-slurm-remote/{uuid}/set_limits/"
    )
    assert writes(env.requests_since(mark)) == [limit_route]
    assert third.writes == 1
    assert env.resource(res_a)["limits"] == {"cpu": 600, "mem": 123456}
    mark = env.mark()
    reporter.run_cycle()
    assert writes(env.requests_since(mark)) == []


def test_running_job_counts_up_to_now(push_env: PushEnv) -> None:
    env = push_env.setup()
    (acc,) = env.add_accounts(["run"], users={"run": ["wsa_dave"]})
    (res,) = env.add_resources([acc])
    job = submit_job("wsa_dave", acc, cpus=2, mem_mb=100, seconds=60)
    wait_jobs_in_sacct([job], states=frozenset({"RUNNING"}))
    start = datetime.now(UTC)
    while (datetime.now(UTC) - start).total_seconds() < 3:
        pass  # let the job accumulate a few seconds
    now = datetime.now(UTC).replace(microsecond=0)
    report = env.reporter(now=lambda: now).run_cycle()
    assert report.failed == 0, report.notes
    window = billing_window(now, env.settings().billing_timezone)
    (raw,) = raw_sacct([acc], window.start, now)
    assert raw.state == "RUNNING" and raw.elapsed >= 3
    period = window.period.isoformat()
    assert env.usages(period)[(res, "cpu")] == (D(2) * raw.elapsed / 60).quantize(D("0.01"), rounding="ROUND_HALF_UP")
    assert env.user_usages(period)[(res, "cpu", "wsa_dave")] == env.usages(period)[(res, "cpu")]
