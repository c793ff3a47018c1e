"""Deployment artifacts: systemd units and env files, the docker-compose example and its Dockerfile, the wheel."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values

from waldur_slurm import __version__
from waldur_slurm.config import KNOWN_VARIABLES, load_settings
from waldur_slurm.loop import EXIT_AUTH
from waldur_slurm.main import EXIT_CONFIG

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "systemd-conf"
COMPOSE = REPO / "examples" / "docker-compose"
DIRECTIONS = ("pull", "push")
EXAMPLE_TRES = REPO / "config-components.yaml.example"

# Options a systemd 219 (RHEL/CentOS 7) knows, for the [Service] section of the legacy units.
LEGACY_SERVICE_OPTIONS = {
    "Type", "EnvironmentFile", "Environment", "WorkingDirectory", "ExecStart", "User", "Group", "Restart",
    "RestartSec", "RestartPreventExitStatus", "KillMode", "KillSignal", "TimeoutStopSec", "StandardOutput",
    "StandardError", "SyslogIdentifier", "RuntimeDirectory", "RuntimeDirectoryMode", "NoNewPrivileges",
    "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "UMask", "LimitNOFILE",
}
# Options that would break sacctmgr (no network to slurmdbd, no munge socket, read-only everything).
BREAKS_SACCTMGR = {"PrivateNetwork": "yes", "ProtectSystem": "strict", "IPAddressDeny": "any"}


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read_string(path.read_text())
    return parser


def units(direction: str) -> dict[str, Path]:
    base = SYSTEMD / f"service-{direction}"
    return {"current": base / f"waldur-slurm-service-{direction}.service",
            "legacy": base / f"waldur-slurm-service-{direction}-legacy.service"}


def env_assignments(path: Path) -> tuple[dict[str, str], list[str]]:
    """Active assignments, and the names in commented-out ``# NAME=value`` examples."""
    active: dict[str, str] = {}
    commented: list[str] = []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            commented += re.findall(r"\b([A-Z][A-Z0-9_]+)=", stripped)
            continue
        name, sep, value = stripped.partition("=")
        assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"{path.name}: bad line {line!r}"
        assert " #" not in value and not value.startswith("#"), f"{path.name}: comment after a value: {line!r}"
        active[name] = value
    return active, commented


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("variant", ["current", "legacy"])
def test_systemd_unit_verifies(direction, variant, tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd); the parse checks still run")
    # Installed under its final name, as the README says, so the legacy unit is checked as installed.
    target = tmp_path / f"waldur-slurm-service-{direction}.service"
    shutil.copy(units(direction)[variant], target)
    result = subprocess.run(["systemd-analyze", "verify", str(target)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys and bad values only warn


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_systemd_units_run_the_agent_with_its_env_file(direction):
    for variant, path in units(direction).items():
        text = path.read_text()
        service = unit(path)["Service"]
        assert service["EnvironmentFile"] == f"/etc/waldur-slurm-service/{direction}.env"
        assert service["ExecStart"] in ("/usr/bin/env python3 -m waldur_slurm.main", "/usr/local/bin/waldur-slurm-agent")
        assert service["Restart"] == "on-failure"
        assert set(service["RestartPreventExitStatus"].split()) == {str(EXIT_CONFIG), str(EXIT_AUTH)}
        assert service["KillMode"] == "mixed"  # SIGTERM to the agent only: a running sacctmgr finishes
        assert service["StandardOutput"] == service["StandardError"] == "journal"
        assert "append:" not in text and "/var/log/" not in text
        for option, bad in BREAKS_SACCTMGR.items():
            assert service.get(option) != bad, (path.name, option)
        assert service.get("ProtectHome", "no") in ("no", "read-only") or direction == "push"
        assert unit(path)["Install"]["WantedBy"] == "multi-user.target"
        if variant == "legacy":
            unknown = set(service) - LEGACY_SERVICE_OPTIONS
            assert not unknown, f"{path.name}: options newer than systemd 219: {sorted(unknown)}"
        else:
            for option in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectKernelTunables",
                           "RestrictAddressFamilies"):
                assert option in service, option
            assert "AF_UNIX" in service["RestrictAddressFamilies"]  # munge and docker sockets
            assert "AF_INET" in service["RestrictAddressFamilies"]  # slurmctld/slurmdbd and Waldur


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_systemd_env_file_is_valid_and_names_only_known_variables(direction):
    path = SYSTEMD / f"service-{direction}" / f"waldur-slurm-service-{direction}.env"
    active, commented = env_assignments(path)
    assert set(active) <= KNOWN_VARIABLES, set(active) - KNOWN_VARIABLES
    assert set(commented) <= KNOWN_VARIABLES, set(commented) - KNOWN_VARIABLES
    assert active["WALDUR_SYNC_DIRECTION"] == direction
    assert active["SLURM_DEPLOYMENT_TYPE"] == "native"
    assert active["SLURM_DEFAULT_ACCOUNT"] != "root"
    # The heartbeat goes to the unit's RuntimeDirectory, which systemd creates.
    runtime = unit(units(direction)["current"])["Service"]["RuntimeDirectory"]
    assert Path(active["WALDUR_HEARTBEAT_FILE"]).parent == Path("/run") / runtime
    assert dotenv_values(path) == active  # python-dotenv (the agent's --env-file) reads the same values
    settings = load_settings({**active, "SLURM_TRES_CONFIG_PATH": str(EXAMPLE_TRES)}, need_direction=True)
    assert settings.sync_direction == direction


def compose() -> dict:
    return yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())


