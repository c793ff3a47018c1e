"""--load-usage against the real cluster and the stand-in (both profiles): real jobs, exact usage, exact counts.

Jobs cannot be made in the past, so a "past month" is this month seen from the next one: the stand-in's clock and
the loader's ``now`` are moved to the 2nd of next month, and the month with the test's real jobs is loaded as a
past month. Expectations come from the test's own ``sacct`` read (``raw_sacct``), never from the code under test.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from tests.push.conftest import MINUTES_COMPONENTS, PushEnv, expected_usage, raw_sacct, writes
from tests.support.slurm import submit_job, wait_jobs_in_sacct
from waldur_slurm.tools import load_usage
from waldur_slurm.tools.load_usage import REASON_2024, REASON_USAGE_TYPE, UsageLoader
from waldur_slurm.main import main
from waldur_slurm.push.usage import billing_window

pytestmark = pytest.mark.slurm
UTC = timezone.utc
SET_USAGE = "POST /api/marketplace-component-usages/set_usage/"
# mem is limit-based: a provider may backfill it into a past month on 8.x; cpu and gres/gpu are usage-based
COMPONENTS = [{**c, "billing_type": "limit"} if c["type"] == "mem" else c for c in MINUTES_COMPONENTS]
FACTORS = {"cpu": 1, "mem": 1, "gres/gpu": 1}


def _next_month(now: datetime) -> datetime:
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + timedelta(days=32)).replace(day=2, hour=6)


def _world(env: PushEnv) -> tuple[list[str], dict[str, str], list[str]]:
    acc_a, acc_b = env.add_accounts(["a", "b"], users={"a": ["wsa_alice", "wsa_bob"], "b": ["wsa_carol"]})
    res_a, res_b = env.add_resources([acc_a, acc_b])
    jobs = [
        submit_job("wsa_alice", acc_a, cpus=2, mem_mb=300, gpus=1, seconds=3),
        submit_job("wsa_bob", acc_a, cpus=1, mem_mb=200, seconds=2),
        submit_job("wsa_carol", acc_b, cpus=3, mem_mb=100, seconds=2),
    ]
    wait_jobs_in_sacct(jobs)
    return [acc_a, acc_b], {acc_a: res_a, acc_b: res_b}, jobs


def _expected(accounts: list[str], by_account: dict[str, str], now: datetime, keys: set[str]) -> tuple[dict, dict]:  # type: ignore[type-arg]
    window = billing_window(now, UTC)  # type: ignore[arg-type]
    totals, users = expected_usage(raw_sacct(accounts, window.start, window.end), FACTORS)
    return ({(by_account[a], t): v for (a, t), v in totals.items() if t in keys},
            {(by_account[a], t, u): v for (a, t, u), v in users.items() if t in keys})


def test_past_month_provider_token_sends_only_what_the_server_accepts_then_nothing(push_env: PushEnv) -> None:
    env = push_env.setup(COMPONENTS)
    accounts, by_account, jobs = _world(env)
    today = datetime.now(UTC)
    this_month, previous = today.strftime("%Y-%m"), (today.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    totals, users = _expected(accounts, by_account, today, {"mem"})
    assert {t for (_, t) in totals} == {"mem"} and len(users) == 3  # alice, bob on a; carol on b
    later = _next_month(today)
    env.standin.set_clock(later.isoformat())
    lines: list[str] = []
    loader = UsageLoader(env.settings(), env.client, env.slurm, now=lambda: later, echo=lines.append)  # type: ignore[arg-type]
    months = [date.fromisoformat(previous + "-01"), date.fromisoformat(this_month + "-01")]

    # dry run: the plan is printed, nothing is written
    mark = env.mark()
    dry = loader.run(months, dry_run=True)
    assert writes(env.requests_since(mark)) == [] and dry.ok and dry.writes == 0
    progress = [line for line in lines if line.startswith("load-usage ")]
    assert [line.split(":")[0] for line in progress] == [f"load-usage {previous}", f"load-usage {this_month}"]
    if env.profile == "2024":
        # the 2024 server would file a past month under the current one: nothing at all is read or sent
        assert dry.slurm_processes == 0 and not [line for line in lines if line.startswith("[dry-run]")]
        for line in progress:
            assert "nothing sent" in line and all(f"skipped {k}: {REASON_2024}" in line for k in FACTORS)
    else:
        assert dry.slurm_processes == 2  # one sacct per month, for both accounts
        planned = [line for line in lines if line.startswith("[dry-run]")]
        assert len(planned) == 4 and all(f"{this_month}" in p and "mem" in p and "cpu" not in p for p in planned)
        assert f"skipped cpu: {REASON_USAGE_TYPE}" in progress[1] and f"skipped gres/gpu: {REASON_USAGE_TYPE}" in progress[1]
        assert "components mem" in progress[1] and "2 would be written" in progress[1]

    # the real run
    lines.clear()
    mark = env.mark()
    result = loader.run(months)
    period = f"{this_month}-01"
    assert result.ok, result.failed_months
    if env.profile == "2024":
        assert (result.slurm_processes, result.writes) == (0, 0)
        assert writes(env.requests_since(mark)) == [] and env.usages(period) == {}
    else:
        assert result.slurm_processes == 2
        # per resource: one set_usage (mem) and one bulk per-user call
        assert sorted(writes(env.requests_since(mark))) == sorted(
            [SET_USAGE] * 2 + ["POST /api/marketplace-component-usages/{uuid}/set_user_usages/"] * 2)
        assert result.writes == 4
        assert env.usages(period) == totals and env.user_usages(period) == users
        assert "2 written (4 writes)" in [line for line in lines if line.startswith(f"load-usage {this_month}")][0]

    # idempotent: a second run writes nothing
    mark = env.mark()
    again = loader.run(months)
    assert writes(env.requests_since(mark)) == [] and again.writes == 0 and again.ok


def test_past_month_staff_token_sends_every_component_on_8(push_env_8: PushEnv) -> None:
    env = push_env_8.setup(COMPONENTS)
    accounts, by_account, _ = _world(env)
    today = datetime.now(UTC)
    totals, users = _expected(accounts, by_account, today, set(FACTORS))
    staff = env.standin.add_user("loader-staff", is_staff=True)
    client = env.new_client()
    client_staff = type(client)(env.standin.url, staff["token"], env.offering, timeout=5.0)
    env.clients.append(client_staff)
    later = _next_month(today)
    env.standin.set_clock(later.isoformat())
    lines: list[str] = []
    loader = UsageLoader(env.settings(), client_staff, env.slurm, now=lambda: later, echo=lines.append)
    mark = env.mark()
    result = loader.run([today.date().replace(day=1)])
    assert result.ok and result.slurm_processes == 1
    assert writes(env.requests_since(mark)).count(SET_USAGE) == 2
    period = f"{today:%Y-%m}-01"
    assert env.usages(period) == totals and env.user_usages(period) == users
    assert "skipped" not in lines[-1]


def test_current_month_equals_what_push_writes_so_push_then_writes_nothing(push_env: PushEnv) -> None:
    env = push_env.setup(COMPONENTS)
    accounts, by_account, _ = _world(env)
    now = datetime.now(UTC)
    totals, users = _expected(accounts, by_account, now, set(FACTORS))
    lines: list[str] = []
    loader = UsageLoader(env.settings(), env.client, env.slurm, now=lambda: now, echo=lines.append)  # type: ignore[arg-type]
    result = loader.run([now.date().replace(day=1)])
    assert result.ok and result.slurm_processes == 1
    period = f"{now:%Y-%m}-01"
    assert env.usages(period) == totals and env.user_usages(period) == users
    # the push daemon's own cycle finds nothing left to report for the month
    mark = env.mark()
    report = env.reporter(now=lambda: now, previous_month_grace=timedelta(0)).run_cycle()
    assert [w for w in writes(env.requests_since(mark)) if "usage" in w] == [], report.notes


def test_a_month_the_server_refuses_fails_with_a_clear_line_and_exit_1(push_env_8: PushEnv) -> None:
    env = push_env_8.setup(COMPONENTS)
    _world(env)
    today = datetime.now(UTC)
    later = _next_month(today)
    env.standin.set_clock(later.isoformat())
    env.standin.close_billing_period(f"{today:%Y-%m}")  # the server refuses any report into that month
    out: list[str] = []
    err: list[str] = []
    mark = env.mark()
    code = load_usage.run(env.settings(), f"{today:%Y-%m}..{today:%Y-%m}", echo=out.append, err=err.append, now=lambda: later)
    assert code == 1
    assert writes(env.requests_since(mark)) == [SET_USAGE] * 2  # tried once each, refused, never retried blind
    (progress,) = [line for line in out if line.startswith("load-usage ")]
    assert f"load-usage {today:%Y-%m}: 2 resource(s): 0 written (0 writes)" in progress and "2 failed" in progress
    assert len(err) == 1 and "FAILED" in err[0] and f"{today:%Y-%m}: 2 resource(s) failed" in err[0]
    assert "Billing period is closed" in err[0]


def test_future_month_and_bad_ranges_exit_2_with_one_line(push_env_8: PushEnv, capsys: pytest.CaptureFixture[str]) -> None:
    env = push_env_8.setup(COMPONENTS)
    now = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
    err: list[str] = []
    mark = env.mark()
    assert load_usage.run(env.settings(), "2026-11..2027-01", err=err.append, now=lambda: now) == 2
    assert err == ["waldur-slurm-agent: --load-usage '2026-11..2027-01': 2027-01 is in the future (the billing month is 2026-12)"]
    assert env.requests_since(mark) == []  # nothing was asked of Waldur
    for bad in ("2026-11", "2026-13..2026-12", "2026-11..2026-01"):
        assert main(["--load-usage", bad]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"waldur-slurm-agent: --load-usage {bad!r}: ")
