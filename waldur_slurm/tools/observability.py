"""Logging, Sentry, the heartbeat file and the Prometheus metrics endpoint.

Health means progress, per task (pull, membership, push): a cycle counts as a success only when it reached
Waldur and SLURM and did its work (``CycleReport.progressed``). A task is unhealthy when its last cycle did
not progress (the reason is kept: "SLURM unreachable: ...") or when it has not succeeded for three periods
(+1 min). The same rule feeds every signal:

- ``/healthz`` and ``/metrics`` (``WALDUR_METRICS_PORT``), from ``Metrics``;
- the **heartbeat file** (``WALDUR_HEARTBEAT_FILE``): JSON with each task's period, last success and last
  error, rewritten after every cycle; ``python -m waldur_slurm.tools.observability check-heartbeat PATH`` applies the
  rule to it and names the stale task (the docker-compose healthcheck);
- **sd_notify** (``SystemdNotifier``): READY once the start checks ran, WATCHDOG only while every task is
  healthy, so systemd's ``WatchdogSec=`` restarts a daemon that stopped making progress.

Logs go to stderr (journald and ``docker logs`` collect it); stdout is left to the output of one-shot
commands (``--diag`` checklist, ``--load-components`` table). Nothing here runs at import time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from waldur_slurm import __version__

if TYPE_CHECKING:
    from waldur_slurm.config import Settings
    from waldur_slurm.daemon.cycle import CycleReport

log = logging.getLogger("waldur_slurm.tools.observability")

FILTERED = "[Filtered]"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"  # journald stamps each line itself

# Header/field names whose values are secret wherever they appear in an event or a log line.
_SECRET_KEY = re.compile(r"(authorization|token|dsn|secret|password|passwd|cookie|api[_-]?key|sentry[_-]?key)", re.I)
# "Token abc…", "Bearer abc…", "sentry_key=…" and credentials in a URL (a DSN), even when the value
# is not one we know: (pattern, replacement).
_SECRET_SHAPES = (
    (re.compile(r"(?i)\b(token|bearer)(\s+|=|:\s*)[A-Za-z0-9._~+/=-]{16,}"), r"\1\2" + FILTERED),
    (re.compile(r"(?i)(sentry_key=)[A-Za-z0-9]+"), r"\1" + FILTERED),
    (re.compile(r"(?i)(https?://)[^/@\s]+@"), r"\1" + FILTERED + "@"),
)


# --------------------------------------------------------------------------------------------------
# Redaction


class Redactor:
    """Replaces known secret values and secret-shaped substrings with ``[Filtered]``."""

    def __init__(self, secrets: Iterable[str | None] = ()):
        values: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            values.add(secret)
            parts = urlsplit(secret)
            if parts.username:  # the DSN's public key alone is enough to post events
                values.add(parts.username)
        # Longest first, so that a DSN is replaced whole before its key is.
        self.values = sorted((v for v in values if len(v) >= 4), key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self.values:
            if secret in value:
                value = value.replace(secret, FILTERED)
        for shape, replacement in _SECRET_SHAPES:
            value = shape.sub(replacement, value)
        return value

    def data(self, value: Any, key: str | None = None) -> Any:
        """A deep copy of JSON-like ``value`` with secrets removed (by key name and by value)."""
        if key is not None and _SECRET_KEY.search(key) and value not in (None, "", [], {}):
            return FILTERED
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.data(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            # Header lists come as [name, value] pairs.
            if len(value) == 2 and isinstance(value[0], str) and _SECRET_KEY.search(value[0]):
                return [value[0], FILTERED]
            return [self.data(v) for v in value]
        return value


# --------------------------------------------------------------------------------------------------
# Logging


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message (+ exc_info).

    A record logged with ``extra={"fields": {...}}`` (the loop's cycle summary) carries those fields as
    top-level keys too, so a log pipeline can sum ``done``/``failed`` without parsing the message.
    """

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, Mapping):
            for key, value in extra.items():
                payload.setdefault(str(key), value)
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False, default=str)


