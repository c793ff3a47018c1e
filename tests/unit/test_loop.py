"""The polling loop: scheduling with an injected clock, crash and auth handling, --once, real signals."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from waldur_slurm.daemon.cycle import CycleReport
from waldur_slurm.daemon.loop import EXIT_AUTH, EXIT_FAILED, EXIT_OK, PeriodicTask, default_jitter, run_loop
from waldur_slurm.tools.observability import Metrics

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
    with caplog.at_level(logging.INFO, logger="waldur_slurm.daemon.loop"):
        assert loop([task], clock, stop, heartbeat_file=str(heartbeat), metrics=metrics) == EXIT_OK
    assert [t for _, t in calls] == [0, 10, 20, 30]
    crashes = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(crashes) == 2 and all(r.exc_info for r in crashes)
    assert "pull cycle crashed" in crashes[0].getMessage()
    summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pull cycle:")]
    assert len(summaries) == 2 and "done=1" in summaries[0]
    stats = metrics.tasks["pull"]
    assert (stats.cycles_ok, stats.cycles_error, stats.done, stats.slurm_processes, stats.http_requests) == (2, 2, 2, 4, 6)
    # The heartbeat holds the time of the last successful cycle (t=20), and that the crash at t=30 made pull red.
    task = json.loads(heartbeat.read_text())["tasks"]["pull"]
    assert task == {"period": 10, "last_success": 1700000020.0, "last_error": "last cycle crashed: pull exploded"}
    assert os.stat(heartbeat).st_mtime == pytest.approx(1_700_000_020)


def test_auth_error_ends_the_loop_with_a_clear_message(caplog):
    stop = threading.Event()
    clock = FakeClock(stop, until=1000)
    calls: list[tuple[str, float]] = []
    tasks = [make_task("pull", 10, clock, calls, raise_exc=AuthError("401 Invalid token.")),
             make_task("membership", 10, clock, calls)]
    with caplog.at_level(logging.INFO, logger="waldur_slurm.daemon.loop"):
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
    with caplog.at_level(logging.WARNING, logger="waldur_slurm.daemon.loop"):
        loop([make_task("pull", 10, clock, calls)], clock, stop, heartbeat_file=str(tmp_path / "no" / "such" / "dir"))
    assert len(calls) == 3
    assert len([r for r in caplog.records if "heartbeat" in r.getMessage()]) == 1


# A real process: run_daemon with a slow cycle, SIGTERM in the middle of it.
DAEMON = r"""
import sys, time, types
from waldur_slurm.daemon.cycle import CycleReport
from waldur_slurm.daemon.loop import PeriodicTask, run_daemon
from waldur_slurm.tools.observability import setup_logging

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


# ------------------------------------------------------------------ health = progress (issue 13)

import json
import socket

from waldur_slurm.daemon.loop import EXIT_UNREACHABLE, unreachable_reason
from waldur_slurm.tools.observability import SystemdNotifier, check_heartbeat
from waldur_slurm.slurm.errors import CommandNotFound, ContainerMissing, SlurmCommandError, SlurmUnavailable
from waldur_slurm.waldur.errors import WaldurTransientError


@pytest.mark.parametrize(
    "exc, side",
    [
        (CommandNotFound(["sacctmgr"], "No such file or directory: 'sacctmgr'"), "SLURM"),
        (ContainerMissing("container 'nope' not found on unix:///x"), "SLURM"),
        (SlurmUnavailable("slurmdbd down"), "SLURM"),
        (WaldurTransientError("GET /api/orders/: 503"), "Waldur"),
        (SlurmCommandError(["sacctmgr"], 1, "", "bad value"), None),
        (RuntimeError("a bug"), None),
    ],
)
def test_unreachable_reason_names_the_side(exc, side):
    reason = unreachable_reason(exc)
    assert (reason.split(" ", 1)[0] if reason else None) == side
    if reason:
        assert reason.startswith(f"{side} unreachable: ") and "\n" not in reason


