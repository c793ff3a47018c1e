"""The real-server mode's results -> summary rows, target verdicts (issue 16) and a markdown report."""

from __future__ import annotations

import statistics
from typing import Any

from .mastermind import LABELS, ORDER

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
TARGET_N = 500


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def summarize(row: dict[str, Any]) -> dict[str, Any]:
    samples = row["samples"]
    walls = [s["wall"] for s in samples]
    methods = sorted({m for s in samples for m in s["http"]})
    access = [s.get("access") for s in samples if s.get("access")]
    log_methods = sorted({m for a in access for m in a["by_method"]})
    writes = sorted({w for a in access for w in a["writes"]})
    mid = sorted(samples, key=lambda s: s["wall"])[(len(samples) - 1) // 2]
    return {
        "scenario": row["scenario"], "n": row["n"], "runs": len(samples),
        "wall": _median(walls), "wall_min": min(walls), "wall_max": max(walls),
        "cpu": _median([s["cpu"] for s in samples]),
        "slurm_seconds": _median([s.get("slurm_seconds", float("nan")) for s in samples]),
        "slurm_processes_values": sorted({s["slurm_processes"] for s in samples}),
        "slurm_calls": mid.get("slurm_calls", []),
        "http": {m: _median([s["http"].get(m, 0) for s in samples]) for m in methods},
        "log": {m: _median([a["by_method"].get(m, 0) for a in access]) for m in log_methods} if access else None,
        "log_writes": {w: _median([a["writes"].get(w, 0) for a in access]) for w in writes} if access else {},
        "log_write_total_max": max((sum(v for k, v in a["by_method"].items() if k in WRITE_METHODS) for a in access),
                                   default=None),
        "statuses": sorted({k for a in access for k in a["statuses"]}),
        "sent_twice": [x for a in access for x in a["sent_twice"]],
        "retries_max": max(s.get("retries", 0) for s in samples),
        "writes_max": max(s["writes"] for s in samples),
        "done_min": min(s["done"] for s in samples), "failed_max": max(s["failed"] for s in samples),
        "deferred_max": max(s["deferred"] for s in samples), "seen": samples[0].get("seen"),
        "latency": mid.get("latency", {}),
        "restored": [(s.get("restored"), s.get("removed")) for s in samples if "removed" in s],
        "rss_mb": max(s["rss_mb"] for s in samples),
    }


def summaries(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [summarize(r) for r in results["rows"]]
    rows.sort(key=lambda r: (r["n"], ORDER.index(r["scenario"]) if r["scenario"] in ORDER else 99))
    return rows


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Count checks of every row (kind "count": they fail the run) and the issue's times at N=500 (reported)."""
    rows = summaries(results)
    out: list[dict[str, Any]] = []

    def add(name: str, kind: str, limit: str, measured: str, ok: bool | None) -> None:
        out.append({"target": name, "kind": kind, "limit": limit, "measured": measured, "ok": ok})

    for r in rows:
        n, sc = r["n"], r["scenario"]
        writes = r["log_write_total_max"]
        if sc == "push_cold":
            add(f"push cold, N={n}: no request sent twice", "count", "0",
                f"{len(r['sent_twice'])} sent twice, {r['retries_max']} retries", not r["sent_twice"] and r["retries_max"] == 0)
        if sc in ("push_cold", "push_changed"):
            add(f"{LABELS[sc]}, N={n}: every resource reported", "count", f"done = {n}",
                f"done {r['done_min']}, failed {r['failed_max']}, deferred {r['deferred_max']}",
                r["done_min"] == n and r["failed_max"] == 0 and r["deferred_max"] == 0)
        if sc in ("push_nochange", "pull_idle_membership"):
            add(f"{LABELS[sc]}, N={n}: zero writes (server's access log; SLURM ops)", "count", "0",
                f"{writes} HTTP writes, {r['writes_max']} agent writes", writes == 0 and r["writes_max"] == 0)
        if sc == "restore":
            ok = all(a == b and b for a, b in r["restored"])
            add(f"restore, N={n}: every removed association is back in SLURM", "count", "all",
                ", ".join(f"{a}/{b}" for a, b in r["restored"]), ok)
            # the pull daemon reports each association it adds (create_association): at most one write each
            most = min((b for _, b in r["restored"]), default=0)
            add(f"restore, N={n}: at most one HTTP write per restored association", "count", f"<= {most}",
                f"{writes}", writes is not None and writes <= most)
    for sc, limit in (("push_nochange", 10), ("push_changed", 45), ("pull_idle_membership", 10), ("restore", 10)):
        row = next((r for r in rows if r["n"] == TARGET_N and r["scenario"] == sc), None)
        name = f"{LABELS[sc]}, N={TARGET_N}: wall (median)"
        if row is None:
            add(name, "time", f"<= {limit} s", "not run", None)
        else:
            add(name, "time", f"<= {limit} s", f"{row['wall']:.2f} s", row["wall"] <= limit)
    return out


def _counts(h: dict[str, float] | None) -> str:
    if not h:
        return "0" if h is not None else "-"
    parts = [f"{m} {v:g}" for m, v in sorted(h.items(), key=lambda kv: (kv[0] != "GET", kv[0]))]
    return f"{sum(h.values()):g} ({', '.join(parts)})"


def _verdict(ok: bool | None) -> str:
    return {True: "met", False: "**MISSED**", None: "n/a"}[ok]


def markdown(results: dict[str, Any]) -> str:
    rows = summaries(results)
    meta = results.get("meta", {})
    lines = []
    for one in meta.get("runs_merged") or [meta]:
        m = one.get("machine", {})
        which = f" ({', '.join(one['scenarios'])})" if one.get("scenarios") else ""
        lines.append(
            f"Run {one.get('started', '?')}{which} (`bench/run --mastermind`, {one.get('runs', '?')} run(s) per row, "
            f"{one.get('duration_s', '?')} s in total), commit {m.get('git', '?')}; {m.get('cpus', '?')} CPUs, "
            f"{m.get('mem_gib', '?')} GiB RAM, {m.get('slurm', '?')}, Python {m.get('python', '?')}; the real Oct-2024 "
            f"Mastermind at {one.get('server', '?')} (3 gunicorn workers), shared with other test sessions.")
        lines.append("")
    lines += [
        "#### Targets",
        "",
        "| target | limit | measured | verdict |",
        "|---|---|---|---|",
    ]
    checks = targets(results)
    for t in checks:
        lines.append(f"| {t['target']} | {t['limit']} | {t['measured']} | {_verdict(t['ok'])} |")
    lines += [
        "",
        "#### Every scenario",
        "",
        "Wall: median (min-max) of the cycle(s) alone in a fresh agent process. HTTP (agent): requests the agent's "
        "client sent, retries included. Access log: what reached the server (its gunicorn access log, this agent "
        "process's requests only). Writes: POST/PUT/PATCH/DELETE in the access log, by endpoint.",
        "",
        "| scenario | N | runs | wall s (min-max) | SLURM s | SLURM processes | HTTP (agent) | access log | writes by endpoint (access log) | statuses |",
        "|---|---:|---:|---|---:|---:|---|---|---|---|",
    ]
    for r in rows:
        w = ", ".join(f"{k.split(' ', 1)[1]} {v:g}" for k, v in sorted(r["log_writes"].items())) or "0"
        procs = "/".join(map(str, r["slurm_processes_values"]))
        lines.append(
            f"| {LABELS.get(r['scenario'], r['scenario'])} | {r['n']:,} | {r['runs']} | {r['wall']:.2f} "
            f"({r['wall_min']:.2f}-{r['wall_max']:.2f}) | {r['slurm_seconds']:.2f} | {procs} | {_counts(r['http'])} | "
            f"{_counts(r['log'])} | {w} | {', '.join(r['statuses'])} |")
    lines += [
        "",
        "#### The server's time per request",
        "",
        "Seconds from sending a request to its response headers, measured in the agent process on loopback (the "
        "server renders the whole answer before it sends the headers; gunicorn's default access log has no "
        "durations). Per endpoint of the median sample; `total` is the sum over its requests, which overlap "
        "when the agent sends them concurrently.",
        "",
        "| scenario | N | endpoint | requests | median s | p90 s | max s | total s |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["scenario"] in ("pull_idle", "membership"):
            continue  # in the combined row
        for key, v in sorted(r["latency"].items(), key=lambda kv: -kv[1]["total"]):
            lines.append(f"| {LABELS.get(r['scenario'], r['scenario'])} | {r['n']:,} | `{key}` | {v['count']:g} | "
                         f"{v['median']:.3f} | {v['p90']:.3f} | {v['max']:.3f} | {v['total']:.2f} |")
    lines += ["", "#### SLURM processes of the median sample", "",
              "| scenario | N | processes (command, stdin lines, seconds) |", "|---|---:|---|"]
    for r in rows:
        if r["scenario"] in ("pull_idle", "membership") or not r["slurm_calls"]:
            continue
        calls = "; ".join(f"{c['command']}" + (f" ({c['stdin_lines']} lines)" if c["stdin_lines"] else "")
                          + f" {c['seconds']:.2f} s" for c in r["slurm_calls"])
        lines.append(f"| {LABELS.get(r['scenario'], r['scenario'])} | {r['n']:,} | {calls} |")
    base = results.get("baseline", [])
    if base:
        lines += ["", "#### The original agent's per-account reads", "",
                  "`bench/baseline_original.py --http` on a sample of the same accounts, one after another as the "
                  "original did: its four SLURM reads per account, then its four HTTP reads per account against the "
                  "same server (resource by backend_id, the allocation's associations, the offering users, the plan "
                  "periods; its lookup in `marketplace-resources` answers a provider owner's token nothing on this "
                  "server, so the provider list is read as well: 5 requests per account); its two writes per account and cycle (`set_limits`, `set_usage`, sent even when nothing "
                  "changed) are left out, so the figures understate it. Extrapolated linearly to N where marked.", "",
                  "| N | accounts read | SLURM s | processes | HTTP s | HTTP requests | ms per account | for N, s | how |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for b in base:
            how = f"extrapolated from {b['accounts']}" if b["extrapolated"] else "measured"
            per = (b["per_account"] + b.get("http_per_account", 0)) * 1000
            lines.append(f"| {b['n']:,} | {b['accounts']} | {b['wall']:.1f} | {b['slurm_processes']} | "
                         f"{b.get('http_wall', float('nan')):.1f} | {b.get('http_requests', '-')} | {per:.0f} | "
                         f"{b['wall_for_n'] + b.get('http_wall_for_n', 0):.0f} | {how} |")
    setup = results.get("setup", [])
    if setup:
        lines += ["", "#### Setup (not measured as agent work)", ""]
        for s in setup:
            if s.get("new"):
                lines.append(f"- N={s['n']:,}: new world, {s.get('total_s', 0):.0f} s ({s.get('orders_s', 0):.0f} s placing "
                             f"the orders, {s.get('pull_s', 0):.0f} s of the agent's pull cycles, {s.get('jobs_s', 0):.0f} s "
                             f"for one job per account)")
            else:
                lines.append(f"- N={s['n']:,}: the world kept from {s.get('built', '?')} (built in {s.get('total_s', '?')} s)")
    notes = results.get("notes", []) + [f"error: {e}" for e in results.get("errors", [])]
    if notes:
        lines += ["", "#### Notes", ""] + [f"- {x}" for x in notes]
    return "\n".join(lines) + "\n"
