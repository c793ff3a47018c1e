"""SlurmClient against the real local cluster, natively and through docker exec.

Every test works under its own `slurm_root` account. Process counts are exact: each
assertion says how many SLURM processes (native) or execs (docker) a call may start.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from tests.support.slurm import RunJob, submit_job, unique_name, wait_jobs_in_sacct
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.errors import AccountMoveRefused, ActiveJobsError, SlurmCommandError
from waldur_slurm.slurm.ops import (
    AddAccounts,
    AddAccountsDescribed,
    AddUsers,
    CancelJobs,
    RemoveAccounts,
    RemoveUsers,
    SetDefaultAccount,
    SetLimits,
)

pytestmark = pytest.mark.slurm


@pytest.fixture(params=["native", pytest.param("docker", marks=pytest.mark.docker)])
def client(request: pytest.FixtureRequest) -> SlurmClient:
    name = "slurm_client" if request.param == "native" else "docker_slurm_client"
    return request.getfixturevalue(name)


class Counted:
    """Asserts the exact number of processes/execs started inside a `with` block."""

    def __init__(self, client: SlurmClient, expected: int) -> None:
        self.client = client
        self.expected = expected

    def __enter__(self) -> None:
        self.before = self.client.executor.process_count

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            assert self.client.executor.process_count - self.before == self.expected


def test_version_and_tres(client: SlurmClient) -> None:
    with Counted(client, 2):
        version = client.version()
        tres = client.list_tres()
    assert version.startswith("22.05.")
    assert {"cpu", "mem", "billing", "gres/gpu"} <= set(tres)


def test_accounts_users_limits_round_trip(client: SlurmClient, slurm_root: str) -> None:
    a, b = f"{slurm_root}_a", f"{slurm_root}_b"
    ops = [
        AddAccounts((a, b), slurm_root, description="Project A/B", organization="Org 1", limits={"cpu": 600, "mem": 2048}),
        AddUsers(("wsa_alice", "wsa_bob"), (a, b), default_account=a),
        SetLimits((b,), {"gres/gpu": 7, "mem": None}),
        SetDefaultAccount(("wsa_bob",), b),
    ]
    with Counted(client, 1):  # four different sacctmgr commands, ONE process
        results = client.apply(ops)
    assert [(r.ok, r.already, r.error) for r in results] == [(True, False, None)] * 4

    with Counted(client, 1):
        state = client.read_state()
    acc_a, acc_b = state.accounts[a], state.accounts[b]
    assert (acc_a.parent, acc_a.description, acc_a.organization) == (slurm_root, "project a/b", "org 1")
    assert acc_a.limits == {"cpu": 600, "mem": 2048}
    assert acc_b.limits == {"cpu": 600, "gres/gpu": 7}
    assert acc_a.users == acc_b.users == frozenset({"wsa_alice", "wsa_bob"})
    assert state.default_account["wsa_bob"] == b
    assert state.accounts[slurm_root].parent == "root"

    # remove one user from one account; the other association stays
    (r,) = client.apply([RemoveUsers(("wsa_alice",), (b,))])
    assert r.ok and not r.already
    state = client.read_state()
    assert state.accounts[b].users == frozenset({"wsa_bob"})
    assert state.accounts[a].users == frozenset({"wsa_alice", "wsa_bob"})


def test_already_so_is_success(client: SlurmClient, slurm_root: str) -> None:
    a = f"{slurm_root}_x"
    client.apply([AddAccounts((a,), slurm_root), AddUsers(("wsa_carol",), (a,))])
    ghost = unique_name("ghost")
    again = [
        AddAccounts((a,), slurm_root),  # " Nothing new added."
        AddUsers(("wsa_carol",), (a,)),  # " Nothing new added."
        RemoveAccounts((ghost,)),  # " Nothing deleted"
        SetLimits((ghost,), {"cpu": 1}),  # " Nothing modified"
        RemoveUsers(("wsa_dave",), (a,)),  # " Nothing deleted"
    ]
    with Counted(client, 1):
        results = client.apply(again)
    assert [(r.ok, r.already) for r in results] == [(True, True)] * 5, [r.output for r in results]


def test_errors_are_attributed_to_their_op(client: SlurmClient, slurm_root: str) -> None:
    good1, good2, orphan = f"{slurm_root}_g1", f"{slurm_root}_g2", f"{slurm_root}_o"
    missing = unique_name("nosuch")
    ops = [
        AddAccounts((good1,), slurm_root),
        AddAccounts((orphan,), missing),  # parent does not exist
        AddUsers(("wsa_alice",), (missing,)),  # account does not exist
        AddAccounts((good2,), slurm_root),
    ]
    with Counted(client, 1):
        results = client.apply(ops)
    assert [r.ok for r in results] == [True, False, False, True]
    assert isinstance(results[1].error, SlurmCommandError) and "doesn't exist" in str(results[1].error)
    assert isinstance(results[2].error, SlurmCommandError) and missing in str(results[2].error)
    assert missing not in results[0].output and missing not in results[3].output
    state = client.read_state()
    assert {good1, good2} <= set(state.accounts) and orphan not in state.accounts


def test_described_accounts_in_one_load(client: SlurmClient, slurm_root: str) -> None:
    entries = tuple((f"{slurm_root}_{i:02d}", f"UUID {i:032x}") for i in range(30))
    op = AddAccountsDescribed(entries, parent=slurm_root, organization="waldur", limits={"cpu": 60})
    with Counted(client, 1):  # without a configured cluster, load needs its name: looked up once
        assert client.cluster_name() == "testcluster"
    client.read_state()  # the parents it saw let apply() check the load moves nothing, for free
    with Counted(client, 1):
        (result,) = client.apply([op])
    assert result.ok, result.output
    state = client.read_state()
    for name, desc in entries:
        acc = state.accounts[name]
        assert (acc.parent, acc.description, acc.organization, acc.limits) == (
            slurm_root,
            desc.lower(),
            "waldur",
            {"cpu": 60},
        )
    # loading the same file again changes nothing
    (again,) = client.apply([op])
    assert again.ok and again.already, again.output


@pytest.mark.parametrize("fresh_client", [False, True], ids=["after-read_state", "no-read_state"])
def test_load_never_moves_an_existing_account(client: SlurmClient, slurm_root: str, fresh_client: bool) -> None:
    """A load naming an existing account under another parent would move it, which
    corrupts slurmdbd 22.05's association tree: apply() refuses it."""
    x, p2, new = f"{slurm_root}_x", f"{slurm_root}_p2", f"{slurm_root}_new"
    client.apply([AddAccounts((x, p2), slurm_root)])
    if fresh_client:
        client = SlurmClient(client.executor, timeout=client.timeout)
        expected_processes = 2  # cluster name + one `list association` for the check
    else:
        client.cluster_name()
        client.read_state()
        expected_processes = 0  # decided from the state read just before
    op = AddAccountsDescribed(((new, "n"), (x, "moved?")), parent=p2)
    with Counted(client, expected_processes):
        (result,) = client.apply([op])
    assert isinstance(result.error, AccountMoveRefused)
    assert result.error.moves == {x: (slurm_root, p2)}
    state = client.read_state()
    assert state.accounts[x].parent == slurm_root and new not in state.accounts
    # the same entries under the account's current parent are fine
    (ok,) = client.apply([AddAccountsDescribed(((new, "n"), (x, "same parent")), parent=slurm_root)])
    assert ok.ok, ok.output
    assert client.read_state().accounts[x].description == "same parent"