def test_unreachable_error_is_one_line_no_traceback_and_not_progress(tmp_path, caplog):
    stop = threading.Event()
    clock = FakeClock(stop, until=10**9)
    calls: list[tuple[str, float]] = []
    missing = CommandNotFound(["sacctmgr", "list"], "No such file or directory: 'sacctmgr'")
    tasks = [make_task("pull", 120, clock, calls, raise_exc=missing), make_task("membership", 300, clock, calls)]
    heartbeat = tmp_path / "hb"
    metrics = Metrics(started=clock.wall())
    with caplog.at_level(logging.INFO, logger="waldur_slurm.daemon.loop"):
        code = loop(tasks, clock, stop, once=True, heartbeat_file=str(heartbeat), metrics=metrics)
    assert code == EXIT_UNREACHABLE
    pull_lines = [r for r in caplog.records if r.getMessage().startswith("pull")]
    assert len(pull_lines) == 1 and pull_lines[0].levelno == logging.WARNING
    assert pull_lines[0].exc_info is None  # no traceback
    assert "unreachable: SLURM unreachable: command not found: sacctmgr" in pull_lines[0].getMessage()
    ok, reason = metrics.healthy(clock.wall())
    assert not ok and reason.startswith("pull: SLURM unreachable: command not found: sacctmgr")
    assert "membership" not in reason  # the other task progressed
    healthy, line = check_heartbeat(heartbeat, now=clock.wall())
    assert not healthy and "pull: SLURM unreachable" in line and "membership" not in line
    data = json.loads(heartbeat.read_text())
    assert data["tasks"]["membership"]["last_success"] == clock.wall()
    assert data["tasks"]["pull"]["last_success"] is None


@pytest.mark.parametrize(
    "pull_report, expected",
    [
        (CycleReport(kind="pull", deferred=2, unreachable=["Waldur unreachable: 503"]), EXIT_UNREACHABLE),
        (CycleReport(kind="pull", failed=1, unreachable=["SLURM unreachable: x"]), EXIT_FAILED),  # a failure wins
        (CycleReport(kind="pull", deferred=2), EXIT_OK),  # deferred work alone is not a failure
    ],
)
def test_once_exit_code_for_a_cycle_that_could_not_reach_a_side(pull_report, expected):
    stop = threading.Event()
    clock = FakeClock(stop, until=10**9)
    calls: list[tuple[str, float]] = []
    assert loop([make_task("pull", 120, clock, calls, report=pull_report)], clock, stop, once=True) == expected


def test_probe_runs_only_after_a_cycle_that_did_not_touch_slurm():
    stop = threading.Event()
    clock = FakeClock(stop, until=10**9)
    probes: list[str] = []

    def probe() -> str | None:
        probes.append("probe")
        return "SLURM unreachable: container 'nope' not found"

    idle = PeriodicTask("pull", 120, lambda dry: CycleReport(kind="pull"), probe=probe)
    assert loop([idle], clock, stop, once=True) == EXIT_UNREACHABLE
    assert probes == ["probe"]
    busy = PeriodicTask("pull", 120, lambda dry: CycleReport(kind="pull", seen=1, done=1, slurm_processes=2),
                        probe=probe)
    assert loop([busy], clock, stop, once=True) == EXIT_OK
    assert probes == ["probe"]  # the cycle reached SLURM itself: no probe


def test_a_failed_cycle_turns_health_red_at_once_and_a_success_turns_it_green():
    stop = threading.Event()
    clock = FakeClock(stop, until=250)
    outcomes = iter([CycleReport(kind="push", done=1, slurm_processes=2),
                     CycleReport(kind="push", unreachable=["SLURM unreachable: slurmdbd down"]),
                     CycleReport(kind="push", done=1, slurm_processes=2)])
    seen: list[tuple[bool, str]] = []
    metrics = Metrics(started=clock.wall())

    def fn(dry_run: bool) -> CycleReport:
        seen.append(metrics.healthy(clock.wall()))
        return next(outcomes)

    loop([PeriodicTask("push", 100, fn)], clock, stop, metrics=metrics)
    assert seen == [(True, "ok"), (True, "ok"), (False, "push: SLURM unreachable: slurmdbd down")]
    assert metrics.healthy(clock.wall()) == (True, "ok")
    assert (metrics.tasks["push"].cycles_ok, metrics.tasks["push"].cycles_unreachable) == (2, 1)


