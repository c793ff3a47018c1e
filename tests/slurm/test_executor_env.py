"""Issue 12 item 8: native SLURM commands get only the environment they need, never the agent's secrets."""

from __future__ import annotations

import pytest

from tests.support.slurm import CLIENT_TIMEOUT
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.cli.executor import NativeExecutor

TOKEN = "tok-0123456789abcdef0123456789abcdef"
DSN = "https://publickey123@sentry.example.org/42"


def test_children_never_inherit_the_token_or_the_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALDUR_API_TOKEN", TOKEN)
    monkeypatch.setenv("SENTRY_DSN", DSN)
    monkeypatch.setenv("WALDUR_API_URL", "https://agent:pw@waldur.example.org/")
    monkeypatch.setenv("LC_MESSAGES", "C")
    executor = NativeExecutor()
    # the child reads its own /proc/<pid>/environ, as any process of the same user could
    result = executor.run(["sh", "-c", "tr '\\0' '\\n' < /proc/$$/environ"], timeout=30)
    assert result.exit_code == 0, result.stderr
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert TOKEN not in result.stdout and DSN not in result.stdout and "pw@" not in result.stdout
    assert not {k for k in env if k.startswith(("WALDUR_", "SENTRY_"))}
    assert env["TZ"] == "UTC" and env["LC_ALL"] == "C" and env["LC_MESSAGES"] == "C" and env["PATH"]
    assert executor.process_count == 1


@pytest.mark.slurm
def test_slurm_commands_work_with_the_minimal_environment(monkeypatch: pytest.MonkeyPatch, slurm_cluster: str) -> None:
    monkeypatch.setenv("WALDUR_API_TOKEN", TOKEN)
    client = SlurmClient(NativeExecutor(), timeout=CLIENT_TIMEOUT)
    assert client.version().startswith("22.05")
    assert "cpu" in client.list_tres()
    assert client.executor.process_count == 2
