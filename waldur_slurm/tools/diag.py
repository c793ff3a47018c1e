"""``--diag``: a checklist of everything the agent needs, one line each, ✔ or ✘ with a short reason.

Fast and bounded: the Waldur and SLURM checks run side by side, each with short timeouts and no retries,
and a check whose prerequisite failed is reported as skipped (✘) instead of waiting again. The exit code
is 0 only if every check passed. Secrets are shown masked.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from waldur_slurm.config import mask
from waldur_slurm.domain.urls import mask_url

if TYPE_CHECKING:
    from waldur_slurm.config import Settings

log = logging.getLogger("waldur_slurm.tools.diag")

OK_MARK, FAIL_MARK = "✔", "✘"
EXIT_OK = 0
EXIT_FAILED = 1

DIAG_HTTP_TIMEOUT = 4.0  # seconds; one request, no retries
DIAG_SLURM_TIMEOUT = 4.0  # seconds per SLURM command
ORDER_STATES = ("pending-provider", "executing")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{OK_MARK if self.ok else FAIL_MARK} {self.name}: {self.detail}"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


# ---------------------------------------------------------------------------------------------- config


def check_config(settings: Settings) -> Check:
    mode = settings.deployment_type + (f" (container {settings.container_name!r})"
                                       if settings.deployment_type == "docker" else "")
    parts = [
        f"Waldur {mask_url(settings.waldur_api_url)}",
        f"offering {settings.offering_uuid}",
        f"direction {settings.sync_direction or '(unset)'}",
        f"SLURM {mode}",
        f"default account {settings.default_account!r}",
        f"{len(settings.components)} components from {settings.tres_config_path}",
        f"token {mask(settings.waldur_api_token)}",
        f"Sentry {mask(settings.sentry_dsn)}",
    ]
    return Check("configuration valid", True, ", ".join(parts))


# ---------------------------------------------------------------------------------------------- Waldur


def waldur_checks(settings: Settings, waldur: Any) -> list[Check]:
    """Reachable + version, token, offering + permission, components, orders. Stops at the first blocker."""
    from waldur_slurm.tools.load_components import UNCHANGED, plan_components
    from waldur_slurm.waldur.errors import WaldurAuthError, WaldurNotFound

    checks: list[Check] = []
    from waldur_slurm.tools.enforcement_diag import NAME as ENFORCEMENT, enforcement_check

    names = ("Waldur API reachable", "API token valid", "offering exists and can be managed",
             "offering components match the TRES file", "orders", ENFORCEMENT)

    def skipped(reason: str) -> list[Check]:
        return checks + [Check(name, False, f"skipped: {reason}") for name in names[len(checks):]]

    try:
        version = waldur.server_version()
    except WaldurAuthError as exc:
        # it answered: the 2024 server shows its version to staff only (403), and a refused token (401) is
        # the next check's to report
        version = "not shown (staff only)" if getattr(exc, "status", None) == 403 else "not shown (token refused)"
    except Exception as exc:
        checks.append(Check(names[0], False, f"{mask_url(settings.waldur_api_url)}: {_reason(exc)}"))
        return skipped("Waldur API unreachable")
    try:
        flavour = waldur.capabilities.era
    except Exception:  # informative only
        flavour = None
    checks.append(Check(names[0], True, f"{mask_url(settings.waldur_api_url)}, server version {version or 'unknown'}"
                        + (f" (API: {flavour})" if flavour else "")))

    try:
        user = waldur.whoami()
    except WaldurAuthError as exc:
        checks.append(Check(names[1], False, f"token refused: {_reason(exc)}"))
        return skipped("token refused")
    except Exception as exc:
        checks.append(Check(names[1], False, _reason(exc)))
        return skipped("token could not be checked")
    username = getattr(user, "username", None) or (user.get("username") if isinstance(user, dict) else None)
    checks.append(Check(names[1], True, f"user {username or '?'}"))

    try:
        offering = waldur.get_offering()
    except WaldurNotFound:
        checks.append(Check(names[2], False, f"offering {settings.offering_uuid} not found, or the token's user "
                                             "is not a manager of it (WALDUR_OFFERING_UUID)"))
        return skipped("offering unavailable")
    except WaldurAuthError as exc:
        checks.append(Check(names[2], False, f"the token's user may not manage offering {settings.offering_uuid}: "
                                             f"{_reason(exc)}"))
        return skipped("offering unavailable")
    except Exception as exc:
        checks.append(Check(names[2], False, _reason(exc)))
        return skipped("offering unavailable")
    problems = []
    if offering.type and offering.type != "Marketplace.Slurm":
        problems.append(f"type is {offering.type!r}, expected 'Marketplace.Slurm'")
    if offering.state and offering.state.lower() not in ("active", "paused"):
        problems.append(f"state is {offering.state!r}")
    detail = f"{offering.name!r} of {offering.customer_name or offering.customer_uuid or '?'}, state {offering.state or '?'}"
    checks.append(Check(names[2], not problems, detail + ("" if not problems else ": " + "; ".join(problems))))

    actions = plan_components(settings.components, offering.components, remove_missing=False)
    differ = [a for a in actions if a.action != UNCHANGED]
    if differ:
        listed = ", ".join(
            f"{a.key} ({'missing in Waldur' if a.action == 'create' else 'extra in Waldur' if a.action == 'extra' else ', '.join(c[0] for c in a.changes) + ' differ'})"
            for a in differ
        )
        only_extra = all(a.action == "extra" for a in differ)
        hint = "" if only_extra else "; run --load-components"
        checks.append(Check(names[3], only_extra, listed + hint))
    else:
        checks.append(Check(names[3], True, ", ".join(settings.components) or "(no components)"))

    try:
        orders = waldur.list_orders(states=ORDER_STATES)
        counts = {state: sum(1 for o in orders if o.state == state) for state in ORDER_STATES}
    except Exception as exc:
        checks.append(Check(names[4], False, f"cannot list orders: {_reason(exc)}"))
    else:
        summary = ", ".join(f"{n} {state}" for state, n in counts.items())
        stalled = stalled_orders(orders, settings, dt.datetime.now(dt.timezone.utc))
        if stalled:
            checks.append(Check(names[4], False, f"{summary}; without progress: " + "; ".join(stalled)))
        else:
            checks.append(Check(names[4], True, summary))
    checks.append(Check(names[5], *enforcement_check(settings, waldur)))
    return checks


def stalled_orders(orders: Sequence[Any], settings: Settings, now: dt.datetime) -> list[str]:
    """Executing orders unchanged for longer than the pull daemon retries an order before giving it up: a
    healthy order completes within a cycle or two. The daemon's own count lives in its memory; this view
    works from any process, from the server's ``modified`` times."""
    limit = dt.timedelta(seconds=settings.pull_period * (settings.order_max_failed_cycles + 1))
    out = []
    for o in orders:
        modified = getattr(o, "modified", None)
        if o.state != "executing" or modified is None:
            continue
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=dt.timezone.utc)
        age = now - modified
        if age > limit:
            error = f": {o.error_message}" if getattr(o, "error_message", "") else ""
            out.append(f"order {o.uuid} ({o.type} of resource {o.resource_uuid}) executing for "
                       f"{int(age.total_seconds() // 60)} min{error}")
    return out


