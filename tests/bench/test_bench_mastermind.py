"""``bench/run --mastermind`` runs end to end against the real Oct-2024 Mastermind and the real SLURM cluster at a
tiny N, and its count columns are exact (issue 16: "so that it cannot rot"). Times are never asserted.

The server's access log and the agent's own request counts are two independent counts of one thing: every
sample must show the same requests by method in both. The target logic is checked on hand-made results, so a
request sent twice or a write in a no-change cycle is known to fail the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import _verdict
from bench.mastermind import access_summary
from bench.mm_report import summaries, targets
from bench.mm_world import CACHE_DIR, MMWorld, remove

REPO = Path(__file__).resolve().parents[2]
N = 5
SET_USAGE = "POST /api/marketplace-component-usages/set_usage/"
SET_USER_USAGE = "POST /api/marketplace-component-usages/{uuid}/set_user_usage/"
CREATE_ASSOC = "POST /api/marketplace-slurm-remote/{uuid}/create_association/"


def test_a_write_that_reached_the_server_twice_is_found() -> None:
    alloc = "/api/marketplace-slurm-remote/" + "a" * 32 + "/create_association/"
    usage = "/api/marketplace-component-usages/" + "b" * 32 + "/set_user_usage/"
    once = [("POST", alloc, 200, "ua"), ("POST", alloc, 200, "ua"), ("POST", usage, 201, "ua"),
            ("POST", "/api/marketplace-component-usages/set_usage/", 201, "ua"),
            ("POST", "/api/marketplace-component-usages/set_usage/", 201, "ua"), ("GET", "/api/", 200, "ua")]
    good = access_summary(once)
    assert good["sent_twice"] == [] and good["by_method"] == {"POST": 5, "GET": 1}
    assert good["writes"] == {CREATE_ASSOC: 2, SET_USER_USAGE: 1, SET_USAGE: 2}
    assert access_summary([*once, ("POST", usage, 201, "ua")])["sent_twice"] == [f"POST {usage} x2"]
    assert access_summary([*once, ("POST", alloc, 200, "ua")])["sent_twice"] == [f"POST {alloc} x3"]


def _sample(*, writes: dict[str, int] | None = None, retries: int = 0, twice: list[str] | None = None,
            agent_writes: int = 0, done: int = N) -> dict:
    posts = sum((writes or {}).values())
    return {"wall": 1.0, "cpu": 0.1, "slurm_processes": 2, "slurm_seconds": 0.5, "http": {"GET": 5, "POST": posts},
            "writes": agent_writes, "done": done, "failed": 0, "deferred": 0, "retries": retries, "rss_mb": 40.0,
            "access": {"requests": 5 + posts, "by_method": {"GET": 5, "POST": posts}, "writes": writes or {},
                       "statuses": {"200": 5}, "sent_twice": twice or []}}


def test_count_targets_fail_the_run_when_violated() -> None:
    def results(**rows: dict) -> dict:
        return {"rows": [{"n": N, "scenario": k, "mode": "native", "samples": [v]} for k, v in rows.items()]}

    good = dict(push_cold=_sample(writes={SET_USAGE: N}), push_changed=_sample(writes={SET_USAGE: N}),
                push_nochange=_sample(), pull_idle_membership=_sample(),
                restore={**_sample(writes={CREATE_ASSOC: 4}, agent_writes=1), "removed": 4, "restored": 4})
    assert _verdict(targets(results(**good))) == 0
    for key, bad in (("push_cold", _sample(writes={SET_USAGE: N}, twice=["POST x x2"])),
                     ("push_cold", _sample(writes={SET_USAGE: N}, retries=1)),
                     ("push_changed", _sample(writes={SET_USAGE: N}, done=N - 1)),
                     ("push_nochange", _sample(writes={CREATE_ASSOC: 1})),
                     ("pull_idle_membership", _sample(agent_writes=1)),
                     ("restore", {**_sample(writes={CREATE_ASSOC: 4}), "removed": 4, "restored": 3}),
                     ("restore", {**_sample(writes={CREATE_ASSOC: 5}), "removed": 4, "restored": 4})):
        assert _verdict(targets(results(**{**good, key: bad}))) == 1, (key, bad)


@pytest.mark.mastermind
@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_mastermind_mode_end_to_end_at_n5(tmp_path: Path, mastermind: object, slurm_cluster: str) -> None:
    kept = CACHE_DIR / f"world-{N}.json"
    kept.unlink(missing_ok=True)
    try:
        proc = subprocess.run([sys.executable, "-m", "bench", "--mastermind", "--n", str(N), "--fresh-world",
                               "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=280)
    finally:  # the world's SLURM accounts and Linux users go; the server keeps its objects (it has no delete)
        if kept.exists():
            remove(MMWorld(**json.loads(kept.read_text())))
    assert not kept.exists()
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert not results["errors"]
    rows = {r["scenario"]: r for r in summaries(results)}
    assert set(rows) == {"push_cold", "push_changed", "push_nochange", "pull_idle", "membership",
                         "pull_idle_membership", "restore"}
    for raw in results["rows"]:
        for s in raw["samples"]:
            if "access" in s:  # the agent's count and the server's count of the same requests agree
                assert s["access"]["by_method"] == s["http"], (raw["scenario"], s["access"], s["http"])
                assert s["retries"] == 0, raw["scenario"]
    # push: ONE dump and ONE sacct, on any date: the 2024 server files every report under the current month,
    # so the previous month is never re-read there (Capabilities.backdated_usage)
    push_procs = 2
    for scenario in ("push_cold", "push_changed"):
        r = rows[scenario]
        # every account ran one job (one login's): one total and one per-user usage each, each sent once
        assert r["log_writes"] == {SET_USAGE: N, SET_USER_USAGE: N}, (scenario, r["log_writes"])
        assert r["sent_twice"] == [] and r["done_min"] == N and r["failed_max"] == 0
        assert r["slurm_processes_values"] == [push_procs], scenario
    r = rows["push_nochange"]
    assert r["log_writes"] == {} and r["writes_max"] == 0 and "POST" not in r["http"]
    assert r["slurm_processes_values"] == [push_procs]
    assoc = r["latency"]
    reads = assoc.get("GET /api/slurm-associations/ ?allocation_uuid", {}).get("count", 0)
    assert assoc["GET /api/slurm-associations/"]["count"] == 1 and reads in (0, N)  # whole list, or each allocation
    # one agent process runs the idle pull cycle, then the membership pass. Pull idle: the API root (the
    # server's capabilities, read once per process; the enforcement step asks whether the server has the
    # Waldur 8 flags) and the order list. Membership: the resources, the offering users, and the team of the
    # world's one project, read once for its N resources.
    assert rows["pull_idle"]["http"] == {"GET": 2} and rows["pull_idle"]["slurm_processes_values"] == [0]
    assert rows["membership"]["http"] == {"GET": 3} and rows["membership"]["slurm_processes_values"] == [1]
    assert rows["pull_idle_membership"]["log"] == {"GET": 5} and rows["pull_idle_membership"]["log_writes"] == {}
    r = rows["restore"]
    [(restored, removed)] = r["restored"]
    assert restored == removed > 0
    # the dump, then ONE sacctmgr process that adds them all back; each one reported to Waldur once
    assert r["slurm_processes_values"] == [2] and r["log_writes"] == {CREATE_ASSOC: removed}
    [base] = results["baseline"]
    assert base["slurm_processes"] == 4 * N and base["found"] == N and base["associations"] == 2 * N
    assert base["job_rows"] == 2 * N  # the build's job and the changed-usage run's job in every account
    report = (tmp_path / "report.md").read_text()
    assert "#### Every scenario" in report and "#### The server's time per request" in report
