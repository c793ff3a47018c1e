"""Small shared helpers of the benchmark harness: paths, child processes, statistics."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
STANDIN_DIR = REPO / "devenv" / "waldur"
DOCKER_HOST_FILE = Path(os.environ.get("WSA_DOCKER_DIR", "/var/lib/wsa-docker")) / "docker-host"
T = TypeVar("T")


def use_standin() -> None:
    """Make the stand-in package importable (pytest gets it from pyproject's pythonpath)."""
    if str(STANDIN_DIR) not in sys.path:
        sys.path.insert(0, str(STANDIN_DIR))


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a measured agent process: no inherited WALDUR_/SLURM_ settings, only ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WALDUR_", "SLURM_", "SENTRY_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def run_json(argv: Sequence[str], env: Mapping[str, str], *, timeout: float) -> Any:
    """Run a child that prints ONE JSON document as its last stdout line; raise with its stderr on failure."""
    proc = subprocess.run(list(argv), env=dict(env), cwd=REPO, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
        raise RuntimeError(f"{' '.join(argv[:4])} exited {proc.returncode}:\n{tail}")
    return json.loads(lines[-1])


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def retry(what: str, fn: Callable[[], T], *, attempts: int = 8, delay: float = 2.0) -> T:
    """Setup steps only (never a measured cycle): other engineers' tests restart slurmdbd on this machine."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - reported after the last attempt
            if attempt == attempts:
                raise
            log(f"{what} failed ({str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc!r}); retry {attempt}")
            time.sleep(delay)
    raise AssertionError("unreachable")


def docker_host() -> str | None:
    if DOCKER_HOST_FILE.exists():
        text = DOCKER_HOST_FILE.read_text().strip()
        return text or None
    return os.environ.get("DOCKER_HOST") or None


def machine_info() -> dict[str, Any]:
    def first(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return ""

    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    os_name = ""
    if Path("/etc/os-release").exists():
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": os_name,
        "python": platform.python_version(),
        "slurm": first(["sinfo", "-V"]),
        "mariadb": first(["mariadbd", "--version"]),
        "git": first(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
    }
