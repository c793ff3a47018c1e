"""SLURM error types.

Two families: `SlurmTransientError` (the next cycle may succeed: timeouts, slurmdbd or
the controller unreachable, the docker daemon down, the container stopped) and the
permanent rest (a missing container or binary, a command that failed for its own
reasons, active jobs, invalid values). Callers retry transient errors and report the
others.
"""

from __future__ import annotations

from typing import Sequence


class SlurmError(Exception):
    """Base of every error raised by `waldur_slurm.slurm`."""


class SlurmTransientError(SlurmError):
    """Temporary failure: retry on the next cycle."""


class SlurmTimeout(SlurmTransientError):
    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        self.argv = list(argv)
        self.timeout = timeout
        super().__init__(f"command timed out after {timeout:g}s: {_short(argv)}")


class SlurmUnavailable(SlurmTransientError):
    """slurmdbd or slurmctld cannot be reached (connection refused, no response)."""

    def __init__(self, message: str, *, argv: Sequence[str] = (), stderr: str = "") -> None:
        self.argv = list(argv)
        self.stderr = stderr
        super().__init__(message)


class DockerUnavailable(SlurmTransientError):
    """The docker daemon cannot be reached."""


class ContainerNotRunning(SlurmTransientError):
    """The SLURM container exists but is stopped."""


class ContainerMissing(SlurmError):
    """No container with the configured name exists."""


class CommandNotFound(SlurmError):
    def __init__(self, argv: Sequence[str], detail: str = "") -> None:
        self.argv = list(argv)
        msg = f"command not found: {argv[0] if argv else '?'}"
        super().__init__(f"{msg} ({detail.strip()})" if detail.strip() else msg)


class SlurmCommandError(SlurmError):
    """A SLURM command failed for its own reasons (permanent until something changes)."""

    def __init__(
        self,
        argv: Sequence[str],
        exit_code: int,
        stdout: str,
        stderr: str,
        message: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        detail = message or _first_line(stderr) or _first_line(stdout) or "no output"
        super().__init__(f"{_short(argv)} failed with exit code {exit_code}: {detail}")


class ActiveJobsError(SlurmCommandError):
    """sacctmgr refused to remove an association: `Job(s) active, cancel job(s) before remove`."""


class AccountMoveRefused(SlurmError):
    """A load would give an existing account a new parent.

    Slurm 22.05 corrupts its association tree (nested-set lft/rgt) when an account is
    moved; later removals then delete wrong ranges and `list account withassoc` crashes
    slurmdbd (seen on the local cluster; `devenv/slurm/check-tree` detects it).
    """

    def __init__(self, moves: dict[str, tuple[str, str]]) -> None:
        self.moves = dict(moves)
        shown = ", ".join(f"{name} ({old} -> {new})" for name, (old, new) in sorted(moves.items())[:5])
        more = f" and {len(moves) - 5} more" if len(moves) > 5 else ""
        super().__init__(f"refusing to move existing account(s) to a new parent: {shown}{more}")


class InvalidValue(SlurmError, ValueError):
    """A value was refused before it could reach a command line."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"invalid {field} {value!r}: {reason}")


# Substrings that mean "the accounting daemon or controller is unreachable right now".
TRANSIENT_MARKERS: tuple[str, ...] = (
    "Connection refused",
    "Problem talking to the database",
    "Problem connecting to the database",
    "No response to persist_init",
    "Unable to contact slurm controller",
    "Resource temporarily unavailable",
    "Socket timed out",
    "slurm_persist_conn_open",
)

ACTIVE_JOBS_MARKER = "Job(s) active, cancel job(s) before remove"


def is_transient_output(text: str) -> bool:
    return any(marker in text for marker in TRANSIENT_MARKERS)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _short(argv: Sequence[str], limit: int = 200) -> str:
    text = " ".join(argv)
    return text if len(text) <= limit else text[: limit - 3] + "..."
