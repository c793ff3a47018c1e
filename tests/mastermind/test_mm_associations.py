"""Associations against the REAL Oct-2024 Mastermind at scale: its /api/slurm-associations/ is unscoped and
ordered by username only (pages skip and repeat rows sharing a username), yet a push with nothing changed
writes nothing and a removal is made. The server's own access log counts what the agent sent.

Before the no-change push, another offering's associations are added so that the list is past one page and a
page boundary falls inside the run of one of this test's usernames: the agent must re-read that run in one
window (its pages alone would skip or repeat some of its rows).

N (default 40, the CI size; 500 measured by hand, see docs/benchmarks.md) resources are built the way a site gets them: Create orders placed through the REST API and
processed by the agent's pull daemon. WSA_MM_ASSOC_N sets another N."""

from __future__ import annotations

import os
import re
import secrets
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.mastermind.conftest import Site, slurm_state
from tests.support.mastermind import Api, build_world, run_agent
from tests.support.slurm import CLIENT_TIMEOUT
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.cli.executor import NativeExecutor
from waldur_slurm.slurm.ops import AddUsers, RemoveUsers
from waldur_slurm.waldur import association_pages
from waldur_slurm.waldur.client import WaldurClient

pytestmark = [pytest.mark.mastermind, pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(4 * 3600)]
N = int(os.environ.get("WSA_MM_ASSOC_N", "40"))  # CI size; 500 was measured by hand (docs/benchmarks.md)
ACTION = re.compile(r"^/api/marketplace-slurm-remote/([0-9a-f-]{32,36})/(create|delete)_association/$")


def association_writes(entries: list[tuple[str, str, int]]) -> Counter[tuple[str, str]]:
    return Counter((m[2], m[1].replace("-", "")) for method, path, _ in entries if method == "POST" and (m := ACTION.match(path)))


