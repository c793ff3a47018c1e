"""Build the Waldur and SLURM clients from the settings (the one place that knows both constructors)."""

from __future__ import annotations

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
    """Why SLURM cannot be reached, or None (see ``SlurmClient.unreachable``)."""
    return slurm.unreachable()
