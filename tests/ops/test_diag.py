"""--diag against the Waldur stand-in and the real SLURM cluster (native and docker mode).

Work is counted exactly (HTTP requests, SLURM processes); "never hangs" is checked with a hard subprocess
timeout and by the absence of retries, not by measuring wall time.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from waldur_standin.testing import StandIn

from tests.support.slurm import CONTAINER_NAME, unique_name
from waldur_slurm.tools import diag, load_components
from waldur_slurm.config import load_settings
from waldur_slurm.slurm import DockerExecutor, NativeExecutor, SlurmClient

REPO = Path(__file__).resolve().parents[2]
TRES = """\
cpu:
  limit: 10
  measured_unit: k-Hours
  accounting_type: usage
  label: CPU
  unit_factor: 60000
gres/gpu:
  measured_unit: GPU-Hours
  accounting_type: usage
  label: GPU
  unit_factor: 60
"""
CHECKS = [
    "configuration valid",
    "Waldur API reachable",
    "API token valid",
    "offering exists and can be managed",
    "offering components match the TRES file",
    "orders",
    "enforcement",
    "SLURM reachable",
    "default account",
    "TRES of the file exist in SLURM",
]


def environ(w: StandIn | None, offering: str, tres: Path, default_account: str, **extra: str) -> dict[str, str]:
    return {
        "WALDUR_API_URL": (w.url if w else "http://127.0.0.1:9") + "/api/",
        "WALDUR_API_TOKEN": w.provider_token if w else "0123456789abcdef0123456789abcdef01234567",
        "WALDUR_OFFERING_UUID": offering,
        "SLURM_TRES_CONFIG_PATH": str(tres),
        "SLURM_DEPLOYMENT_TYPE": "native",
        "SLURM_DEFAULT_ACCOUNT": default_account,
        **extra,
    }


def parse(out: str) -> dict[str, tuple[bool, str]]:
    """{check name prefix: (passed, detail)} for the checklist lines."""
    result: dict[str, tuple[bool, str]] = {}
    for line in out.splitlines():
        if line[:2] in ("✔ ", "✘ "):
            name, _, detail = line[2:].partition(": ")
            key = next(c for c in CHECKS if name.startswith(c))
            result[key] = (line[0] == "✔", detail)
    assert list(result) == CHECKS, out  # every check is listed, in order, once
    return result


@pytest.fixture
def ready(standin: StandIn, slurm_root: str, tmp_path: Path) -> tuple[StandIn, str, Path, str]:
    """An offering whose components match the TRES file, and a default account that exists."""
    tres = tmp_path / "tres.yaml"
    tres.write_text(TRES)
    offering = standin.setup_offering(components=[])
    settings = load_settings(environ(standin, offering, tres, slurm_root))
    assert load_components.run(settings, out=io.StringIO()) == 0
    standin.clear_requests()
    return standin, offering, tres, slurm_root


def run_diag(env: dict[str, str], slurm: SlurmClient | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = diag.run(load_settings(env), slurm=slurm, out=out)
    return code, out.getvalue()


@pytest.mark.slurm
def test_all_green_native(ready):
    w, offering, tres, account = ready
    project = w.add_project(w.add_customer("Consumer"), "P1")
    w.place_order(offering, project, limits={"cpu": 1})
    w.place_order(offering, project, limits={"cpu": 2})
    slurm = SlurmClient(NativeExecutor(), timeout=diag.DIAG_SLURM_TIMEOUT)
    code, out = run_diag(environ(w, offering, tres, account), slurm)
    checks = parse(out)
    assert code == 0, out
    assert all(ok for ok, _ in checks.values()), out
    assert "server version 8.0.5" in checks["Waldur API reachable"][1]
    assert checks["API token valid"][1] == "user provider-owner"
    assert checks["orders"][1] == "2 pending-provider, 0 executing"
    assert checks["SLURM reachable"][1].startswith("SLURM 22.05")
    assert checks["TRES of the file exist in SLURM"][1] == "cpu, gres/gpu"
    assert out.splitlines()[-1].startswith("all 10 checks passed")
    # Secrets are masked in the whole output.
    assert w.provider_token not in out and f"****{w.provider_token[-4:]}" in out
    # Exactly: version, flavour probe, users/me, offering, one orders list, the resources' flags; sacctmgr -V,
    # list tres, state dump.
    assert [(r["method"], r["route"] or r["path"]) for r in w.requests()] == [
        ("GET", "/api/version/"), ("GET", "/api/"), ("GET", "/api/users/me/"),
        ("GET", "/api/marketplace-provider-offerings/{uuid}/"), ("GET", "/api/marketplace-orders/"),
        ("GET", "/api/marketplace-provider-resources/")]
    assert slurm.executor.process_count == 3


@pytest.mark.slurm
def test_waldur_problems_are_named(ready, tmp_path):
    w, offering, tres, account = ready
    # Components differ from the file.
    changed = tmp_path / "changed.yaml"
    changed.write_text(TRES.replace("label: GPU", "label: Graphics").replace("limit: 10", "limit: 20"))
    code, out = run_diag(environ(w, offering, changed, account))
    checks = parse(out)
    assert code == 1
    assert checks["offering components match the TRES file"] == (
        False, "cpu (limit_amount differ), gres/gpu (name differ); run --load-components")
    assert [name for name, (ok, _) in checks.items() if not ok] == ["offering components match the TRES file"]
    # Unknown offering (or one the token's user does not manage).
    code, out = run_diag(environ(w, "0" * 31 + "1", tres, account))
    checks = parse(out)
    assert code == 1 and not checks["offering exists and can be managed"][0]
    assert "not found, or the token's user is not a manager" in checks["offering exists and can be managed"][1]
    assert checks["orders"] == (False, "skipped: offering unavailable")
    # A user who does not manage the offering sees the same.
    stranger = w.add_user("stranger")
    code, out = run_diag({**environ(w, offering, tres, account), "WALDUR_API_TOKEN": stranger["token"]})
    assert code == 1 and not parse(out)["offering exists and can be managed"][0]
    # An expired token.
    w.expire_token(w.provider_user_uuid)
    code, out = run_diag(environ(w, offering, tres, account))
    checks = parse(out)
    assert code == 1
    assert checks["API token valid"][0] is False and "token refused" in checks["API token valid"][1]
    assert checks["offering exists and can be managed"] == (False, "skipped: token refused")
    assert checks["SLURM reachable"][0]  # the SLURM side is still checked


@pytest.mark.slurm
def test_slurm_problems_are_named(ready, tmp_path):
    w, offering, tres, account = ready
    extra = tmp_path / "extra.yaml"
    extra.write_text(TRES + "license/nosuch:\n  measured_unit: seats\n  accounting_type: usage\n  label: L\n")
    missing_account = unique_name("nosuch")
    code, out = run_diag(environ(w, offering, extra, missing_account))
    checks = parse(out)
    assert code == 1
    assert checks["default account"] == (False, f"no SLURM account {missing_account!r}: create it (sacctmgr add "
                                                f"account {missing_account}) or set SLURM_DEFAULT_ACCOUNT")
    assert checks["TRES of the file exist in SLURM"][0] is False
    assert "not in sacctmgr list tres: license/nosuch" in checks["TRES of the file exist in SLURM"][1]


def cli(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("WALDUR_", "SLURM_", "SENTRY_"))}
    clean.update(env, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "waldur_slurm.main", "--diag"], env=clean, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


@pytest.mark.slurm
def test_waldur_down_fails_fast_with_a_clear_reason(slurm_root, tmp_path):
    tres = tmp_path / "tres.yaml"
    tres.write_text(TRES)
    with StandIn() as stopped:
        url = stopped.url
    result = cli({**environ(None, "e21a0f0030b447deb63bedf69db6742e", tres, slurm_root), "WALDUR_API_URL": url})
    checks = parse(result.stdout)
    assert result.returncode == 1, result.stdout + result.stderr
    ok, detail = checks["Waldur API reachable"]
    assert not ok and detail.startswith(url) and "connect" in detail.lower()
    for name in ("API token valid", "offering exists and can be managed", "offering components match the TRES file",
                 "orders"):
        assert checks[name] == (False, "skipped: Waldur API unreachable")
    assert checks["SLURM reachable"][0] and checks["default account"][0]


@pytest.mark.slurm
def test_waldur_that_does_not_answer_times_out_once_without_retries(ready):
    w, offering, tres, account = ready
    # Longer than diag's HTTP timeout, short enough that the stand-in stops quickly afterwards.
    w.inject_fault("*", kind="delay", delay=diag.DIAG_HTTP_TIMEOUT + 3, count=None)
    try:
        result = cli(environ(w, offering, tres, account), timeout=25)  # raises TimeoutExpired if diag hangs
    finally:
        w.clear_faults()
    checks = parse(result.stdout)
    assert result.returncode == 1
    assert checks["Waldur API reachable"][0] is False and "timed out" in checks["Waldur API reachable"][1].lower()
    assert w.count() == 1  # one request, no retry


@pytest.mark.docker
def test_all_green_in_docker_mode(ready, docker_host):
    w, offering, tres, account = ready
    env = environ(w, offering, tres, account, SLURM_DEPLOYMENT_TYPE="docker", SLURM_CONTAINER_NAME=CONTAINER_NAME,
                  DOCKER_HOST=docker_host)
    slurm = SlurmClient(DockerExecutor(CONTAINER_NAME, docker_host=docker_host), timeout=diag.DIAG_SLURM_TIMEOUT)
    code, out = run_diag(env, slurm)
    checks = parse(out)
    assert code == 0, out
    assert checks["SLURM reachable"][1].startswith(f"SLURM 22.05") and f"container {CONTAINER_NAME!r} (running)" in (
        checks["SLURM reachable"][1])
    assert slurm.executor.process_count == 3  # docker execs
    # The same through the real entry point.
    result = cli(env)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.docker
def test_docker_container_missing_or_stopped(ready, docker_host):
    import docker

    w, offering, tres, account = ready
    client = docker.DockerClient(base_url=docker_host, version="1.41")
    image = client.containers.get(CONTAINER_NAME).image
    stopped = client.containers.create(image, ["sleep", "infinity"], name=unique_name("wsa-diag-stopped-"))
    try:
        for name, expected in ((stopped.name, f"container {stopped.name!r} exists but is not running"),
                               (unique_name("wsa-diag-missing-"), "does not exist (SLURM_CONTAINER_NAME)")):
            env = environ(w, offering, tres, account, SLURM_DEPLOYMENT_TYPE="docker", SLURM_CONTAINER_NAME=name,
                          DOCKER_HOST=docker_host)
            result = cli(env, timeout=25)
            checks = parse(result.stdout)
            assert result.returncode == 1
            assert checks["SLURM reachable"][0] is False and expected in checks["SLURM reachable"][1], result.stdout
            assert checks["default account"] == (False, "skipped: SLURM unreachable")
            assert checks["Waldur API reachable"][0]  # the Waldur side is still checked
    finally:
        stopped.remove(force=True)
        client.close()


@pytest.mark.docker
def test_docker_daemon_down(ready, tmp_path):
    w, offering, tres, account = ready
    env = environ(w, offering, tres, account, SLURM_DEPLOYMENT_TYPE="docker",
                  DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock")
    result = cli(env, timeout=25)
    checks = parse(result.stdout)
    assert result.returncode == 1
    assert checks["SLURM reachable"][0] is False and checks["SLURM reachable"][1].startswith("docker daemon unreachable")
