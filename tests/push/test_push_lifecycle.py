"""Month boundary, unit factors, missing accounts, SLURM outages: real cluster + stand-in."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from tests.push.conftest import PushEnv, cents, expected_usage, raw_sacct, writes
from tests.support.slurm import slurm_ctl, submit_job, wait_jobs_in_sacct
from waldur_slurm.slurm.ops import RemoveAccounts
from waldur_slurm.push.usage import billing_window

pytestmark = pytest.mark.slurm
UTC = timezone.utc
D = Decimal
MYSQL_SOCKET = os.path.join(os.environ.get("WSA_SLURM_STATE", "/var/lib/wsa-slurm"), "mysql-run", "mysqld.sock")


def _sql(query: str) -> str:
    r = subprocess.run(
        ["mariadb", f"--socket={MYSQL_SOCKET}", "-u", "root", "-N", "-B", "slurm_acct_db", "-e", query],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def move_jobs_to(cluster: str, account: str, job_id: str, new_start: datetime) -> int:
    """Move ONE finished job of this test's own account in time, so that it starts at ``new_start``.

    The recipe of slurm-local-cluster.md §8, narrowed to one job row (and its steps): every time column
    shifts by the same amount, so the job keeps its length. sacct reads these rows directly.
    Returns the job's length in seconds.
    """
    row = _sql(
        f"SELECT j.job_db_inx, j.time_start, j.time_end FROM {cluster}_job_table j JOIN {cluster}_assoc_table a "
        f"ON j.id_assoc = a.id_assoc WHERE j.id_job = {int(job_id)} AND a.acct = '{account}'"
    ).split()
    inx, start, end = (int(x) for x in row)
    delta = int(new_start.timestamp()) - start
    cols = "time_submit = time_submit + {d}, time_eligible = time_eligible + {d}, time_start = time_start + {d}, time_end = time_end + {d}"
    _sql(f"UPDATE {cluster}_job_table SET {cols.format(d=delta)} WHERE job_db_inx = {inx}")
    _sql(
        f"UPDATE {cluster}_step_table SET time_start = time_start + {delta}, time_end = time_end + {delta} "
        f"WHERE job_db_inx = {inx}"
    )
    return end - start


def test_a_job_across_midnight_at_month_end_is_split_exactly_in_the_billing_timezone(
    push_env_8: PushEnv, slurm_cluster: str
) -> None:
    push_env = push_env_8
    tz = ZoneInfo("Europe/Tallinn")
    boundary = datetime(2026, 11, 1, tzinfo=tz)  # = 2026-10-31T22:00:00Z
    # cpu is limit-based (a provider may still report October for it on 1 November); mem and gpu are
    # usage-based, which the server refuses to backdate: October keeps what was reported in October.
    env = push_env.setup(
        [
            {"type": "cpu", "name": "CPU", "measured_unit": "CPU-minutes", "billing_type": "limit", "unit_factor": 1},
            {"type": "mem", "name": "RAM", "measured_unit": "MB-minutes", "billing_type": "usage", "unit_factor": 1},
            {"type": "gres/gpu", "name": "GPU", "measured_unit": "GPU-minutes", "billing_type": "usage", "unit_factor": 1},
        ]
    )
    (acc,) = env.add_accounts(["mb"], users={"mb": ["wsa_bob"]})
    env.standin.set_clock("2026-10-10T12:00:00Z")  # the resource (and its plan period) exists since October
    (res,) = env.add_resources([acc])
    job = submit_job("wsa_bob", acc, cpus=2, mem_mb=256, gpus=1, seconds=7)
    wait_jobs_in_sacct([job])
    before = 3
    length = move_jobs_to(slurm_cluster, acc, job, boundary - timedelta(seconds=before))
    after = length - before
    assert after > 0

    # The push runs at 03:00 on 1 November in Tallinn; Waldur's clock says the same instant.
    now = boundary + timedelta(hours=3)
    env.standin.set_clock(now.astimezone(UTC).isoformat())
    settings = env.settings(WALDUR_BILLING_TIMEZONE="Europe/Tallinn")
    reporter = env.reporter(settings, now=lambda: now)
    report = reporter.run_cycle()
    assert report.failed == 0, report.notes
    assert report.slurm_processes == 3  # dump, sacct November, sacct October

    # Independent check of the split with the test's own sacct calls over the two windows
    (oct_raw,) = raw_sacct([acc], datetime(2026, 10, 1, tzinfo=tz), boundary)
    (nov_raw,) = raw_sacct([acc], boundary, now)
    assert (oct_raw.elapsed, nov_raw.elapsed) == (before, after)

    assert env.usages("2026-10-01") == {(res, "cpu"): cents(D(2 * before) / 60)}
    assert env.usages("2026-11-01") == {
        (res, "cpu"): cents(D(2 * after) / 60),
        (res, "mem"): cents(D(256 * after) / 60),
        (res, "gres/gpu"): cents(D(after) / 60),
    }
    assert env.user_usages("2026-10-01") == {(res, "cpu", "wsa_bob"): cents(D(2 * before) / 60)}
    assert env.user_usages("2026-11-01")[(res, "mem", "wsa_bob")] == cents(D(256 * after) / 60)

    mark = env.mark()
    reporter.run_cycle()
    assert writes(env.requests_since(mark)) == []


def test_unit_factors_gb_hours_and_k_hours(push_env_8: PushEnv) -> None:
    push_env = push_env_8
    env = push_env.setup(
        [
            {"type": "cpu", "name": "CPU", "measured_unit": "k-Hours", "billing_type": "usage", "unit_factor": 60000},
            {"type": "mem", "name": "RAM", "measured_unit": "GB-Hours", "billing_type": "usage", "unit_factor": 61440},
            {"type": "gres/gpu", "name": "GPU", "measured_unit": "GPU-Hours", "billing_type": "usage", "unit_factor": 60},
        ]
    )
    yaml_text = """
