"""Reading sacctmgr's answers: which command of a batch failed, and how (refused, transient, already done)."""

from __future__ import annotations

from ..errors import (
    ACTIVE_JOBS_MARKER,
    ActiveJobsError,
    SlurmCommandError,
    SlurmError,
    SlurmUnavailable,
    is_transient_output,
)
from .parsing import is_already

_SUCCESS_MARKERS = (
    " Adding Account(s)",
    " Adding User(s)",
    " Adding QOS(s)",
    " Associations =",
    " Modified account associations",
    " Modified accounts",
    " Modified users",
    " Modified user associations",
    " Deleting accounts",
    " Deleting account associations",
    " Deleting user associations",
    " Deleting users",
)
_FAILURE_MARKERS = (
    "error:",
    "fatal:",
    " Error with request",
    " Problem ",
    " doesn't exist",
    " No associations created",
    " No associations or wckeys created",
    " Unknown option",
    " Changes Discarded",
    " Access/permission denied",
    " Invalid",
    " Contact your admin",
)
DEFAULT_ACCOUNT_MARKER = "You can not remove the default account of a user"


class DefaultAccountInUse(SlurmCommandError):
    """sacctmgr refused to remove a user's default-account association."""


def section_error(command: str, output: str, exit_code: int) -> SlurmError | None:
    argv = ["sacctmgr", "-i", command]
    if ACTIVE_JOBS_MARKER in output:
        return ActiveJobsError(argv, exit_code, output, "", "Job(s) active, cancel job(s) before remove")
    if DEFAULT_ACCOUNT_MARKER in output:
        return DefaultAccountInUse(argv, exit_code, output, "", DEFAULT_ACCOUNT_MARKER)
    if is_transient_output(output):
        return SlurmUnavailable(first_error_line(output) or "slurmdbd unreachable", argv=argv, stderr=output)
    if not output.strip():
        # Every add/modify/remove answers with at least a line ("Nothing deleted", ...): silence means slurmdbd
        # went away while this command ran (seen when slurmdbd is killed mid-batch), not a refusal.
        return SlurmUnavailable("sacctmgr printed nothing for this command (slurmdbd lost?)", argv=argv)
    if any(m in output for m in _FAILURE_MARKERS):
        return SlurmCommandError(argv, exit_code, output, "", first_error_line(output))
    if is_already(output) or any(m in output for m in _SUCCESS_MARKERS):
        return None
    return SlurmCommandError(argv, exit_code, output, "", f"unrecognised sacctmgr output: {output.strip()[:200]!r}")


def first_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower() or "problem" in line.lower() or "fatal" in line.lower():
            return line
    return lines[0] if lines else ""
