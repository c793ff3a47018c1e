"""Entry point: ``python -m waldur_slurm.main`` or ``waldur-slurm-agent``.

Reads the configuration once, checks it, and hands it to the chosen job: the pull or push daemon
(``WALDUR_SYNC_DIRECTION``), ``--diag`` or ``--load-components``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from waldur_slurm import __version__
from waldur_slurm.config import VARIABLES, ConfigError, Settings, load_settings, read_environment

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2

log = logging.getLogger("waldur_slurm")


def _variables_help() -> str:
    lines = ["environment variables (also read from .env or --env-file; the process environment wins):"]
    for var in VARIABLES:
        default = "required" if var.required else (f"default {var.default}" if var.default is not None else "unset")
        lines.append(f"  {var.name:<38} {var.help} ({default})")
    lines.append("  DOCKER_HOST                            docker daemon socket for docker mode (docker's own variable)")
    lines.append("See README.md, section Configuration, for details.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="waldur-slurm-agent",
        description=(
            "Synchronise a Waldur SLURM offering with a SLURM cluster. With WALDUR_SYNC_DIRECTION=pull it turns "
            "Waldur orders into SLURM accounts, associations and limits; with push it reports SLURM usage, "
            "limits and associations to Waldur."
        ),
        epilog=_variables_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--diag", action="store_true", help="check the configuration, Waldur and SLURM, then exit (0 = all good)")
    mode.add_argument(
        "--load-components", action="store_true", help="make the offering's components match the TRES file, then exit"
    )
    parser.add_argument(
        "--remove-missing",
        action="store_true",
        help="with --load-components: also remove offering components that are not in the TRES file",
    )
    parser.add_argument("--once", action="store_true", help="run one cycle, then exit (non-zero if anything failed)")
    parser.add_argument("--dry-run", action="store_true", help="print the planned changes and change nothing")
    parser.add_argument("--env-file", metavar="PATH", help="read variables from this file instead of ./.env")
    parser.add_argument("--version", action="version", version=f"waldur-slurm-agent {__version__}")
    return parser


def configure(args: argparse.Namespace) -> Settings:
    """Read and validate the configuration; raises ConfigError."""
    environ = read_environment(args.env_file)
    daemon = not (args.diag or args.load_components)
    return load_settings(environ, need_direction=daemon)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.remove_missing and not args.load_components:
        print("waldur-slurm-agent: --remove-missing goes with --load-components", file=sys.stderr)
        return EXIT_CONFIG
    try:
        settings = configure(args)
    except ConfigError as exc:
        print(f"waldur-slurm-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    from waldur_slurm import observability

    observability.setup_logging(settings)
    observability.setup_sentry(settings)
    log.info("waldur-slurm-agent %s starting", __version__)
    for warning in settings.warnings:
        log.warning(warning)

    if args.diag:
        from waldur_slurm import diag

        return diag.run(settings)
    if args.load_components:
        from waldur_slurm import load_components

        return load_components.run(settings, dry_run=args.dry_run, remove_missing=args.remove_missing)

    return run_daemon(settings, once=args.once, dry_run=args.dry_run)


def run_daemon(settings: Settings, *, once: bool, dry_run: bool) -> int:
    """Wire the clients to the pull reconciler or the push reporter and hand them to the loop."""
    from waldur_slurm.clients import make_slurm_client, make_waldur_client
    from waldur_slurm.loop import PeriodicTask
    from waldur_slurm.loop import run_daemon as run_tasks

    waldur = make_waldur_client(settings)
    slurm = make_slurm_client(settings)
    if settings.sync_direction == "pull":
        from waldur_slurm.pull import PullReconciler

        reconciler = PullReconciler(settings, waldur, slurm)
        tasks = [
            PeriodicTask("pull", settings.pull_period, lambda dry: reconciler.run_cycle(dry_run=dry)),
            PeriodicTask("membership", settings.membership_period, lambda dry: reconciler.run_membership(dry_run=dry)),
        ]
    else:
        from waldur_slurm.push import PushReporter

        from datetime import datetime, timezone

        from waldur_slurm.usage import seconds_until_closing_cycle

        reporter = PushReporter(settings, waldur, slurm)
        tasks = [
            PeriodicTask(
                "push",
                settings.push_period,
                lambda dry: reporter.run_cycle(dry_run=dry),
                extra_wakeup=lambda: seconds_until_closing_cycle(datetime.now(timezone.utc), settings.billing_timezone),
            )
        ]
    try:
        return run_tasks(settings, tasks, once=once, dry_run=dry_run)
    finally:
        waldur.close()


if __name__ == "__main__":
    sys.exit(main())