cpu: {label: CPU, measured_unit: k-Hours, accounting_type: usage, unit_factor: 60000}
mem: {label: RAM, measured_unit: GB-Hours, accounting_type: usage, unit_factor: 61440}
gres/gpu: {label: GPU, measured_unit: GPU-Hours, accounting_type: usage, unit_factor: 60}
"""
    (acc,) = env.add_accounts(["uf"], users={"uf": ["wsa_carol"]})
    (res,) = env.add_resources([acc])
    # 15000 MB x 9 s = 0.04 GB-Hours; 2 GPUs x 9 s = 0.005 GPU-Hours, which rounds (half up) to 0.01
    jobs = [submit_job("wsa_carol", acc, cpus=4, mem_mb=15000, gpus=2, seconds=9)]
    wait_jobs_in_sacct(jobs)
    now = datetime.now(UTC)
    report = env.reporter(env.settings(yaml_text), now=lambda: now).run_cycle()
    assert report.failed == 0, report.notes
    window = billing_window(now, ZoneInfo("UTC"))
    raw = raw_sacct([acc], window.start, window.end)
    mb_seconds = sum(j.alloc["mem"] * j.elapsed for j in raw)
    gpu_seconds = sum(j.alloc["gres/gpu"] * j.elapsed for j in raw)
    # GB-Hours: MB-seconds / 60 / 61440 (= 1024 MB x 60 minutes); GPU-Hours: GPU-seconds / 3600
    expected_mem = cents(mb_seconds / 60 / 61440)
    expected_gpu = cents(gpu_seconds / 3600)
    assert expected_mem > 0 and expected_gpu > 0
    got = env.usages(window.period.isoformat())
    assert got[(res, "mem")] == expected_mem
    assert got[(res, "gres/gpu")] == expected_gpu
    # seconds of a few CPUs are far below a cent of a k-Hour: nothing is reported rather than a rounded 0.01
    assert (res, "cpu") not in got
    totals, _ = expected_usage(raw, {"cpu": 60000, "mem": 61440, "gres/gpu": 60})
    assert totals[(acc, "cpu")] == D("0.00")


def test_deleted_account_marks_the_resource_erred_and_recreating_it_recovers(push_env: PushEnv) -> None:
    env = push_env.setup()
    acc_a, acc_b, acc_c = env.add_accounts(["a", "b", "c"], users={"b": ["wsa_alice"]})
    res_a, res_b, res_c = env.add_resources([acc_a, acc_b, acc_c])
    reporter = env.reporter()
    first = reporter.run_cycle()
    assert (first.failed, first.writes) == (0, 0 if env.profile == "8" else 1)  # 2024: alice's association

    # A Terminate order for C is pending: the pull daemon owns C now (B15), so C's missing account is fine.
    env.standin.place_order(env.offering, type="Terminate", resource_uuid=res_c)
    (removed,) = env.slurm.apply([RemoveAccounts((acc_b, acc_c))])
    assert removed.ok, removed.error
    suspected = reporter.run_cycle()  # absent from one dump: not yet marked (one bad read must not err it)
    assert suspected.writes == 0 and env.resource(res_b)["state"] == "OK"
    second = reporter.run_cycle()
    assert (second.failed, second.writes) == (0, 1), second.notes
    assert env.resource(res_a)["state"] == "OK"
    assert env.resource(res_c)["state"] == "OK"
    assert env.resource(res_b)["state"] == "Erred"
    if env.profile == "8":
        assert acc_b in env.resource(res_b)["error_message"]
    third = reporter.run_cycle()  # still missing: nothing more to write
    assert third.writes == 0 and env.resource(res_b)["state"] == "Erred"

    env.add_accounts(["b"], users={"b": ["wsa_alice"]})
    job = submit_job("wsa_alice", acc_b, cpus=2, mem_mb=128, seconds=2)
    wait_jobs_in_sacct([job])
    now = datetime.now(UTC)
    recovered = env.reporter(now=lambda: now).run_cycle()
    assert recovered.failed == 0, recovered.notes
    assert env.resource(res_b)["state"] == "OK"
    window = billing_window(now, ZoneInfo("UTC"))
    (raw,) = raw_sacct([acc_b], window.start, window.end)
    assert env.usages(window.period.isoformat())[(res_b, "cpu")] == cents(D(2 * raw.elapsed) / 60)


def test_slurmdbd_down_marks_nothing_and_the_next_cycle_reports(push_env_8: PushEnv) -> None:
    # profile 8 only: stopping the shared slurmdbd once is enough, and nothing is sent to Waldur anyway
    push_env = push_env_8
    env = push_env.setup()
    acc_a, acc_b = env.add_accounts(["a", "b"], users={"a": ["wsa_dave"]})
    res_a, res_b = env.add_resources([acc_a, acc_b])
    job = submit_job("wsa_dave", acc_a, cpus=3, mem_mb=100, seconds=2)
    wait_jobs_in_sacct([job])
    reporter = env.reporter()
    mark = env.mark()
    stopped = slurm_ctl("stop", "slurmdbd")
    try:
        assert stopped.returncode == 0, stopped.stderr
        down = reporter.run_cycle()
    finally:
        started = slurm_ctl("start", "slurmdbd")
    assert started.returncode == 0, started.stderr
    assert writes(env.requests_since(mark)) == []
    assert (down.failed, down.deferred, down.writes, down.slurm_processes) == (0, 2, 0, 1)
    assert {env.resource(r)["state"] for r in (res_a, res_b)} == {"OK"}

    now = datetime.now(UTC)
    up = env.reporter(now=lambda: now).run_cycle()
    assert (up.failed, up.deferred) == (0, 0), up.notes
    window = billing_window(now, ZoneInfo("UTC"))
    (raw,) = raw_sacct([acc_a], window.start, window.end)
    assert env.usages(window.period.isoformat()) == {
        (res_a, "cpu"): cents(D(3 * raw.elapsed) / 60),
        (res_a, "mem"): cents(D(100 * raw.elapsed) / 60),
    }


def test_dry_run_prints_the_plan_and_writes_nothing(push_env_8: PushEnv) -> None:
    push_env = push_env_8
    env = push_env.setup()
    (acc,) = env.add_accounts(["d"], users={"d": ["wsa_bob"]})
    (res,) = env.add_resources([acc])
    job = submit_job("wsa_bob", acc, cpus=1, mem_mb=100, seconds=1)
    wait_jobs_in_sacct([job])
    printed: list[str] = []
    mark = env.mark()
    report = env.reporter(echo=printed.append).run_cycle(dry_run=True)
    assert writes(env.requests_since(mark)) == []
    assert report.writes == 0
    assert any(line.startswith(f"[dry-run] resource {res} ({acc}): set usage ") and "cpu=" in line for line in printed)
    assert any("set user usage" in line and "wsa_bob" in line for line in printed)

