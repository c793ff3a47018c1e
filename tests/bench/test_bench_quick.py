"""The benchmark harness's quick mode runs end to end (issue 7: "so that it cannot rot").

``python -m bench --quick`` runs every scenario once with small N against the real cluster (native and
docker) and the stand-in, in real agent processes. This test checks that it produced every row, that the
count targets hold exactly, and that the report (and the plots, where matplotlib is installed) were written.
Times are never asserted. The target logic itself is checked on hand-made results, so that a violated count
target is known to fail the run.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import _verdict
from bench.report import markdown, summaries, targets

REPO = Path(__file__).resolve().parents[2]


def _row(scenario: str, n: int, *, procs: int, writes: int = 0, done: int | None = None, http: dict | None = None,
         mode: str = "native") -> dict:
    sample = {"wall": 1.0, "cpu": 0.1, "slurm_processes": procs, "http": http or {"GET": 3}, "rss_mb": 40.0,
              "rss_start_mb": 30.0, "startup": 0.3, "writes": writes, "done": n if done is None else done,
              "failed": 0, "deferred": 0}
    return {"scenario": scenario, "mode": mode, "n": n, "samples": [sample]}


def test_count_targets_fail_the_run_when_violated() -> None:
    good = {"rows": [_row("push_first", 10, procs=2, writes=30, http={"GET": 13, "POST": 30}),
                     _row("push_second", 10, procs=2), _row("pull_orders", 5, procs=4, writes=20),
                     _row("pull_idle", 5, procs=0), _row("membership", 10, procs=1)]}
    assert _verdict(targets(good)) == 0
    for bad_row in (_row("push_first", 10, procs=4), _row("push_second", 10, procs=2, http={"GET": 4, "POST": 1}),
                    _row("pull_orders", 5, procs=11), _row("pull_orders", 5, procs=4, done=4),
                    _row("pull_idle", 5, procs=1)):
        bad = {"rows": [*good["rows"], bad_row]}
        assert _verdict(targets(bad)) == 1, bad_row
    text = markdown(good)
    assert "| push, first cycle | native | 10 | 1 |" in text
    assert [r["http_total"] for r in summaries(good) if r["scenario"] == "push_first"] == [43]


@pytest.mark.slurm
@pytest.mark.docker
def test_quick_mode_end_to_end(tmp_path: Path, slurm_cluster: str, docker_host: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=900, env=_env(docker_host))
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert not results["errors"]
    rows = {(r["scenario"], r["mode"], r["n"]): r for r in summaries(results)}
    expected = {("push_first", "native", 4), ("push_first", "native", 8), ("push_second", "native", 4),
                ("push_second", "native", 8), ("membership", "native", 4), ("membership", "native", 8),
                ("push_first", "docker", 8), ("push_second", "docker", 8), ("pull_orders", "native", 3),
                ("pull_idle", "native", 3), ("pull_orders", "docker", 3), ("pull_idle", "docker", 3)}
    assert set(rows) == expected
    for (scenario, mode, n), r in rows.items():
        if scenario == "push_first":
            # ONE sacctmgr dump and ONE sacct; every resource had a job, so each one is reported
            assert r["slurm_processes_values"] == [2], (mode, n)
            assert r["done"] == n and r["failed"] == 0
            assert r["http"]["POST"] >= n
        elif scenario == "push_second":
            assert r["slurm_processes_values"] == [2] and r["http_writes"] == 0 and r["writes"] == 0
        elif scenario == "membership":
            assert r["slurm_processes_values"] == [1] and r["writes"] == 0
        elif scenario == "pull_orders":
            assert r["slurm_processes_max"] <= 10 and r["done"] == n and r["failed"] == 0
        elif scenario == "pull_idle":
            # the orders, and (8.x) one page of the resources' enforcement flags; nothing flagged: no SLURM read
            assert r["slurm_processes_values"] == [0] and r["http_total"] == 2
    baseline = {b["n"]: b for b in results["baseline"]}
    assert set(baseline) == {4, 8}
    for n, b in baseline.items():
        # the original's pattern: four processes per account, and it finds the same data (1 job, 2 users each)
        assert b["slurm_processes"] == 4 * n and b["found"] == n and b["job_rows"] == n and b["associations"] == 2 * n
    report = (tmp_path / "report.md").read_text()
    assert "### Every scenario" in report and "| push, first cycle | docker | 8 |" in report
    if importlib.util.find_spec("matplotlib") is not None:
        for name in ("wall.png", "slurm_processes.png", "http_requests.png", "rss.png"):
            assert (tmp_path / name).stat().st_size > 10_000, name


def _env(docker_host: str) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["DOCKER_HOST"] = docker_host
    return env


def test_planning_benchmark_runs_small_and_plans_the_expected_work(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.planning import main

    assert main(["4", "1"]) == 0
    rows = {r["case"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(rows) == {"Create", "Update", "Terminate", "membership"}
    assert rows["Create"]["accounts"] == 2 + 1 + 10 + 280  # root, bench root, one customer, 10 projects, 280
    assert (rows["Create"]["items"], rows["Update"]["items"], rows["Terminate"]["items"]) == (4, 4, 4)
    assert rows["membership"]["items"] == 280 and rows["membership"]["ops"] == 0  # every team already in SLURM
    assert rows["Create"]["ops"] == 1  # four allocations and their new users: one load
    assert rows["Update"]["ops"] == 1  # the same new limits on four accounts: one modify
    # four allocations of one project, a user each: one scancel, a removal per user, one removal of the
    # four accounts (the project keeps its other 24)
    assert rows["Terminate"]["ops"] == 1 + 4 + 1
