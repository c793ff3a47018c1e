"""The scenarios of issue 7, run in order against the real cluster and the stand-in.

Push world (grown step by step: 100 -> 1,000 -> 3,000 accounts, one real job each):
  push first cycle, push second cycle (no change, same agent process), membership pass, the per-account
  baseline (bench/baseline_original.py), and at the docker N the push cycles again through docker exec.
Pull world (fresh for each N): N Create orders with two users each; the pull cycle, then an idle cycle in the
  same agent process; at the docker N the same through docker exec.

Every sample is one agent process (bench.worker). Before each sample the stand-in's state is restored from a
snapshot (push: no usage reported yet; pull: the orders pending) and, for pull, what the previous sample made
in SLURM is removed, so all samples of a row measure the same work.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from waldur_standin.testing import StandIn

from .common import PYTHON, child_env, docker_host, log, machine_info, run_json
from .quiet import Watch
from .slurm_side import TAG_PREFIX, BenchSlurm, cleanup_bench, sh
from .waldur_side import PullWorld, PushWorld, restore, snapshot

WORKER_TIMEOUT = 1800
ATTEMPTS = 3  # a sample disturbed by a slurmdbd restart (other engineers' failure tests) is taken again


@dataclass
class Plan:
    push_n: list[int]
    pull_n: list[int]
    docker_push_n: list[int]
    docker_pull_n: list[int]
    runs: int
    baseline_sample: int
    profile: str = "8"
    quick: bool = False


@dataclass
class Results:
    plan: Plan
    rows: list[dict[str, Any]] = field(default_factory=list)
    baseline: list[dict[str, Any]] = field(default_factory=list)
    setup: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, scenario: str, mode: str, n: int, samples: list[dict[str, Any]]) -> None:
        self.rows.append({"scenario": scenario, "mode": mode, "n": n, "samples": samples})

    def as_json(self) -> dict[str, Any]:
        return {"meta": self.meta, "plan": self.plan.__dict__, "rows": self.rows, "baseline": self.baseline,
                "setup": self.setup, "errors": self.errors, "retried": self.retried}


def worker(env: dict[str, str], *cycles: str) -> dict[str, Any]:
    result: dict[str, Any] = run_json([PYTHON, "-m", "bench.worker", *cycles], child_env(env), timeout=WORKER_TIMEOUT)
    return result


def sample(out: dict[str, Any], index: int) -> dict[str, Any]:
    cycle = dict(out["cycles"][index])
    cycle["startup"] = out["startup"]
    cycle["rss_start_mb"] = out["rss_start_mb"]
    return cycle


class Runner:
    def __init__(self, plan: Plan, out_dir: Path) -> None:
        self.plan = plan
        self.out_dir = out_dir
        self.results = Results(plan)
        self.tag = TAG_PREFIX + secrets.token_hex(3)
        self.slurm = BenchSlurm(self.tag)
        self.docker = docker_host()
        self.quiet_wait: dict[str, Any] | None = None

    def _docker_env(self) -> dict[str, str]:
        assert self.docker
        return {"SLURM_DEPLOYMENT_TYPE": "docker", "SLURM_CONTAINER_NAME": "slurmctld", "DOCKER_HOST": self.docker}

    def _wants_docker(self) -> bool:
        return bool(self.plan.docker_push_n or self.plan.docker_pull_n)

    # ------------------------------------------------------------------ entry
    def run(self) -> Results:
        t0 = time.monotonic()
        self.results.meta = {
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "tag": self.tag,
            "mode": "quick" if self.plan.quick else "full",
            "quiet_wait": self.quiet_wait,
        }
        self.preflight()
        try:
            with StandIn(profile=self.plan.profile) as standin:
                if self.plan.push_n:
                    self.push_world(standin)
            if self.plan.pull_n:
                with StandIn(profile=self.plan.profile) as standin:
                    self.pull_worlds(standin)
        finally:
            self.slurm.cleanup()
            self.results.meta["duration_s"] = round(time.monotonic() - t0, 1)
            self.results.meta["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self.save()
        return self.results

    def save(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "results.json").write_text(json.dumps(self.results.as_json(), indent=1))

    def preflight(self) -> None:
        for _ in range(30):  # another session's failure test may have slurmdbd down for a few seconds
            r = sh(["sacctmgr", "-i", "-n", "-P", "list", "cluster", "format=cluster,controlhost"])
            if r.returncode == 0 and any(line.split("|")[1] for line in r.stdout.splitlines() if "|" in line):
                break
            time.sleep(2)
        else:
            raise SystemExit(f"bench: the local SLURM cluster is not up ({(r.stderr or r.stdout).strip()[:200]}); "
                             "run devenv/slurm/up")
        if self._wants_docker() and not self.docker:
            raise SystemExit("bench: no private dockerd (run devenv/docker/up) or pass --no-docker")
        removed = cleanup_bench(self.slurm.client)
        if removed:
            log(f"removed {removed} accounts left by an earlier bench run")
        self.slurm.create_roots()
        log(f"bench roots {self.slurm.push_root} (push) and {self.slurm.pull_root} (pull)")

    def _measure(self, what: str, env: dict[str, str], cycles: tuple[str, ...], before: Any, expect_done: int | None) -> dict[str, Any]:
        """One agent process; taken again (up to ATTEMPTS) when slurmdbd restarted meanwhile or the cycle had to
        defer work (SLURM unreachable), so that a disturbed sample does not pass for a measurement."""
        last_error = ""
        out: dict[str, Any] | None = None
        for attempt in range(1, ATTEMPTS + 1):
            before()
            watch = Watch.start()
            try:
                out = worker(env, *cycles)
            except RuntimeError as exc:
                out, last_error = None, str(exc)
            quiet = watch.report()
            first = out["cycles"][0] if out else {}
            problems = []
            if out is None:
                problems.append(f"agent failed: {last_error.strip().splitlines()[-1] if last_error.strip() else '?'}")
            if quiet["slurmdbd_restarts"]:
                problems.append(f"slurmdbd restarted {quiet['slurmdbd_restarts']}x")
            if first.get("deferred"):
                problems.append(f"{first['deferred']} item(s) deferred: {'; '.join(first.get('notes', [])[:2])}")
            if expect_done is not None and out is not None and first.get("done") != expect_done:
                problems.append(f"done {first.get('done')} of {expect_done}")
            if not problems:
                for c in out["cycles"]:  # type: ignore[index]
                    c.update(quiet)
                return out  # type: ignore[return-value]
            note = f"{what}: attempt {attempt}: {', '.join(problems)}"
            self.results.retried.append(note)
            log(note + ("; taking it again" if attempt < ATTEMPTS else "; keeping it"))
            if attempt < ATTEMPTS:
                time.sleep(5)
        if out is None:
            raise RuntimeError(f"{what}: the agent failed {ATTEMPTS} times:\n{last_error}")
        for c in out["cycles"]:
            c.update(quiet)
            c["disturbed"] = True
        return out

    # ------------------------------------------------------------------ push world
    def push_world(self, standin: StandIn) -> None:
        world = PushWorld(standin, self.slurm, self.out_dir / "push-components.yaml").setup()
        state = snapshot(standin, self.out_dir / "push-0.state.json")
        for n in sorted(self.plan.push_n):
            t0 = time.monotonic()
            start = len(self.slurm.push_accounts)
            self.slurm.grow_push(n)
            accounts_seconds = time.monotonic() - t0
            self.slurm.submit_jobs(range(start, n))
            restore(standin, state)  # nothing reported yet for the resources of the smaller N either
            world.grow(n)
            jobs_wait = self.slurm.wait_jobs()
            state = snapshot(standin, self.out_dir / f"push-{n}.state.json")
            self.results.setup.append({"world": "push", "n": n, "seconds": round(time.monotonic() - t0, 1),
                                       "new_accounts": n - start, "new_jobs": n - start,
                                       "accounts_seconds": round(accounts_seconds, 1), "jobs_wait_seconds": round(jobs_wait, 1)})
            self._push_rows(world, state, n, "native", world.env())
            self._membership_rows(world, n)
            self._baseline(n)
            if n in self.plan.docker_push_n:
                self._push_rows(world, state, n, "docker", world.env(**self._docker_env()))
            self.save()

    def _push_rows(self, world: PushWorld, state: Path, n: int, mode: str, env: dict[str, str]) -> None:
        first, second = [], []

        def before() -> None:
            restore(world.standin, state)

        for run in range(self.plan.runs):
            out = self._measure(f"push {mode} N={n} run {run + 1}", env, ("push", "push"), before, n)
            first.append(sample(out, 0))
            second.append(sample(out, 1))
            server = world.standin.requests()
            first[-1]["server_requests"] = len(server)
            log(f"push {mode} N={n} run {run + 1}: first {first[-1]['wall']:.2f} s "
                f"({first[-1]['slurm_processes']} proc, {sum(first[-1]['http'].values())} req, "
                f"{first[-1]['rss_mb']:.0f} MB), second {second[-1]['wall']:.2f} s")
        self.results.add("push_first", mode, n, first)
        self.results.add("push_second", mode, n, second)

    def _membership_rows(self, world: PushWorld, n: int) -> None:
        samples = []
        for run in range(self.plan.runs):
            out = self._measure(f"membership N={n} run {run + 1}", world.env(WALDUR_SYNC_DIRECTION="pull"),
                                ("membership",), world.standin.clear_requests, None)
            samples.append(sample(out, 0))
            log(f"membership N={n} run {run + 1}: {samples[-1]['wall']:.2f} s "
                f"({samples[-1]['slurm_processes']} proc, {sum(samples[-1]['http'].values())} req)")
        self.results.add("membership", "native", n, samples)

    def _baseline(self, n: int) -> None:
        accounts = self.slurm.push_accounts[:n]
        size = min(n, self.plan.baseline_sample)
        step = n / size
        chosen = [accounts[int(i * step)] for i in range(size)]
        path = self.out_dir / f"baseline-accounts-{n}.txt"
        path.write_text("\n".join(chosen) + "\n")
        out: dict[str, Any] = run_json([PYTHON, "-m", "bench.baseline_original", str(path)], child_env({}),
                                       timeout=WORKER_TIMEOUT)
        out["n"] = n
        out["extrapolated"] = size < n
        out["wall_for_n"] = round(out["per_account"] * n, 2)
        out["processes_for_n"] = 4 * n
        self.results.baseline.append(out)
        log(f"baseline N={n}: {size} accounts read in {out['wall']:.1f} s ({out['slurm_processes']} processes), "
            f"{out['per_account'] * 1000:.0f} ms per account -> {out['wall_for_n']:.0f} s for {n}"
            + (" (extrapolated)" if out["extrapolated"] else ""))

    # ------------------------------------------------------------------ pull
    def pull_worlds(self, standin: StandIn) -> None:
        for n in sorted(self.plan.pull_n):
            t0 = time.monotonic()
            world = PullWorld(standin, self.slurm, self.out_dir / "pull-components.yaml", n).setup()
            self.results.setup.append({"world": "pull", "n": n, "seconds": round(time.monotonic() - t0, 1)})
            self._pull_rows(world, n, "native", world.env(WALDUR_SYNC_DIRECTION="pull"))
            if n in self.plan.docker_pull_n:
                self._pull_rows(world, n, "docker", world.env(WALDUR_SYNC_DIRECTION="pull", **self._docker_env()))
            self.slurm.reset_pull()
            self.save()

    def _pull_rows(self, world: PullWorld, n: int, mode: str, env: dict[str, str]) -> None:
        orders, idle = [], []
        def before() -> None:
            self.slurm.reset_pull()
            world.restore()

        for run in range(self.plan.runs):
            out = self._measure(f"pull {mode} N={n} run {run + 1}", env, ("pull", "pull"), before, n)
            orders.append(sample(out, 0))
            idle.append(sample(out, 1))
            log(f"pull {mode} N={n} run {run + 1}: {orders[-1]['wall']:.2f} s "
                f"({orders[-1]['slurm_processes']} proc, {sum(orders[-1]['http'].values())} req, "
                f"done {orders[-1]['done']}/{n}), idle {idle[-1]['wall']:.3f} s")
        self.results.add("pull_orders", mode, n, orders)
        self.results.add("pull_idle", mode, n, idle)