def test_cycle_summary_is_one_json_record_with_the_counters_as_fields():
    import io

    from waldur_slurm.tools.observability import setup_logging

    stream = io.StringIO()
    handler = setup_logging(level="INFO", fmt="json", stream=stream)
    try:
        stop = threading.Event()
        report = CycleReport(kind="pull", seen=3, done=2, failed=1, writes=4, slurm_processes=2, http_requests=9)
        run_loop([PeriodicTask("pull", 60, lambda dry: report)], once=True, dry_run=False, stop_event=stop)
    finally:
        logging.getLogger().removeHandler(handler)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    summaries = [r for r in records if r["message"].startswith("pull cycle:")]
    assert len(summaries) == 1
    fields = summaries[0]
    assert {k: fields[k] for k in ("task", "seen", "done", "failed", "deferred", "skipped", "writes",
                                   "slurm_processes", "http_requests", "unreachable")} == {
        "task": "pull", "seen": 3, "done": 2, "failed": 1, "deferred": 0, "skipped": 0, "writes": 4,
        "slurm_processes": 2, "http_requests": 9, "unreachable": []}
    assert isinstance(fields["duration_s"], float)


class NotifySocket:
    """A real unix datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.path = path
        self.received: list[list[str]] = []
        self.done = threading.Event()
        # Read as systemd does, while the agent runs: the kernel queues only ~10 datagrams.
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while not self.done.is_set():
            try:
                self.received.append(self.sock.recv(4096).decode().split("\n"))
            except socket.timeout:
                continue
            except OSError:
                return

    def messages(self) -> list[list[str]]:
        time.sleep(0.3)  # let the reader drain the queue
        return list(self.received)

    def close(self) -> None:
        self.done.set()
        self.reader.join(5)
        self.sock.close()


def test_sd_notify_ready_then_watchdog_only_while_healthy(tmp_path):
    server = NotifySocket(tmp_path / "notify")
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(server.path), "WATCHDOG_USEC": "60000000"})
        assert notifier.ping_every() == 30
        stop = threading.Event()
        clock = FakeClock(stop, until=400)
        outcomes = [CycleReport(kind="pull", done=1, slurm_processes=1),
                    CycleReport(kind="pull", unreachable=["SLURM unreachable: command not found: sacctmgr"])]

        def fn(dry_run: bool) -> CycleReport:
            return outcomes[0] if clock.now < 100 else outcomes[1]

        loop([PeriodicTask("pull", 120, fn)], clock, stop, notifier=notifier)
        messages = server.messages()
    finally:
        server.close()
    assert messages[0] == ["READY=1", "STATUS=running the first cycles"]
    assert messages[1] == ["WATCHDOG=1", "STATUS=healthy"]  # after the good cycle at t=0
    # Then pings at t=0, 30, 60, 90 of the wait (status unchanged, not repeated); at t=120 the cycle fails:
    # the status says why and the watchdog is not fed any more.
    assert messages[2:6] == [["WATCHDOG=1"]] * 4
    assert messages[6] == ["STATUS=pull: SLURM unreachable: command not found: sacctmgr"]
    assert all("WATCHDOG=1" not in m for m in messages[6:])
    assert messages[-1] == ["STOPPING=1"]
    assert clock.waits[:4] == [30, 30, 30, 30]  # woken up to feed the watchdog, not a 120 s sleep


def test_sd_notify_is_silent_without_a_socket_and_survives_a_vanished_one(tmp_path, caplog):
    assert not SystemdNotifier({}).enabled
    assert SystemdNotifier({}).notify("READY=1") is False
    gone = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with caplog.at_level(logging.WARNING):
        assert gone.notify("READY=1") is False
        assert gone.notify("WATCHDOG=1") is False
    assert len([r for r in caplog.records if "cannot notify systemd" in r.getMessage()]) == 1
    assert SystemdNotifier({"NOTIFY_SOCKET": "@abstract"}).address == "\0abstract"
    other = SystemdNotifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None  # the watchdog is another process's
