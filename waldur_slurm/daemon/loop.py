"""The polling loop shared by the pull and push daemons.

A daemon is a list of ``PeriodicTask``: pull has two (orders every ``pull_period``, membership every
``membership_period``), push has one. Periods are measured start to start, with a small random jitter so
that several agents do not hit Waldur in step; a slow cycle therefore does not stretch the period, and an
overrunning one is followed at once by the next (no backlog of missed runs).

- SIGTERM/SIGINT set the stop event: the current step finishes, then the loop returns 0. A second
  signal exits at once.
- Waldur or SLURM unreachable is one behaviour in every task and mode: the cycle defers its work and
  reports ``unreachable`` (or raises an error that means it: ``unreachable_reason``), the loop logs ONE
  line (no traceback), the task turns unhealthy, and ``--once`` exits ``EXIT_UNREACHABLE``. A cycle that
  did not need SLURM (nothing to do) runs the task's cheap ``probe`` instead, so a daemon with a broken
  SLURM is red before the first order arrives.
- A crashing cycle (a bug) is logged with its traceback (Sentry gets it once, see
  observability.EventFilter), counted in the metrics, and the loop goes on at the next period.
- An authentication error (``WaldurAuthError``) ends the loop with ``EXIT_AUTH``: retrying with a token
  Waldur refuses only fills the log.
- ``once``: each task runs once; the exit code is 1 if any cycle crashed or failed an item, else 4 if any
  could not reach Waldur or SLURM.
- After every cycle the heartbeat file gets each task's health (observability.Metrics.heartbeat), and
  systemd's watchdog is fed only while every task is healthy.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

from waldur_slurm.daemon.cycle import CycleReport
from waldur_slurm.tools.observability import Metrics, SystemdNotifier, touch_heartbeat

if TYPE_CHECKING:
    from waldur_slurm.config import Settings

log = logging.getLogger("waldur_slurm.daemon.loop")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_AUTH = 3
EXIT_UNREACHABLE = 4

JITTER_FRACTION = 0.05  # of the period
JITTER_MAX = 30.0  # seconds


@dataclass(frozen=True)
class PeriodicTask:
    """``fn(dry_run)`` runs one cycle and returns its report.

    ``extra_wakeup()``, when given, returns the seconds until an extra cycle is due before the regular one
    (the push daemon's last cycles of a billing month), or None.

    ``probe()``, when given, runs after a cycle that spawned no SLURM process (it had nothing to do): it
    returns why SLURM cannot be reached ("SLURM unreachable: ...") or None, without spawning a process.
    """

    name: str
    period: float
    fn: Callable[[bool], CycleReport]
    extra_wakeup: Callable[[], float | None] | None = None
    probe: Callable[[], str | None] | None = None


def default_jitter(period: float) -> float:
    spread = min(period * JITTER_FRACTION, JITTER_MAX)
    return random.uniform(-spread, spread)


def _auth_errors() -> tuple[type[BaseException], ...]:
    from waldur_slurm.waldur.errors import WaldurAuthError

    return (WaldurAuthError,)


def unreachable_reason(exc: BaseException) -> str | None:
    """"SLURM unreachable: ..." or "Waldur unreachable: ..." when ``exc`` means that side cannot be reached
    right now (the work waits for a later cycle), None for any other error (a bug or a refused item)."""
    from waldur_slurm.slurm.errors import CommandNotFound, ContainerMissing, SlurmTransientError
    from waldur_slurm.waldur.errors import WaldurTransientError

    # A missing sacctmgr or a wrong SLURM_CONTAINER_NAME is permanent for SLURM, but for the agent it is the
    # same as slurmdbd being down: nothing can be done until an operator acts, and nothing is lost meanwhile.
    if isinstance(exc, (SlurmTransientError, CommandNotFound, ContainerMissing)):
        return f"SLURM unreachable: {_one_line(exc)}"
    if isinstance(exc, WaldurTransientError):
        return f"Waldur unreachable: {_one_line(exc)}"
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def install_signal_handlers(stop_event: threading.Event) -> Callable[[], None]:
    """SIGTERM/SIGINT set ``stop_event``; a second one exits at once. Returns a function restoring the old handlers."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop_event.is_set():
            log.warning("%s again: exiting now", name)
            raise SystemExit(128 + signum)
        log.info("%s received: finishing the current step, then exiting", name)
        stop_event.set()

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def run_loop(
    tasks: Sequence[PeriodicTask],
    *,
    once: bool,
    dry_run: bool,
    stop_event: threading.Event,
    heartbeat_file: str | None = None,
    metrics: Metrics | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    wait: Callable[[float], object] | None = None,
    jitter: Callable[[float], float] = default_jitter,
    fatal_errors: tuple[type[BaseException], ...] | None = None,
    notifier: SystemdNotifier | None = None,
) -> int:
    """Run ``tasks`` until ``stop_event`` is set (or once each); returns the process exit code.

    ``clock``/``wait``/``jitter`` are injectable for tests; ``wait(seconds)`` must return early when
    ``stop_event`` is set (the default is ``stop_event.wait``).
    """
    if not tasks:
        raise ValueError("run_loop needs at least one task")
    wait = wait or stop_event.wait
    fatal = _auth_errors() if fatal_errors is None else fatal_errors
    # Health needs the metrics even when nobody scrapes them (heartbeat, watchdog).
    metrics = metrics if metrics is not None else Metrics(started=wall_clock())
    for task in tasks:
        metrics.register(task.name, task.period)
    heartbeat_warned = False
    ping_every = notifier.ping_every() if notifier is not None else None

    last_status: list[str] = []

    def feed_watchdog() -> None:
        if notifier is None:
            return
        problems = metrics.problems(wall_clock())
        status = "STATUS=" + ("; ".join(problems) if problems else "healthy")
        lines = [] if problems else ["WATCHDOG=1"]  # unhealthy: no ping, systemd restarts after WatchdogSec
        if last_status != [status]:
            lines.append(status)
            last_status[:] = [status]
        if lines:
            notifier.notify(*lines)

    def run_one(task: PeriodicTask) -> CycleReport | None:
        nonlocal heartbeat_warned
        started = clock()
        try:
            report = task.fn(dry_run)
        except fatal:
            raise
        except Exception as exc:
            reason = unreachable_reason(exc)
            if reason is None:
                duration = clock() - started
                # log.exception reaches Sentry through the logging integration; EventFilter de-duplicates.
                log.exception("%s cycle crashed after %.1f s; next attempt in %.0f s", task.name, duration,
                              task.period)
                metrics.record(task.name, duration, None, crash=_one_line(exc))
                write_heartbeat()
                return None
            report = CycleReport(kind=task.name, unreachable=[reason])
        if report.progressed and task.probe is not None and report.slurm_processes == 0:
            problem = task.probe()
            if problem:
                report.unreachable.append(problem)
        duration = clock() - started
        level = logging.INFO if report.progressed else logging.WARNING
        fields = {"task": task.name, **report.counters(), "duration_s": round(duration, 3), "dry_run": dry_run,
                  "unreachable": list(report.unreachable)}
        log.log(level, "%s duration=%.2fs%s", report.summary(), duration, " (dry run)" if dry_run else "",
                extra={"fields": fields})
        for note in report.notes:
            log.info("%s: %s", task.name, note)
        metrics.record(task.name, duration, report, now=wall_clock())
        write_heartbeat()
        return report

    def write_heartbeat() -> None:
        nonlocal heartbeat_warned
        feed_watchdog()
        if not heartbeat_file:
            return
        try:
            touch_heartbeat(heartbeat_file, wall_clock(), metrics.heartbeat(wall_clock()))
        except OSError as exc:
            if not heartbeat_warned:
                log.warning("cannot write the heartbeat file %s: %s", heartbeat_file, exc.strerror or exc)
                heartbeat_warned = True

    try:
        if notifier is not None:
            notifier.notify("READY=1", "STATUS=running the first cycles")
        if once:
            reports = []
            for task in tasks:
                if stop_event.is_set():
                    break
                reports.append(run_one(task))
            if any(r is None or r.failed > 0 for r in reports):
                return EXIT_FAILED
            if any(not r.progressed for r in reports if r is not None):
                return EXIT_UNREACHABLE
            return EXIT_OK

        start = clock()
        next_due = {task.name: start for task in tasks}  # every task runs right away on start
        log.info(
            "loop started: %s%s",
            ", ".join(f"{t.name} every {t.period:g} s" for t in tasks),
            " (dry run)" if dry_run else "",
        )
        while not stop_event.is_set():
            now = clock()
            task = min(tasks, key=lambda t: next_due[t.name])  # ties: list order
            delay = next_due[task.name] - now
            if delay > 0:
                if ping_every is not None:
                    # Wake up often enough to feed the watchdog (only while healthy, see feed_watchdog).
                    delay = min(delay, ping_every)
                    feed_watchdog()
                wait(delay)
                continue
            started = now
            run_one(task)
            due = started + max(task.period + jitter(task.period), 0.0)
            extra = task.extra_wakeup() if task.extra_wakeup is not None else None
            if extra is not None and extra > 0:
                due = min(due, clock() + extra)
            next_due[task.name] = due
        log.info("stopped")
        if notifier is not None:
            notifier.notify("STOPPING=1")
        return EXIT_OK
    except fatal as exc:
        log.error("Waldur refused the API token (%s): fix WALDUR_API_TOKEN and restart; exiting", exc)
        return EXIT_AUTH


def run_daemon(settings: Settings, tasks: Sequence[PeriodicTask], *, once: bool, dry_run: bool) -> int:
    """Everything around ``run_loop`` for ``main``: signals, metrics endpoint, heartbeat file, sd_notify."""
    from waldur_slurm.tools.observability import start_metrics_server

    stop_event = threading.Event()
    restore = install_signal_handlers(stop_event)
    metrics = Metrics()
    server = None if once else start_metrics_server(settings, metrics)
    notifier = None if once else SystemdNotifier()
    try:
        return run_loop(
            tasks,
            once=once,
            dry_run=dry_run,
            stop_event=stop_event,
            heartbeat_file=settings.heartbeat_file,
            metrics=metrics,
            notifier=notifier,
        )
    finally:
        if server is not None:
            server.close()
        restore()