def username_runs(api: Api) -> tuple[int, dict[str, tuple[int, int]]]:
    """(rows on the server, username -> positions [start, end) in its order), from plain pages of 300: a run's
    place does not depend on how the server breaks ties inside it."""
    first = api.http.get("/api/slurm-associations/", params={"page": 1, "page_size": 300})
    first.raise_for_status()
    total = int(first.headers["X-Result-Count"])
    runs: dict[str, tuple[int, int]] = {}
    for page in range(1, -(-total // 300) + 1):
        rows = first.json() if page == 1 else api.get("/api/slurm-associations/", page=page, page_size=300)
        for j, row in enumerate(rows):
            pos = (page - 1) * 300 + j
            start, end = runs.get(row["username"], (pos, pos + 1))
            runs[row["username"]] = (min(start, pos), max(end, pos + 1))
    return total, runs


def put_a_boundary_inside(site: Site, username: str) -> int:
    """Adds associations of another offering, named to sort before ``username``, until a page boundary falls in
    the middle of ``username``'s run. Returns how many were added."""
    _total, runs = username_runs(site.world.staff)
    start, end = runs[username]
    length = end - start
    m = 1
    while 300 * m - length // 2 - start < 0:
        m += 1
    extra = 300 * m - length // 2 - start
    if extra > 0:
        add_other_offerings_rows(site, extra)
    _total, runs = username_runs(site.world.staff)
    start, end = runs[username]
    assert start // 300 != (end - 1) // 300, (start, end)
    return extra


def add_other_offerings_rows(site: Site, extra: int) -> None:
    """``extra`` associations named aaa_fill_* on an allocation of another offering."""
    other = build_world(site.world.mm)
    order = other.order_create("filler", {"cpu": 1})
    env = {**site.env("pull"), **other.agent_env()}
    for _ in range(5):
        run_agent(env)
        if other.order(order["uuid"])["state"] == "done":
            break
    res = other.resource(other.order(order["uuid"])["marketplace_resource_uuid"])
    for i in range(extra):
        other.staff.post(f"/api/marketplace-slurm-remote/{res['uuid']}/create_association/", {"username": f"aaa_fill_{i:04d}"},
                         expect=(200, 201))


def test_no_change_push_writes_nothing_and_a_removal_is_made(site: Site) -> None:
    w = site.world
    # logins of this test only (SLURM associations need no Linux user): each has exactly N rows on the server
    tag = secrets.token_hex(3)
    users = (f"as{tag}a", f"as{tag}b")
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
    [added] = slurm.apply([AddUsers(users, tuple(resources.values()))])  # the accounts' users, in one process
    assert added.ok, added.error

    mark = site.access.mark()
    first = run_agent(site.env("push"), timeout=3600)
    assert first.returncode == 0, first.stderr[-3000:]
    print("first push:", first.summary("push"))  # the cycle's own summary (durations are for the report, not asserted)
    made = association_writes(site.access.since(mark))
    assert made == Counter({("create", r): len(users) for r in resources}), "each association created exactly once"

    print("filler associations of another offering:", put_a_boundary_inside(site, users[0]))
    total, runs = username_runs(w.staff)
    pages = -(-total // 300)
    long_runs = sorted(u for u, (start, end) in runs.items() if end - start > 300)
    mark = site.access.mark()
    second = site.push()
    log = site.access.since(mark)
    assert second.returncode == 0, second.stderr[-3000:]
    print("no-change push:", second.summary("push"))
    assert site.access.writes(log) == [] and second.summary("push")["writes"] == 0, site.access.writes(log)[:10]
    reads = [parse_qs(urlsplit(path).query) for method, path, _ in log
             if method == "GET" and path.startswith("/api/slurm-associations/")]
    whole = [q for q in reads if "allocation_uuid" not in q]
    own = [q["allocation_uuid"][0].replace("-", "") for q in reads if "allocation_uuid" in q]
    allocations = {r["resource_uuid"].replace("-", "") for r in w.resources()}
    if not association_pages.worth_reading_whole(total, 300, N):
        # other offerings' rows fill the list: its pages would cost the server more than N small reads
        assert len(whole) == 1 and sorted(own) == sorted(allocations)
    else:
        assert sorted(int(q["page"][0]) for q in whole if q["page_size"] == ["300"]) == list(range(1, pages + 1))
        # users[0]'s run lies across a boundary: re-read whole in one window unless the pages happened to show
        # every row of it; other logins' runs (earlier tests') may straddle the other boundaries
        assert len([q for q in whole if q["page_size"] != ["300"]]) <= pages - 1
        if long_runs:
            # a login in more rows than a page holds (benchmark worlds on a shared server): an allocation where
            # it was not seen is read on its own, once
            assert len(own) == len(set(own)) and set(own) <= allocations
        else:
            assert own == [] and len(reads) < 1 + N
    print(f"association reads: {len(whole)} of the list ({pages} pages of {total} rows), {len(own)} allocation(s) "
          f"on their own; logins in more than 300 rows: {long_runs}")

    # Whatever the policy chose, the pages and windows themselves are exact on this server for every login they
    # do not leave uncertain: users[0]'s run across the boundary included, each of the N allocations has both.
    client = WaldurClient(w.mm.url + "/api/", w.agent_token, w.offering_uuid)
    try:
        first_page = client._raw("GET", "/api/slurm-associations/", params={"page": 1, "page_size": 300})
        read = client._whole_association_list(first_page, total, 4)
    finally:
        client.close()
    assert read is not None, "the list changed while it was read"
    rows, uncertain = read
    assert users[0] not in uncertain and users[1] not in uncertain
    held: dict[str, set[str]] = {}
    for row in rows:
        held.setdefault(row["allocation"].rstrip("/").rsplit("/", 1)[-1].replace("-", ""), set()).add(row["username"])
    assert {a: held.get(a, set()) & set(users) for a in allocations} == {a: set(users) for a in allocations}
    assert sum(1 for row in rows if row["username"] in users) == 2 * N  # each row once

    # a user leaves one account in SLURM: exactly that association is deleted in Waldur
    resource, account = sorted(resources.items())[N // 2]
    [removed] = slurm.apply([RemoveUsers((users[1],), (account,))])
    assert removed.ok, removed.error
    assert users[1] not in slurm_state().accounts[account].users
    mark = site.access.mark()
    third = site.push()
    assert third.returncode == 0, third.stderr[-3000:]
    print("removal push:", third.summary("push"))
    log = site.access.since(mark)
    assert association_writes(log) == Counter({("delete", resource): 1}) and len(site.access.writes(log)) == 1
    assert w.associations(resource) == {users[0]}
