"""BENCHMARK-ONLY: the original agent's (2024, 0.1.0) per-account SLURM read pattern, for comparison.

This is NOT how the agent reads SLURM. It replays what the original push loop did for every account of
the offering (original-agent.md §5 and §9 step 2, W1): four processes, one after another,

1. ``sacctmgr --parsable2 --noheader --immediate show account <a>``            (does it exist?)
2. ``sacctmgr --parsable2 --noheader --immediate list associations format=account,user where account=<a>``
3. ``sacct --parsable2 --noheader --noconvert --truncate --allocations --allusers --starttime=<month start>
   --endtime=<month end> --accounts=<a> --format=Account,ReqTRES,Elapsed,User``
4. ``sacctmgr --parsable2 --noheader show association format=account,GrpTRESMins where accounts=<a>``

through the project's own executor (``NativeExecutor`` or ``DockerExecutor``, which count the processes), and
parses the answers the way the original did, so that it demonstrably reads the same data as the agent.
Only the SLURM reads are replayed: the original also made 6-8 sequential HTTP requests per account, which
this baseline leaves out, so the ratio against it understates the original's cost.

``--http`` (the real-server mode, ``bench/run --mastermind``) also replays the original's per-account READS
against the Waldur server named by ``WALDUR_API_URL`` / ``WALDUR_API_TOKEN`` / ``WALDUR_OFFERING_UUID``, one
after another as it sent them (original-agent.md §9 step 5): the resource looked up by ``backend_id``, the
allocation's associations, the offering-wide offering users, the resource's plan periods. Its two writes per
account (``set_limits`` and ``set_usage``, sent every cycle even when nothing changed) are left out: they would
change the world the agent is measured on. So this too understates the original's cost.

``python -m bench.baseline_original ACCOUNTS_FILE [--docker] [--http]`` prints one JSON line.
"""

from __future__ import annotations

import calendar
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime

from waldur_slurm.slurm.cli.executor import DockerExecutor, Executor, NativeExecutor

FLAGS = ["--parsable2", "--noheader", "--immediate"]


@dataclass
class AccountRead:
    exists: bool = False
    users: list[str] = field(default_factory=list)
    job_rows: int = 0
    limits: str = ""


def month_window(now: datetime) -> tuple[str, str]:
    last = calendar.monthrange(now.year, now.month)[1]
    return f"{now:%Y-%m}-01T00:00:00", f"{now:%Y-%m}-{last:02d}T23:59:59"


def read_account(executor: Executor, account: str, start: str, end: str, timeout: float = 120) -> AccountRead:
    out = AccountRead()
    r = executor.run(["sacctmgr", *FLAGS, "show", "account", account], timeout=timeout)
    out.exists = any("|" in line for line in r.stdout.splitlines())
    r = executor.run(["sacctmgr", *FLAGS, "list", "associations", "format=account,user", "where", f"account={account}"],
                     timeout=timeout)
    out.users = [line.split("|")[1] for line in r.stdout.splitlines() if "|" in line and not line.endswith("|")]
    r = executor.run(
        ["sacct", "--parsable2", "--noheader", "--noconvert", "--truncate", "--allocations", "--allusers",
         f"--starttime={start}", f"--endtime={end}", f"--accounts={account}", "--format=Account,ReqTRES,Elapsed,User"],
        timeout=timeout,
    )
    out.job_rows = sum(1 for line in r.stdout.splitlines() if "|" in line)
    r = executor.run(["sacctmgr", "--parsable2", "--noheader", "show", "association", "format=account,GrpTRESMins",
                      "where", f"accounts={account}"], timeout=timeout)
    rows = [line.split("|") for line in r.stdout.splitlines() if "|" in line]
    out.limits = next((row[1] for row in rows if len(row) > 1 and row[1]), "")
    return out


def run(accounts: list[str], executor: Executor) -> dict[str, object]:
    start, end = month_window(datetime.now())
    p0 = executor.process_count
    t0 = time.perf_counter()
    reads = [read_account(executor, a, start, end) for a in accounts]
    wall = time.perf_counter() - t0
    return {
        "accounts": len(accounts),
        "wall": round(wall, 4),
        "slurm_processes": executor.process_count - p0,
        "per_account": round(wall / max(1, len(accounts)), 5),
        "found": sum(1 for r in reads if r.exists),
        "associations": sum(len(r.users) for r in reads),
        "job_rows": sum(r.job_rows for r in reads),
    }


def replay_http(accounts: list[str], url: str, token: str, offering: str) -> dict[str, object]:
    """The original's four reads per account against a real server, sequentially; seconds and requests."""
    import httpx

    base = url.rstrip("/").removesuffix("/api")
    requests = 0
    found = 0
    consumer_empty = 0
    t0 = time.perf_counter()
    with httpx.Client(base_url=base, headers={"Authorization": f"Token {token}"}, timeout=120) as http:
        def get(path: str, **params: str) -> object:
            nonlocal requests
            requests += 1
            resp = http.get(path, params=params)
            resp.raise_for_status()
            return resp.json()

        for account in accounts:
            rows = get("/api/marketplace-resources/", backend_id=account, offering_uuid=offering, state="OK")
            if not rows:
                # the consumer list shows a provider owner nothing of its offering on the 2024 server: the
                # original needed a token that also sees the projects; the provider list stands in for it
                consumer_empty += 1
                rows = get("/api/marketplace-provider-resources/", backend_id=account, offering_uuid=offering, state="OK")
            if not isinstance(rows, list) or not rows:
                continue
            found += 1
            resource = rows[0]
            if resource.get("resource_uuid"):
                get("/api/slurm-associations/", allocation_uuid=resource["resource_uuid"])
            get("/api/marketplace-offering-users/", offering_uuid=offering)
            get(f"/api/marketplace-provider-resources/{resource['uuid']}/plan_periods/")
    wall = time.perf_counter() - t0
    return {"http_wall": round(wall, 4), "http_requests": requests, "http_found": found, "http_consumer_list_empty": consumer_empty,
            "http_per_account": round(wall / max(1, len(accounts)), 5)}


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m bench.baseline_original ACCOUNTS_FILE [--docker] [--http]", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        accounts = [line.strip() for line in f if line.strip()]
    if "--docker" in argv[1:]:
        executor: Executor = DockerExecutor(os.environ.get("SLURM_CONTAINER_NAME", "slurmctld"))
    else:
        executor = NativeExecutor()
    out = run(accounts, executor)
    if "--http" in argv[1:]:
        out.update(replay_http(accounts, os.environ["WALDUR_API_URL"], os.environ["WALDUR_API_TOKEN"],
                               os.environ["WALDUR_OFFERING_UUID"]))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
