"""One measured agent process: ``python -m bench.worker CYCLE [CYCLE ...]`` with CYCLE in push, pull, membership.

Configured from the environment exactly like the daemon (``load_settings``, ``make_waldur_client``,
``make_slurm_client``); the clients and the reporter/reconciler are built once and the cycles run one after
another in this process, as the daemon's loop runs them. For every cycle it records:

- ``wall``: seconds of ``run_cycle`` / ``run_membership`` alone (interpreter start and imports excluded;
  ``startup`` reports them);
- ``slurm_processes``: processes (native) or execs (docker) the executor started during the cycle;
- ``http``: requests by method the Waldur facade sent during the cycle (retries included);
- ``rss_mb``: peak resident set size of this process so far (``ru_maxrss``), i.e. the agent's own peak,
  SLURM child processes excluded;
- ``cpu``: user+system CPU seconds of this process during the cycle.

Prints one JSON line: ``{"startup": s, "rss_start_mb": m, "cycles": [...]}``.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time

_T0 = time.perf_counter()

CYCLES = ("push", "pull", "membership")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str]) -> int:
    cycles = argv or ["push"]
    unknown = [c for c in cycles if c not in CYCLES]
    if unknown:
        print(f"unknown cycle(s) {unknown}; expected {CYCLES}", file=sys.stderr)
        return 2
    logging.basicConfig(level=os.environ.get("BENCH_LOG_LEVEL", "WARNING"), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from waldur_slurm.clients import make_slurm_client, make_waldur_client
    from waldur_slurm.config import load_settings
    from waldur_slurm.pull import PullReconciler
    from waldur_slurm.push import PushReporter

    settings = load_settings(os.environ)
    waldur = make_waldur_client(settings)
    slurm = make_slurm_client(settings)
    reporter = PushReporter(settings, waldur, slurm, echo=lambda _line: None)
    reconciler = PullReconciler(settings, waldur, slurm, out=lambda _line: None)
    startup = time.perf_counter() - _T0
    out: dict[str, object] = {"startup": round(startup, 4), "rss_start_mb": round(_rss_mb(), 2), "cycles": []}
    for kind in cycles:
        http0 = dict(waldur.request_counts)
        procs0 = slurm.executor.process_count
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
        out["cycles"].append(  # type: ignore[union-attr]
            {
                "kind": kind,
                "wall": round(wall, 4),
                "cpu": round(_cpu() - cpu0, 4),
                "slurm_processes": slurm.executor.process_count - procs0,
                "http": {m: n for m, n in http.items() if n},
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
    close = getattr(slurm.executor, "close", None)
    if close is not None:
        close()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