# ---------------------------------------------------------------------------------------------- SLURM


def slurm_checks(settings: Settings, slurm: Any) -> list[Check]:
    """Reachable + version (docker: the container runs), default account, TRES."""
    from waldur_slurm.slurm.errors import (
        CommandNotFound,
        ContainerMissing,
        ContainerNotRunning,
        DockerUnavailable,
        SlurmTimeout,
    )

    checks: list[Check] = []
    names = ("SLURM reachable", f"default account {settings.default_account!r} exists",
             "TRES of the file exist in SLURM")
    where = (f"container {settings.container_name!r}" if settings.deployment_type == "docker" else "this host")

    def skipped(reason: str) -> list[Check]:
        return checks + [Check(name, False, f"skipped: {reason}") for name in names[len(checks):]]

    try:
        version = slurm.version()
    except ContainerMissing:
        checks.append(Check(names[0], False, f"container {settings.container_name!r} does not exist "
                                             "(SLURM_CONTAINER_NAME)"))
        return skipped("SLURM unreachable")
    except ContainerNotRunning:
        checks.append(Check(names[0], False, f"container {settings.container_name!r} exists but is not running"))
        return skipped("SLURM unreachable")
    except DockerUnavailable as exc:
        checks.append(Check(names[0], False, f"docker daemon unreachable: {_reason(exc)}"))
        return skipped("SLURM unreachable")
    except CommandNotFound as exc:
        checks.append(Check(names[0], False, f"{_reason(exc)} on {where}"))
        return skipped("SLURM unreachable")
    except SlurmTimeout as exc:
        checks.append(Check(names[0], False, _reason(exc)))
        return skipped("SLURM unreachable")
    except Exception as exc:
        checks.append(Check(names[0], False, _reason(exc)))
        return skipped("SLURM unreachable")

    # sacctmgr -V answers without slurmdbd; listing the TRES proves the accounting daemon answers.
    try:
        tres = set(slurm.list_tres())
    except Exception as exc:
        checks.append(Check(names[0], False, f"SLURM {version} on {where}, but slurmdbd does not answer: "
                                             f"{_reason(exc)}"))
        return skipped("slurmdbd unreachable")
    running = " (running)" if settings.deployment_type == "docker" else ""
    checks.append(Check(names[0], True, f"SLURM {version} on {where}{running}, slurmdbd answers"))

    try:
        state = slurm.read_state()
    except Exception as exc:
        checks.append(Check(names[1], False, f"cannot list accounts: {_reason(exc)}"))
    else:
        account = settings.default_account
        if account == "root":
            checks.append(Check(names[1], True, "root always exists, but it gives every user an association "
                                                "with root; prefer a dedicated account"))
        elif account in state.accounts:
            parent = state.accounts[account].parent
            checks.append(Check(names[1], True, f"under {parent or 'root'}"))
        else:
            checks.append(Check(names[1], False, f"no SLURM account {account!r}: create it "
                                                 f"(sacctmgr add account {account}) or set SLURM_DEFAULT_ACCOUNT"))

    missing = sorted(set(settings.components) - tres)
    if missing:
        checks.append(Check(names[2], False, f"not in sacctmgr list tres: {', '.join(missing)} "
                                             "(add them to AccountingStorageTRES in slurm.conf)"))
    else:
        checks.append(Check(names[2], True, ", ".join(settings.components)))
    return checks