def test_described_load_is_all_or_nothing(slurm_client: SlurmClient, slurm_root: str) -> None:
    missing = unique_name("nosuch")
    op = AddAccountsDescribed(((f"{slurm_root}_z", "z"),), parent=missing)
    (result,) = slurm_client.apply([op])
    assert not result.ok and isinstance(result.error, SlurmCommandError)
    assert f"{slurm_root}_z" not in slurm_client.read_state().accounts


def test_injection_attempt_stays_inside_the_description(slurm_client: SlurmClient, slurm_root: str) -> None:
    a = f"{slurm_root}_inj"
    evil = f'x" where name={slurm_root} set GrpTRESMins=cpu=0 description="pwned'
    slurm_client.apply([AddAccounts((a,), slurm_root, description=evil, organization=evil)])
    (r,) = slurm_client.apply([SetLimits((a,), {"cpu": 5})])
    assert r.ok
    state = slurm_client.read_state()
    assert state.accounts[slurm_root].limits == {}  # the parent was not touched
    assert state.accounts[slurm_root].description == f"pytest {slurm_root}"
    assert state.accounts[a].description.startswith("x where name")
    assert state.accounts[a].limits == {"cpu": 5}


def test_active_jobs_then_cancel_then_remove(client: SlurmClient, slurm_root: str, run_job: RunJob) -> None:
    a = f"{slurm_root}_busy"
    client.apply([AddAccounts((a,), slurm_root), AddUsers(("wsa_dave",), (a,), default_account=a)])
    job = run_job("wsa_dave", a, seconds=120, time_limit_min=3)
    # slurmdbd learns of a job ~0.5-0.8 s after sbatch; before that the removal succeeds
    wait_jobs_in_sacct([job], states=frozenset({"PENDING", "RUNNING"}))
    (r,) = client.apply([RemoveAccounts((a,))])
    assert isinstance(r.error, ActiveJobsError), r.output
    assert "cancel job(s) before remove" in str(r.error)
    with Counted(client, 2):  # scancel, then one sacctmgr
        cancel, remove = client.apply([CancelJobs((a,)), RemoveAccounts((a,))])
    assert cancel.ok, cancel.output
    assert remove.ok, remove.output
    assert a not in client.read_state().accounts
    assert wait_jobs_in_sacct([job])[job] == "CANCELLED"


