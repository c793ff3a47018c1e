"""2024 associations at scale: the server's association list is unscoped and pages unstably (ordered by
username only), yet a push with nothing changed writes nothing and a needed removal is never missed.

Real SLURM (accounts under this test's root) and the real stand-in, whose association list pages the way
the Oct-2024 Mastermind does (``waldur_standin.http.mastermind_username_order``). Counts, never time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.push.conftest import PushEnv, _push_env, writes
from waldur_slurm.slurm.ops import RemoveUsers

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
N = 160  # two users each: 320 associations, more than one page of 300
USERS = ("wsa_alice", "wsa_bob")
CREATE = "POST /api/marketplace-slurm-remote/{uuid}/create_association/"
DELETE = "POST /api/marketplace-slurm-remote/{uuid}/delete_association/"


@pytest.fixture
def push_env_2024(slurm_root: str, tmp_path: Path) -> Iterator[PushEnv]:
    yield from _push_env("2024", slurm_root, tmp_path)


def paged_rows(env: PushEnv) -> list[dict[str, Any]]:
    """The whole association list read page by page, as the agent used to read it."""
    rows: list[dict[str, Any]] = []
    for page in (1, 2):
        resp = httpx.get(f"{env.standin.url}/api/slurm-associations/", params={"page": page, "page_size": 300},
                         headers={"Authorization": f"Token {env.standin.provider_token}"}, timeout=10)
        rows += resp.json()
    return rows


def test_no_change_push_writes_nothing_and_removals_are_found(push_env_2024: PushEnv) -> None:
    env = push_env_2024.setup()
    suffixes = [f"a{i:03d}" for i in range(N)]
    accounts = env.add_accounts(suffixes, users={s: USERS for s in suffixes})
    resources = env.add_resources(accounts)  # usage components only: no limits to report
    reporter = env.reporter()

    mark = env.mark()
    first = reporter.run_cycle()
    log = env.requests_since(mark)
    routes = Counter(f"{e['method']} {e['route']}" for e in log)
    assert (first.failed, first.deferred) == (0, 0), first.notes[:5]
    assert routes[CREATE] == 2 * N and len(writes(log)) == 2 * N == first.writes
    assert routes["GET /api/slurm-associations/"] == 1  # none held yet: one page, the whole list

    # 320 rows sharing two usernames: a paged read of the whole list misses some and repeats others.
    rows = paged_rows(env)
    state = env.standin.state()
    all_rows = {a["uuid"]: a for a in state["associations"].values()}
    missed = [all_rows[u] for u in all_rows.keys() - {r["uuid"] for r in rows}]
    assert len(rows) == 2 * N and missed, "the stand-in must page associations as unstably as Mastermind"

    mark = env.mark()
    second = reporter.run_cycle()
    log = env.requests_since(mark)
    routes = Counter(f"{e['method']} {e['route']}" for e in log)
    assert writes(log) == [] and second.writes == 0, second.notes[:5]
    # two pages, then wsa_bob's 160 rows (positions 160-319, across the boundary at 300) again in one window
    assert routes["GET /api/slurm-associations/"] == 3
    assert second.done == N

    # A user leaves the SLURM account whose Waldur association the paged read never returns.
    gone = missed[0]
    resource = next(r for r in resources if state["resources"][r].get("allocation_uuid") == gone["allocation_uuid"])
    account = state["resources"][resource]["backend_id"]
    [result] = env.slurm.apply([RemoveUsers((gone["username"],), (account,))])
    assert result.ok, result.error

    mark = env.mark()
    third = reporter.run_cycle()
    log = env.requests_since(mark)
    assert writes(log) == [DELETE] and third.writes == 1, third.notes[:5]
    [delete] = [e for e in log if e["method"] == "POST"]
    assert delete["path"] == f"/api/marketplace-slurm-remote/{resource}/delete_association/"
    left = {(a["allocation_uuid"], a["username"]) for a in env.standin.state()["associations"].values()}
    assert (gone["allocation_uuid"], gone["username"]) not in left and len(left) == 2 * N - 1

    # The whole list's second page fails past the retries, so each allocation is read on its own; and the first
    # of those reads fails too (serial reads: 4 attempts each). "not read" is never taken for "none held", so
    # nothing is re-created, and only that resource is skipped.
    serial = env.reporter(env.settings(WALDUR_PUSH_CONCURRENCY="1"))
    env.standin.inject_fault("/api/slurm-associations/", status=503, count=8, skip=1)
    mark = env.mark()
    fourth = serial.run_cycle()
    log = env.requests_since(mark)
    assert writes(log) == [] and fourth.writes == 0
    assert (fourth.skipped, fourth.failed, fourth.done) == (1, 0, N)
    assert len([n for n in fourth.notes if "not read" in n]) == 1
