"""Failure mapping against real parts: a stopped or hung slurmdbd, missing binaries,
and every docker failure (missing/stopped container, unreachable daemon, timeout).

slurmdbd is shared by everyone's tests: it is stopped or paused for as short a time as
possible and ALWAYS brought back in a `finally`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from typing import Iterator

import docker
import pytest

from tests.support.slurm import CONTAINER_NAME, slurm_ctl, unique_name
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.errors import (
    CommandNotFound,
    ContainerMissing,
    ContainerNotRunning,
    DockerUnavailable,
    SlurmTimeout,
    SlurmTransientError,
    SlurmUnavailable,
)
from waldur_slurm.slurm.cli.executor import DockerExecutor, NativeExecutor
from waldur_slurm.slurm.ops import AddAccounts

pytestmark = pytest.mark.slurm


def _restore_slurmdbd() -> None:
    r = slurm_ctl("start", "slurmdbd")
    assert r.returncode == 0, f"could not restart slurmdbd: {r.stderr}"


@pytest.fixture
def slurmdbd_stopped(slurm_cluster: str) -> Iterator[None]:
    r = slurm_ctl("stop", "slurmdbd")
    try:
        assert r.returncode == 0, r.stderr
        assert slurm_ctl("status", "slurmdbd").returncode == 1
        yield
    finally:
        _restore_slurmdbd()


@pytest.fixture
def slurmdbd_paused(slurm_cluster: str) -> Iterator[None]:
    """slurmdbd SIGSTOPped: its port stays open but nothing answers (a hang)."""
    r = slurm_ctl("pid", "slurmdbd")
    assert r.returncode == 0, "slurmdbd is not running"
    pid = int(r.stdout.strip())
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _clients(request: pytest.FixtureRequest, timeout: float) -> list[SlurmClient]:
    clients = [SlurmClient(NativeExecutor(), timeout=timeout)]
    if request.node.get_closest_marker("docker"):
        host = request.getfixturevalue("docker_host")
        clients.append(SlurmClient(DockerExecutor(CONTAINER_NAME, docker_host=host), timeout=timeout))
    return clients


@pytest.mark.docker
def test_stopped_slurmdbd_is_transient_unavailable(request: pytest.FixtureRequest, slurm_cluster: str) -> None:
    clients = _clients(request, timeout=20)
    for c in clients:  # warm up: create docker clients, resolve the container
        c.version()
    now = datetime.now().astimezone()
    request.getfixturevalue("slurmdbd_stopped")
    for c in clients:
        before = c.executor.process_count
        with pytest.raises(SlurmUnavailable) as read_err:
            c.read_state()
        assert isinstance(read_err.value, SlurmTransientError)
        assert "Connection refused" in str(read_err.value)
        with pytest.raises(SlurmUnavailable):
            c.read_usage(["anything"], now - timedelta(hours=1), now)
        with pytest.raises(SlurmUnavailable):
            c.apply([AddAccounts((unique_name("never"),), "root")])
        # each call failed at once in ONE process: nothing retried, nothing hung
        assert c.executor.process_count - before == 3


@pytest.mark.docker
def test_hung_slurmdbd_hits_the_timeout(request: pytest.FixtureRequest, slurm_cluster: str) -> None:
    clients = _clients(request, timeout=2)
    for c in clients:
        c.version()
    request.getfixturevalue("slurmdbd_paused")
    for c in clients:
        with pytest.raises(SlurmTimeout) as err:
            c.read_state()
        assert isinstance(err.value, SlurmTransientError)
        # 3 commands in the batch: accounts, users' defaults, the accounts' own job limits and QOS
        assert err.value.timeout == pytest.approx(2 + 2 * c.batch_command_budget)


def test_slurmdbd_killed_mid_batch_leaves_only_retryable_failures(slurm_root: str) -> None:
    """slurmdbd dies (kill -9) while one sacctmgr process works through a batch of writes: every op that did
    not succeed is reported as transient (a later cycle runs it), none as a refusal that would err an order."""
    client = SlurmClient(NativeExecutor(), timeout=120)
    names = [f"{slurm_root}_k{i:02d}" for i in range(40)]
    # one `add account` line per op: each commits on its own (~0.3 s), so the kill lands mid-batch
    ops = [AddAccounts((name,), slurm_root, description=f"d{i}") for i, name in enumerate(names)]
    pid = int(slurm_ctl("pid", "slurmdbd").stdout.strip())
    killer = threading.Timer(2.0, os.kill, (pid, signal.SIGKILL))
    killer.start()
    try:
        results = client.apply(ops)
    finally:
        killer.join()
        _restore_slurmdbd()
    done = [r.op.names[0] for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    assert done, "the kill came before the first command: nothing to compare"
    assert failed, "the batch finished before the kill"
    for r in failed:
        assert isinstance(r.error, SlurmTransientError), f"{r.op.describe()}: {r.error!r}\n{r.output}"
    state = client.read_state()
    assert set(done) <= set(state.accounts)


def test_native_timeout_kills_the_process_group(tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "child.pid"
    ex = NativeExecutor()
    with pytest.raises(SlurmTimeout):
        ex.run(["sh", "-c", f"sleep 30 & echo $! > {marker}; wait"], timeout=0.5)
    child = int(marker.read_text())
    for _ in range(50):  # the child is killed with its group; PID 1 reaps it a bit later
        try:
            with open(f"/proc/{child}/stat") as f:
                if f.read().split()[2] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"child {child} of the timed-out command still runs")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _command_after_killing_its_agent(tmp_path, kill_with_parent: bool) -> int:  # type: ignore[no-untyped-def]
    """Start an agent process whose executor runs a long command, kill the agent with -9; return the
    command's PID once it has had time to react."""
    marker = tmp_path / f"command-{kill_with_parent}.pid"
    agent = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\n"
         "from waldur_slurm.slurm.cli.executor import NativeExecutor\n"
         f"NativeExecutor(kill_with_parent={kill_with_parent}).run("
         f"['sh', '-c', 'echo $$ > {marker}; exec sleep 60'], timeout=120)\n"],
    )
    try:
        for _ in range(100):
            if marker.exists() and marker.read_text().strip():
                break
            time.sleep(0.05)
        command = int(marker.read_text())
        assert _alive(command)
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=10)
        for _ in range(50):
            if not _alive(command):
                break
            time.sleep(0.1)
        return command
    finally:
        agent.kill()
        agent.wait()


