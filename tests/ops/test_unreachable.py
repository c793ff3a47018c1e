"""Waldur or SLURM unreachable: one behaviour in every task and mode, produced for real.

Native mode with no ``sacctmgr`` on the PATH, docker mode with a wrong ``SLURM_CONTAINER_NAME`` on the real
dockerd, a stand-in that is stopped or answers 503, a wrong offering UUID. Each time the agent runs as its
own process (``python -m waldur_slurm.main``) and must: say it in one line (no traceback), defer the work
(the order stays pending), exit 4 from ``--once`` (2 for the wrong offering), and, as a daemon, keep running
with ``/healthz`` and ``check-heartbeat`` red, naming the task and the reason.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.pull.conftest import PullEnv, env_vars, pull_env_8  # noqa: F401
from waldur_slurm.main import EXIT_CONFIG, EXIT_UNREACHABLE

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
NO_CONTAINER = "wsa-issue13-no-such-container"


def agent_env(env: PullEnv, tmp_path: Path, *, no_sacctmgr: bool = False, **extra: str) -> dict[str, str]:
    variables = env_vars(env.standin.url, env.standin.provider_token, env.offering, env.root, env.tres_path, **extra)
    proc_env = {k: v for k, v in os.environ.items() if not k.startswith(("WALDUR_", "SLURM_", "NOTIFY_", "WATCHDOG_"))}
    proc_env.update(variables)
    proc_env["PYTHONPATH"] = str(REPO)
    if no_sacctmgr:
        empty = tmp_path / "empty-bin"
        empty.mkdir(exist_ok=True)
        proc_env["PATH"] = str(empty)  # python is started by its absolute path
    return proc_env


def run_once(env: PullEnv, tmp_path: Path, *args: str, no_sacctmgr: bool = False,
             **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "waldur_slurm.main", "--once", *args], cwd=tmp_path,
                          env=agent_env(env, tmp_path, no_sacctmgr=no_sacctmgr, **extra),
                          capture_output=True, text=True, timeout=180)


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def assert_one_clear_line(result: subprocess.CompletedProcess[str], task: str, reason: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    summaries = [line for line in result.stderr.splitlines() if f" {task} cycle:" in line]
    assert len(summaries) == 1, result.stderr[-3000:]
    assert " WARNING " in summaries[0] and f"unreachable: {reason}" in summaries[0], summaries[0]
    assert "(work deferred to the next cycle)" in summaries[0]


@pytest.mark.parametrize("direction", ["pull", "push"])
def test_native_without_sacctmgr(pull_env_8: PullEnv, tmp_path: Path, direction: str) -> None:  # noqa: F811
    env = pull_env_8
    order = env.order(name="waits") if direction == "pull" else None
    result = run_once(env, tmp_path, no_sacctmgr=True, WALDUR_SYNC_DIRECTION=direction)
    assert result.returncode == EXIT_UNREACHABLE, result.stderr[-3000:]
    assert_one_clear_line(result, direction, "SLURM unreachable: command not found: sacctmgr")
    assert lines_with(result.stderr, "start check: SLURM unreachable: command not found: sacctmgr")
    if order is not None:
        assert env.waldur_order(order["uuid"])["state"] == "pending-provider"  # deferred, not erred
        # membership had nothing to do and did not touch SLURM: the probe still makes it red.
        assert_one_clear_line(result, "membership", "SLURM unreachable: command not found: sacctmgr")


def test_native_without_sacctmgr_and_no_order_is_red_too(pull_env_8: PullEnv, tmp_path: Path) -> None:  # noqa: F811
    result = run_once(pull_env_8, tmp_path, no_sacctmgr=True)
    assert result.returncode == EXIT_UNREACHABLE, result.stderr[-3000:]
    assert_one_clear_line(result, "pull", "SLURM unreachable: command not found: sacctmgr")


@pytest.mark.docker
@pytest.mark.parametrize("direction", ["pull", "push"])
def test_docker_with_a_wrong_container_name(pull_env_8: PullEnv, tmp_path: Path, direction: str,  # noqa: F811
                                            docker_host: str) -> None:
    env = pull_env_8
    order = env.order(name="waits") if direction == "pull" else None
    result = run_once(env, tmp_path, WALDUR_SYNC_DIRECTION=direction, SLURM_DEPLOYMENT_TYPE="docker",
                      SLURM_CONTAINER_NAME=NO_CONTAINER, DOCKER_HOST=docker_host)
    assert result.returncode == EXIT_UNREACHABLE, result.stderr[-3000:]
    assert_one_clear_line(result, direction, f"SLURM unreachable: container {NO_CONTAINER!r} not found")
    assert "next attempt in" not in result.stderr
    if order is not None:
        assert env.waldur_order(order["uuid"])["state"] == "pending-provider"


@pytest.mark.parametrize("direction", ["pull", "push"])
def test_waldur_stopped(pull_env_8: PullEnv, tmp_path: Path, direction: str) -> None:  # noqa: F811
    env = pull_env_8
    proc_env = agent_env(env, tmp_path, WALDUR_SYNC_DIRECTION=direction, REQUESTS_TIMEOUT="2")
    env.standin.stop()
    result = subprocess.run([sys.executable, "-m", "waldur_slurm.main", "--once"], cwd=tmp_path, env=proc_env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == EXIT_UNREACHABLE, result.stderr[-3000:]
    assert_one_clear_line(result, direction, "Waldur unreachable: ")
    assert lines_with(result.stderr, "start check: Waldur unreachable")


def test_waldur_answers_503_to_the_order_list(pull_env_8: PullEnv, tmp_path: Path) -> None:  # noqa: F811
    env = pull_env_8
    order = env.order(name="waits")
    env.standin.inject_fault("/api/marketplace-orders/", status=503, count=None, method="GET")
    result = run_once(env, tmp_path)
    assert result.returncode == EXIT_UNREACHABLE, result.stderr[-3000:]
    assert_one_clear_line(result, "pull", "Waldur unreachable: orders not listed")
    env.standin.clear_faults()
    assert env.waldur_order(order["uuid"])["state"] == "pending-provider"


def test_wrong_offering_uuid_stops_the_daemon_with_exit_2(pull_env_8: PullEnv, tmp_path: Path) -> None:  # noqa: F811
    wrong = "0123456789abcdef0123456789abcdef"
    result = run_once(pull_env_8, tmp_path, WALDUR_OFFERING_UUID=wrong)
    assert result.returncode == EXIT_CONFIG, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"WALDUR_OFFERING_UUID={wrong}: no such offering" in errors[0], result.stderr
    assert " cycle:" not in result.stderr  # no cycle ran


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def test_daemon_without_sacctmgr_runs_degraded_and_says_so_everywhere(pull_env_8: PullEnv,  # noqa: F811
                                                                       tmp_path: Path) -> None:
    env = pull_env_8
    port = free_port()
    heartbeat = tmp_path / "heartbeat"
    proc_env = agent_env(env, tmp_path, no_sacctmgr=True, WALDUR_METRICS_PORT=str(port),
                         WALDUR_HEARTBEAT_FILE=str(heartbeat), WALDUR_PULL_PERIOD_SECONDS="2",
                         WALDUR_MEMBERSHIP_PERIOD_SECONDS="600", LOG_FORMAT="json")
    proc = subprocess.Popen([sys.executable, "-m", "waldur_slurm.main"], cwd=tmp_path, env=proc_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        status, body = 0, ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # red after the first cycle, i.e. within one period
            status, body = healthz(port)
            if status == 503:
                break
            time.sleep(0.2)
        assert status == 503, body
        assert "pull: SLURM unreachable: command not found: sacctmgr" in body
        probe = subprocess.run([sys.executable, "-m", "waldur_slurm.tools.observability", "check-heartbeat", str(heartbeat)],
                               env=proc_env, capture_output=True, text=True, timeout=60)
        assert probe.returncode == 1 and "pull: SLURM unreachable" in probe.stdout, probe.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert 'waldur_slurm_task_healthy{task="pull"} 0' in metrics
        assert 'waldur_slurm_cycles_total{task="pull",outcome="ok"} 0' in metrics
        assert proc.poll() is None  # degraded, not dead: SLURM may come back
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-3000:]
    records = [json.loads(line) for line in err.splitlines()]
    assert not any("exc_info" in r for r in records)  # no traceback, ever
    summaries = [r for r in records if r["message"].startswith("pull cycle:")]
    assert summaries and all(r["unreachable"] and r["level"] == "WARNING" for r in summaries)
