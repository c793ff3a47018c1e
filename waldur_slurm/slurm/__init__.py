"""SLURM: the backend contract, the neutral model and ops, errors; the command-line backend in ``cli/``."""

from .cli.client import SlurmClient
from .model import JobRecord, OpResult, SlurmAccount, SlurmState
from .errors import (
    ActiveJobsError,
    CommandNotFound,
    ContainerMissing,
    ContainerNotRunning,
    DockerUnavailable,
    InvalidValue,
    SlurmCommandError,
    SlurmError,
    SlurmTimeout,
    SlurmTransientError,
    SlurmUnavailable,
)
from .cli.executor import CommandResult, DockerExecutor, Executor, NativeExecutor

__all__ = [
    "ActiveJobsError",
    "CommandNotFound",
    "CommandResult",
    "ContainerMissing",
    "ContainerNotRunning",
    "DockerExecutor",
    "DockerUnavailable",
    "Executor",
    "InvalidValue",
    "JobRecord",
    "NativeExecutor",
    "OpResult",
    "SlurmAccount",
    "SlurmClient",
    "SlurmCommandError",
    "SlurmError",
    "SlurmState",
    "SlurmTimeout",
    "SlurmTransientError",
    "SlurmUnavailable",
]
