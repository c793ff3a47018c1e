"""Fixtures for the pull daemon's tests: the real local SLURM cluster, a real stand-in per test, both profiles.

``pull_env`` (parametrised ``[8]`` / ``[2024]``) gives a stand-in with a Marketplace.Slurm offering whose
components match a TRES file written for the test, a consumer customer and project, a ``Settings`` with the
test's own ``slurm_root`` as SLURM_DEFAULT_ACCOUNT, and helpers to build reconcilers and read SLURM back.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.slurm import (  # noqa: F401
    CLIENT_TIMEOUT,
    slurm_cluster,
    slurm_root,
)
from waldur_slurm.config import Settings, load_settings
from waldur_slurm.pull.reconciler import PullReconciler
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.model import SlurmState
from waldur_slurm.slurm.cli.executor import NativeExecutor
from waldur_slurm.waldur.client import WaldurClient

from waldur_standin.testing import StandIn

TRES_FILE = """\
cpu:
  label: CPU
  measured_unit: CPU-Hours
  accounting_type: limit
  unit_factor: 60
  limit: 10
mem:
  label: RAM
  measured_unit: GB-Hours
  accounting_type: usage
  unit_factor: 61440
  limit: 100
gres/gpu:
  label: GPU
  measured_unit: GPU-Hours
  accounting_type: limit
  unit_factor: 60
"""

OFFERING_COMPONENTS = [
    {"type": "cpu", "name": "CPU", "measured_unit": "CPU-Hours", "billing_type": "limit", "unit_factor": 60},
    {"type": "mem", "name": "RAM", "measured_unit": "GB-Hours", "billing_type": "usage", "unit_factor": 61440},
    {"type": "gres/gpu", "name": "GPU", "measured_unit": "GPU-Hours", "billing_type": "limit", "unit_factor": 60},
]
MEM_LIMIT = 100 * 61440  # usage component: the TRES file's limit x unit_factor


def env_vars(url: str, token: str, offering: str, root: str, tres_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "WALDUR_API_URL": url + "/api/",
        "WALDUR_API_TOKEN": token,
        "WALDUR_OFFERING_UUID": offering,
        "WALDUR_SYNC_DIRECTION": "pull",
        "SLURM_DEPLOYMENT_TYPE": "native",
        "SLURM_DEFAULT_ACCOUNT": root,
        "SLURM_TRES_CONFIG_PATH": str(tres_path),
        "SLURM_COMMAND_TIMEOUT": "30",
        "REQUESTS_TIMEOUT": "5",
    }
    env.update(extra)
    return env


@dataclass
class PullEnv:
    standin: StandIn
    profile: str
    offering: str
    customer: str
    project: str
    root: str
    tres_path: Path
    clients: list[WaldurClient] = field(default_factory=list)

    def settings(self, **extra: str) -> Settings:
        return load_settings(env_vars(self.standin.url, self.standin.provider_token, self.offering, self.root,
                                      self.tres_path, **extra))

    def waldur(self, **overrides: Any) -> WaldurClient:
        kwargs: dict[str, Any] = {"timeout": 5.0, "max_retries": 2, "sleep": lambda _s: None}
        kwargs.update(overrides)
        client = WaldurClient(self.standin.url, self.standin.provider_token, self.offering, **kwargs)
        self.clients.append(client)
        return client

    def reconciler(self, settings: Settings | None = None, waldur: WaldurClient | None = None,
                   slurm: SlurmClient | None = None, out: list[str] | None = None) -> PullReconciler:
        lines = out if out is not None else []
        return PullReconciler(
            settings or self.settings(),
            waldur or self.waldur(),
            slurm or SlurmClient(NativeExecutor(), timeout=CLIENT_TIMEOUT),
            out=lines.append,
        )

    # -- Waldur side
    def user(self, prefix: str = "u", username: str | None = None, *, team: bool = True,
             project: str | None = None) -> tuple[str, str]:
        """A Waldur user in the project's team with an offering user; returns (user uuid, cluster login)."""
        login = username or f"{prefix}{secrets.token_hex(4)}"
        u = self.standin.add_user("w-" + login)
        # the offering user first: joining a project with live resources auto-creates one without a login
        self.standin.add_offering_user(self.offering, u["uuid"], login)
        if team:
            self.standin.add_team_member(project or self.project, u["uuid"], "member")
        return u["uuid"], login

    def order(self, type: str = "Create", *, name: str | None = None, limits: dict[str, Any] | None = None,
              resource: str | None = None, project: str | None = None, **kw: Any) -> dict[str, Any]:
        if type == "Create":
            return self.standin.place_order(self.offering, project or self.project, name=name or "alloc",
                                            limits={"cpu": 5, "gres/gpu": 1} if limits is None else limits, **kw)
        return self.standin.place_order(self.offering, type=type, resource_uuid=resource, limits=limits, **kw)

    def waldur_order(self, uuid: str) -> dict[str, Any]:
        return self.standin.state()["orders"][uuid]

    def waldur_resource(self, uuid: str) -> dict[str, Any]:
        return self.standin.state()["resources"][uuid]

    def order_posts(self, uuid: str) -> dict[str, int]:
        """How often each order action was POSTed for this order (from the request log)."""
        counts: dict[str, int] = {}
        for e in self.standin.requests():
            if e["method"] == "POST" and f"/marketplace-orders/{uuid}/" in e["path"]:
                action = e["path"].rstrip("/").rsplit("/", 1)[-1]
                counts[action] = counts.get(action, 0) + 1
        return counts


def read_state() -> SlurmState:
    return SlurmClient(NativeExecutor(), timeout=CLIENT_TIMEOUT).read_state()


def tree_of(root: str) -> dict[str, Any]:
    """The accounts under ``root`` (not root itself), from one read of the real cluster."""
    accounts = read_state().accounts
    found: dict[str, Any] = {}
    todo = [root]
    while todo:
        parent = todo.pop()
        for acc in accounts.values():
            if acc.parent == parent:
                found[acc.name] = acc
                todo.append(acc.name)
    return found


def sacctmgr(*args: str) -> str:
    r = subprocess.run(["sacctmgr", "-n", "-P", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def make_env(standin: StandIn, profile: str, root: str, tmp_path: Path) -> PullEnv:
    tres = tmp_path / "components.yaml"
    tres.write_text(TRES_FILE)
    offering = standin.setup_offering(OFFERING_COMPONENTS)
    customer = standin.add_customer("Research Org")
    project = standin.add_project(customer, "Project Alpha")
    return PullEnv(standin, profile, offering, customer, project, root, tres)


@pytest.fixture(params=["8", "2024"])
def pull_env(request: pytest.FixtureRequest, slurm_root: str, tmp_path: Path) -> Iterator[PullEnv]:  # noqa: F811
    with StandIn(profile=request.param) as server:
        env = make_env(server, request.param, slurm_root, tmp_path)
        try:
            yield env
        finally:
            for client in env.clients:
                client.close()


@pytest.fixture
def pull_env_8(slurm_root: str, tmp_path: Path) -> Iterator[PullEnv]:  # noqa: F811
    with StandIn(profile="8") as server:
        env = make_env(server, "8", slurm_root, tmp_path)
        try:
            yield env
        finally:
            for client in env.clients:
                client.close()
