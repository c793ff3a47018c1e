"""Docker mode: the pull daemon drives SLURM through `docker exec` in the `slurmctld` container.

The container shares the host's /etc and /home (devenv/docker/up), so a Linux user made on the host exists
inside it and a home directory made by mkhomedir_helper inside it shows up on the host.
"""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
from collections.abc import Iterator

import pytest

from tests.pull.conftest import PullEnv, tree_of
from tests.support.slurm import CLIENT_TIMEOUT, CONTAINER_NAME, docker_host  # noqa: F401
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.cli.executor import DockerExecutor

pytestmark = [pytest.mark.slurm, pytest.mark.docker]


@pytest.fixture
def linux_user() -> Iterator[str]:
    name = f"wsadk{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--no-create-home", "--home-dir", f"/home/{name}", name], check=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True, timeout=30)


def test_create_and_terminate_through_docker_exec_with_homedirs(
    pull_env: PullEnv, docker_host: str, linux_user: str  # noqa: F811
) -> None:
    env = pull_env
    env.user(username=linux_user)
    executor = DockerExecutor(CONTAINER_NAME, docker_host=docker_host)
    try:
        slurm = SlurmClient(executor, timeout=CLIENT_TIMEOUT)
        settings = env.settings(SLURM_DEPLOYMENT_TYPE="docker", ENABLE_USER_HOMEDIR_ACCOUNT_CREATION="true")
        pull = env.reconciler(settings=settings, slurm=slurm)
        created = env.order(name="in docker")
        report = pull.run_cycle()
        assert (report.done, report.failed) == (1, 0), report.notes
        # read, cluster name (once per client), load, one sacctmgr batch, mkhomedir_helper
        assert report.slurm_processes <= 5
        account = env.waldur_resource(created["resource_uuid"])["backend_id"]
        assert tree_of(env.root)[account].users == {linux_user}
        home = f"/home/{linux_user}"
        assert stat.S_IMODE(os.stat(home).st_mode) == 0o700  # the default umask 0077, applied in the container

        env.order("Terminate", resource=created["resource_uuid"])
        report = pull.run_cycle()
        assert (report.done, report.failed) == (1, 0), report.notes
        assert tree_of(env.root) == {}
    finally:
        executor.close()


def test_docker_unavailable_defers_orders(pull_env_8: PullEnv, tmp_path: os.PathLike[str]) -> None:
    env = pull_env_8
    executor = DockerExecutor(CONTAINER_NAME, docker_host=f"unix://{tmp_path}/no-docker.sock")
    try:
        pull = env.reconciler(slurm=SlurmClient(executor, timeout=CLIENT_TIMEOUT))
        created = env.order(name="no docker")
        report = pull.run_cycle()
        assert (report.seen, report.deferred, report.failed, report.done) == (1, 1, 0, 0), report.notes
        assert env.waldur_order(created["uuid"])["state"] == "pending-provider"
        assert not [e for e in env.standin.requests() if e["method"] == "POST"]
    finally:
        executor.close()
