"""``bench/run --mastermind``: the agent against the REAL Oct-2024 Waldur Mastermind and the real SLURM cluster
(issue 16), native mode, N=100 and N=500 by default (``--n``).

For each N, on a kept or new world (bench/mm_world.py), every sample is one agent process (bench.worker, the
daemon's configuration as shipped: ``REQUESTS_TIMEOUT`` 15, concurrency 8):

- *push, cold*: the first report of the month into a new world (only when the world is new): every resource
  reports its usage and per-user usage and creates its two associations. Checked: no write reached the server
  twice (the server's access log against the per-resource multiplicity, and no transport retry);
- *push, every account's usage changed*: one more job in every account, then a push: the month's reports after
  the cold one (the server updates its usage records and invoice items instead of creating them);
- *push, nothing changed*: must write nothing;
- *pull idle + membership pass*: the pull daemon's order cycle (no order pending) and its membership pass in
  one process, as the daemon runs them; teams and SLURM agree, so nothing is written;
- *membership, restoring users' associations*: min(50, N) associations removed in SLURM behind the agent's back
  (each login from half of those accounts, never its default account), then the membership pass that adds them
  back. Checked: SLURM has every association again.

Counts per sample: the agent's own HTTP requests by method and SLURM processes, and the server's access log
(gunicorn) for what reached it, by endpoint. The access log has no durations (gunicorn's default format; the
shared server is not reconfigured), so the server's time per request is measured in the agent as the time to the
response headers on loopback (bench.worker ``latency``).
"""

from __future__ import annotations

import json
import re
import secrets
import time
import traceback
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.support.mastermind import AccessLog
from waldur_slurm.slurm.ops import RemoveUsers

from . import mm_world
from .common import PYTHON, REPO, child_env, log, machine_info, run_json
from .slurm_side import sh

WORKER_TIMEOUT = 3600
ATTEMPTS = 3
RESTORE = 50
BASELINE_SAMPLE = 50
LABELS = {
    "push_cold": "push, cold (first report of the month into a new world)",
    "push_changed": "push, every account's usage changed (after the cold one)",
    "push_nochange": "push, nothing changed",
    "pull_idle": "pull, idle cycle",
    "membership": "membership pass (nothing to change)",
    "pull_idle_membership": "pull idle + membership pass (one process)",
    "restore": "membership pass restoring users' associations",
}
ORDER = list(LABELS)
# what --scenarios may name (push_cold runs whenever a world is new)
SCENARIOS = ("push_nochange", "push_changed", "pull_idle_membership", "restore", "baseline")
_UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")
_WRITE = ("POST", "PUT", "PATCH", "DELETE")


def endpoint(method: str, path: str) -> str:
    return f"{method} {_UUID.sub('{uuid}', path.split('?', 1)[0])}"


def access_summary(entries: list[tuple[str, str, int, str]]) -> dict[str, Any]:
    """What the server's access log holds for one sample: requests by method, writes by endpoint, statuses,
    and the writes that reached the server more often than they can legitimately occur."""
    by_method = Counter(m for m, _, _, _ in entries)
    writes = Counter(endpoint(m, p) for m, p, _, _ in entries if m in _WRITE)
    statuses = Counter(str(s) for _, _, s, _ in entries)
    per_path = Counter((m, p) for m, p, _, _ in entries if m in _WRITE)
    twice = []
    for (m, p), count in per_path.items():
        # per object path: one write per object, except the association actions (one per login: 2) and the
        # per-user usage (one per user with usage in that account: every account's jobs are one login's)
        allowed = 2 if p.endswith(("_association/",)) else 1
        if "/set_usage/" in p:
            continue  # one path for all resources: checked against the number of resources below
        if count > allowed:
            twice.append(f"{m} {p} x{count}")
    return {"requests": len(entries), "by_method": dict(by_method), "writes": dict(writes),
            "statuses": dict(statuses), "sent_twice": twice}