class RedactingFormatter(logging.Formatter):
    """Wraps a formatter; secrets never reach the journal even if a message carries one."""

    def __init__(self, inner: logging.Formatter, redactor: Redactor):
        super().__init__()
        self.inner = inner
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.text(self.inner.format(record))


_HANDLER_MARK = "_waldur_slurm_handler"


def _writes_to_journal(stream: Any) -> bool:
    """systemd sets JOURNAL_STREAM=<dev>:<inode> when stdout/stderr is connected to the journal."""
    marker = os.environ.get("JOURNAL_STREAM", "")
    try:
        info = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return marker == f"{info.st_dev}:{info.st_ino}"


def setup_logging(settings: Settings | None = None, *, level: str | None = None, fmt: str | None = None,
                  stream: Any = None) -> logging.Handler:
    """Configure the root logger once: one stderr handler, level and format from the settings.

    Calling it again replaces the previous handler (tests and one-shot commands may call it twice).
    """
    level = level or (settings.log_level if settings else "INFO")
    fmt = fmt or (settings.log_format if settings else "text")
    secrets = (settings.waldur_api_token, settings.sentry_dsn) if settings else ()
    stream = stream if stream is not None else sys.stderr
    inner: logging.Formatter = JsonFormatter() if fmt == "json" else logging.Formatter(
        JOURNAL_FORMAT if _writes_to_journal(stream) else TEXT_FORMAT)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter(inner, Redactor(secrets)))
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter (one line per HTTP request) only when debugging.
    for noisy in ("httpx", "httpcore", "urllib3", "docker"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    return handler


# --------------------------------------------------------------------------------------------------
# Sentry


class EventFilter:
    """Sentry ``before_send``: scrubs secrets and drops repeats of an error already reported.

    An error's identity is its exception type and the place it was raised (innermost frame), or, for a
    log record without an exception, the logger and the message template. A cycle that fails the same
    way every two minutes is thus reported once per process, not 720 times a day.
    """

    def __init__(self, redactor: Redactor, max_remembered: int = 1000):
        self.redactor = redactor
        self.seen: set[tuple[str, ...]] = set()
        self.max_remembered = max_remembered
        self.lock = threading.Lock()
        self.dropped = 0

    @staticmethod
    def identity(event: Mapping[str, Any]) -> tuple[str, ...]:
        values = (event.get("exception") or {}).get("values") or []
        if values:
            exc = values[-1]  # the innermost exception
            frames = ((exc.get("stacktrace") or {}).get("frames")) or []
            where = ""
            if frames:
                top = frames[-1]
                where = f"{top.get('module') or top.get('filename')}:{top.get('function')}:{top.get('lineno')}"
            return ("exception", str(exc.get("module") or ""), str(exc.get("type")), where)
        entry = event.get("logentry") or {}
        message = entry.get("message") or event.get("message") or ""
        return ("message", str(event.get("logger") or ""), str(message))

    def __call__(self, event: dict[str, Any], hint: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        key = self.identity(event)
        with self.lock:
            if key in self.seen:
                self.dropped += 1
                return None
            if len(self.seen) < self.max_remembered:
                self.seen.add(key)
        return self.redactor.data(event)


def setup_sentry(settings: Settings, **extra: Any) -> bool:
    """Initialise sentry-sdk when ``SENTRY_DSN`` is set; returns whether it did."""
    if not settings.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration

    redactor = Redactor((settings.waldur_api_token, settings.sentry_dsn))
    event_filter = EventFilter(redactor)
    options: dict[str, Any] = dict(
        dsn=settings.sentry_dsn,
        release=f"waldur-slurm-agent@{__version__}",
        environment=settings.sentry_environment,
        before_send=event_filter,
        before_breadcrumb=lambda crumb, hint: redactor.data(crumb),
        send_default_pii=False,
        # Frame locals can hold the token or whole HTTP requests; the traceback is enough.
        include_local_variables=False,
        integrations=[LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)],
        auto_session_tracking=False,
        traces_sample_rate=0.0,
        shutdown_timeout=2,
    )
    options.update(extra)
    sentry_sdk.init(**options)
    return True


# --------------------------------------------------------------------------------------------------
# Heartbeat and health


def grace(period: float) -> float:
    """How long a task may go without a successful cycle before it is stale."""
    return 3 * period + 60


def task_problems(tasks: Mapping[str, Mapping[str, Any]], started: float, now: float,
                  max_age: float | None = None) -> list[str]:
    """Why each unhealthy task is unhealthy (pure; shared by /healthz, the watchdog and check-heartbeat).

    ``tasks`` maps a task name to ``period``, ``last_success`` (Unix time or None) and ``last_error`` (the
    reason the last cycle did not progress, or None). ``max_age`` replaces the per-task grace.
    """
    problems: list[str] = []
    for name, task in sorted(tasks.items()):
        error = task.get("last_error")
        if error:
            problems.append(f"{name}: {error}")
            continue
        last = task.get("last_success")
        since = float(last) if last is not None else started
        allowed = grace(float(task.get("period") or 0)) if max_age is None else max_age
        if now - since > allowed:
            what = "no successful cycle" if last is None else "last successful cycle"
            problems.append(f"{name}: {what} for {now - since:.0f} s (allowed {allowed:.0f} s)")
    return problems


def touch_heartbeat(path: str | os.PathLike[str], now: float | None = None, content: str | None = None) -> None:
    """Write the heartbeat file; atomic, so a reader never sees a half file."""
    target = Path(path)
    stamp = time.time() if now is None else now
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(content if content is not None else f"{stamp:.3f}\n", encoding="utf-8")
    os.replace(tmp, target)
    os.utime(target, (stamp, stamp))


def heartbeat_age(path: str | os.PathLike[str], now: float | None = None) -> float | None:
    """Seconds since the heartbeat file was last touched, or None if it does not exist."""
    try:
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        return None
    return (time.time() if now is None else now) - mtime


def check_heartbeat(path: str | os.PathLike[str], now: float | None = None,
                    max_age: float | None = None) -> tuple[bool, str]:
    """(healthy, one line) for the heartbeat file at ``path``."""
    now = time.time() if now is None else now
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return False, f"unhealthy: {path} does not exist (no cycle finished yet)"
    except OSError as exc:
        return False, f"unhealthy: cannot read {path}: {exc.strerror or exc}"
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        # A plain timestamp (agents before 1.0): only the file's age says anything.
        age = heartbeat_age(path, now) or 0.0
        limit = 0.0 if max_age is None else max_age
        if age > limit:
            return False, f"unhealthy: last successful cycle {age:.0f} s ago (max {limit:.0f} s)"
        return True, f"healthy: last successful cycle {age:.0f} s ago"
    tasks: dict[str, Any] = data["tasks"]
    problems = task_problems(tasks, float(data.get("started") or now), now, max_age)
    if problems:
        return False, "unhealthy: " + "; ".join(problems)
    ages = ", ".join(f"{name} {now - float(t['last_success']):.0f} s ago" for name, t in sorted(tasks.items())
                     if t.get("last_success") is not None)
    return True, "healthy: last successful cycles: " + (ages or "none yet (within the start grace)")


# --------------------------------------------------------------------------------------------------
# systemd notification


class SystemdNotifier:
    """sd_notify(3) over ``$NOTIFY_SOCKET`` with the socket module (the protocol is one datagram per message).

    Does nothing when the agent does not run under a ``Type=notify`` unit. ``watchdog_interval`` is
    ``WatchdogSec=`` in seconds (from ``$WATCHDOG_USEC``, when ``$WATCHDOG_PID`` is unset or ours), or None.
    """

    def __init__(self, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = ("\0" + address[1:]) if address.startswith("@") else (address or None)
        self.watchdog_interval: float | None = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1_000_000
        self.warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        if self.address is None:
            return False
        import socket

        try:
            # Non-blocking: a stuck or slow reader must never stall the agent (the queue holds ~10 datagrams).
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as sock:
                sock.connect(self.address)
                sock.sendall("\n".join(lines).encode())
            return True
        except OSError as exc:
            if not self.warned:  # systemd went away or the socket is wrong: say it once, carry on
                log.warning("cannot notify systemd at %s: %s", self.address.lstrip("\0"), exc.strerror or exc)
                self.warned = True
            return False

    def ping_every(self) -> float | None:
        """How often to feed the watchdog: half its interval, as sd_watchdog_enabled(3) advises."""
        return None if self.watchdog_interval is None else self.watchdog_interval / 2


# --------------------------------------------------------------------------------------------------
# Metrics


@dataclass
class TaskStats:
    period: float = 0.0
    cycles_ok: int = 0
    cycles_unreachable: int = 0
    cycles_error: int = 0
    last_duration: float = 0.0
    last_success: float | None = None
    last_error: str | None = None  # why the last cycle did not progress; None after a success
    done: int = 0
    failed: int = 0
    deferred: int = 0
    slurm_processes: int = 0
    http_requests: int = 0
    stuck: int = 0  # orders given up and held, as of the last cycle
    enforced: dict[str, int] | None = None  # accounts under each Waldur 8 flag, as of the last enforcement


@dataclass
class Metrics:
    """Counters and health of the running daemon, per task; thread-safe; rendered in the Prometheus text format."""

    started: float = field(default_factory=time.time)
    tasks: dict[str, TaskStats] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def register(self, name: str, period: float) -> None:
        with self.lock:
            self.tasks.setdefault(name, TaskStats()).period = period

    def record(self, name: str, duration: float, report: CycleReport | None, now: float | None = None,
               crash: str | None = None) -> None:
        """One cycle finished: ``report`` is None when it crashed (``crash`` says how)."""
        with self.lock:
            stats = self.tasks.setdefault(name, TaskStats())
            stats.last_duration = duration
            if report is None:
                stats.cycles_error += 1
                stats.last_error = f"last cycle crashed: {crash}" if crash else "last cycle crashed"
                return
            stats.done += report.done
            stats.failed += report.failed
            stats.deferred += report.deferred
            stats.slurm_processes += report.slurm_processes
            stats.http_requests += report.http_requests
            stats.stuck = report.stuck
            if report.enforced is not None:
                stats.enforced = dict(report.enforced)
            if not report.progressed:
                stats.cycles_unreachable += 1
                stats.last_error = "; ".join(report.unreachable)
                return
            stats.cycles_ok += 1
            stats.last_error = None
            stats.last_success = time.time() if now is None else now

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {name: {"period": s.period, "last_success": s.last_success, "last_error": s.last_error}
                    for name, s in self.tasks.items()}

    def problems(self, now: float | None = None) -> list[str]:
        return task_problems(self.snapshot(), self.started, time.time() if now is None else now)

    def healthy(self, now: float | None = None) -> tuple[bool, str]:
        """Healthy while every task's last cycle progressed and each succeeded within its grace."""
        problems = self.problems(now)
        return (not problems, "; ".join(problems) if problems else "ok")

    def heartbeat(self, now: float | None = None) -> str:
        """The heartbeat file's content: what check-heartbeat needs to judge every task."""
        now = time.time() if now is None else now
        return json.dumps({"version": __version__, "pid": os.getpid(), "started": self.started, "written": now,
                           "tasks": self.snapshot()}, sort_keys=True) + "\n"

    def render(self) -> str:
        rows: list[tuple[str, str, str, list[tuple[dict[str, str], float]]]] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], float]]) -> None:
            rows.append((name, kind, help_, samples))

        problems = self.problems()
        with self.lock:
            items = sorted(self.tasks.items())
            metric("waldur_slurm_build_info", "gauge", "Agent version.", [({"version": __version__}, 1)])
            metric("waldur_slurm_start_time_seconds", "gauge", "Process start, Unix time.", [({}, self.started)])
            metric("waldur_slurm_cycles_total", "counter",
                   "Finished cycles by outcome (ok = progressed, unreachable = Waldur or SLURM unreachable, "
                   "error = crashed).",
                   [({"task": n, "outcome": "ok"}, s.cycles_ok) for n, s in items]
                   + [({"task": n, "outcome": "unreachable"}, s.cycles_unreachable) for n, s in items]
                   + [({"task": n, "outcome": "error"}, s.cycles_error) for n, s in items])
            metric("waldur_slurm_task_healthy", "gauge",
                   "1 while the task's last cycle progressed and it succeeded within 3 periods + 60 s.",
                   [({"task": n}, 0 if any(p.startswith(f"{n}: ") for p in problems) else 1) for n, s in items])
            metric("waldur_slurm_cycle_duration_seconds", "gauge", "Duration of the last cycle.",
                   [({"task": n}, s.last_duration) for n, s in items])
            metric("waldur_slurm_last_success_timestamp_seconds", "gauge", "End of the last successful cycle, Unix time.",
                   [({"task": n}, s.last_success) for n, s in items if s.last_success is not None])
            metric("waldur_slurm_items_processed_total", "counter", "Orders/resources processed successfully.",
                   [({"task": n}, s.done) for n, s in items])
            metric("waldur_slurm_items_failed_total", "counter", "Orders/resources that failed permanently.",
                   [({"task": n}, s.failed) for n, s in items])
            metric("waldur_slurm_items_deferred_total", "counter", "Orders/resources left for a later cycle.",
                   [({"task": n}, s.deferred) for n, s in items])
            metric("waldur_slurm_slurm_processes_total", "counter", "SLURM command processes (or docker execs) spawned.",
                   [({"task": n}, s.slurm_processes) for n, s in items])
            metric("waldur_slurm_http_requests_total", "counter", "HTTP requests sent to Waldur.",
                   [({"task": n}, s.http_requests) for n, s in items])
            metric("waldur_slurm_stuck_orders", "gauge",
                   "Orders given up after WALDUR_ORDER_MAX_FAILED_CYCLES failing cycles and held (not marked erred).",
                   [({"task": n}, s.stuck) for n, s in items if n == "pull"])
            metric("waldur_slurm_enforced_accounts", "gauge",
                   "Accounts the agent holds paused, downscaled or with member access restricted (Waldur 8 flags).",
                   [({"flag": flag}, count) for n, s in items if s.enforced is not None
                    for flag, count in sorted(s.enforced.items())])
        lines: list[str] = []
        for name, kind, help_, samples in rows:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                label_text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                lines.append(f"{name}{{{label_text}}} {_number(value)}" if label_text else f"{name} {_number(value)}")
        return "\n".join(lines) + "\n"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0")


