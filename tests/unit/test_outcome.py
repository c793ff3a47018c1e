"""The one classification of errors, and the one-shot jobs' exit codes built on it (pure: no I/O)."""

from __future__ import annotations

import pytest

from waldur_slurm.domain.outcome import ErrorKind, classify, retry_later, tool_failure
from waldur_slurm.slurm.errors import ActiveJobsError, CommandNotFound, SlurmCommandError, SlurmUnavailable
from waldur_slurm.waldur.errors import WaldurAuthError, WaldurPermanentError, WaldurTransientError


@pytest.mark.parametrize(("exc", "kind", "later", "exit_code", "words"), [
    (WaldurAuthError("401 Invalid token."), ErrorKind.AUTH, False, 3, "Waldur refused the API token: 401 Invalid token."),
    (WaldurTransientError("HTTP 503"), ErrorKind.TRANSIENT, True, 4, "Waldur unreachable: HTTP 503"),
    (WaldurPermanentError("HTTP 400"), ErrorKind.PERMANENT, False, 1, "Waldur refused the read: HTTP 400"),
    (SlurmUnavailable("slurmdbd down"), ErrorKind.TRANSIENT, True, 4, "SLURM unreachable: slurmdbd down"),
    (CommandNotFound(["sacctmgr", "show"]), ErrorKind.MISCONFIGURED, True, 4,
     "SLURM unreachable: command not found: sacctmgr"),
    (ActiveJobsError(["sacctmgr", "-i"], 1, "", "Job(s) active"), ErrorKind.TRANSIENT, True, 4,
     "SLURM unreachable: sacctmgr -i failed with exit code 1: Job(s) active"),
    (SlurmCommandError(["sacct"], 1, "", "bad name"), ErrorKind.PERMANENT, False, 1,
     "SLURM command failed: sacct failed with exit code 1: bad name"),
])
def test_classify_and_tool_failure(exc: Exception, kind: ErrorKind, later: bool, exit_code: int, words: str) -> None:
    assert classify(exc) is kind
    assert retry_later(exc) is later
    assert tool_failure(exc) == (exit_code, words)


def test_any_other_error_is_permanent() -> None:
    assert classify(ValueError("x")) is ErrorKind.PERMANENT
