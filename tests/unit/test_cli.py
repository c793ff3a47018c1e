"""The entry point, run as a real process: exit codes, --help, --version, configuration errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from waldur_slurm import __version__

REPO = Path(__file__).resolve().parents[2]
TOKEN = "0123456789abcdef0123456789abcdef01234567"


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("WALDUR_", "SLURM_", "SENTRY_"))}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "waldur_slurm.main", *args], env=clean, cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def good_env() -> dict[str, str]:
    return {
        "WALDUR_API_URL": "http://127.0.0.1:9/api/",
        "WALDUR_API_TOKEN": TOKEN,
        "WALDUR_OFFERING_UUID": "e21a0f0030b447deb63bedf69db6742e",
        "WALDUR_SYNC_DIRECTION": "pull",
        "SLURM_TRES_CONFIG_PATH": str(REPO / "config-components.yaml.example"),
        "PYTHONPATH": str(REPO),
    }


def test_help_lists_every_option_and_points_to_the_variables(good_env, tmp_path):
    result = run(["--help"], good_env, tmp_path)
    assert result.returncode == 0
    for option in ("--diag", "--load-components", "--once", "--dry-run", "--env-file", "--version"):
        assert option in result.stdout
    for variable in ("WALDUR_API_URL", "SLURM_DEPLOYMENT_TYPE", "ENABLE_USER_HOMEDIR_ACCOUNT_CREATION"):
        assert variable in result.stdout


def test_version(good_env, tmp_path):
    result = run(["--version"], good_env, tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"waldur-slurm-agent {__version__}"


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"WALDUR_SYNC_DIRECTION": "sideways"}, "WALDUR_SYNC_DIRECTION='sideways' is invalid: expected 'pull' or 'push'"),
        ({"SLURM_DEPLOYMENT_TYPE": "podman"}, "SLURM_DEPLOYMENT_TYPE='podman' is invalid"),
        ({"SLURM_ALLOCATION_NAME_MAX_LEN": "3x"}, "SLURM_ALLOCATION_NAME_MAX_LEN='3x' is invalid: expected an integer"),
        ({"WALDUR_API_URL": "waldur.example.com"}, "WALDUR_API_URL='waldur.example.com' is invalid"),
        ({"WALDUR_OFFERING_UUID": "xyz"}, "WALDUR_OFFERING_UUID='xyz' is invalid: expected a UUID"),
        ({"SLURM_TRES_CONFIG_PATH": "/nope.yaml"}, "/nope.yaml: file not found"),
        ({"WALDUR_API_TOKEN": ""}, "WALDUR_API_TOKEN is required"),
    ],
)
def test_configuration_error_is_one_line_and_exit_code_2(good_env, tmp_path, change, expected):
    result = run([], {**good_env, **change}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert TOKEN not in result.stderr


def test_invalid_tres_file_names_the_file_and_key(good_env, tmp_path):
    bad = tmp_path / "tres.yaml"
    bad.write_text("cpu:\n  limit: 10\n  measured_unit: h\n  accounting_type: sometimes\n  label: CPU\n")
    result = run([], {**good_env, "SLURM_TRES_CONFIG_PATH": str(bad)}, tmp_path)
    assert result.returncode == 2
    assert f"{bad}: key 'cpu': accounting_type 'sometimes' is invalid" in result.stderr


def test_env_file_is_read_and_the_environment_wins(good_env, tmp_path):
    env_file = tmp_path / "pull.env"
    env_file.write_text("WALDUR_SYNC_DIRECTION=sideways\nSLURM_DEPLOYMENT_TYPE=kubernetes\n")
    result = run(["--env-file", str(env_file)], {**good_env, "WALDUR_SYNC_DIRECTION": "push"}, tmp_path)
    assert result.returncode == 2
    assert "SLURM_DEPLOYMENT_TYPE='kubernetes'" in result.stderr
    assert "WALDUR_SYNC_DIRECTION" not in result.stderr  # the process environment's "push" won


def test_dotenv_in_working_directory_is_read(good_env, tmp_path):
    (tmp_path / ".env").write_text("SLURM_DEPLOYMENT_TYPE=kubernetes\n")
    result = run([], good_env, tmp_path)
    assert result.returncode == 2 and "SLURM_DEPLOYMENT_TYPE='kubernetes'" in result.stderr


def test_missing_env_file_is_a_configuration_error(good_env, tmp_path):
    result = run(["--env-file", str(tmp_path / "none.env")], good_env, tmp_path)
    assert result.returncode == 2 and "none.env" in result.stderr and "file not found" in result.stderr


def test_diag_prints_the_umask_in_octal(good_env, tmp_path):
    # Nothing answers on 127.0.0.1:9 and no sacctmgr is on the PATH: the checks fail fast, the settings print.
    env = {**good_env, "SLURM_DEPLOYMENT_TYPE": "native", "SLURM_HOMEDIR_UMASK": "0027", "PATH": str(tmp_path)}
    result = run(["--diag"], env, tmp_path)
    assert result.returncode == 1, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.strip().startswith("homedir_umask"))
    assert row.split() == ["homedir_umask", "0027"]  # not 23


def test_help_documents_the_once_exit_codes(good_env, tmp_path):
    out = run(["--help"], good_env, tmp_path).stdout
    assert "1 if an item failed, 4 if Waldur or SLURM was unreachable" in " ".join(out.split())


def test_once_with_waldur_down_and_no_sacctmgr_exits_4_in_one_line_each(good_env, tmp_path):
    # Nothing listens on port 9 (Waldur down) and PATH has no sacctmgr: the start checks say both, the
    # daemon does not stop (the outage may end), and --once reports it with exit 4, without a traceback.
    env = {**good_env, "SLURM_DEPLOYMENT_TYPE": "native", "PATH": str(tmp_path), "REQUESTS_TIMEOUT": "1"}
    result = run(["--once"], env, tmp_path)
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    assert "start check: Waldur unreachable" in result.stderr
    assert "start check: SLURM unreachable: command not found: sacctmgr" in result.stderr
    for task in ("pull", "membership"):
        lines = [line for line in result.stderr.splitlines() if f" {task} cycle:" in line]
        assert len(lines) == 1 and "unreachable: Waldur unreachable" in lines[0], result.stderr