def test_real_jobs_read_back_by_one_sacct(
    client: SlurmClient, slurm_root: str, run_job: RunJob
) -> None:
    a, b, other = f"{slurm_root}_ja", f"{slurm_root}_jb", f"{slurm_root}_jo"
    client.apply(
        [
            AddAccounts((a, b, other), slurm_root),
            AddUsers(("wsa_alice", "wsa_bob"), (a, b, other), default_account=a),
        ]
    )
    start = datetime.now().astimezone() - timedelta(minutes=1)
    jobs = {
        run_job("wsa_alice", a, cpus=2, mem_mb=200, gpus=1, seconds=1): ("wsa_alice", a, 2, 200, 1),
        run_job("wsa_bob", b, cpus=1, mem_mb=100, gpus=0, seconds=1): ("wsa_bob", b, 1, 100, 0),
        run_job("wsa_bob", a, cpus=3, mem_mb=1024, gpus=2, seconds=1): ("wsa_bob", a, 3, 1024, 2),
    }
    excluded = run_job("wsa_alice", other, seconds=1)
    wait_jobs_in_sacct([*jobs, excluded])
    end = datetime.now().astimezone() + timedelta(minutes=1)

    with Counted(client, 1):
        records = client.read_usage([a, b], start, end)
    by_id = {r.job_id: r for r in records}
    assert set(by_id) == set(jobs)  # the job of `other` is not there
    for job_id, (user, account, cpus, mem, gpus) in jobs.items():
        rec = by_id[job_id]
        assert (rec.user, rec.account, rec.state) == (user, account, "COMPLETED")
        assert rec.alloc_tres["cpu"] == cpus
        assert rec.alloc_tres["mem"] == Decimal(mem)
        assert rec.alloc_tres.get("gres/gpu", Decimal(0)) == gpus
        assert rec.elapsed_seconds >= 1
        assert rec.start is not None and rec.end is not None and start <= rec.start <= rec.end <= end

    # a window before the jobs holds none of them
    assert client.read_usage([a, b], start - timedelta(days=2), start - timedelta(days=1)) == []


@pytest.fixture
def agent_in_auckland(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The agent process runs in a time zone 13 hours off the cluster's (UTC here, as the head-node
    container's usually is)."""
    monkeypatch.setenv("TZ", "Pacific/Auckland")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


def test_usage_window_does_not_depend_on_the_agent_time_zone(
    client: SlurmClient, slurm_root: str, run_job: RunJob, agent_in_auckland: None
) -> None:
    """sacct reads and prints times in the time zone of ITS process: the window is sent and the times are
    read in UTC, so an agent whose zone differs from the cluster's (docker mode) still bills the right jobs."""
    a = f"{slurm_root}_tz"
    client.apply([AddAccounts((a,), slurm_root), AddUsers(("wsa_alice",), (a,), default_account=a)])
    assert datetime.now().astimezone().utcoffset() != timedelta(0)
    start = datetime.now().astimezone() - timedelta(minutes=1)
    job = run_job("wsa_alice", a, seconds=1)
    wait_jobs_in_sacct([job])
    end = datetime.now().astimezone() + timedelta(minutes=1)
    (rec,) = client.read_usage([a], start, end)
    assert rec.job_id == job
    assert rec.start is not None and rec.end is not None and start <= rec.start <= rec.end <= end
    assert client.read_usage([a], start - timedelta(hours=14), start - timedelta(hours=12)) == []


def test_jobs_of_a_removed_user_association_are_refused(slurm_client: SlurmClient, slurm_root: str) -> None:
    a = f"{slurm_root}_nu"
    slurm_client.apply([AddAccounts((a,), slurm_root)])
    with pytest.raises(AssertionError, match="Invalid account"):
        submit_job("wsa_carol", a)
