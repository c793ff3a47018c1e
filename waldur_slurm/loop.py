"""The polling loop shared by the pull and push daemons.

A daemon is a list of ``PeriodicTask``: pull has two (orders every ``pull_period``, membership every
``membership_period``), push has one. Periods are measured start to start, with a small random jitter so
that several agents do not hit Waldur in step; a slow cycle therefore does not stretch the period, and an
overrunning one is followed at once by the next (no backlog of missed runs).

- SIGTERM/SIGINT set the stop event: the current step finishes, then the loop returns 0. A second
  signal exits at once.
- A crashing cycle is logged with its traceback (Sentry gets it once, see observability.EventFilter),
  counted in the metrics, and the loop goes on at the next period.
- An authentication error (``WaldurAuthError``) ends the loop with ``EXIT_AUTH``: retrying with a token
  Waldur refuses only fills the log.
- ``once``: each task runs once; the exit code is 1 if any cycle crashed or failed an item.
- The heartbeat file is touched after each cycle that did not crash.
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

from waldur_slurm.cycle import CycleReport
from waldur_slurm.observability import Metrics, touch_heartbeat

if TYPE_CHECKING:
    from waldur_slurm.config import Settings

log = logging.getLogger("waldur_slurm.loop")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_AUTH = 3

JITTER_FRACTION = 0.05  # of the period
JITTER_MAX = 30.0  # seconds


@dataclass(frozen=True)
class PeriodicTask:
    """``fn(dry_run)`` runs one cycle and returns its report.

    ``extra_wakeup()``, when given, returns the seconds until an extra cycle is due before the regular one
    (the push daemon's last cycles of a billing month), or None.
    """

    name: str
    period: float
    fn: Callable[[bool], CycleReport]
    extra_wakeup: Callable[[], float | None] | None = None


def default_jitter(period: float) -> float:
    spread = min(period * JITTER_FRACTION, JITTER_MAX)
    return random.uniform(-spread, spread)


def _auth_errors() -> tuple[type[BaseException], ...]:
    try:
        from waldur_slurm.waldur.errors import WaldurAuthError
    except ImportError:  # the Waldur package is optional for the loop's own tests
        return ()
    return (WaldurAuthError,)


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
) -> int:
    """Run ``tasks`` until ``stop_event`` is set (or once each); returns the process exit code.

    ``clock``/``wait``/``jitter`` are injectable for tests; ``wait(seconds)`` must return early when
    ``stop_event`` is set (the default is ``stop_event.wait``).
    """
    if not tasks:
        raise ValueError("run_loop needs at least one task")
    wait = wait or stop_event.wait
    fatal = _auth_errors() if fatal_errors is None else fatal_errors
    if metrics is not None:
        for task in tasks:
            metrics.register(task.name, task.period)
    heartbeat_warned = False
    any_failed = False

    def run_one(task: PeriodicTask) -> CycleReport | None:
        nonlocal heartbeat_warned
        started = clock()
        try:
            report = task.fn(dry_run)
        except fatal:
            raise
        except Exception:
            duration = clock() - started
            # log.exception reaches Sentry through the logging integration; EventFilter de-duplicates.
            log.exception("%s cycle crashed after %.1f s; next attempt in %.0f s", task.name, duration, task.period)
            if metrics is not None:
                metrics.record(task.name, duration, None)
            return None
        duration = clock() - started
        log.info("%s duration=%.2fs%s", report.summary(), duration, " (dry run)" if dry_run else "")
        for note in report.notes:
            log.info("%s: %s", task.name, note)
        if metrics is not None:
            metrics.record(task.name, duration, report, now=wall_clock())
        if heartbeat_file:
            try:
                touch_heartbeat(heartbeat_file, wall_clock())
            except OSError as exc:
                if not heartbeat_warned:
                    log.warning("cannot write the heartbeat file %s: %s", heartbeat_file, exc.strerror or exc)
                    heartbeat_warned = True
        return report

    try:
        if once:
            for task in tasks:
                if stop_event.is_set():
                    break
                report = run_one(task)
                any_failed = any_failed or report is None or report.failed > 0
            return EXIT_FAILED if any_failed else EXIT_OK

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
        return EXIT_OK
    except fatal as exc:
        log.error("Waldur refused the API token (%s): fix WALDUR_API_TOKEN and restart; exiting", exc)
        return EXIT_AUTH


def run_daemon(settings: Settings, tasks: Sequence[PeriodicTask], *, once: bool, dry_run: bool) -> int:
    """Everything around ``run_loop`` for ``main``: signals, metrics endpoint, heartbeat file."""
    from waldur_slurm.observability import start_metrics_server

    stop_event = threading.Event()
    restore = install_signal_handlers(stop_event)
    metrics = Metrics()
    server = None if once else start_metrics_server(settings, metrics)
    try:
        return run_loop(
            tasks,
            once=once,
            dry_run=dry_run,
            stop_event=stop_event,
            heartbeat_file=settings.heartbeat_file,
            metrics=metrics,
        )
    finally:
        if server is not None:
            server.close()
        restore()
