"""The real entry point: ``python -m waldur_slurm.main --once`` in pull mode, as its own process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pull.conftest import PullEnv, env_vars, tree_of

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]


def run_main(env: PullEnv, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    variables = env_vars(env.standin.url, env.standin.provider_token, env.offering, env.root, env.tres_path, **extra)
    proc_env = {k: v for k, v in os.environ.items() if not k.startswith(("WALDUR_", "SLURM_"))}
    proc_env.update(variables)
    return subprocess.run(
        [sys.executable, "-m", "waldur_slurm.main", "--once", *args],
        cwd=REPO, env=proc_env, capture_output=True, text=True, timeout=180,
    )


def test_once_processes_orders_and_exits_zero(pull_env: PullEnv) -> None:
    env = pull_env
    env.user("a")
    created = env.order(name="cli")
    rejected = env.order(name="bad", limits={"cpu": -3})

    dry = run_main(env, "--dry-run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert created["uuid"] in dry.stdout and "add account" in dry.stdout and "reject: limits.cpu = -3" in dry.stdout
    assert env.waldur_order(created["uuid"])["state"] == "pending-provider"
    assert tree_of(env.root) == {}

    done = run_main(env)
    assert done.returncode == 0, done.stderr[-2000:]
    state = env.standin.state()
    if state["orders"][created["uuid"]]["state"] != "done":  # 2024: the allocation may come after the approval
        again = run_main(env)
        assert again.returncode == 0, again.stderr[-2000:]
        state = env.standin.state()
    assert state["orders"][created["uuid"]]["state"] == "done"
    assert state["orders"][rejected["uuid"]]["state"] == "rejected"  # a clean outcome, not a failure
    assert state["resources"][created["resource_uuid"]]["backend_id"] in tree_of(env.root)
    assert env.standin.provider_token not in done.stdout + done.stderr  # the token never shows


def test_once_exits_non_zero_when_an_order_fails(pull_env: PullEnv) -> None:
    env = pull_env
    created = env.order(name="nowhere")
    result = run_main(env, SLURM_DEFAULT_ACCOUNT=f"{env.root}_missing")
    assert result.returncode == 1, result.stderr[-2000:]
    assert "SLURM_DEFAULT_ACCOUNT" in result.stderr
    # a problem of the agent's own setup: the order is left pending, not rejected or erred
    assert env.waldur_order(created["uuid"])["state"] == "pending-provider"
