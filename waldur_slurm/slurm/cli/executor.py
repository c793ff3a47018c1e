"""Run SLURM commands natively or through `docker exec`.

Executors only run a process and report what it printed; deciding what an exit code
means for SLURM is the client's job. They raise only for failures of the execution
path itself: timeout, missing binary, missing/stopped container, unreachable daemon.
Every executor counts the processes (native) or execs (docker) it started in
`process_count`, so tests can assert the number of SLURM calls exactly.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import (
    CommandNotFound,
    ContainerMissing,
    ContainerNotRunning,
    DockerUnavailable,
    SlurmError,
    SlurmTimeout,
)

if TYPE_CHECKING:  # the docker SDK is imported lazily: native mode does not need it
    import docker

# Stable, parseable output whatever the caller's locale or SLURM_TIME_FORMAT is.
# sacctmgr reads stdin through readline, which redraws some input lines longer than the
# screen width (80 without a tty) with cursor-movement codes; a huge COLUMNS avoids that.
# TZ=UTC: sacct reads --starttime/--endtime and prints Start/End in its own process's zone, which in docker
# mode is the container's, not the agent's; UTC on both sides also has no DST hour that occurs twice.
COMMAND_ENV: dict[str, str] = {
    "LC_ALL": "C",
    "TZ": "UTC",
    "SLURM_TIME_FORMAT": "standard",
    "TERM": "dumb",
    "COLUMNS": "1000000",
}

# What a native SLURM command may inherit from the agent's environment: the search path, the user and
# locale basics, and SLURM_CONF. Never the rest: the agent's environment holds WALDUR_API_TOKEN and
# SENTRY_DSN, which would sit in every child's /proc/<pid>/environ (and in what that child passes on) for
# no use. TZ, LC_ALL and SLURM_TIME_FORMAT are set by COMMAND_ENV.
INHERITED_ENV = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TMPDIR", "SLURM_CONF"})
INHERITED_ENV_PREFIXES = ("LC_",)


def child_environment(parent: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a native SLURM command: the allow-listed part of ``parent``, then ``extra``."""
    env = {k: v for k, v in parent.items() if k in INHERITED_ENV or k.startswith(INHERITED_ENV_PREFIXES)}
    env.setdefault("PATH", os.defpath)
    env.update(extra)
    return env


DOCKER_API_VERSION = "1.41"
# Grace period `timeout -k` gives a command between TERM and KILL inside the container.
KILL_AFTER = 5


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str


@runtime_checkable
class Executor(Protocol):
    process_count: int
    name: str

    def run(self, argv: list[str], *, stdin: str | None = None, timeout: float) -> CommandResult: ...

    def unreachable(self) -> str | None:
        """Why commands cannot run at all, or None; cheap, spawns no process."""
        ...


class _Counter:
    def __init__(self) -> None:
        self.process_count = 0
        self._count_lock = threading.Lock()

    def _count(self) -> None:
        with self._count_lock:
            self.process_count += 1


