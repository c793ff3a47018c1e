"""waldur-slurm-agent: sync Waldur marketplace orders and usage with a SLURM cluster."""

from importlib import metadata

try:
    __version__ = metadata.version("waldur-slurm-agent")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "1.0.0"

USER_AGENT = f"waldur-slurm-agent/{__version__}"
