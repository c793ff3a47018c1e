"""Entry point: ``python -m waldur_slurm.main`` or ``waldur-slurm-agent``.

Reads the configuration once, checks it, and hands it to the chosen job: the pull or push daemon
(``WALDUR_SYNC_DIRECTION``), ``--diag`` or ``--load-components``.

Exit codes (README, "Exit codes"): 0 success; 1 an item failed or a cycle crashed (``--once``), or a
``--diag`` check failed; 2 configuration error (including an offering that does not exist or is not a
SLURM offering the token's user manages); 3 Waldur refused the API token; 4 Waldur or SLURM unreachable
(``--once``: the work was deferred).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from waldur_slurm import __version__
from waldur_slurm.config import VARIABLES, ConfigError, Settings, load_settings, read_environment

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_AUTH = 3  # the same value as loop.EXIT_AUTH (not imported: main must stay light at import time)
EXIT_UNREACHABLE = 4

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
    mode.add_argument(
        "--load-usage", metavar="FROM..TO",
        help="report the usage of the months FROM..TO (e.g. 2026-01..2026-11) from sacct, where the server and the "
             "token allow it, then exit (with --dry-run: print what would be written)",
    )
    mode.add_argument(
        "--diag-account", metavar="NAME_OR_RESOURCE_UUID",
        help="compare one allocation in Waldur and SLURM, mark every difference and print the sacctmgr commands "
             "that would make SLURM match (runs none), then exit (1 when they differ)",
    )
    parser.add_argument("--json", action="store_true", help="with --diag-account: print one JSON document")
    parser.add_argument(
        "--remove-missing",
        action="store_true",
        help="with --load-components: also remove offering components that are not in the TRES file",
    )
    parser.add_argument(
        "--once", action="store_true",
        help="run one cycle, then exit (1 if an item failed, 4 if Waldur or SLURM was unreachable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the planned changes and change nothing")
    parser.add_argument("--env-file", metavar="PATH", help="read variables from this file instead of ./.env")
    parser.add_argument("--version", action="version", version=f"waldur-slurm-agent {__version__}")
    return parser


def configure(args: argparse.Namespace) -> Settings:
    """Read and validate the configuration; raises ConfigError."""
    environ = read_environment(args.env_file)
    daemon = not (args.diag or args.load_components or args.load_usage is not None or args.diag_account is not None)
    return load_settings(environ, need_direction=daemon)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.remove_missing and not args.load_components:
        print("waldur-slurm-agent: --remove-missing goes with --load-components", file=sys.stderr)
        return EXIT_CONFIG
    if args.json and args.diag_account is None:
        print("waldur-slurm-agent: --json goes with --diag-account", file=sys.stderr)
        return EXIT_CONFIG
    if args.load_usage is not None:
        from waldur_slurm.tools.load_usage import MonthRangeError, parse_month_range

        try:
            parse_month_range(args.load_usage)  # the format first; future months need the billing timezone
        except MonthRangeError as exc:
            print(f"waldur-slurm-agent: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    try:
        settings = configure(args)
    except ConfigError as exc:
        print(f"waldur-slurm-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    from waldur_slurm.tools import observability

    observability.setup_logging(settings)
    observability.setup_sentry(settings)
    log.info("waldur-slurm-agent %s starting", __version__)
    for warning in settings.warnings:
        log.warning(warning)

    if args.diag:
        from waldur_slurm.tools import diag

        return diag.run(settings)
    if args.load_components:
        from waldur_slurm.tools import load_components

        return load_components.run(settings, dry_run=args.dry_run, remove_missing=args.remove_missing)

    if args.load_usage is not None:
        from waldur_slurm.tools import load_usage

        return load_usage.run(settings, args.load_usage, dry_run=args.dry_run)
    if args.diag_account is not None:
        from waldur_slurm.tools import diag_account

        return diag_account.run(settings, args.diag_account, as_json=args.json)

    return run_daemon(settings, once=args.once, dry_run=args.dry_run)


def startup_checks(settings: Settings, waldur: Any, slurm: Any) -> int | None:
    """What ``--diag`` checks that cannot fix itself, checked once at start: the exit code to stop with, or None.

    A wrong offering (absent, not ours, not a SLURM offering) stops the daemon with EXIT_CONFIG: every cycle
    would find nothing, silently, forever. An unreachable Waldur or SLURM does not: it may come back, so the
    daemon runs degraded (red health, work deferred) and says so.
    """
    from waldur_slurm.daemon.wiring import slurm_probe
    from waldur_slurm.waldur.errors import WaldurAuthError, WaldurNotFound, WaldurTransientError

    try:
        offering = waldur.get_offering()
    except WaldurNotFound:
        log.error("WALDUR_OFFERING_UUID=%s: no such offering, or the token's user does not manage it; exiting",
                  settings.offering_uuid)
        return EXIT_CONFIG
    except WaldurAuthError as exc:
        log.error("Waldur refused the API token for offering %s (%s): fix WALDUR_API_TOKEN and restart; exiting",
                  settings.offering_uuid, exc)
        return EXIT_AUTH
    except WaldurTransientError as exc:
        log.warning("start check: Waldur unreachable (%s): the offering is not checked; running degraded until "
                    "Waldur answers", exc)
    else:
        if offering.type and offering.type != "Marketplace.Slurm":
            log.error("WALDUR_OFFERING_UUID=%s: offering %r is of type %r, not a SLURM offering (Marketplace.Slurm); "
                      "exiting", settings.offering_uuid, offering.name, offering.type)
            return EXIT_CONFIG
        log.info("start check: offering %r of %s (%s)", offering.name,
                 offering.customer_name or offering.customer_uuid or "?", offering.state or "state unknown")
    problem = slurm_probe(slurm)
    if problem:
        log.warning("start check: %s; running degraded: the work waits until SLURM answers", problem)
    else:
        where = "this host" if settings.deployment_type == "native" else f"container {settings.container_name!r}"
        log.info("start check: SLURM commands available on %s", where)
    return None


def run_daemon(settings: Settings, *, once: bool, dry_run: bool) -> int:
    """Wire the clients to the pull reconciler or the push reporter and hand them to the loop."""
    from waldur_slurm.daemon.wiring import make_slurm_client, make_waldur_client, slurm_probe
    from waldur_slurm.daemon.loop import PeriodicTask
    from waldur_slurm.daemon.loop import run_daemon as run_tasks

    waldur = make_waldur_client(settings)
    slurm = make_slurm_client(settings)
    try:
        stop = startup_checks(settings, waldur, slurm)
        if stop is not None:
            return stop
        probe = lambda: slurm_probe(slurm)  # noqa: E731
        if settings.sync_direction == "pull":
            from waldur_slurm.pull.reconciler import PullReconciler

            reconciler = PullReconciler(settings, waldur, slurm)
            tasks = [
                PeriodicTask("pull", settings.pull_period, lambda dry: reconciler.run_cycle(dry_run=dry), probe=probe),
                PeriodicTask("membership", settings.membership_period,
                             lambda dry: reconciler.run_membership(dry_run=dry), probe=probe),
            ]
        else:
            from datetime import datetime, timezone

            from waldur_slurm.push.reporter import PushReporter
            from waldur_slurm.push.usage import seconds_until_closing_cycle

            reporter = PushReporter(settings, waldur, slurm)
            tasks = [
                PeriodicTask(
                    "push",
                    settings.push_period,
                    lambda dry: reporter.run_cycle(dry_run=dry),
                    extra_wakeup=lambda: seconds_until_closing_cycle(datetime.now(timezone.utc), settings.billing_timezone),
                    probe=probe,
                )
            ]
        return run_tasks(settings, tasks, once=once, dry_run=dry_run)
    finally:
        waldur.close()


if __name__ == "__main__":
    sys.exit(main())