class MMRunner:
    def __init__(self, ns: list[int], runs: int, out_dir: Path, *, fresh: bool = False, baseline: bool = True,
                 restore: int = RESTORE, build_only: bool = False, scenarios: set[str] | None = None) -> None:
        self.ns = ns
        self.runs = runs
        self.out_dir = out_dir
        self.fresh = fresh
        self.baseline = baseline
        self.restore = restore
        self.build_only = build_only
        self.scenarios = scenarios or set(SCENARIOS)
        self.results: dict[str, Any] = {"meta": {}, "rows": [], "baseline": [], "setup": [], "errors": [],
                                        "notes": []}
        self.access = AccessLog()
        self.ua_tag = "bench-" + secrets.token_hex(4)

    def save(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "results.json").write_text(json.dumps(self.results, indent=1))

    def run(self) -> dict[str, Any]:
        t0 = time.monotonic()
        self.results["meta"] = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                "machine": machine_info(), "mode": "mastermind", "runs": self.runs}
        mm = mm_world.connect()
        self.results["meta"]["server"] = mm.url
        try:
            for n in self.ns:
                try:
                    self.one_n(mm, n)
                except Exception as exc:  # noqa: BLE001 - the other N still run; the error is in the report
                    traceback.print_exc()
                    self.results["errors"].append(f"N={n}: {exc!r}"[:2000])
                self.save()
        finally:
            mm.close()
            self.results["meta"]["duration_s"] = round(time.monotonic() - t0, 1)
            self.save()
        return self.results

    # ------------------------------------------------------------------ one N
    def one_n(self, mm: mm_world.Mastermind, n: int) -> None:
        world = None if self.fresh else mm_world.cached(mm, n)
        new = world is None
        if world is None:
            log(f"building a world of {n} resources on the real server (slow: the pull daemon processes {n} orders)")
            world = mm_world.build(mm, n)
            self.results["setup"].append({"n": n, "new": True, **world.build})
        else:
            self.results["setup"].append({"n": n, "new": False, "built": world.built, **world.build})
        if self.build_only:
            self.results["notes"].append(f"N={n}: world {world.tag} built or checked; nothing measured (--build-only)")
            return
        want = self.scenarios
        if new:
            self.sample(world, "push_cold", ("push",), check_cold=True)
        else:
            self.results["notes"].append(f"N={n}: a kept world (built {world.built}): its cold push was measured when "
                                         "it was built; not repeatable")
        for _ in range(self.runs if "push_nochange" in want else 0):
            self.sample(world, "push_nochange", ("push",))
        for run in range(self.runs if "push_changed" in want else 0):
            log(f"N={n}: one more job in each of the {n} accounts (run {run + 1})")
            mm_world.submit_and_wait(world)
            self.sample(world, "push_changed", ("push",))
        for _ in range(self.runs if "pull_idle_membership" in want else 0):
            self.sample(world, "pull_idle_membership", ("pull", "membership"), direction="pull")
        for _ in range(self.runs if "restore" in want else 0):
            self.restore_sample(world)
        if self.baseline and "baseline" in want:
            self.baseline_row(world)

    def sample(self, world: mm_world.MMWorld, scenario: str, cycles: tuple[str, ...], *, direction: str = "push",
               check_cold: bool = False) -> dict[str, Any]:
        """One agent process. A sample whose cycle had to defer work (SLURM or Waldur unreachable: other
        sessions' tests stop slurmdbd on this machine) measured nothing: it is taken again (up to ATTEMPTS)
        and noted; a cold push cannot be repeated and is kept as it was."""
        for attempt in range(1, ATTEMPTS + 1):
            smp = self._sample(world, scenario, cycles, direction=direction, check_cold=check_cold)
            if not smp["deferred"] or check_cold:
                return smp
            note = f"N={world.n} {scenario}: attempt {attempt} deferred {smp['deferred']} item(s) ({smp['notes'][:1]})"
            self.results["notes"].append(note + ("; taken again" if attempt < ATTEMPTS else "; kept"))
            log(note)
            if attempt < ATTEMPTS:
                self._drop_last(world.n, scenario, cycles)
                time.sleep(10)
        return smp

    def _drop_last(self, n: int, scenario: str, cycles: tuple[str, ...]) -> None:
        names = {scenario, *(("pull_idle", "membership") if scenario == "pull_idle_membership" else ())}
        for row in self.results["rows"]:
            if row["n"] == n and row["scenario"] in names:
                row["samples"].pop()

    def _sample(self, world: mm_world.MMWorld, scenario: str, cycles: tuple[str, ...], *, direction: str = "push",
                check_cold: bool = False) -> dict[str, Any]:
        env = world.env(direction, BENCH_USER_AGENT_TAG=self.ua_tag)
        mark = self.access.mark()
        t0 = time.monotonic()
        out: dict[str, Any] = run_json([PYTHON, "-m", "bench.worker", *cycles], child_env(env), timeout=WORKER_TIMEOUT)
        elapsed = time.monotonic() - t0
        time.sleep(0.5)  # gunicorn writes its access line after the response
        entries = [e for e in self.access.since_ua(mark, self.ua_tag)]
        access = access_summary(entries)
        cycles_out = out["cycles"]
        first = cycles_out[0]
        if check_cold:
            set_usage = sum(1 for m, p, _, _ in entries if m == "POST" and p.startswith("/api/marketplace-component-usages/set_usage/"))
            if set_usage > world.n:
                access["sent_twice"].append(f"POST set_usage x{set_usage} for {world.n} resources")
        retries = sum(c.get("retries", 0) for c in cycles_out)
        if scenario == "pull_idle_membership":
            for c, name in zip(cycles_out, ("pull_idle", "membership")):
                self._add(world.n, name, {**c, "process_s": round(elapsed, 2)})
        combined = {
            "wall": round(sum(c["wall"] for c in cycles_out), 4),
            "cpu": round(sum(c["cpu"] for c in cycles_out), 4),
            "slurm_processes": sum(c["slurm_processes"] for c in cycles_out),
            "slurm_seconds": round(sum(c["slurm_seconds"] for c in cycles_out), 4),
            "slurm_calls": [x for c in cycles_out for x in c["slurm_calls"]],
            "http": dict(sum((Counter(c["http"]) for c in cycles_out), Counter())),
            "latency": _merge_latency([c.get("latency", {}) for c in cycles_out]),
            "writes": sum(c["writes"] for c in cycles_out),
            "seen": first["seen"], "done": sum(c["done"] for c in cycles_out),
            "failed": sum(c["failed"] for c in cycles_out), "deferred": sum(c["deferred"] for c in cycles_out),
            "retries": retries, "notes": [x for c in cycles_out for x in c.get("notes", [])][:5],
            "rss_mb": max(c["rss_mb"] for c in cycles_out), "startup": out["startup"], "process_s": round(elapsed, 2),
            "access": access,
        }
        self._add(world.n, scenario, combined)
        log(f"N={world.n} {scenario}: {combined['wall']:.2f} s, {sum(combined['http'].values())} requests "
            f"(access log {access['requests']}), writes {sum(v for k, v in access['by_method'].items() if k in _WRITE)}, "
            f"{combined['slurm_processes']} SLURM processes, retries {retries}"
            + (f", SENT TWICE: {access['sent_twice'][:3]}" if access["sent_twice"] else ""))
        return combined

    def _add(self, n: int, scenario: str, smp: dict[str, Any]) -> None:
        for row in self.results["rows"]:
            if row["n"] == n and row["scenario"] == scenario:
                row["samples"].append(smp)
                return
        self.results["rows"].append({"n": n, "scenario": scenario, "mode": "native", "samples": [smp]})

    def restore_sample(self, world: mm_world.MMWorld) -> None:
        """min(restore, N) associations removed in SLURM (each login from half of the chosen accounts, never its
        default account), then one membership pass; SLURM must hold them all again."""
        k = min(self.restore, world.n)
        defaults = _default_accounts(world.logins)
        accounts = world.accounts
        removed: list[tuple[str, str]] = []
        for i, login in enumerate(world.logins):
            share = k // 2 + (k % 2 if i == 0 else 0)
            pool = [a for a in accounts[i::2] if a != defaults.get(login)]
            removed += [(login, a) for a in pool[:share]]
        slurm = mm_world.slurm_client()
        ops = [RemoveUsers((login,), tuple(a for u, a in removed if u == login)) for login in world.logins
               if any(u == login for u, _ in removed)]
        for r in slurm.apply(ops):
            if not r.ok:
                raise RuntimeError(f"restore scenario: removing associations failed: {r.error}")
        smp = self.sample(world, "restore", ("membership",), direction="pull")
        state = slurm.read_state()
        back = sum(1 for u, a in removed if u in state.accounts[a].users)
        smp["removed"] = len(removed)
        smp["restored"] = back
        if back != len(removed):
            self.results["errors"].append(f"N={world.n} restore: {back} of {len(removed)} associations restored")
        self.save()

    def baseline_row(self, world: mm_world.MMWorld) -> None:
        accounts = world.accounts
        size = min(len(accounts), BASELINE_SAMPLE)
        step = len(accounts) / size
        chosen = [accounts[int(i * step)] for i in range(size)]
        path = self.out_dir / f"baseline-accounts-{world.n}.txt"
        path.write_text("\n".join(chosen) + "\n")
        env = {k: v for k, v in world.env("push").items() if k.startswith("WALDUR_")}
        out: dict[str, Any] = run_json([PYTHON, "-m", "bench.baseline_original", str(path), "--http"], child_env(env),
                                       timeout=WORKER_TIMEOUT)
        out.update(n=world.n, extrapolated=size < world.n, wall_for_n=round(out["per_account"] * world.n, 2),
                   http_wall_for_n=round(out["http_per_account"] * world.n, 2), processes_for_n=4 * world.n)
        self.results["baseline"].append(out)
        log(f"baseline N={world.n}: {size} accounts: SLURM reads {out['wall']:.1f} s, HTTP reads {out['http_wall']:.1f} s "
            f"({out['http_requests']} requests) -> {out['wall_for_n'] + out['http_wall_for_n']:.0f} s for {world.n}")