class NativeExecutor(_Counter):
    """Runs commands as local subprocesses, each in its own process group.

    Each command also gets a parent-death signal (util-linux ``setpriv --pdeathsig KILL``): the command runs
    in its own session so that a timeout can kill its whole group, which also means it would outlive an agent
    killed with -9 (OOM killer, ``kill -9``, ``KillMode=process``) and a stale ``sacctmgr`` write could land
    after the restarted agent re-planned. ``preexec_fn`` could set the same flag but is unsafe in a threaded
    process. Without setpriv (not a Debian/util-linux system) commands run unwrapped.
    """

    name = "native"

    def __init__(self, env: dict[str, str] | None = None, *, kill_with_parent: bool = True) -> None:
        super().__init__()
        self._extra_env = dict(COMMAND_ENV if env is None else env)
        setpriv = shutil.which("setpriv") if kill_with_parent else None
        self._prefix: list[str] = [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []

    @property
    def kills_with_parent(self) -> bool:
        return bool(self._prefix)

    def unreachable(self) -> str | None:
        if shutil.which("sacctmgr", path=os.environ.get("PATH")) is None:
            return "SLURM unreachable: command not found: sacctmgr (not on PATH; install the SLURM client or fix PATH)"
        return None

    def run(self, argv: list[str], *, stdin: str | None = None, timeout: float) -> CommandResult:
        env = child_environment(os.environ, self._extra_env)
        self._count()
        if self._prefix and shutil.which(argv[0], path=env.get("PATH")) is None:
            # setpriv would report this as exit code 127; say it the way an unwrapped Popen does
            raise CommandNotFound(argv, f"No such file or directory: {argv[0]!r}")
        try:
            proc = subprocess.Popen(
                self._prefix + argv,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                env=env,
                # own process group so a timeout kills the command and any children
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise CommandNotFound(argv, str(exc)) from None
        except PermissionError as exc:
            raise CommandNotFound(argv, str(exc)) from None
        try:
            out, err = proc.communicate(input=stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise SlurmTimeout(argv, timeout) from None
        except BaseException:
            _kill_group(proc)
            raise
        return CommandResult(proc.returncode, out or "", err or "")


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        pass


class DockerExecutor(_Counter):
    """Runs commands with `docker exec` in a long-lived container through the docker SDK.

    One SDK client per executor (created on first use, API version pinned so no
    `GET /version` round trip), and the container object is cached. Neither the SDK nor
    the daemon bounds an exec's runtime, so every command runs under coreutils
    `timeout -k 5 N` inside the container; its exit codes 124/137 become `SlurmTimeout`.
    """

    def __init__(
        self,
        container_name: str = "slurmctld",
        docker_host: str | None = None,
        *,
        api_version: str = DOCKER_API_VERSION,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.container_name = container_name
        self.docker_host = docker_host
        self.api_version = api_version
        self.name = f"docker:{container_name}"
        self._env = [f"{k}={v}" for k, v in (COMMAND_ENV if env is None else env).items()]
        self._client: docker.DockerClient | None = None
        self._container_id: str | None = None
        self._lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------
    def _where(self) -> str:
        return self.docker_host or os.environ.get("DOCKER_HOST") or "the default docker socket"

    def _api(self) -> Any:
        with self._lock:
            if self._client is None:
                import docker

                try:
                    if self.docker_host:
                        self._client = docker.DockerClient(base_url=self.docker_host, version=self.api_version)
                    else:
                        self._client = docker.from_env(version=self.api_version)
                except docker.errors.DockerException as exc:
                    raise DockerUnavailable(f"cannot create docker client for {self._where()}: {exc}") from None
            return self._client.api

    def _resolve_container(self, refresh: bool = False) -> str:
        if self._container_id is not None and not refresh:
            return self._container_id
        api = self._api()
        try:
            info = api.inspect_container(self.container_name)
        except Exception as exc:  # noqa: BLE001 - mapped below
            raise self._map_error(exc) from None
        self._container_id = info["Id"]
        return self._container_id

    def _map_error(self, exc: BaseException) -> Exception:
        import docker
        import requests

        if isinstance(exc, docker.errors.NotFound):
            return ContainerMissing(f"container {self.container_name!r} not found on {self._where()}")
        if isinstance(exc, docker.errors.APIError):
            status = getattr(exc, "status_code", None)
            if status == 409:
                return ContainerNotRunning(f"container {self.container_name!r} is not running ({self._where()})")
            return DockerUnavailable(f"docker API error on {self._where()}: {exc}")
        if isinstance(exc, (requests.exceptions.RequestException, docker.errors.DockerException, OSError)):
            return DockerUnavailable(f"docker daemon unreachable at {self._where()}: {exc}")
        return DockerUnavailable(f"docker exec failed on {self._where()}: {exc!r}")

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
                self._container_id = None

    # -- running ----------------------------------------------------------------
    def unreachable(self) -> str | None:
        """The head-node container must exist and run: one Docker API call, no exec."""
        try:
            info = self._api().inspect_container(self.container_name)
        except SlurmError as exc:
            return f"SLURM unreachable: {exc}"
        except Exception as exc:  # noqa: BLE001 - mapped to the executor's error types, as a real exec would be
            return f"SLURM unreachable: {self._map_error(exc)}"
        if not (info.get("State") or {}).get("Running"):
            return f"SLURM unreachable: container {self.container_name!r} exists but is not running"
        return None

    def run(self, argv: list[str], *, stdin: str | None = None, timeout: float) -> CommandResult:
        wrapped = ["timeout", "-k", str(KILL_AFTER), f"{timeout:g}", *argv]
        api = self._api()
        exec_id = self._create_exec(api, wrapped, with_stdin=stdin is not None)
        self._count()
        try:
            if stdin is None:
                out, err = api.exec_start(exec_id, demux=True)
            else:
                out, err = self._stream_with_stdin(api, exec_id, stdin.encode(), argv, timeout)
            exit_code = self._exit_code(api, exec_id, argv, timeout)
        except SlurmTimeout:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._map_error(exc) from None
        stdout = (out or b"").decode(errors="replace")
        stderr = (err or b"").decode(errors="replace")
        if exit_code in (124, 137):
            raise SlurmTimeout(argv, timeout)
        if exit_code in (126, 127):
            # dockerd: 126 with the OCI message on stdout; podman: 127 on stderr;
            # inside `timeout`: 126/127 when the wrapped command cannot be run.
            raise CommandNotFound(argv, (stderr or stdout).strip().splitlines()[-1] if (stderr or stdout).strip() else "")
        return CommandResult(exit_code, stdout, stderr)

    def _create_exec(self, api: Any, cmd: list[str], *, with_stdin: bool) -> str:
        for attempt in (0, 1):
            cid = self._resolve_container(refresh=attempt == 1)
            try:
                return api.exec_create(
                    cid, cmd, stdin=with_stdin, stdout=True, stderr=True, environment=self._env
                )["Id"]
            except Exception as exc:  # noqa: BLE001
                err = self._map_error(exc)
                # The cached id may belong to a container that was recreated under the same
                # name; nothing has run yet, so looking the name up again is safe.
                if isinstance(err, ContainerMissing) and attempt == 0:
                    continue
                raise err from None
        raise AssertionError("unreachable")

    def _stream_with_stdin(
        self, api: Any, exec_id: str, data: bytes, argv: list[str], timeout: float
    ) -> tuple[bytes, bytes]:
        from docker.utils.socket import consume_socket_output, demux_adaptor, frames_iter

        sock = api.exec_start(exec_id, socket=True)
        raw = getattr(sock, "_sock", sock)
        # Own deadline on the socket, beyond the in-container `timeout` and its kill grace.
        raw.settimeout(timeout + KILL_AFTER + 10)
        send_error: list[BaseException] = []

        def feed() -> None:
            # A separate writer: the command may fill its output pipe before it has read
            # all of stdin; writing everything first could then deadlock.
            try:
                raw.sendall(data)
                raw.shutdown(socket.SHUT_WR)
            except OSError as exc:
                send_error.append(exc)

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        try:
            frames = (demux_adaptor(*frame) for frame in frames_iter(sock, tty=False))
            out, err = consume_socket_output(frames, demux=True)
        except socket.timeout:
            raise SlurmTimeout(argv, timeout) from None
        finally:
            writer.join(timeout=5)
            try:
                sock.close()
            except OSError:
                pass
        return out or b"", err or b""

    def _exit_code(self, api: Any, exec_id: str, argv: list[str], timeout: float) -> int:
        deadline = time.monotonic() + KILL_AFTER + 5
        while True:
            info = api.exec_inspect(exec_id)
            code = info.get("ExitCode")
            if code is not None and not info.get("Running"):
                return int(code)
            if time.monotonic() > deadline:
                raise SlurmTimeout(argv, timeout)
            time.sleep(0.02)