def test_compose_file_structure():
    data = compose()
    services = data["services"]
    assert set(services) == {"waldur-slurm-pull", "waldur-slurm-push"}
    dockerfile_env = dict(re.findall(r"(WALDUR_HEARTBEAT_FILE)=(\S+)", (COMPOSE / "Dockerfile").read_text()))
    heartbeat = dockerfile_env["WALDUR_HEARTBEAT_FILE"]
    for direction in DIRECTIONS:
        service = services[f"waldur-slurm-{direction}"]
        assert service["env_file"] == f"{direction}.env" and (COMPOSE / service["env_file"]).is_file()
        assert "/var/run/docker.sock:/var/run/docker.sock" in service["volumes"]
        assert (COMPOSE / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == COMPOSE / "Dockerfile"
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), volume
        assert service["restart"] in ("unless-stopped", "always", "on-failure")
        assert service["init"] is True
        test = service["healthcheck"]["test"]
        assert test[:5] == ["CMD", "python", "-m", "waldur_slurm.observability", "check-heartbeat"]
        assert test[5] == heartbeat
        active, _ = env_assignments(COMPOSE / f"{direction}.env")
        period = float(active["WALDUR_PULL_PERIOD_SECONDS" if direction == "pull" else "WALDUR_PUSH_PERIOD_SECONDS"])
        assert float(test[test.index("--max-age") + 1]) >= 3 * period  # a slow cycle is not "unhealthy"
        assert service["secrets"] == ["waldur_api_token"]
    assert data["secrets"]["waldur_api_token"]["file"] == "./waldur-api-token"


def test_compose_file_is_valid_for_docker_compose(tmp_path):
    if shutil.which("docker-compose"):
        command = ["docker-compose"]
    elif shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        command = ["docker", "compose"]
    else:
        pytest.skip("no docker-compose (apt-get install docker-compose); the structure test still runs")
    result = subprocess.run([*command, "-f", str(COMPOSE / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True, timeout=60, cwd=COMPOSE)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr.upper(), result.stderr


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_compose_env_file_is_valid_and_names_only_known_variables(direction, tmp_path):
    active, commented = env_assignments(COMPOSE / f"{direction}.env")
    assert set(active) <= KNOWN_VARIABLES, set(active) - KNOWN_VARIABLES
    assert set(commented) <= KNOWN_VARIABLES, set(commented) - KNOWN_VARIABLES
    assert active["WALDUR_SYNC_DIRECTION"] == direction
    assert active["SLURM_DEPLOYMENT_TYPE"] == "docker"
    assert "WALDUR_API_TOKEN" not in active  # the token comes from the compose secret
    assert active["WALDUR_API_TOKEN_FILE"] == "/run/secrets/waldur_api_token"
    token_file = tmp_path / "token"
    token_file.write_text("0123456789abcdef0123456789abcdef01234567\n")
    settings = load_settings({**active, "WALDUR_API_TOKEN_FILE": str(token_file),
                              "SLURM_TRES_CONFIG_PATH": str(EXAMPLE_TRES)}, need_direction=True)
    assert settings.sync_direction == direction
    assert settings.waldur_api_token == "0123456789abcdef0123456789abcdef01234567"


def test_dockerfile_installs_the_package_itself():
    text = (COMPOSE / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in text.splitlines() if line and not line.startswith(("#", " "))]
    copies = [args.split() for op, args in instructions if op == "COPY"]
    for sources in copies:
        for source in sources[:-1]:
            assert (REPO / source).exists(), f"COPY source {source} is missing from the repository"
    runs = " ".join(args for op, args in instructions if op == "RUN")
    assert re.search(r"pip install /src\b", runs), "the image must install the package, not only its requirements"
    assert "requirements.txt" not in text
    assert "waldur-slurm-agent --version" in runs  # the build fails if the version lookup fails
    assert 'ENTRYPOINT ["waldur-slurm-agent"]' in text
    ignore = (COMPOSE / "Dockerfile.dockerignore").read_text().split()
    for sources in copies:
        for source in sources[:-1]:
            assert f"!{source}" in ignore or f"!{source.rstrip('/')}/" in ignore, source


def test_wheel_builds_and_installs_into_a_fresh_virtualenv(tmp_path):
    # Build from a copy of the tracked files, so that the test neither writes into the shared working
    # tree nor depends on files that are not in git.
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    source = tmp_path / "src"
    for name in filter(None, tracked.decode().split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    wheels = list(dist.glob("waldur_slurm_agent-*.whl"))
    assert len(wheels) == 1
    import zipfile

    names = set(zipfile.ZipFile(wheels[0]).namelist())
    expected = {n for n in tracked.decode().split("\0") if n.startswith("waldur_slurm/") and n.endswith(".py")}
    assert expected <= names, sorted(expected - names)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    install = subprocess.run([str(env_dir / "bin" / "pip"), "install", "-q", str(wheels[0])],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    version = subprocess.run([str(env_dir / "bin" / "waldur-slurm-agent"), "--version"], capture_output=True,
                             text=True, timeout=60, cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"waldur-slurm-agent {__version__}"
    # The installed package reports the version from its own metadata (the original image could not: B16).
    metadata = subprocess.run([str(env_dir / "bin" / "python"), "-c",
                               "import waldur_slurm, importlib.metadata as m; "
                               "print(waldur_slurm.__file__); print(m.version('waldur-slurm-agent'))"],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
    where, installed = metadata.stdout.split()
    assert where.startswith(str(env_dir)) and installed == __version__
    probe = subprocess.run([str(env_dir / "bin" / "python"), "-m", "waldur_slurm.observability", "check-heartbeat",
                            str(tmp_path / "none"), "--max-age", "1"], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 1 and "does not exist" in probe.stdout  # the compose healthcheck works installed
