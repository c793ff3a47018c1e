"""Is the shared machine quiet? Other test sessions and slurmdbd restarts disturb the numbers.

The bench records, for every sample, whether another test session (a ``pytest`` process that is not an
ancestor of this one) was running and whether slurmdbd restarted meanwhile; ``--wait-quiet`` makes the full
run wait until no other session has run for a while before it starts.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .common import log

SLURMDBD_LOG = Path(os.environ.get("WSA_SLURM_STATE", "/var/lib/wsa-slurm")) / "log" / "slurmdbd.log"
START_MARK = "slurmdbd version"


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def other_test_sessions() -> list[int]:
    """PIDs of pytest processes that are not this process or one of its ancestors."""
    mine = _ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"pytest" in cmd:
            found.append(int(entry.name))
    return sorted(found)


def slurmdbd_starts() -> int:
    try:
        with SLURMDBD_LOG.open(errors="replace") as f:
            return sum(1 for line in f if START_MARK in line)
    except OSError:
        return 0


@dataclass
class Watch:
    """Started before a sample, read after it."""

    starts: int
    busy: bool

    @classmethod
    def start(cls) -> Watch:
        return cls(slurmdbd_starts(), bool(other_test_sessions()))

    def report(self) -> dict[str, object]:
        busy = self.busy or bool(other_test_sessions())
        return {"slurmdbd_restarts": slurmdbd_starts() - self.starts, "other_tests_running": busy}


def wait_quiet(timeout: float, quiet_for: float = 30.0, poll: float = 5.0) -> bool:
    """Wait until no other test session has been seen for ``quiet_for`` seconds; False after ``timeout``."""
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    announced = False
    while True:
        if other_test_sessions():
            quiet_since = time.monotonic()
            if not announced:
                log(f"other test sessions are running; waiting up to {timeout / 60:.0f} min for a quiet machine")
                announced = True
        elif time.monotonic() - quiet_since >= quiet_for:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
