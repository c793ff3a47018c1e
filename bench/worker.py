"""One measured agent process: ``python -m bench.worker CYCLE [CYCLE ...]`` with CYCLE in push, pull, membership.

Configured from the environment exactly like the daemon (``load_settings``, ``make_waldur_client``,
``make_slurm_client``); the clients and the reporter/reconciler are built once and the cycles run one after
another in this process, as the daemon's loop runs them. For every cycle it records:

- ``wall``: seconds of ``run_cycle`` / ``run_membership`` alone (interpreter start and imports excluded;
  ``startup`` reports them);
- ``slurm_processes``: processes (native) or execs (docker) the executor started during the cycle;
- ``http``: requests by method the Waldur facade sent during the cycle (retries included);
- ``rss_mb``: peak resident set size of this process so far (``VmHWM``), i.e. the agent's own peak,
  SLURM child processes excluded;
- ``cpu``: user+system CPU seconds of this process during the cycle;
- ``latency``: per endpoint (method, path with uuids as ``{uuid}``, filter names), the count and seconds of its
  requests from sending to the response's headers. Against a server on the same machine this is the server's
  own time per request (Django renders the whole body before it sends the headers), which gunicorn's default
  access log does not record.

Prints one JSON line: ``{"startup": s, "rss_start_mb": m, "cycles": [...]}``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import statistics
import sys
import threading
import time
from typing import Any
from urllib.parse import parse_qsl

_T0 = time.perf_counter()

CYCLES = ("push", "pull", "membership")


def _rss_mb() -> float:
    """Peak resident set of THIS process image (``VmHWM``). Not ``ru_maxrss``: Linux carries that across
    fork+exec, so a worker spawned by the bench driver (which holds the stand-in and its request log)
    would report the driver's size (measured: a child of a 300 MB parent shows ru_maxrss 313 MB, VmHWM 14 MB)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _command(argv: list[str]) -> str:
    """"sacctmgr load", "sacctmgr stdin", "sacct", ...: what kind of SLURM process this was."""
    merge = ["sh", "-c", 'exec "$@" 2>&1', "sh"]
    if argv[: len(merge)] == merge:
        argv = argv[len(merge) :]
    words = [a for a in argv if not a.startswith("-")]
    if not words:
        return "?"
    if words[0] == "sacctmgr":
        return f"sacctmgr {words[1]}" if len(words) > 1 else "sacctmgr stdin"
    return words[0]


_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
_NOT_FILTERS = frozenset({"page", "page_size", "field"})


def endpoint_key(method: str, path: str, query: str) -> str:
    """``GET /api/slurm-associations/ ?allocation_uuid``: requests that cost the server alike group together."""
    names = sorted({k for k, _ in parse_qsl(query, keep_blank_values=True)} - _NOT_FILTERS)
    key = f"{method} {_UUID.sub('{uuid}', path)}"
    return f"{key} ?{'&'.join(names)}" if names else key


class RequestTimer:
    """httpx event hooks on the agent's own client: (endpoint, seconds to the response headers) of every request."""

    def __init__(self) -> None:
        self.samples: list[tuple[str, float]] = []
        self._started: dict[int, float] = {}
        self._lock = threading.Lock()

    def install(self, http: Any) -> None:
        http.event_hooks["request"].append(self._request)
        http.event_hooks["response"].append(self._response)

    def _request(self, request: Any) -> None:
        with self._lock:
            self._started[id(request)] = time.perf_counter()

    def _response(self, response: Any) -> None:
        request = response.request
        with self._lock:
            started = self._started.pop(id(request), None)
            if started is not None:
                key = endpoint_key(request.method, request.url.path, request.url.query.decode())
                self.samples.append((key, time.perf_counter() - started))

    @staticmethod
    def summary(samples: list[tuple[str, float]]) -> dict[str, dict[str, float]]:
        by_key: dict[str, list[float]] = {}
        for key, seconds in samples:
            by_key.setdefault(key, []).append(seconds)
        out = {}
        for key, vals in sorted(by_key.items()):
            vals.sort()
            out[key] = {"count": len(vals), "total": round(sum(vals), 4), "median": round(statistics.median(vals), 4),
                        "p90": round(vals[min(len(vals) - 1, int(0.9 * len(vals)))], 4), "max": round(vals[-1], 4)}
        return out