# ---------------------------------------------------------------------------------------------- running


def diag_settings(settings: Settings) -> Settings:
    """The same settings with short timeouts: diag must answer fast, never hang."""
    return dataclasses.replace(
        settings,
        http_timeout=min(settings.http_timeout, DIAG_HTTP_TIMEOUT),
        slurm_command_timeout=min(settings.slurm_command_timeout, DIAG_SLURM_TIMEOUT),
    )


def _build_waldur(settings: Settings) -> Any:
    from waldur_slurm.daemon.wiring import make_waldur_client

    return make_waldur_client(settings, max_retries=0)  # a failure is the answer: no retries in diag


def _build_slurm(settings: Settings) -> Any:
    from waldur_slurm.daemon.wiring import make_slurm_client

    return make_slurm_client(settings)


def run_checks(settings: Settings, *, waldur: Any | None = None, slurm: Any | None = None) -> list[Check]:
    fast = diag_settings(settings)
    checks = [check_config(settings)]

    def guarded(kind: str, fn: Callable[[], list[Check]]) -> list[Check]:
        try:
            return fn()
        except Exception as exc:  # a bug in a check must not hide the other checks
            log.debug("diag %s checks crashed", kind, exc_info=True)
            return [Check(f"{kind} checks", False, f"crashed: {_reason(exc)}")]

    def waldur_part() -> list[Check]:
        if waldur is not None:
            return waldur_checks(fast, waldur)
        client = _build_waldur(fast)
        try:
            return waldur_checks(fast, client)
        finally:
            client.close()

    def slurm_part() -> list[Check]:
        if slurm is not None:
            return slurm_checks(fast, slurm)
        client = _build_slurm(fast)
        try:
            return slurm_checks(fast, client)
        finally:
            close = getattr(client.executor, "close", None)
            if close is not None:
                close()

    # Side by side: a Waldur timeout and a SLURM timeout cost the longer of the two, not their sum.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="diag") as pool:
        w = pool.submit(guarded, "Waldur", waldur_part)
        s = pool.submit(guarded, "SLURM", slurm_part)
        checks += w.result() + s.result()
    return checks


def run(settings: Settings, *, waldur: Any | None = None, slurm: Any | None = None, out: TextIO | None = None) -> int:
    """Entry point of ``--diag``: print the checklist; 0 only if every check passed."""
    out = out or sys.stdout
    started = time.monotonic()
    checks = run_checks(settings, waldur=waldur, slurm=slurm)
    for check in checks:
        print(check.line(), file=out)
    print("settings (secrets masked):", file=out)
    # The umask is an int in Settings; 63 means nothing to an operator who wrote 0077.
    rows = [(k, f"{settings.homedir_umask:04o}" if k == "homedir_umask" else v) for k, v in settings.masked()]
    print(format_settings(rows), file=out)
    failed = [c for c in checks if not c.ok]
    elapsed = time.monotonic() - started
    if failed:
        print(f"{len(failed)} of {len(checks)} checks failed ({elapsed:.1f} s)", file=out, flush=True)
        return EXIT_FAILED
    print(f"all {len(checks)} checks passed ({elapsed:.1f} s)", file=out, flush=True)
    return EXIT_OK


def format_settings(rows: Sequence[tuple[str, str]]) -> str:
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)
