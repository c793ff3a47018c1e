"""Real jobs on the real cluster -> exact usage in the stand-in, both profiles."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import parse_qs

import pytest

from tests.push.conftest import MINUTES_COMPONENTS, PushEnv, cents, expected_usage, raw_sacct, writes
from tests.support.slurm import submit_job, wait_jobs_in_sacct
from waldur_slurm.slurm.ops import SetLimits
from waldur_slurm.push.usage import billing_window

pytestmark = pytest.mark.slurm
UTC = timezone.utc
D = Decimal
USAGES = "/api/marketplace-component-usages/"


def test_real_jobs_give_exact_usage_per_component_and_user_then_nothing_changes(push_env: PushEnv) -> None:
    # cpu and mem limit-type: push reports limits only for those (their usage is reported all the same)
    env = push_env.setup([{**c, "billing_type": "limit"} if c["type"] in ("cpu", "mem") else c for c in MINUTES_COMPONENTS])
    acc_a, acc_b = env.add_accounts(["a", "b"], users={"a": ["wsa_alice", "wsa_bob"], "b": ["wsa_carol"]})
    res_a, res_b = env.add_resources([acc_a, acc_b])
    env.add_resources([""])  # no backend_id yet: never reaches SLURM (B14)
    env.standin.set_log_bodies(True)
    jobs = [
        submit_job("wsa_alice", acc_a, cpus=3, mem_mb=300, gpus=1, seconds=4),
        submit_job("wsa_bob", acc_a, cpus=2, mem_mb=200, seconds=3),
        submit_job("wsa_alice", acc_a, cpus=1, mem_mb=1024, gpus=2, seconds=2),
        submit_job("wsa_carol", acc_b, cpus=4, mem_mb=512, gpus=1, seconds=5),
    ]
    wait_jobs_in_sacct(jobs)

    now = datetime.now(UTC)
    # one billing window: in a month's first days limit-type components would also re-read the previous month
    reporter = env.reporter(now=lambda: now, previous_month_grace=timedelta(0))
    report = reporter.run_cycle()
    assert (report.failed, report.deferred, report.seen, report.skipped) == (0, 0, 3, 1), report.notes
    assert report.slurm_processes == 2  # one dump, one sacct for both accounts
    log = env.requests_since(0)
    # B12: usage goes by resource and date, never through plan_periods[0]
    assert not [e for e in log if "plan_periods" in e["path"]]
    bodies = [json.loads(e["request_body"]) for e in log if e["path"].endswith("/set_usage/")]
    assert sorted(b["resource"].replace("-", "") for b in bodies) == sorted([res_a, res_b])
    assert all("plan_period" not in b and b["date"].startswith(f"{now:%Y-%m}") for b in bodies)

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
    assert again.writes == 0 and again.failed == 0 and again.done == 2 and again.skipped == 1
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
    job = submit_job("wsa_dave", acc, cpus=2, mem_mb=100, seconds=12)
    wait_jobs_in_sacct([job], states=frozenset({"RUNNING"}))
    time.sleep(5)  # let the running job accumulate a few seconds
    # A cycle whose sacct runs 2 s after its `now` (as after a slow read): the job is billed up to `now`.
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2)
    mark = env.mark()
    report = env.reporter(now=lambda: now).run_cycle()
    window = billing_window(now, env.settings().billing_timezone)
    (running,) = raw_sacct([acc], window.start, now)  # for the job's start
    assert report.failed == 0, report.notes
    # one resource waits for the uuids of its new usage records: one list for that resource, not offering-wide
    lists = [e["query"] for e in env.requests_since(mark) if e["method"] == "GET" and e["route"] == USAGES]
    filters = [parse_qs(q) for q in lists]  # "field=resource_uuid" asks for the field; the filter is resource_uuid=
    assert len(lists) == 2 and "resource_uuid" not in filters[0] and "resource_uuid" in filters[1], lists
    assert running.state == "RUNNING" and running.start is not None
    upto_now = int((now - running.start).total_seconds())
    assert upto_now >= 3
    # billed up to the cycle's now, not up to the moment its sacct ran
    period = window.period.isoformat()
    assert env.usages(period)[(res, "cpu")] == cents(D(2 * upto_now) / 60)
    assert env.user_usages(period)[(res, "cpu", "wsa_dave")] == env.usages(period)[(res, "cpu")]
    # the job was still running at `now`: it ran longer in the end, and the next cycle reports the rest
    wait_jobs_in_sacct([job])
    later = datetime.now(UTC)
    (whole,) = raw_sacct([acc], window.start, later)
    assert whole.elapsed > upto_now
    env.reporter(now=lambda: later).run_cycle()
    assert env.usages(period)[(res, "cpu")] == cents(D(2 * whole.elapsed) / 60)


def test_exclusive_job_allocated_vs_requested_tres_b10(push_env_8: PushEnv) -> None:
    env = push_env_8.setup()
    (acc,) = env.add_accounts(["ex"], users={"ex": ["wsa_dave"]})
    (res,) = env.add_resources([acc])
    # --exclusive: SLURM allocates the whole node (16 CPUs, both GPUs) to a job that asked for 1 CPU
    r = subprocess.run(
        ["runuser", "-u", "wsa_dave", "--", "sbatch", "--parsable", f"--account={acc}", "--exclusive", "-c", "1",
         "--mem=100", "--time=1", "--chdir=/tmp", "--output=/dev/null", "--wrap", "sleep 2"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    wait_jobs_in_sacct([r.stdout.strip().split(";")[0]])
    now = datetime.now(UTC)
    window = billing_window(now, env.settings().billing_timezone)
    (raw,) = raw_sacct([acc], window.start, window.end)
    assert raw.alloc["cpu"] == 16 and raw.elapsed > 0
    period = window.period.isoformat()

    req = env.reporter(env.settings(SLURM_USAGE_TRES_SOURCE="req"), now=lambda: now).run_cycle()
    assert req.failed == 0, req.notes
    assert env.usages(period)[(res, "cpu")] == cents(D(1 * raw.elapsed) / 60)
    assert (res, "gres/gpu") not in env.usages(period)  # requested no GPU

    alloc = env.reporter(now=lambda: now).run_cycle()  # the default source: AllocTRES
    assert alloc.failed == 0, alloc.notes
    assert env.usages(period)[(res, "cpu")] == cents(D(16) * raw.elapsed / 60)
    assert env.usages(period)[(res, "gres/gpu")] == cents(raw.alloc["gres/gpu"] * raw.elapsed / 60)

    # back to ReqTRES: the lower values are anomalies, logged and never written over Waldur's
    mark = env.mark()
    again = env.reporter(env.settings(SLURM_USAGE_TRES_SOURCE="req"), now=lambda: now).run_cycle()
    assert writes(env.requests_since(mark)) == []
    assert any("anomaly" in n and "lower than" in n for n in again.notes)
    assert env.usages(period)[(res, "cpu")] == cents(D(16) * raw.elapsed / 60)
