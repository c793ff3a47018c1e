"""A pull daemon process for the crash tests: ``python -m tests.pull.runner [--wait]`` runs ONE pull cycle.

Configured like the daemon, from the environment (WALDUR_*, SLURM_*). Exit code 0 when the cycle failed no
order, 1 otherwise. With ``--wait`` it imports and connects first, prints ``ready``, and starts the cycle
only when a line arrives on stdin: the crash tests then time their SIGKILL from the start of the cycle,
not from the (slow) interpreter start.
"""

from __future__ import annotations

import logging
import os
import sys

from waldur_slurm.config import load_settings
from waldur_slurm.pull.reconciler import PullReconciler
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.cli.executor import NativeExecutor
from waldur_slurm.waldur.client import WaldurClient


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = load_settings(os.environ, need_direction=True)
    waldur = WaldurClient(
        settings.waldur_api_url, settings.waldur_api_token, settings.offering_uuid,
        timeout=settings.http_timeout, max_retries=1, backoff_base=0.05, backoff_max=0.1,
    )
    slurm = SlurmClient(NativeExecutor(), timeout=settings.slurm_command_timeout)
    if "--wait" in sys.argv[1:]:
        print("ready", flush=True)
        if not sys.stdin.readline():
            return 0
    report = PullReconciler(settings, waldur, slurm, out=lambda line: None).run_cycle()
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
