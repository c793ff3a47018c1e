"""The polling loop: scheduling with an injected clock, crash and auth handling, --once, real signals."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from waldur_slurm.cycle import CycleReport
from waldur_slurm.loop import EXIT_AUTH, EXIT_FAILED, EXIT_OK, PeriodicTask, default_jitter, run_loop
from waldur_slurm.observability import Metrics

REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    """Virtual time: ``wait`` advances it; the loop is stopped once it passes ``until``."""

    def __init__(self, stop: threading.Event, until: float):
        self.now = 0.0
        self.stop = stop
        self.until = until
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        if self.now >= self.until:
            self.stop.set()

    def wait(self, seconds: float) -> bool:
        assert seconds > 0
        self.waits.append(seconds)
        self.advance(seconds)
        return self.stop.is_set()


class AuthError(Exception):
    pass


def make_task(name: str, period: float, clock: FakeClock, calls: list[tuple[str, float]], *, work: float = 0.0,
              report: CycleReport | None = None, crash_on: set[int] | None = None,
              raise_exc: BaseException | None = None) -> PeriodicTask:
    count = 0

    def fn(dry_run: bool) -> CycleReport:
        nonlocal count
        count += 1
        calls.append((name, clock.now))
        clock.advance(work)
        if raise_exc is not None:
            raise raise_exc
        if crash_on and count in crash_on:
            raise RuntimeError(f"{name} exploded")
        return report or CycleReport(kind=name, seen=1, done=1, slurm_processes=2, http_requests=3)

    return PeriodicTask(name, period, fn)


def loop(tasks, clock: FakeClock, stop: threading.Event, **kwargs) -> int:
    kwargs.setdefault("jitter", lambda period: 0.0)
    kwargs.setdefault("fatal_errors", (AuthError,))
    return run_loop(tasks, once=kwargs.pop("once", False), dry_run=False, stop_event=stop, clock=clock,
                    wall_clock=clock.wall, wait=clock.wait, **kwargs)


def test_period_is_measured_start_to_start():
    stop = threading.Event()
    clock = FakeClock(stop, until=35)
    calls: list[tuple[str, float]] = []
    assert loop([make_task("pull", 10, clock, calls, work=3)], clock, stop) == EXIT_OK
    assert [t for _, t in calls] == [0, 10, 20, 30]
    assert clock.waits == [7, 7, 7, 7]  # sleeps only the rest of the period


def test_overrunning_cycle_is_followed_at_once_without_backlog():
    stop = threading.Event()
    clock = FakeClock(stop, until=50)
    calls: list[tuple[str, float]] = []
    loop([make_task("push", 10, clock, calls, work=15)], clock, stop)
    assert [t for _, t in calls] == [0, 15, 30, 45]
    assert clock.waits == []


def test_two_tasks_keep_their_own_periods():
    stop = threading.Event()
    clock = FakeClock(stop, until=650)
    calls: list[tuple[str, float]] = []
    tasks = [make_task("pull", 120, clock, calls, work=1), make_task("membership", 300, clock, calls, work=2)]
    loop(tasks, clock, stop)
    pulls = [t for n, t in calls if n == "pull"]
    members = [t for n, t in calls if n == "membership"]
    assert members == [1, 301, 601]  # waited for the first pull, then every 300 s from its own start
    assert pulls == [0, 120, 240, 360, 480, 600]


def test_jitter_shifts_the_next_start():
    stop = threading.Event()
    clock = FakeClock(stop, until=30)
    calls: list[tuple[str, float]] = []
    loop([make_task("pull", 10, clock, calls)], clock, stop, jitter=lambda period: period * 0.1)
    assert [t for _, t in calls] == [0, 11, 22]


@pytest.mark.parametrize("period, bound", [(120, 6.0), (3600, 30.0), (1, 0.05)])
def test_default_jitter_is_small(period, bound):
    values = [default_jitter(period) for _ in range(200)]
    assert all(-bound <= v <= bound for v in values)
    assert max(values) > 0 > min(values)  # spread both ways: the mean period stays the configured one


def test_crashing_cycle_is_logged_and_the_loop_goes_on(tmp_path, caplog):
    stop = threading.Event()
    clock = FakeClock(stop, until=35)
    calls: list[tuple[str, float]] = []
    heartbeat = tmp_path / "heartbeat"
    metrics = Metrics()
    task = make_task("pull", 10, clock, calls, crash_on={2, 4})
    with caplog.at_level(logging.INFO, logger="waldur_slurm.loop"):
        assert loop([task], clock, stop, heartbeat_file=str(heartbeat), metrics=metrics) == EXIT_OK
    assert [t for _, t in calls] == [0, 10, 20, 30]
    crashes = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(crashes) == 2 and all(r.exc_info for r in crashes)
    assert "pull cycle crashed" in crashes[0].getMessage()
    summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pull cycle:")]
    assert len(summaries) == 2 and "done=1" in summaries[0]
    stats = metrics.tasks["pull"]
    assert (stats.cycles_ok, stats.cycles_error, stats.done, stats.slurm_processes, stats.http_requests) == (2, 2, 2, 4, 6)
    # The heartbeat holds the time of the last successful cycle (t=20), not of the crash at t=30.
    assert heartbeat.read_text().strip() == "1700000020.000"
    assert os.stat(heartbeat).st_mtime == pytest.approx(1_700_000_020)


def test_auth_error_ends_the_loop_with_a_clear_message(caplog):
    stop = threading.Event()
    clock = FakeClock(stop, until=1000)
    calls: list[tuple[str, float]] = []
    tasks = [make_task("pull", 10, clock, calls, raise_exc=AuthError("401 Invalid token.")),
             make_task("membership", 10, clock, calls)]
    with caplog.at_level(logging.INFO, logger="waldur_slurm.loop"):
        assert loop(tasks, clock, stop) == EXIT_AUTH
    assert calls == [("pull", 0)]  # nothing runs after it
    assert "Waldur refused the API token" in caplog.text and "WALDUR_API_TOKEN" in caplog.text


def test_auth_error_of_the_waldur_package_is_fatal_by_default():
    from waldur_slurm.waldur import errors
    stop = threading.Event()
    clock = FakeClock(stop, until=1000)
    calls: list[tuple[str, float]] = []
    exc = errors.WaldurAuthError("GET /api/marketplace-orders/: 401 Invalid token.", status=401)
    task = make_task("pull", 10, clock, calls, raise_exc=exc)
    code = run_loop([task], once=False, dry_run=False, stop_event=stop, clock=clock, wall_clock=clock.wall,
                    wait=clock.wait, jitter=lambda p: 0.0)
    assert code == EXIT_AUTH and len(calls) == 1


def test_stop_during_a_cycle_finishes_that_cycle_then_exits():
    stop = threading.Event()
    clock = FakeClock(stop, until=10**9)
    calls: list[tuple[str, float]] = []
    metrics = Metrics()

    def fn(dry_run: bool) -> CycleReport:
        calls.append(("pull", clock.now))
        stop.set()  # what the SIGTERM handler does
        return CycleReport(kind="pull", done=5)

    assert loop([PeriodicTask("pull", 10, fn), make_task("membership", 10, clock, calls)], clock, stop,
                metrics=metrics) == EXIT_OK
    assert calls == [("pull", 0)]
    assert metrics.tasks["pull"].done == 5


@pytest.mark.parametrize(
    "reports, crash, expected",
    [
        ([CycleReport(kind="pull"), CycleReport(kind="membership")], False, EXIT_OK),
        ([CycleReport(kind="pull", deferred=3), CycleReport(kind="membership")], False, EXIT_OK),
        ([CycleReport(kind="pull"), CycleReport(kind="membership", failed=1)], False, EXIT_FAILED),
        ([CycleReport(kind="pull"), CycleReport(kind="membership")], True, EXIT_FAILED),
    ],
)
def test_once_runs_each_task_once(reports, crash, expected, tmp_path):
    stop = threading.Event()
    clock = FakeClock(stop, until=10**9)
    calls: list[tuple[str, float]] = []
    tasks = [make_task("pull", 120, clock, calls, report=reports[0], crash_on={1} if crash else None),
             make_task("membership", 300, clock, calls, report=reports[1])]
    heartbeat = tmp_path / "hb"
    assert loop(tasks, clock, stop, once=True, heartbeat_file=str(heartbeat)) == expected
    assert [n for n, _ in calls] == ["pull", "membership"]
    assert clock.waits == []
    assert heartbeat.exists()


def test_dry_run_is_passed_to_every_cycle():
    stop = threading.Event()
    seen: list[bool] = []

    def fn(dry_run: bool) -> CycleReport:
        seen.append(dry_run)
        return CycleReport(kind="push")

    assert run_loop([PeriodicTask("push", 60, fn)], once=True, dry_run=True, stop_event=stop) == EXIT_OK
    assert seen == [True]


def test_unwritable_heartbeat_is_warned_once_and_does_not_stop_the_loop(tmp_path, caplog):
    stop = threading.Event()
    clock = FakeClock(stop, until=25)
    calls: list[tuple[str, float]] = []
    with caplog.at_level(logging.WARNING, logger="waldur_slurm.loop"):
        loop([make_task("pull", 10, clock, calls)], clock, stop, heartbeat_file=str(tmp_path / "no" / "such" / "dir"))
    assert len(calls) == 3
    assert len([r for r in caplog.records if "heartbeat" in r.getMessage()]) == 1


# A real process: run_daemon with a slow cycle, SIGTERM in the middle of it.
DAEMON = r"""
import sys, time, types
from waldur_slurm.cycle import CycleReport
from waldur_slurm.loop import PeriodicTask, run_daemon
from waldur_slurm.observability import setup_logging

