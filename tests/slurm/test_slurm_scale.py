"""Constant process counts whatever the number of accounts, and a sane association tree."""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta

import pytest

from tests.support.slurm import REPO, RunJob, wait_jobs_in_sacct
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.ops import AddAccounts, AddUsers

pytestmark = pytest.mark.slurm

N = 50


@pytest.fixture(params=["native", pytest.param("docker", marks=pytest.mark.docker)])
def client(request: pytest.FixtureRequest) -> SlurmClient:
    return request.getfixturevalue("slurm_client" if request.param == "native" else "docker_slurm_client")


def test_state_and_usage_of_n_accounts_take_one_sacctmgr_and_one_sacct(
    client: SlurmClient, slurm_root: str, run_job: RunJob
) -> None:
    names = tuple(f"{slurm_root}_{i:03d}" for i in range(N))
    start = datetime.now().astimezone() - timedelta(minutes=1)
    before = client.executor.process_count
    results = client.apply(
        [
            AddAccounts(names, slurm_root, description="scale", organization="scale", limits={"cpu": 1000}),
            # one user: each association insert renumbers slurmdbd's whole nested set, which
            # on the shared (large) test DB costs ~0.1 s per association
            AddUsers(("wsa_alice",), names, default_account=names[0]),
        ]
    )
    assert all(r.ok for r in results), [r.output for r in results]
    assert client.executor.process_count - before == 1  # N accounts and N user associations: one process

    jobs = [run_job("wsa_alice", names[0]), run_job("wsa_alice", names[-1])]
    wait_jobs_in_sacct(jobs)
    end = datetime.now().astimezone() + timedelta(minutes=1)

    before = client.executor.process_count
    state = client.read_state()
    after_state = client.executor.process_count
    records = client.read_usage(names, start, end)
    after_usage = client.executor.process_count
    assert after_state - before == 1  # ONE sacctmgr
    assert after_usage - after_state == 1  # ONE sacct

    mine = {n: a for n, a in state.accounts.items() if n in names}
    assert len(mine) == N
    assert all(a.users == frozenset({"wsa_alice"}) for a in mine.values())
    assert all(a.limits == {"cpu": 1000} and a.parent == slurm_root for a in mine.values())
    assert {(r.job_id, r.account) for r in records} == {(jobs[0], names[0]), (jobs[1], names[-1])}


def test_association_tree_is_consistent(slurm_cluster: str) -> None:
    """Moving accounts corrupts slurmdbd 22.05's nested set; nothing here may do that."""
    r = subprocess.run([str(REPO / "devenv" / "slurm" / "check-tree")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
