"""Associations against the REAL Oct-2024 Mastermind at scale: its /api/slurm-associations/ is unscoped and
ordered by username only (pages skip and repeat rows sharing a username), yet a push with nothing changed
writes nothing and a removal is made. The server's own access log counts what the agent sent.

N (default 40, the CI size; 500 measured by hand, see docs/benchmarks.md) resources are built the way a site gets them: Create orders placed through the REST API and
processed by the agent's pull daemon. WSA_MM_ASSOC_N sets another N."""

from __future__ import annotations

import os
import re
from collections import Counter

import pytest

from tests.mastermind.conftest import Site, slurm_state
from tests.support.mastermind import run_agent
from tests.support.slurm import CLIENT_TIMEOUT
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.cli.executor import NativeExecutor
from waldur_slurm.slurm.ops import AddUsers, RemoveUsers

pytestmark = [pytest.mark.mastermind, pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(4 * 3600)]
N = int(os.environ.get("WSA_MM_ASSOC_N", "40"))  # CI size; 500 was measured by hand (docs/benchmarks.md)
USERS = ("wsa_alice", "wsa_bob")
ACTION = re.compile(r"^/api/marketplace-slurm-remote/([0-9a-f-]{32,36})/(create|delete)_association/$")


def association_writes(entries: list[tuple[str, str, int]]) -> Counter[tuple[str, str]]:
    return Counter((m[2], m[1].replace("-", "")) for method, path, _ in entries if method == "POST" and (m := ACTION.match(path)))


def test_no_change_push_writes_nothing_and_a_removal_is_made(site: Site) -> None:
    w = site.world
    orders = [w.order_create(f"as{i:03d}", {"cpu": 5})["uuid"] for i in range(N)]
    for _ in range(6):  # a 2024 allocation is created by the server's worker: a Create may need a second cycle
        run = run_agent(site.env("pull"), timeout=3600)  # N Create orders in one cycle: longer than the default
        assert run.returncode in (0, 1), run.stderr[-3000:]
        print("pull:", run.summary("pull"))
        if {o["state"] for o in w.orders() if o["uuid"] in orders} == {"done"}:
            break
    else:
        raise AssertionError("the Create orders were not all done after 6 pull cycles")
    resources = {r["uuid"]: r["backend_id"] for r in w.resources()}
    assert len(resources) == N and all(resources.values())
    slurm = SlurmClient(NativeExecutor(), timeout=CLIENT_TIMEOUT)
    [added] = slurm.apply([AddUsers(USERS, tuple(resources.values()))])  # the accounts' users, in one process
    assert added.ok, added.error

    mark = site.access.mark()
    first = run_agent(site.env("push"), timeout=3600)
    assert first.returncode == 0, first.stderr[-3000:]
    print("first push:", first.summary("push"))  # the cycle's own summary (durations are for the report, not asserted)
    made = association_writes(site.access.since(mark))
    assert made == Counter({("create", r): len(USERS) for r in resources}), "each association created exactly once"

    mark = site.access.mark()
    second = site.push()
    log = site.access.since(mark)
    assert second.returncode == 0, second.stderr[-3000:]
    print("no-change push:", second.summary("push"))
    assert site.access.writes(log) == [] and second.summary("push")["writes"] == 0, site.access.writes(log)[:10]
    reads = [path for method, path, _ in log if method == "GET" and path.startswith("/api/slurm-associations/")]
    assert len(reads) == 1 + N  # the server's list is past one page: each allocation is read on its own

    # a user leaves one account in SLURM: exactly that association is deleted in Waldur
    resource, account = sorted(resources.items())[N // 2]
    [removed] = slurm.apply([RemoveUsers(("wsa_bob",), (account,))])
    assert removed.ok, removed.error
    assert "wsa_bob" not in slurm_state().accounts[account].users
    mark = site.access.mark()
    third = site.push()
    assert third.returncode == 0, third.stderr[-3000:]
    print("removal push:", third.summary("push"))
    log = site.access.since(mark)
    assert association_writes(log) == Counter({("delete", resource): 1}) and len(site.access.writes(log)) == 1
    assert w.associations(resource) == {"wsa_alice"}