setup_logging(level="INFO", fmt="text")
count = 0
def cycle(dry_run):
    global count
    count += 1
    print(f"started {count}", flush=True)
    time.sleep(0.4)  # a step in progress (e.g. a sacctmgr batch) when the signal comes
    print(f"finished {count}", flush=True)
    return CycleReport(kind="pull", done=1)

settings = types.SimpleNamespace(heartbeat_file=sys.argv[1], metrics_port=0, metrics_address="127.0.0.1")
sys.exit(run_daemon(settings, [PeriodicTask("pull", 0.05, cycle)], once=False, dry_run=False))
"""


def start_daemon(tmp_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", DAEMON, str(tmp_path / "hb")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started 1"
    return proc


def test_sigterm_finishes_the_current_step_and_exits_0(tmp_path):
    proc = start_daemon(tmp_path)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.splitlines() == ["finished 1"]
    assert "SIGTERM received: finishing the current step" in err
    assert "pull cycle: seen=0 done=1" in err
    assert (tmp_path / "hb").exists()


def test_second_signal_exits_at_once(tmp_path):
    proc = start_daemon(tmp_path)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)  # two signals before the handler runs would be coalesced into one
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 128 + signal.SIGINT
    assert "finished" not in out
    assert "SIGINT again: exiting now" in err


def test_extra_wakeup_runs_a_cycle_before_the_regular_one():
    stop = threading.Event()
    clock = FakeClock(stop, until=2500)
    calls: list[tuple[str, float]] = []
    base = make_task("push", 3600, clock, calls, work=5)
    # An extra cycle is due at t=1000 and t=1270 (like the end of a billing month), then none.
    deadlines = [1000.0, 1270.0]

    def extra() -> float | None:
        upcoming = [d - clock.now for d in deadlines if d - clock.now > 1]
        return min(upcoming) if upcoming else None

    task = PeriodicTask(base.name, base.period, base.fn, extra_wakeup=extra)
    loop([task], clock, stop)
    assert [t for _, t in calls] == [0, 1000, 1270]
