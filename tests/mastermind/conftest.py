"""Fixtures for the agent against the REAL Waldur Mastermind (Oct 2024) and the real local SLURM cluster.

``site`` is one world on the real server (tests/support/mastermind.py), a TRES file that matches its offering,
and the test's own ``slurm_root`` as SLURM_DEFAULT_ACCOUNT. ``site.pull()`` and ``site.push()`` run the agent
as its own process (``--once``) with the daemon's configuration.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.mastermind import (
    DEFAULT_TRES,
    AccessLog,
    AgentRun,
    Mastermind,
    World,
    build_world,
    run_agent,
)
from tests.support.slurm import CLIENT_TIMEOUT
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.model import SlurmState
from waldur_slurm.slurm.cli.executor import NativeExecutor

pytestmark = [pytest.mark.mastermind, pytest.mark.slurm]


@dataclass
class Site:
    world: World
    root: str
    tres_path: Path
    access: AccessLog

    def env(self, direction: str, **extra: str) -> dict[str, str]:
        return self.world.agent_env(**{
            "WALDUR_SYNC_DIRECTION": direction,
            "SLURM_DEPLOYMENT_TYPE": "native",
            "SLURM_DEFAULT_ACCOUNT": self.root,
            "SLURM_TRES_CONFIG_PATH": str(self.tres_path),
            "SLURM_COMMAND_TIMEOUT": "60",
            "REQUESTS_TIMEOUT": "30",
            **extra,
        })

    def pull(self, *args: str, **extra: str) -> AgentRun:
        return run_agent(self.env("pull", **extra), *args)

    def push(self, *args: str, **extra: str) -> AgentRun:
        return run_agent(self.env("push", **extra), *args)

    def pull_until(self, pred: Any, *, attempts: int = 5, **extra: str) -> AgentRun:
        """Pull cycles until ``pred()`` holds: a 2024 allocation is created by the server's worker after approval,
        so a Create may need a second cycle (the agent never waits inside a cycle)."""
        run = None
        for _ in range(attempts):
            run = self.pull(**extra)
            assert run.returncode in (0, 1), run.stderr[-3000:]
            if pred():
                return run
        raise AssertionError(f"not reached after {attempts} pull cycles; last log:\n{run.stderr[-3000:] if run else ''}")


def slurm_state() -> SlurmState:
    return SlurmClient(NativeExecutor(), timeout=CLIENT_TIMEOUT).read_state()


def subtree_of(root: str) -> dict[str, Any]:
    """account -> (parent, users, limits) for every account under ``root``."""
    state = slurm_state()
    below: dict[str, Any] = {}
    frontier = {root}
    while frontier:
        nxt = set()
        for acc in state.accounts.values():
            if acc.parent in frontier and acc.name not in below:
                below[acc.name] = acc
                nxt.add(acc.name)
        frontier = nxt
    return below


@pytest.fixture
def site(mastermind: Mastermind, slurm_root: str, tmp_path: Path) -> Iterator[Site]:
    tres = tmp_path / "tres.yaml"
    tres.write_text(DEFAULT_TRES)
    yield Site(build_world(mastermind), slurm_root, tres, AccessLog())
