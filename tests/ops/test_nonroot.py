"""The documented non-root mode, on the real cluster: a dedicated Linux user with a SLURM admin level runs
the agent's Create (``--once``) against the stand-in. The user, its SLURM record and the accounts are
removed afterwards.

Found here: AdminLevel=Operator is NOT enough on SLURM 22.05. The agent creates accounts with one
``sacctmgr load`` per batch, and slurmdbd answers an Operator "Your user does not have sufficient privileges
to load files": the order fails with that message. AdminLevel=Admin works; the README says so.

The test's virtualenv lives under /root (mode 0700 here), which the user cannot enter, so the agent runs on
the system Python 3.11 with the worktree and the virtualenv's site-packages on PYTHONPATH (same minor
version, so the compiled dependencies load).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.pull.conftest import PullEnv, env_vars, pull_env_8, sacctmgr, tree_of  # noqa: F401
from tests.support.slurm import unique_name
from waldur_slurm.slurm.cli.client import DEFAULT_WRITE_LOCK

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"


def site_packages() -> str:
    return next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))


@contextmanager
def shared_write_lock() -> Iterator[None]:
    """Hold the machine-wide sacctmgr write lock for the test's own writes as root.

    Concurrent hierarchy writes corrupt slurmdbd 22.05's association tree (README, "Known SLURM 22.05
    pitfall"). The agent takes the same lock itself, also as another user: the lock file is root's (0644) and
    it opens it read-only (flock needs no write access).
    """
    fd = os.open(DEFAULT_WRITE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@pytest.fixture(params=["Operator", "Admin"])
def operator_user(request: pytest.FixtureRequest, pull_env_8: PullEnv):  # noqa: F811
    if os.geteuid() != 0:
        pytest.fail("the non-root test creates a Linux user: run it as root", pytrace=False)
    name = unique_name("wsaop")
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/", "--shell", "/usr/sbin/nologin",
                    name], check=True, capture_output=True, timeout=60)
    try:
        # An association under the test's own root, then the admin level (README "Running as a non-root user").
        with shared_write_lock():  # an association is a hierarchy write too
            sacctmgr("-i", "add", "user", name, f"account={pull_env_8.root}")
            sacctmgr("-i", "modify", "user", "where", f"name={name}", "set", f"adminlevel={request.param}")
        yield name, request.param
    finally:
        with shared_write_lock():
            subprocess.run(["sacctmgr", "-i", "delete", "user", f"name={name}"], capture_output=True, timeout=60)
        subprocess.run(["userdel", name], capture_output=True, timeout=60)


def test_create_as_a_non_root_slurm_admin_user(pull_env_8: PullEnv,  # noqa: F811
                                               operator_user: tuple[str, str]) -> None:
    env = pull_env_8
    operator_user, level = operator_user
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2] == (3, 11))"],
                             capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == "True", "needs the system Python 3.11 (Debian 12)"
    readable = Path(tempfile.mkdtemp(prefix="wsa-nonroot-"))
    try:
        readable.chmod(0o755)
        tres = readable / "components.yaml"
        shutil.copy(env.tres_path, tres)
        tres.chmod(0o644)
        order = env.order(name="operator")
        variables = env_vars(env.standin.url, env.standin.provider_token, env.offering, env.root, tres)
        proc_env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(readable),
                    "PYTHONPATH": f"{REPO}:{site_packages()}", **variables}
        runs = []
        for _ in range(2):  # the 2024 flavour may need a second cycle; profile 8 completes in one
            run = subprocess.run(["setpriv", f"--reuid={operator_user}", f"--regid={operator_user}", "--clear-groups",
                                  SYSTEM_PYTHON, "-m", "waldur_slurm.main", "--once"],
                                 cwd=readable, env=proc_env, capture_output=True, text=True, timeout=180)
            runs.append(run)
            # the root-owned lock file was opened read-only and held: never "writing without it"
            assert "cannot open SLURM write lock" not in run.stderr, run.stderr[-3000:]
            if env.waldur_order(order["uuid"])["state"] in ("done", "erred"):
                break
        run = runs[-1]
        if level == "Operator":
            assert run.returncode == 1, run.stderr[-3000:]
            assert "Your user does not have sufficient privileges to load files" in run.stderr
            assert env.waldur_order(order["uuid"])["state"] == "erred"
            return
        assert run.returncode == 0, run.stderr[-3000:]
        assert env.waldur_order(order["uuid"])["state"] == "done", run.stderr[-3000:]
        backend_id = env.waldur_resource(order["resource_uuid"])["backend_id"]
        assert backend_id in tree_of(env.root)
        # The account really was written by that user: slurmdbd's transaction log names the actor.
        actors = sacctmgr("list", "transactions", f"accounts={backend_id}", "format=actor")
        assert operator_user in actors.split(), actors
    finally:
        shutil.rmtree(readable, ignore_errors=True)