class MetricsServer:
    """``/metrics`` and ``/healthz`` on a daemon thread (stdlib only)."""

    def __init__(self, metrics: Metrics, address: str, port: int):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, outer.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
                elif path == "/healthz":
                    ok, reason = outer.metrics.healthy()
                    self._reply(200 if ok else 503, reason + "\n", "text/plain; charset=utf-8")
                else:
                    self._reply(404, "not found\n", "text/plain; charset=utf-8")

            def _reply(self, status: int, body: str, content_type: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # scrapes are not worth a log line
                return

        self.metrics = metrics
        self.httpd = ThreadingHTTPServer((address, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> MetricsServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def start_metrics_server(settings: Settings, metrics: Metrics) -> MetricsServer | None:
    """Start the endpoint when ``WALDUR_METRICS_PORT`` is set (non-zero)."""
    if not settings.metrics_port:
        return None
    server = MetricsServer(metrics, settings.metrics_address, settings.metrics_port).start()
    log.info("metrics endpoint on http://%s:%d/metrics (and /healthz)", settings.metrics_address, server.port)
    return server


# --------------------------------------------------------------------------------------------------
# Health probe CLI (docker healthcheck)


def _probe(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m waldur_slurm.tools.observability")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-heartbeat", help="exit 0 if every task of the agent is healthy")
    check.add_argument("path")
    check.add_argument("--max-age", type=float, default=None,
                       help="seconds a task may go without a successful cycle (default: 3 of its periods + 60 s)")
    args = parser.parse_args(argv)
    ok, line = check_heartbeat(args.path, max_age=args.max_age)
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(_probe())