def _default_accounts(users: list[str]) -> dict[str, str]:
    r = sh(["sacctmgr", "-n", "-P", "list", "user", f"name={','.join(users)}", "format=user,defaultaccount"])
    return {line.split("|")[0]: line.split("|")[1] for line in r.stdout.splitlines() if "|" in line}


def _merge_latency(parts: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for part in parts:
        for key, v in part.items():
            if key in out:  # medians cannot be merged: keep the larger one, which the table marks as such
                o = out[key]
                out[key] = {"count": o["count"] + v["count"], "total": round(o["total"] + v["total"], 4),
                            "median": max(o["median"], v["median"]), "p90": max(o["p90"], v["p90"]),
                            "max": max(o["max"], v["max"])}
            else:
                out[key] = dict(v)
    return out


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs as one report: for each (N, scenario) the rows of the last run that measured it, for each N
    the last baseline and the first setup (the build); every run's meta is kept (``meta["runs_merged"]``)."""
    out: dict[str, Any] = {"meta": {}, "rows": [], "baseline": [], "setup": [], "errors": [], "notes": []}
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    base: dict[int, dict[str, Any]] = {}
    setup: dict[int, dict[str, Any]] = {}
    merged = []
    for run in runs:
        for row in run["rows"]:
            rows[(row["n"], row["scenario"])] = row
        for b in run.get("baseline", []):
            base[b["n"]] = b
        for s in run.get("setup", []):
            if s.get("new") or s["n"] not in setup:
                setup[s["n"]] = s
        out["errors"] += run.get("errors", [])
        out["notes"] += [f"{x} (run {run['meta'].get('started', '?')})" for x in run.get("notes", [])]
        merged.append((run["meta"], run["rows"]))
    out["rows"] = list(rows.values())
    kept = {id(r) for r in out["rows"]}
    merged = [{**meta, "scenarios": sorted(f"{r['scenario']} N={r['n']}" for r in rs if id(r) in kept)}
              for meta, rs in merged]
    out["baseline"] = list(base.values())
    out["setup"] = list(setup.values())
    out["meta"] = {**runs[-1]["meta"], "runs_merged": [m for m in merged if m["scenarios"]]}
    return out


def default_out() -> Path:
    return REPO / "bench" / "results" / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-mastermind"


__all__ = ["LABELS", "MMRunner", "access_summary", "child_env", "default_out", "endpoint"]
