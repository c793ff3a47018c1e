"""Shared pytest fixtures for tests against the real local SLURM cluster and dockerd.

Loaded through `pytest_plugins` in tests/conftest.py. The parts are real: the cluster
comes from `devenv/slurm/up`, the private dockerd and the `slurmctld` container from
`devenv/docker/up`. A missing part makes the test FAIL with a message that says which
script to run; nothing here ever skips.

Isolation: the cluster is shared by every test (and every engineer). A test only touches
accounts under its own `slurm_root` account, which is removed with everything below it
(jobs cancelled first) when the test ends.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

import pytest

from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.errors import ActiveJobsError
from waldur_slurm.slurm.cli.executor import DockerExecutor, NativeExecutor
from waldur_slurm.slurm.ops import AddAccounts, CancelJobs, RemoveAccounts

REPO = Path(__file__).resolve().parents[2]
SLURM_UP = REPO / "devenv" / "slurm" / "up"
SLURM_CTL = REPO / "devenv" / "slurm" / "ctl"
DOCKER_UP = REPO / "devenv" / "docker" / "up"
DOCKER_DIR = Path(os.environ.get("WSA_DOCKER_DIR", "/var/lib/wsa-docker"))
CONTAINER_NAME = os.environ.get("SLURM_CONTAINER_NAME", "slurmctld")
TEST_USERS = ("wsa_alice", "wsa_bob", "wsa_carol", "wsa_dave")
CLIENT_TIMEOUT = 30.0
TERMINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
)


def _sh(argv: list[str], timeout: float = 30, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]


# ----------------------------------------------------------------- the cluster
@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The local cluster answers and slurmctld is registered; returns the cluster name."""
    try:
        r = _sh(["sacctmgr", "-i", "-n", "-P", "list", "cluster", "format=cluster,controlhost"], timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"the local SLURM cluster does not answer ({exc}); run `{SLURM_UP}` as root", pytrace=False)
    rows = [line.split("|") for line in r.stdout.splitlines() if line.strip()]
    registered = [c for c, host in rows if host]
    if r.returncode != 0 or not registered:
        pytest.fail(
            f"the local SLURM cluster is not ready (sacctmgr rc {r.returncode}: {(r.stderr or r.stdout).strip()[:300]});"
            f" run `{SLURM_UP}` as root",
            pytrace=False,
        )
    missing = [u for u in TEST_USERS if _sh(["id", "-u", u]).returncode != 0]
    if missing:
        pytest.fail(f"Linux test users {missing} are missing; run `{SLURM_UP}` as root", pytrace=False)
    return registered[0]


@pytest.fixture
def native_executor(slurm_cluster: str) -> NativeExecutor:
    return NativeExecutor()


@pytest.fixture
def slurm_client(native_executor: NativeExecutor) -> SlurmClient:
    return SlurmClient(native_executor, timeout=CLIENT_TIMEOUT)


# ---------------------------------------------------------------------- docker
@pytest.fixture(scope="session")
def docker_host(slurm_cluster: str) -> str:
    """DOCKER_HOST of the private dockerd whose `slurmctld` container runs; fails if not up."""
    hint = f"run `{DOCKER_UP}` as root"
    host_file = DOCKER_DIR / "docker-host"
    host = host_file.read_text().strip() if host_file.exists() else os.environ.get("DOCKER_HOST", "")
    if not host:
        pytest.fail(f"no private dockerd: {host_file} is missing and DOCKER_HOST is unset; {hint}", pytrace=False)
    import docker

    try:
        client = docker.DockerClient(base_url=host, version="1.41")
        client.ping()
        container = client.containers.get(CONTAINER_NAME)
        running = container.status == "running"
        client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not up"
        pytest.fail(f"dockerd at {host} or container {CONTAINER_NAME!r} unusable ({exc}); {hint}", pytrace=False)
    if not running:
        pytest.fail(f"container {CONTAINER_NAME!r} is not running on {host}; {hint}", pytrace=False)
    return host


@pytest.fixture
def docker_executor(docker_host: str) -> Iterator[DockerExecutor]:
    executor = DockerExecutor(CONTAINER_NAME, docker_host=docker_host)
    yield executor
    executor.close()


@pytest.fixture
def docker_slurm_client(docker_executor: DockerExecutor) -> SlurmClient:
    return SlurmClient(docker_executor, timeout=CLIENT_TIMEOUT)


# ------------------------------------------------------------ per-test account
def subtree(client: SlurmClient, root: str) -> list[str]:
    """`root` and every account below it (from one read_state)."""
    state = client.read_state()
    children: dict[str, list[str]] = {}
    for acc in state.accounts.values():
        children.setdefault(acc.parent, []).append(acc.name)
    found: list[str] = []
    todo = [root] if root in state.accounts else []
    while todo:
        name = todo.pop(0)
        found.append(name)
        todo.extend(sorted(children.get(name, [])))
    return found  # breadth-first: parents before children