def test_native_command_dies_with_an_agent_killed_by_sigkill(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A sacctmgr write left running by a killed agent could land after the restarted agent re-planned."""
    assert NativeExecutor().kills_with_parent
    assert not _alive(_command_after_killing_its_agent(tmp_path, kill_with_parent=True))
    # the control: without the parent-death signal the command (own session) outlives its agent
    orphan = _command_after_killing_its_agent(tmp_path, kill_with_parent=False)
    try:
        assert _alive(orphan)
    finally:
        os.kill(orphan, signal.SIGKILL)


def test_native_command_not_found() -> None:
    ex = NativeExecutor()
    with pytest.raises(CommandNotFound):
        ex.run([unique_name("no-such-cmd-")], timeout=5)
    assert ex.process_count == 1


def test_native_result_passes_exit_code_and_streams() -> None:
    r = NativeExecutor().run(["sh", "-c", "cat; echo err >&2; exit 7"], stdin="in\n", timeout=5)
    assert (r.exit_code, r.stdout, r.stderr) == (7, "in\n", "err\n")


# ------------------------------------------------------------------- docker
@pytest.fixture
def scratch_container(docker_host: str) -> Iterator[str]:
    """A second hostusr container this test may stop and remove."""
    api = docker.DockerClient(base_url=docker_host, version="1.41")
    name = unique_name("wsa-scratch-")
    container = api.containers.run(
        "slurmtest/hostusr:latest", ["sleep", "infinity"], name=name, detach=True, init=True,
        network_mode="host", volumes={"/usr": {"bind": "/usr", "mode": "ro"}, "/etc": {"bind": "/etc", "mode": "ro"}},
    )  # fmt: skip
    try:
        yield name
    finally:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        api.close()


@pytest.mark.docker
def test_docker_stdout_stderr_exit_code_and_stdin(docker_executor: DockerExecutor) -> None:
    r = docker_executor.run(["sh", "-c", "echo out; echo err >&2; exit 7"], timeout=10)
    assert (r.exit_code, r.stdout, r.stderr) == (7, "out\n", "err\n")
    lines = "".join(f"line {i}\n" for i in range(100_000))
    r = docker_executor.run(["sh", "-c", "cat; echo done >&2"], stdin=lines, timeout=30)
    assert (r.exit_code, r.stdout, r.stderr) == (0, lines, "done\n")
    r = docker_executor.run(["true"], stdin="", timeout=10)
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", "")
    assert docker_executor.process_count == 3


@pytest.mark.docker
def test_docker_command_not_found(docker_executor: DockerExecutor) -> None:
    with pytest.raises(CommandNotFound):
        docker_executor.run([unique_name("no-such-cmd-")], timeout=10)


@pytest.mark.docker
def test_docker_timeout_is_enforced_inside_the_container(docker_executor: DockerExecutor, docker_host: str) -> None:
    tag = unique_name("")
    with pytest.raises(SlurmTimeout):
        docker_executor.run(["sh", "-c", f"sleep 30; echo {tag}"], timeout=1)
    api = docker.DockerClient(base_url=docker_host, version="1.41")
    try:
        processes = api.containers.get(CONTAINER_NAME).top(ps_args="-eo pid,args")["Processes"]
    finally:
        api.close()
    assert not [p for p in processes if "sleep 30" in " ".join(p)], processes


@pytest.mark.docker
def test_docker_missing_container(docker_host: str) -> None:
    ex = DockerExecutor(unique_name("wsa-nosuch-"), docker_host=docker_host)
    with pytest.raises(ContainerMissing) as err:
        ex.run(["true"], timeout=5)
    assert not isinstance(err.value, SlurmTransientError)
    assert ex.process_count == 0


@pytest.mark.docker
def test_docker_stopped_then_removed_container(docker_host: str, scratch_container: str) -> None:
    ex = DockerExecutor(scratch_container, docker_host=docker_host)
    assert ex.run(["true"], timeout=5).exit_code == 0
    api = docker.DockerClient(base_url=docker_host, version="1.41")
    try:
        container = api.containers.get(scratch_container)
        container.stop(timeout=0)
        with pytest.raises(ContainerNotRunning) as err:
            ex.run(["true"], timeout=5)
        assert isinstance(err.value, SlurmTransientError)
        container.start()
        assert ex.run(["true"], timeout=5).exit_code == 0  # same executor recovers
        container.remove(force=True)
        with pytest.raises(ContainerMissing):
            ex.run(["true"], timeout=5)
    finally:
        api.close()


@pytest.mark.docker
def test_docker_daemon_unreachable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ex = DockerExecutor("slurmctld", docker_host=f"unix://{tmp_path}/no-docker.sock")  # construction does no I/O
    with pytest.raises(DockerUnavailable) as err:
        ex.run(["true"], timeout=5)
    assert isinstance(err.value, SlurmTransientError)
    assert "no-docker.sock" in str(err.value)
    bad = DockerExecutor("slurmctld", docker_host="tcp://127.0.0.1:1")  # nothing listens on port 1
    with pytest.raises(DockerUnavailable):
        bad.run(["true"], timeout=5)


@pytest.mark.docker
def test_docker_executor_is_lazy_and_honours_docker_host(
    docker_host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    ex = DockerExecutor(CONTAINER_NAME)  # from_env(version="1.41")
    assert ex.run(["true"], timeout=5).exit_code == 0
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    lazy = DockerExecutor(CONTAINER_NAME)
    with pytest.raises(DockerUnavailable):
        lazy.run(["true"], timeout=5)


def test_writes_wait_for_the_machine_wide_write_lock(slurm_cluster: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Concurrent sacctmgr writers corrupt 22.05's association tree: writes take a flock."""
    import fcntl

    lock = tmp_path / "write.lock"
    client = SlurmClient(NativeExecutor(), timeout=1, write_lock=str(lock))
    name = unique_name("never")
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(SlurmTimeout):
            client.apply([AddAccounts((name,), "root")])
        assert client.executor.process_count == 0  # nothing ran while the lock was held
        client.read_state()  # reads take no lock
        assert client.executor.process_count == 1
    # released: the same write goes through (and is undone)
    from waldur_slurm.slurm.ops import RemoveAccounts

    results = SlurmClient(NativeExecutor(), timeout=30, write_lock=str(lock)).apply(
        [AddAccounts((name,), "root"), RemoveAccounts((name,))]
    )
    assert [r.ok for r in results] == [True, True]
