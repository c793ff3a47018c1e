"""Build the Waldur and SLURM clients from the settings (the one place that knows both constructors)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from waldur_slurm import USER_AGENT

if TYPE_CHECKING:
    from waldur_slurm.config import Settings
    from waldur_slurm.slurm.cli.client import SlurmClient
    from waldur_slurm.waldur.client import WaldurClient


def make_waldur_client(settings: Settings, *, timeout: float | None = None, max_retries: int | None = None) -> WaldurClient:
    from waldur_slurm.waldur.client import WaldurClient

    extra = {} if max_retries is None else {"max_retries": max_retries}
    return WaldurClient(
        settings.waldur_api_url,
        settings.waldur_api_token,
        settings.offering_uuid,
        verify_ssl=settings.verify_ssl,
        ca_bundle=settings.ca_bundle,
        timeout=settings.http_timeout if timeout is None else timeout,
        user_agent=USER_AGENT,
        **extra,
    )


def make_slurm_client(settings: Settings, *, timeout: float | None = None) -> SlurmClient:
    from waldur_slurm.slurm.cli.client import SlurmClient
    from waldur_slurm.slurm.cli.executor import DockerExecutor, NativeExecutor

    executor = NativeExecutor() if settings.deployment_type == "native" else DockerExecutor(settings.container_name)
    return SlurmClient(
        executor,
        timeout=settings.slurm_command_timeout if timeout is None else timeout,
        cluster=settings.cluster_name,
    )


def slurm_probe(slurm: SlurmClient) -> str | None:
    """Why SLURM cannot be reached, or None; cheap and spawns no process (the loop runs it every idle cycle).

    Native mode: ``sacctmgr`` must be on the PATH the commands get. Docker mode: the head-node container must
    exist and run (one Docker API call, no exec). Whether slurmdbd answers is left to the first cycle that
    reads SLURM: probing it would cost a process per idle cycle.
    """
    import shutil

    from waldur_slurm.slurm.errors import SlurmError

    executor = slurm.executor
    container = getattr(executor, "container_name", None)
    if container is None:
        if shutil.which("sacctmgr", path=os.environ.get("PATH")) is None:
            return "SLURM unreachable: command not found: sacctmgr (not on PATH; install the SLURM client or fix PATH)"
        return None
    try:
        # The executor's own client and error mapping, so the probe and a real exec say the same thing.
        info = executor._api().inspect_container(container)
    except SlurmError as exc:
        return f"SLURM unreachable: {exc}"
    except Exception as exc:  # noqa: BLE001 - mapped to the executor's error types
        return f"SLURM unreachable: {executor._map_error(exc)}"
    if not (info.get("State") or {}).get("Running"):
        return f"SLURM unreachable: container {container!r} exists but is not running"
    return None
