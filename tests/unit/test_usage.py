"""Pure usage math: billing window, aggregation, exact conversion, diffs. No I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest

from waldur_slurm.domain.components import Component
from waldur_slurm.push.usage import (
    ResourceUsage,
    aggregate,
    as_decimal,
    elapsed_in_window,
    billing_window,
    diff_associations,
    diff_limits,
    diff_usage,
    in_month_start,
    month_window,
    previous_window,
    round_cents,
    seconds_until_month_end,
    to_waldur_usage,
    tres_seconds_to_waldur,
)

UTC = ZoneInfo("UTC")
TALLINN = ZoneInfo("Europe/Tallinn")
BERLIN = ZoneInfo("Europe/Berlin")
D = Decimal


@dataclass(frozen=True)
class Job:
    """A job allocation record with the fields of slurm.client.JobRecord that usage reads."""

    account: str
    user: str
    elapsed_seconds: int
    alloc_tres: dict[str, Decimal] = field(default_factory=dict)
    req_tres: dict[str, Decimal] = field(default_factory=dict)
    job_id: str = "1"
    start: datetime | None = None


def tres(**values: str | int) -> dict[str, Decimal]:
    return {k.replace("__", "/"): D(str(v)) for k, v in values.items()}


CPU_KH = Component("cpu", "CPU", "k-Hours", "usage", None, 60000)
MEM_GBH = Component("mem", "RAM", "GB-Hours", "usage", None, 61440)
GPU_H = Component("gres/gpu", "GPU", "GPU-Hours", "usage", None, 60)
CPU_MIN = Component("cpu", "CPU", "CPU-minutes", "limit", None, 1)


# ---------------------------------------------------------------- window


def test_window_mid_month_runs_from_first_instant_to_now_on_whole_seconds() -> None:
    now = datetime(2026, 11, 25, 6, 51, 43, 987654, tzinfo=timezone.utc)
    w = billing_window(now, UTC)
    assert w.period == date(2026, 11, 1)
    assert w.start == datetime(2026, 11, 1, tzinfo=UTC)
    assert w.end == datetime(2026, 11, 25, 6, 51, 43, tzinfo=UTC)
    assert w.month_end == datetime(2026, 12, 1, tzinfo=UTC)
    assert not w.complete


def test_window_includes_the_last_day_of_the_month_b1() -> None:
    # The original's --endtime=YYYY-MM-<last> meant 00:00 of the last day. Here the last second counts.
    now = datetime(2026, 11, 30, 23, 59, 59, tzinfo=timezone.utc)
    w = billing_window(now, UTC)
    assert w.end == now
    assert (w.end - w.start) == timedelta(days=30) - timedelta(seconds=1)


def test_previous_window_is_complete_and_meets_the_current_window_exactly() -> None:
    now = datetime(2027, 1, 1, 0, 30, tzinfo=timezone.utc)
    cur, prev = billing_window(now, UTC), previous_window(now, UTC)
    assert prev.period == date(2026, 12, 1)
    assert prev.start == datetime(2026, 12, 1, tzinfo=UTC)
    assert prev.end == prev.month_end == cur.start == datetime(2027, 1, 1, tzinfo=UTC)
    assert prev.complete
    assert (prev.end - prev.start) == timedelta(days=31)


def test_window_uses_the_billing_timezone_not_utc_b11() -> None:
    # 22:30 UTC on 30 Nov is 00:30 on 1 Dec in Tallinn (UTC+2): the December window has just begun.
    now = datetime(2026, 11, 30, 22, 30, tzinfo=timezone.utc)
    w = billing_window(now, TALLINN)
    assert w.period == date(2026, 12, 1)
    assert w.start == datetime(2026, 12, 1, tzinfo=TALLINN)
    assert w.start.astimezone(timezone.utc) == datetime(2026, 11, 30, 22, 0, tzinfo=timezone.utc)
    assert (w.end - w.start) == timedelta(minutes=30)
    prev = previous_window(now, TALLINN)
    assert prev.period == date(2026, 11, 1)
    assert prev.month_end.astimezone(timezone.utc) == datetime(2026, 11, 30, 22, 0, tzinfo=timezone.utc)


def test_window_across_a_dst_change_has_the_real_length() -> None:
    # March 2027 in Berlin loses one hour (last Sunday of March).
    w = month_window(2027, 3, BERLIN, datetime(2027, 5, 1, tzinfo=timezone.utc))
    assert w.complete
    assert w.month_end.astimezone(timezone.utc) - w.start.astimezone(timezone.utc) == timedelta(days=31, hours=-1)
    # October gains one.
    w = month_window(2027, 10, BERLIN, datetime(2027, 12, 1, tzinfo=timezone.utc))
    assert w.month_end.astimezone(timezone.utc) - w.start.astimezone(timezone.utc) == timedelta(days=31, hours=1)


def test_every_month_of_a_year_tiles_time_without_gaps_or_overlaps() -> None:
    for tz in (UTC, TALLINN, BERLIN, ZoneInfo("America/Sao_Paulo"), ZoneInfo("Pacific/Chatham")):
        end = datetime(2029, 1, 2, tzinfo=timezone.utc)
        windows = [month_window(y, m, tz, end) for y in (2027, 2028) for m in range(1, 13)]
        for a, b in zip(windows, windows[1:]):
            assert a.month_end == b.start
            assert a.complete
        for w in windows:
            local = w.start.astimezone(tz)
            assert (local.day, local.hour, local.minute) == (1, 0, 0)


def test_window_edge_cases() -> None:
    with pytest.raises(ValueError, match="aware"):
        billing_window(datetime(2026, 11, 25), UTC)
    with pytest.raises(ValueError, match="before the start"):
        month_window(2026, 12, UTC, datetime(2026, 11, 25, tzinfo=timezone.utc))
    # exactly the first instant: an empty window of the new month
    w = billing_window(datetime(2026, 12, 1, tzinfo=timezone.utc), UTC)
    assert w.start == w.end and w.period == date(2026, 12, 1)
    # December -> January
    w = billing_window(datetime(2026, 12, 31, 23, 0, tzinfo=timezone.utc), UTC)
    assert w.month_end == datetime(2027, 1, 1, tzinfo=UTC)


def test_report_date_is_inside_the_window_and_never_in_the_future() -> None:
    now = datetime(2026, 11, 30, 23, 59, 59, 900000, tzinfo=timezone.utc)
    w = billing_window(now, UTC)
    assert w.report_date == datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)
    prev = previous_window(datetime(2026, 12, 1, 0, 0, 5, tzinfo=timezone.utc), TALLINN)
    assert prev.report_date == datetime(2026, 11, 30, 23, 59, 59, tzinfo=TALLINN)
    assert prev.start <= prev.report_date < prev.month_end
    fresh = billing_window(datetime(2026, 12, 1, tzinfo=timezone.utc), UTC)
    assert fresh.report_date == fresh.start


def test_month_start_grace_and_seconds_until_month_end() -> None:
    grace = timedelta(days=3)
    assert in_month_start(datetime(2026, 12, 1, 0, 0, 1, tzinfo=timezone.utc), UTC, grace)
    assert in_month_start(datetime(2026, 12, 3, 23, 59, tzinfo=timezone.utc), UTC, grace)
    assert not in_month_start(datetime(2026, 12, 4, 0, 0, tzinfo=timezone.utc), UTC, grace)
    assert seconds_until_month_end(datetime(2026, 11, 30, 23, 0, tzinfo=timezone.utc), UTC) == 3600
    assert seconds_until_month_end(datetime(2026, 11, 30, 21, 0, tzinfo=timezone.utc), TALLINN) == 3600


# ---------------------------------------------------------------- aggregation


def test_alloc_tres_times_elapsed_per_account_user_and_key() -> None:
    jobs = [
        Job("acc_a", "alice", 100, tres(cpu=4, mem="2048", gres__gpu=1, node=1, billing=4), tres(cpu=2, mem=1000)),
        Job("acc_a", "bob", 10, tres(cpu=1, mem=100), tres(cpu=1, mem=100)),
        Job("ACC_A", "alice", 5, tres(cpu=2), tres(cpu=2)),
        Job("acc_b", "carol", 7, tres(cpu=3, gres__gpu=2), tres(cpu=3, gres__gpu=2)),
    ]
    agg = aggregate(jobs, ["cpu", "mem", "gres/gpu"])
    a = agg.accounts["acc_a"]
    assert a.totals == {"cpu": 410 + 10, "mem": 204800 + 1000, "gres/gpu": 100}
    assert a.per_user == {"alice": {"cpu": 410, "mem": 204800, "gres/gpu": 100}, "bob": {"cpu": 10, "mem": 1000}}
    assert a.jobs == 3
    assert agg.accounts["acc_b"].totals == {"cpu": 21, "gres/gpu": 14}
    assert "node" not in a.totals and "billing" not in a.totals  # not in the components file


def test_req_tres_source_b10() -> None:
    jobs = [Job("acc", "alice", 100, alloc_tres=tres(cpu=16, mem=4000), req_tres=tres(cpu=2, mem=1000))]
    assert aggregate(jobs, ["cpu", "mem"], source="req").accounts["acc"].totals == {"cpu": 200, "mem": 100000}
    assert aggregate(jobs, ["cpu", "mem"], source="alloc").accounts["acc"].totals == {"cpu": 1600, "mem": 400000}
    with pytest.raises(ValueError):
        aggregate(jobs, ["cpu"], source="billing")


def test_empty_source_falls_back_to_the_other_column_and_reports_it() -> None:
    jobs = [
        Job("acc", "alice", 10, alloc_tres=tres(cpu=2), req_tres={}, job_id="7"),
        Job("acc", "alice", 10, alloc_tres={}, req_tres={}, job_id="8"),
        Job("acc", "alice", 0, alloc_tres={}, req_tres=tres(cpu=9), job_id="9"),  # pending: no time, no usage
    ]
    agg = aggregate(jobs, ["cpu"], source="req")
    assert agg.accounts["acc"].totals == {"cpu": 20}
    assert agg.fallbacks == ["job 7 (account acc)"]
    assert agg.unusable == ["job 8 (account acc): no AllocTRES and no ReqTRES"]


def test_fractional_mem_stays_exact() -> None:
    # mem=100K is 0.09765625 MB; three seconds of it is exactly 0.29296875 MB-seconds
    jobs = [Job("acc", "u", 3, tres(mem="0.09765625"))]
    assert aggregate(jobs, ["mem"]).accounts["acc"].totals["mem"] == Fraction(29296875, 10**8)


def test_account_filter_and_requeued_attempts_all_count() -> None:
    # --duplicates gives one row per attempt, all with the same job id; every attempt used the cluster
    jobs = [Job("acc", "u", 30, tres(cpu=2), job_id="5"), Job("acc", "u", 40, tres(cpu=2), job_id="5"), Job("other", "u", 99, tres(cpu=1))]
    agg = aggregate(jobs, ["cpu"], accounts=["ACC"])
    assert set(agg.accounts) == {"acc"}
    assert agg.accounts["acc"].totals == {"cpu": 140}


def test_a_running_job_is_clipped_to_the_window_end_and_a_finished_one_is_not() -> None:
    now = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)
    window = billing_window(now, UTC)
    started = now - timedelta(seconds=100)
    # sacct counted the running job up to its query, 7 s after the cycle's now
    running = Job("acc", "u", 107, tres(cpu=2), start=started, job_id="r")
    finished = Job("acc", "u", 60, tres(cpu=2), start=started, job_id="f")
    assert elapsed_in_window(running, window) == 100
    assert elapsed_in_window(finished, window) == 60
    # --truncate starts an earlier job at the window start; a real earlier start is clipped there too
    early = Job("acc", "u", 10**7, tres(cpu=1), start=window.start - timedelta(days=3))
    assert elapsed_in_window(early, window) == int((now - window.start).total_seconds())
    # started after the window end (between the cycle's now and its sacct): nothing yet; pending: nothing
    assert elapsed_in_window(Job("acc", "u", 2, tres(cpu=1), start=now + timedelta(seconds=1)), window) == 0
    assert elapsed_in_window(Job("acc", "u", 0, tres(cpu=1)), window) == 0
    assert elapsed_in_window(Job("acc", "u", 5, tres(cpu=1)), window) == 5  # no start known: sacct's value
    agg = aggregate([running, finished], ["cpu"], window=window)
    assert agg.accounts["acc"].totals == {"cpu": 2 * 100 + 2 * 60}
    assert aggregate([running, finished], ["cpu"]).accounts["acc"].totals == {"cpu": 2 * 107 + 2 * 60}


def test_user_sums_equal_the_total_for_random_jobs() -> None:
    rng = random.Random(5)
    jobs = [
        Job(f"a{rng.randrange(3)}", f"u{rng.randrange(4)}", rng.randrange(0, 10**6), tres(cpu=rng.randrange(1, 64), mem=rng.randrange(1, 10**6)))
        for _ in range(500)
    ]
    agg = aggregate(jobs, ["cpu", "mem"])
    for usage in agg.accounts.values():
        for key in ("cpu", "mem"):
            assert sum(u.get(key, 0) for u in usage.per_user.values()) == usage.totals[key]
    assert sum(a.totals["cpu"] for a in agg.accounts.values()) == sum(j.elapsed_seconds * int(j.alloc_tres["cpu"]) for j in jobs)


# ---------------------------------------------------------------- conversion


def test_round_cents_is_exact_half_up() -> None:
    assert round_cents(Fraction(1, 200)) == D("0.01")
    assert round_cents(Fraction(1, 200) - Fraction(1, 10**30)) == D("0.00")
    assert round_cents(Fraction(2, 3)) == D("0.67")
    assert round_cents(Fraction(-1, 200)) == D("-0.01")
    assert round_cents(Fraction(12345, 1)) == D("12345.00")
    assert str(round_cents(Fraction(0))) == "0.00"


def test_unit_factors_k_hours_and_gb_hours() -> None:
    # 3 CPUs for 20 hours = 3600 CPU-minutes = 0.06 k-Hours
    assert tres_seconds_to_waldur(3 * 20 * 3600, CPU_KH.unit_factor) == D("0.06")
    # 4096 MB for 90 minutes = 6 GB-hours
    assert tres_seconds_to_waldur(4096 * 90 * 60, MEM_GBH.unit_factor) == D("6.00")
    # 1 GPU for 45 minutes = 0.75 GPU-hours
    assert tres_seconds_to_waldur(45 * 60, GPU_H.unit_factor) == D("0.75")
    # unit_factor 1: TRES-minutes, fractional minutes kept to the cent
    assert tres_seconds_to_waldur(90, 1) == D("1.50")
    assert tres_seconds_to_waldur(1, 1) == D("0.02")  # 1/60 = 0.01666..


def test_conversion_agrees_with_component_to_waldur_on_whole_minutes() -> None:
    rng = random.Random(11)
    for component in (CPU_KH, MEM_GBH, GPU_H, CPU_MIN, Component("x", "X", "u", "usage", None, 7)):
        for minutes in [0, 1, 29, 30, 299, 300, 600, 29999, 30000, 30720, 60000] + [rng.randrange(10**12) for _ in range(300)]:
            assert tres_seconds_to_waldur(minutes * 60, component.unit_factor) == component.to_waldur(minutes)


def test_to_waldur_usage_gives_zero_totals_and_used_users_only() -> None:
    agg = aggregate([Job("acc", "alice", 3600, tres(cpu=2, mem=1024))], ["cpu", "mem", "gres/gpu"])
    components = {"cpu": CPU_MIN, "mem": MEM_GBH, "gres/gpu": GPU_H}
    ru = to_waldur_usage(agg.accounts["acc"], components)
    assert ru.totals == {"cpu": D("120.00"), "mem": D("1.00"), "gres/gpu": D("0.00")}
    assert ru.per_user == {"cpu": {"alice": D("120.00")}, "mem": {"alice": D("1.00")}, "gres/gpu": {}}
    idle = to_waldur_usage(None, components)
    assert idle.totals == {"cpu": D("0.00"), "mem": D("0.00"), "gres/gpu": D("0.00")}
    assert idle.per_user == {"cpu": {}, "mem": {}, "gres/gpu": {}}


# ---------------------------------------------------------------- usage diff


def ru(totals: dict[str, str], users: dict[str, dict[str, str]] | None = None) -> ResourceUsage:
    return ResourceUsage(
        totals={k: D(v) for k, v in totals.items()},
        per_user={k: {u: D(v) for u, v in us.items()} for k, us in (users or {}).items()},
    )


def test_equal_values_make_no_writes_whatever_their_wire_form() -> None:
    computed = ru({"cpu": "12.50", "mem": "0.00"}, {"cpu": {"alice": "12.50"}})
    diff = diff_usage(computed, {"cpu": "12.50"}, {"cpu": {"alice": 12.5}})
    assert diff.empty and not diff.anomalies
    assert diff_usage(computed, {"cpu": 12.5, "mem": "0"}, {"cpu": {"alice": "12.5"}}).empty


def test_increases_are_written_and_absent_zeros_are_not() -> None:
    computed = ru({"cpu": "13.00", "mem": "0.00", "gres/gpu": "1.00"}, {"cpu": {"alice": "8.00", "bob": "5.00"}, "gres/gpu": {"bob": "1.00"}})
    diff = diff_usage(computed, {"cpu": "12.50"}, {"cpu": {"alice": "8.00", "bob": "4.50"}})
    assert diff.totals == {"cpu": D("13.00"), "gres/gpu": D("1.00")}
    assert diff.per_user == {"cpu": {"bob": D("5.00")}, "gres/gpu": {"bob": D("1.00")}}
    assert not diff.anomalies


def test_lower_values_are_anomalies_and_never_written() -> None:
    computed = ru({"cpu": "10.00", "mem": "5.00"}, {"cpu": {"alice": "10.00"}})
    diff = diff_usage(computed, {"cpu": "12.00", "mem": "4.00"}, {"cpu": {"alice": "11.00", "ghost": "1.00"}})
    assert diff.totals == {"mem": D("5.00")}
    assert diff.per_user == {}
    assert diff.anomalies == [
        "component cpu: computed 10.00 is lower than 12.00 held by Waldur; not reported",
        "component cpu user alice: computed 10.00 is lower than 11.00 held by Waldur; not reported",
        "component cpu user ghost: computed 0.00 is lower than 1.00 held by Waldur; not reported",
    ]


def test_as_decimal_accepts_waldur_wire_forms() -> None:
    assert as_decimal("13.00") == as_decimal(13) == as_decimal(13.0) == as_decimal(D("13")) == D("13.00")
    assert as_decimal(0.1 + 0.2) == D("0.30")


# ---------------------------------------------------------------- limits


def test_limits_that_agree_in_the_slurm_domain_are_not_written() -> None:
    components = {"cpu": CPU_KH, "mem": MEM_GBH}
    # pull wrote 100 k-Hours = 6,000,000 CPU-minutes and 10 GB-h = 614400 MB-minutes
    assert diff_limits({"cpu": 6_000_000, "mem": 614_400}, {"cpu": 100.0, "mem": "10.00"}, components) is None
    # 0.1 k-Hours is 6000 minutes: a float in Waldur still agrees exactly
    assert diff_limits({"cpu": 6000}, {"cpu": 0.1}, components) is None
    # 0.0001 k-Hours is 6 minutes; SLURM agrees, although 6 minutes print as 0.00 k-Hours at 2 dp
    assert diff_limits({"cpu": 6}, {"cpu": 0.0001}, components) is None


def test_an_admin_change_in_slurm_is_reported_once_and_then_stable() -> None:
    components = {"cpu": CPU_KH, "mem": MEM_GBH}
    held: dict[str, object] = {"cpu": 100.0, "mem": 10.0, "other": 3}
    slurm = {"cpu": 12_345, "mem": 614_400}  # 12,345 minutes is 0.20575 k-Hours: not a whole cent
    first = diff_limits(slurm, held, components)
    assert first == {"cpu": D("0.21"), "mem": D("10.0"), "other": D("3")}
    # Waldur now holds what we wrote; SLURM did not change: no echo, even though 0.21 k-Hours != 12,345 min
    assert diff_limits(slurm, first, components) is None
    # and again, with the float form Waldur returns
    assert diff_limits(slurm, {k: float(v) for k, v in first.items()}, components) is None


def test_limits_missing_on_one_side() -> None:
    components = {"cpu": CPU_MIN, "mem": MEM_GBH}
    # SLURM has no mem limit (unlimited): Waldur's value stays; cpu is new in Waldur
    assert diff_limits({"cpu": 500}, {"mem": 4}, components) == {"cpu": D("500.00"), "mem": D("4")}
    # keys not in the components file are ignored; -1 means unlimited
    assert diff_limits({"billing": 5, "cpu": -1}, {}, components) is None
    # junk in Waldur is overwritten
    assert diff_limits({"cpu": 5}, {"cpu": -3}, components) == {"cpu": D("5.00")}


def test_two_cycles_without_slurm_change_converge_for_random_limits() -> None:
    rng = random.Random(3)
    components = {"cpu": CPU_KH, "mem": MEM_GBH, "gres/gpu": GPU_H}
    for _ in range(500):
        slurm = {k: rng.randrange(0, 10**9) for k in components}
        held = {k: rng.choice([None, rng.randrange(0, 10**5)]) for k in components}
        first = diff_limits(slurm, {k: v for k, v in held.items() if v is not None}, components)
        now_held = first if first is not None else held
        assert diff_limits(slurm, {k: v for k, v in now_held.items() if v is not None}, components) is None


# ---------------------------------------------------------------- associations


def test_associations_diff_only_the_accounts_users() -> None:
    assert diff_associations({"alice", "bob"}, {"bob", "zed"}) == (["alice"], ["zed"])
    assert diff_associations(set(), set()) == ([], [])


def test_closing_cycles_are_due_five_minutes_and_thirty_seconds_before_the_month_ends():
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo

    from waldur_slurm.push.usage import seconds_until_closing_cycle

    tz = ZoneInfo("Europe/Tallinn")  # UTC+2 in November: the month ends at 2026-11-30T22:00:00Z
    assert seconds_until_closing_cycle(datetime(2026, 11, 30, 21, 0, tzinfo=timezone.utc), tz) == 3600 - 300
    assert seconds_until_closing_cycle(datetime(2026, 11, 30, 21, 56, tzinfo=timezone.utc), tz) == 240 - 30
    assert seconds_until_closing_cycle(datetime(2026, 11, 30, 21, 59, 40, tzinfo=timezone.utc), tz) is None
    # Far from the end, the extra cycle is weeks away and the regular period wins.
    assert seconds_until_closing_cycle(datetime(2026, 11, 2, tzinfo=timezone.utc), tz) > 86400