def remove_tree(root: str, *, attempts: int = 20) -> None:
    """Cancel the jobs of `root`'s subtree and remove all of its accounts.

    The root goes first, alone: SLURM then drops every association below it in one
    commit, and a single-name removal is never refused for holding a user's default
    account (a multi-name one is, and would fall back to one commit per name). The child
    account records left behind are removed by a second command in the same process.
    """
    client = SlurmClient(NativeExecutor(), timeout=CLIENT_TIMEOUT)
    for _ in range(attempts):
        names = subtree(client, root)
        if not names:
            return
        ops: list = [CancelJobs(tuple(names)), RemoveAccounts((root,))]
        if len(names) > 1:
            ops.append(RemoveAccounts(tuple(reversed(names[1:]))))
        results = client.apply(ops)
        failed = [r for r in results[1:] if not r.ok]
        if not failed:
            if not subtree(client, root):
                return
        elif not all(isinstance(r.error, ActiveJobsError) for r in failed):
            raise AssertionError(f"cleanup of {root} failed: {[str(r.error) for r in failed]}")
        time.sleep(0.5)  # cancelled jobs still completing
    raise AssertionError(f"cleanup of {root}: jobs stayed active after {attempts} attempts")


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}{secrets.token_hex(4)}"


@pytest.fixture
def slurm_root(slurm_cluster: str) -> Iterator[str]:
    """A fresh root-level account `t<8hex>` for this test; removed with its subtree after."""
    name = unique_name("t")
    client = SlurmClient(NativeExecutor(), timeout=CLIENT_TIMEOUT)
    (result,) = client.apply([AddAccounts((name,), "root", description=f"pytest {name}", organization="pytest")])
    if not result.ok:
        pytest.fail(f"cannot create test account {name}: {result.error}", pytrace=False)
    try:
        yield name
    finally:
        remove_tree(name)


# ------------------------------------------------------------------------ jobs
class RunJob(Protocol):
    def __call__(
        self,
        user: str,
        account: str,
        *,
        cpus: int = 1,
        mem_mb: int = 100,
        gpus: int = 0,
        seconds: float = 1,
        time_limit_min: int = 2,
    ) -> str: ...


def submit_job(
    user: str,
    account: str,
    *,
    cpus: int = 1,
    mem_mb: int = 100,
    gpus: int = 0,
    seconds: float = 1,
    time_limit_min: int = 2,
) -> str:
    """Submit `sleep seconds` as Linux `user` with sbatch --parsable; returns the job id.

    Always passes --time: with GrpTRESMins and `safe` enforcement a job without a time
    limit could stay PENDING forever.
    """
    argv = [
        "runuser", "-u", user, "--",
        "sbatch", "--parsable", f"--account={account}", f"--cpus-per-task={cpus}", f"--mem={mem_mb}",
        f"--time={time_limit_min}", "--chdir=/tmp", "--output=/dev/null", "--job-name=wsa-test",
    ]  # fmt: skip
    if gpus:
        argv.append(f"--gres=gpu:{gpus}")
    argv += ["--wrap", f"sleep {seconds}"]
    r = _sh(argv)
    if r.returncode != 0:
        raise AssertionError(f"sbatch as {user} in {account} failed (rc {r.returncode}): {r.stderr.strip()}")
    return r.stdout.strip().split(";")[0]


@pytest.fixture
def run_job(slurm_cluster: str) -> RunJob:
    return submit_job


def _job_rows(job_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    r = _sh(
        ["sacct", "--noheader", "--parsable2", "--allusers", "--allocations", f"--jobs={','.join(job_ids)}",
         "--format=JobID,State,Eligible,End"]
    )  # fmt: skip
    if r.returncode != 0:
        raise AssertionError(f"sacct failed: {r.stderr.strip()}")
    rows = {}
    for line in r.stdout.splitlines():
        if line.count("|") == 3:
            job, state, eligible, end = line.split("|")
            rows[job] = (state.split(" ")[0], eligible, end)
    return rows


def job_states(job_ids: Iterable[str]) -> dict[str, str]:
    """job id -> sacct State (first word: `CANCELLED by 0` -> `CANCELLED`)."""
    return {job: row[0] for job, row in _job_rows(list(job_ids)).items()}


def wait_jobs_in_sacct(
    job_ids: Iterable[str], *, timeout: float = 90, states: frozenset[str] = TERMINAL_STATES
) -> dict[str, str]:
    """Poll sacct until every job is in one of `states` (terminal by default); returns the states.

    A terminal job counts only once its record is complete: right after COMPLETED shows,
    Eligible can still be `Unknown` for about a second, and windowed queries
    (--starttime/--endtime, as `read_usage` runs) miss the job until then.
    """
    ids = list(job_ids)
    deadline = time.monotonic() + timeout
    seen: dict[str, tuple[str, str, str]] = {}
    while time.monotonic() < deadline:
        seen = _job_rows(ids)

        def ready(job: str) -> bool:
            if job not in seen or seen[job][0] not in states:
                return False
            return seen[job][0] not in TERMINAL_STATES or "Unknown" not in seen[job][1:]

        if all(ready(j) for j in ids):
            return {j: seen[j][0] for j in ids}
        time.sleep(0.3)
    raise AssertionError(f"jobs not in {sorted(states)} after {timeout}s: {seen}")


@pytest.fixture(name="wait_jobs_in_sacct")
def wait_jobs_in_sacct_fixture(slurm_cluster: str) -> Callable[..., dict[str, str]]:
    return wait_jobs_in_sacct


# ------------------------------------------------------------- daemon control
def slurm_ctl(action: str, daemon: str) -> subprocess.CompletedProcess[str]:
    """devenv/slurm/ctl {start|stop|status|pid} <daemon>."""
    return _sh([str(SLURM_CTL), action, daemon], timeout=90)