class TimedExecutor:
    """Wraps the agent's executor to time each SLURM process it starts (the measurement, not a stand-in):
    the agent still runs the real commands through the real executor."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.calls: list[dict[str, object]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def run(self, argv: list[str], *, stdin: str | None = None, timeout: float):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return self._inner.run(argv, stdin=stdin, timeout=timeout)  # type: ignore[attr-defined]
        finally:
            self.calls.append({"command": _command(argv), "stdin_lines": stdin.count("\n") if stdin else 0,
                               "seconds": round(time.perf_counter() - t0, 4)})


def main(argv: list[str]) -> int:
    cycles = argv or ["push"]
    unknown = [c for c in cycles if c not in CYCLES]
    if unknown:
        print(f"unknown cycle(s) {unknown}; expected {CYCLES}", file=sys.stderr)
        return 2
    logging.basicConfig(level=os.environ.get("BENCH_LOG_LEVEL", "WARNING"), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from waldur_slurm.daemon.wiring import make_slurm_client, make_waldur_client
    from waldur_slurm.config import load_settings
    from waldur_slurm.pull.reconciler import PullReconciler
    from waldur_slurm.push.reporter import PushReporter

    settings = load_settings(os.environ)
    waldur = make_waldur_client(settings)
    timer = RequestTimer()
    http_client = waldur._sdk.get_httpx_client()
    timer.install(http_client)
    tag = os.environ.get("BENCH_USER_AGENT_TAG")
    if tag:  # the real server's access log tells this process's requests from other agents' by it
        http_client.headers["User-Agent"] = f"{http_client.headers['User-Agent']} {tag}"
    slurm = make_slurm_client(settings)
    timed = TimedExecutor(slurm.executor)
    slurm.executor = timed  # type: ignore[assignment]
    reporter = PushReporter(settings, waldur, slurm, echo=lambda _line: None)
    reconciler = PullReconciler(settings, waldur, slurm, out=lambda _line: None)
    startup = time.perf_counter() - _T0
    out: dict[str, object] = {"startup": round(startup, 4), "rss_start_mb": round(_rss_mb(), 2), "cycles": []}
    for kind in cycles:
        http0 = dict(waldur.request_counts)
        procs0 = slurm.executor.process_count
        calls0 = len(timed.calls)
        timed0 = len(timer.samples)
        retries0 = waldur._transport.retries
        cpu0 = _cpu()
        t0 = time.perf_counter()
        if kind == "push":
            report = reporter.run_cycle()
        elif kind == "pull":
            report = reconciler.run_cycle()
        else:
            report = reconciler.run_membership()
        wall = time.perf_counter() - t0
        http1 = waldur.request_counts
        http = {m: http1.get(m, 0) - http0.get(m, 0) for m in sorted(set(http1) | set(http0))}
        calls = timed.calls[calls0:]
        out["cycles"].append(  # type: ignore[union-attr]
            {
                "kind": kind,
                "wall": round(wall, 4),
                "cpu": round(_cpu() - cpu0, 4),
                "slurm_processes": slurm.executor.process_count - procs0,
                "slurm_seconds": round(sum(float(c["seconds"]) for c in calls), 4),  # type: ignore[arg-type]
                "slurm_calls": calls,
                "http": {m: n for m, n in http.items() if n},
                "latency": RequestTimer.summary(timer.samples[timed0:]),
                "retries": waldur._transport.retries - retries0,
                "rss_mb": round(_rss_mb(), 2),
                "seen": report.seen,
                "done": report.done,
                "failed": report.failed,
                "deferred": report.deferred,
                "skipped": report.skipped,
                "writes": report.writes,
                "report_slurm_processes": report.slurm_processes,
                "report_http_requests": report.http_requests,
                "notes": report.notes[:5],
            }
        )
    waldur.close()
    close = getattr(timed._inner, "close", None)
    if close is not None:
        close()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
