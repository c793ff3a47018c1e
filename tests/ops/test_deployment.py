"""Deployment artifacts: systemd units and env files, the docker-compose example and its Dockerfile, the wheel."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values

from waldur_slurm import __version__
from waldur_slurm.config import KNOWN_VARIABLES, load_settings
from waldur_slurm.daemon.loop import EXIT_AUTH
from waldur_slurm.main import EXIT_CONFIG

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "systemd-conf"
COMPOSE = REPO / "examples" / "docker-compose"
DIRECTIONS = ("pull", "push")
EXAMPLE_TRES = REPO / "config-components.yaml.example"

# Options a systemd 239 (RHEL-like 8, the oldest systemd whose distribution ships a Python 3.11) knows, for
# the [Service] section of the legacy units (systemd.directives(7) and NEWS: ProtectKernelTunables 232,
# RestrictNamespaces 233, LockPersonality and KeyringMode 235, @system-service 231, RuntimeDirectoryMode 209).
LEGACY_SERVICE_OPTIONS = {
    "Type", "NotifyAccess", "WatchdogSec", "EnvironmentFile", "Environment", "WorkingDirectory", "ExecStart", "User",
    "Group", "Restart", "RestartSec", "RestartPreventExitStatus", "KillMode", "KillSignal", "TimeoutStopSec",
    "StandardOutput", "StandardError", "SyslogIdentifier", "RuntimeDirectory", "RuntimeDirectoryMode",
    "NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "DevicePolicy", "UMask",
    "LimitNOFILE", "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups", "RestrictRealtime",
    "RestrictNamespaces", "LockPersonality", "MemoryDenyWriteExecute", "SystemCallArchitectures",
    "SystemCallFilter", "SystemCallErrorNumber", "RestrictAddressFamilies", "CapabilityBoundingSet",
    "AmbientCapabilities", "KeyringMode",
}
# Directives of the current units newer than 239, with the systemd version that added them: the unit's
# header must name the highest one.
NEWER_OPTIONS = {"WatchdogSignal": 240, "ProtectHostname": 242, "RestrictSUIDSGID": 242, "ProtectKernelLogs": 244, "ProtectClock": 245,
                 "ProtectProc": 247, "ProcSubset": 247}
# systemd-analyze security --offline=true, measured for this release (README "systemd"); before: 5.6 and 8.5.
MAX_EXPOSURE = {"current": 2.6, "legacy": 3.3}
VENV_PREFIX = "/opt/waldur-slurm-agent/"


def installed_copy(path: Path, target: Path) -> Path:
    """The unit as systemd-conf/install writes it, with the prefix of the virtualenv running the tests."""
    target.write_text(path.read_text().replace(VENV_PREFIX, str(Path(sys.prefix)) + "/"))
    return target
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
    target = installed_copy(units(direction)[variant], tmp_path / f"waldur-slurm-service-{direction}.service")
    result = subprocess.run(["systemd-analyze", "verify", str(target)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys and bad values only warn
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(target)], capture_output=True,
                              text=True, timeout=60)
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout).group(1))
    assert score <= MAX_EXPOSURE[variant], security.stdout[-2000:]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_systemd_units_run_the_agent_with_its_env_file(direction):
    for variant, path in units(direction).items():
        text = path.read_text()
        service = unit(path)["Service"]
        assert service["EnvironmentFile"] == f"/etc/waldur-slurm-service/{direction}.env"
        assert service["ExecStart"] == VENV_PREFIX + "bin/waldur-slurm-agent"  # the venv systemd-conf/install makes
        assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
        assert service["WatchdogSec"] == "15min"
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
            assert not unknown, f"{path.name}: options newer than systemd 239: {sorted(unknown)}"
            assert "systemd 239-246" in text
        else:
            needed = max(NEWER_OPTIONS[o] for o in service if o in NEWER_OPTIONS)
            assert f"Needs systemd {needed} or newer" in text, needed
            assert set(service) - LEGACY_SERVICE_OPTIONS <= set(NEWER_OPTIONS)
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
    assert set(services) == {"slurmctld", "waldur-slurm-pull", "waldur-slurm-push"}
    head = services["slurmctld"]
    assert head["container_name"] == "slurmctld" and re.fullmatch(r"debian:\d+\.\d+-slim", head["image"])
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
        assert service["restart"] == "unless-stopped"  # exits 2 and 3 are stopped by the entry point
        assert service["image"] == f"waldur-slurm-agent:{__version__}"  # pinned, not :latest
        assert service["depends_on"] == ["slurmctld"]
        active, _ = env_assignments(COMPOSE / f"{direction}.env")
        assert active["SLURM_CONTAINER_NAME"] == head["container_name"]
        assert service["init"] is True
        test = service["healthcheck"]["test"]
        # No --max-age: the probe uses each task's own period from the heartbeat file.
        assert test == ["CMD", "python", "-m", "waldur_slurm.tools.observability", "check-heartbeat", heartbeat]
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
    assert 'ENTRYPOINT ["waldur-slurm-agent-entrypoint"]' in text
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim-\w+$", text, re.M), "the base image must be pinned"
    ignore = (COMPOSE / "Dockerfile.dockerignore").read_text().split()
    for sources in copies:
        for source in sources[:-1]:
            assert f"!{source}" in ignore or f"!{source.rstrip('/')}/" in ignore, source


OPERATOR_FILES = ["LICENSE", "config-components.yaml.example", "systemd-conf/install",
                  "systemd-conf/service-pull/waldur-slurm-service-pull.service",
                  "systemd-conf/service-pull/waldur-slurm-service-pull-legacy.service",
                  "systemd-conf/service-pull/waldur-slurm-service-pull.env",
                  "systemd-conf/service-push/waldur-slurm-service-push.service",
                  "systemd-conf/service-push/waldur-slurm-service-push-legacy.service",
                  "systemd-conf/service-push/waldur-slurm-service-push.env",
                  "examples/docker-compose/docker-compose.yml", "examples/docker-compose/Dockerfile",
                  "examples/docker-compose/entrypoint.sh", "examples/docker-compose/pull.env",
                  "examples/docker-compose/push.env"]


def test_version_is_the_successor_of_the_original_and_the_license_matches():
    major, minor, patch = (int(x) for x in __version__.split("."))
    assert (major, minor, patch) > (0, 2, 2)  # the original agent's last release on the index
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "waldur-slurm-agent contributors" in text
    assert 'license = "MIT"' in (REPO / "pyproject.toml").read_text()


def test_sdist_and_wheel_carry_the_operator_files_and_install_with_the_script(tmp_path):
    # Build from a copy of the tracked files, so that the test neither writes into the shared working
    # tree nor depends on files that are not in git. `build` makes the sdist, then the wheel FROM the sdist.
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    source = tmp_path / "src"
    for name in filter(None, tracked.decode().split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    import tarfile
    import zipfile

    sdists = list(dist.glob(f"waldur_slurm_agent-{__version__}.tar.gz"))
    wheels = list(dist.glob(f"waldur_slurm_agent-{__version__}-*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in dist.iterdir())
    prefix = f"waldur_slurm_agent-{__version__}/"
    in_sdist = {n[len(prefix):] for n in tarfile.open(sdists[0]).getnames() if n.startswith(prefix)}
    assert set(OPERATOR_FILES) <= in_sdist, sorted(set(OPERATOR_FILES) - in_sdist)
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    expected = {n for n in tracked.decode().split("\0") if n.startswith("waldur_slurm/") and n.endswith(".py")}
    assert expected <= names, sorted(expected - names)
    data = f"waldur_slurm_agent-{__version__}.data/data/share/waldur-slurm-agent/"
    in_wheel = {n[len(data):] for n in names if n.startswith(data)}
    assert set(OPERATOR_FILES) <= in_wheel, sorted(set(OPERATOR_FILES) - in_wheel)
    assert f"waldur_slurm_agent-{__version__}.dist-info/licenses/LICENSE" in names

    # The documented install path: systemd-conf/install --from the wheel, into a venv, units pointing at it.
    opt, units_dir, etc = tmp_path / "opt" / "waldur-slurm-agent", tmp_path / "systemd", tmp_path / "etc"
    install = subprocess.run([str(REPO / "systemd-conf" / "install"), "--from", str(wheels[0]), "--prefix", str(opt),
                              "--python", sys.executable, "--systemd-dir", str(units_dir), "--etc-dir", str(etc)],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    env_dir = opt
    for direction in DIRECTIONS:
        service = unit(units_dir / f"waldur-slurm-service-{direction}.service")["Service"]
        assert service["ExecStart"] == f"{opt}/bin/waldur-slurm-agent"
        env_file = etc / f"{direction}.env"
        assert env_file.stat().st_mode & 0o777 == 0o600  # it holds the token
    assert (etc / "tres.yaml").read_text() == EXAMPLE_TRES.read_text()
    (etc / "pull.env").write_text("WALDUR_SYNC_DIRECTION=pull\n")
    again = subprocess.run([str(REPO / "systemd-conf" / "install"), "--from", str(wheels[0]), "--prefix", str(opt),
                            "--python", sys.executable, "--systemd-dir", str(units_dir), "--etc-dir", str(etc)],
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (etc / "pull.env").read_text() == "WALDUR_SYNC_DIRECTION=pull\n"  # never overwritten

    # Non-root mode: a system user, a User= drop-in per unit, the env files readable by its group only,
    # and a tmpfiles.d rule that makes the sacctmgr write lock writable for it.
    if os.geteuid() == 0:
        import secrets

        user = f"wsainst{secrets.token_hex(3)}"
        tmpfiles = tmp_path / "tmpfiles.d"
        try:
            as_user = subprocess.run([str(REPO / "systemd-conf" / "install"), "--from", str(wheels[0]), "--prefix",
                                      str(opt), "--python", sys.executable, "--systemd-dir", str(units_dir),
                                      "--etc-dir", str(etc), "--tmpfiles-dir", str(tmpfiles), "--user", user],
                                     capture_output=True, text=True, timeout=900)
            assert as_user.returncode == 0, as_user.stderr[-3000:]
            import grp

            for direction in DIRECTIONS:
                drop_in = units_dir / f"waldur-slurm-service-{direction}.service.d" / "user.conf"
                assert unit(drop_in)["Service"]["User"] == user
                env_file = etc / f"{direction}.env"
                assert env_file.stat().st_mode & 0o777 == 0o640
                assert grp.getgrgid(env_file.stat().st_gid).gr_name == user
            rule = (tmpfiles / "waldur-slurm-agent.conf").read_text().split()
            assert rule == ["f", "/run/lock/waldur-slurm-agent.sacctmgr.lock", "0660", "root", user, "-"]
            assert "adminlevel=Admin" in as_user.stdout
        finally:
            subprocess.run(["userdel", user], capture_output=True, timeout=60)
    share = opt / "share" / "waldur-slurm-agent"
    assert all((share / name).is_file() for name in OPERATOR_FILES)

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
    probe = subprocess.run([str(env_dir / "bin" / "python"), "-m", "waldur_slurm.tools.observability", "check-heartbeat",
                            str(tmp_path / "none"), "--max-age", "1"], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 1 and "does not exist" in probe.stdout  # the compose healthcheck works installed


def test_install_script_refuses_a_python_older_than_3_11(tmp_path):
    old = tmp_path / "python3"
    old.write_text("#!/bin/sh\nexit 1\n")  # what `python3 -c 'sys.exit(version < (3, 11))'` says on 3.9
    old.chmod(0o755)
    result = subprocess.run([str(REPO / "systemd-conf" / "install"), "--python", str(old), "--prefix",
                             str(tmp_path / "venv")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no Python 3.11+" in result.stderr and "python3-venv" in result.stderr and "python3.11" in result.stderr
    assert not (tmp_path / "venv").exists()


def test_compose_entrypoint_does_not_restart_a_daemon_that_exited_2_but_returns_other_codes(tmp_path):
    import signal
    import time

    entry = COMPOSE / "entrypoint.sh"
    # The real agent, with a configuration error: no WALDUR_API_URL.
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    one_shot = subprocess.run([str(entry), "--diag"], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
    assert one_shot.returncode == EXIT_CONFIG and "WALDUR_API_URL" in one_shot.stderr
    assert "not restarting" not in one_shot.stderr
    daemon = subprocess.Popen([str(entry)], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.monotonic() + 60
        assert daemon.stderr is not None
        lines = []
        while time.monotonic() < deadline:
            line = daemon.stderr.readline()
            lines.append(line)
            if "not restarting" in line:
                break
        assert "exited with 2 (configuration error): not restarting" in lines[-1], lines
        time.sleep(0.5)
        assert daemon.poll() is None  # parked: a restart policy sees a running container, not an exit
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=30)
    assert daemon.returncode == 0


def test_the_dockerfile_copy_set_is_enough_to_build_the_package(tmp_path):
    # The image builds the package from what the Dockerfile copies, nothing else: the data files
    # (LICENSE, units, examples) must be among them, or setuptools fails and so does `docker build`.
    text = (COMPOSE / "Dockerfile").read_text()
    src = tmp_path / "src"
    src.mkdir()
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and parts[-1].startswith("/src"):
            for source in parts[1:-1]:
                target = src / Path(parts[-1]).relative_to("/src") if not parts[-1].endswith("/") else src / source
                if (REPO / source).is_dir():
                    shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(REPO / source, target)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "out"),
                             str(src)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "out").glob(f"waldur_slurm_agent-{__version__}-*.whl"))
