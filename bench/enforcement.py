"""BENCHMARK-ONLY: enforcement of the Waldur 8 flags at scale (issue 15).

``python -m bench.enforcement [N]`` (default 1000, as root, on the local cluster) starts the stand-in
(profile 8), makes N OK resources whose backend_ids are N SLURM accounts made in ONE load under a fresh
root-level account, and times pull cycles of one agent: idle before any flag, all N paused, idle while
paused, all N unpaused, all N downscaled, all N back. Each row gives the wall time, the SLURM processes and
the HTTP requests of the cycle, and the SLURM writes (batches) it made. Prints one JSON line; removes the
accounts and the QoS it made. The counts are asserted in tests/pull/test_pull_enforcement.py; this measures
the time.
"""

from __future__ import annotations

import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from waldur_standin.testing import StandIn

from bench.waldur_side import PUSH_COMPONENTS, PUSH_TRES, agent_env
from waldur_slurm.config import load_settings
from waldur_slurm.domain import naming
from waldur_slurm.pull.reconciler import PullReconciler
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.cli.executor import NativeExecutor
from waldur_slurm.slurm.ops import AddAccounts, AddAccountsDescribed, RemoveAccounts
from waldur_slurm.waldur.client import WaldurClient

FLAGS = ("paused", "downscaled")


def _cycle(pull: PullReconciler, name: str) -> dict[str, Any]:
    start = time.perf_counter()
    report = pull.run_cycle()
    wall = time.perf_counter() - start
    if report.failed or report.unreachable:
        raise SystemExit(f"{name}: cycle failed: {report.notes[:3]} {report.unreachable}")
    return {"cycle": name, "wall_s": round(wall, 2), "slurm_processes": report.slurm_processes,
            "http_requests": report.http_requests, "slurm_writes": report.writes, "enforced": report.enforced}


def main(n: int) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    root, qos = f"ben{tag}", f"bench_down_{tag}"
    slurm = SlurmClient(NativeExecutor(), timeout=1800)
    with StandIn(profile="8") as standin, tempfile.TemporaryDirectory() as tmp:
        tres = Path(tmp) / "tres.yaml"
        tres.write_text(PUSH_TRES)
        offering = standin.setup_offering(PUSH_COMPONENTS, name="Bench SLURM (enforcement)")
        project = standin.add_project(standin.add_customer("Bench Research Org"), "Bench project")
        names = [f"{root}_{i:04d}" for i in range(n)]
        uuids = standin.create_resources(offering, project, n, backend_ids=names)
        (made,) = slurm.apply([AddAccounts((root,), "root", description="bench enforcement", organization="bench")])
        if not made.ok:
            raise SystemExit(f"cannot create {root}: {made.error}")
        try:
            started = time.perf_counter()
            (load,) = slurm.apply([AddAccountsDescribed(tuple((a, naming.resource_marker(u)) for a, u in zip(names, uuids)), root)])
            if not load.ok:
                raise SystemExit(f"cannot create the accounts: {load.error}")
            setup_s = time.perf_counter() - started
            env = agent_env(standin, offering, tres, root, WALDUR_STATE_DIR=str(Path(tmp) / "state"),
                            SLURM_DOWNSCALED_QOS=qos)
            settings = load_settings(env)
            waldur = WaldurClient(standin.url, standin.provider_token, offering, timeout=60.0)
            pull = PullReconciler(settings, waldur, SlurmClient(NativeExecutor(), timeout=1800), out=lambda _l: None)
            rows = [_cycle(pull, "idle, no flag")]
            for flag in FLAGS:
                for u in uuids:
                    standin.patch_resource(u, **{flag: True})
                rows.append(_cycle(pull, f"all {flag}"))
                rows.append(_cycle(pull, f"idle, all {flag}"))
                for u in uuids:
                    standin.patch_resource(u, **{flag: False})
                rows.append(_cycle(pull, f"all {flag} cleared"))
            return {"n": n, "setup_load_s": round(setup_s, 2), "rows": rows}
        finally:
            slurm.apply([RemoveAccounts(tuple(names)), RemoveAccounts((root,))])
            sh_qos = slurm.executor.run(["sacctmgr", "-i", "remove", "qos", qos], timeout=120)
            if sh_qos.exit_code not in (0, 1):
                print(f"QoS {qos} not removed: {sh_qos.stdout}", file=sys.stderr)


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)))
