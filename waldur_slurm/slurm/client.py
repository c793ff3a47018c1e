"""Typed SLURM client: constant-cost reads and batched writes over an `Executor`.

Reads (one process each, whatever the number of accounts):
- `read_state()`: ONE `sacctmgr` process fed two list commands on stdin:
  `list account withassoc ... format=account,parentname,user,grptresmins,cluster,
  organization,description` (accounts with description/organization AND their
  associations: parent, users, GrpTRESMins) plus `list user format=user,defaultaccount`
  (users' default accounts; `list account withassoc` leaves DefaultAccount empty).
  Measured: 0.40 s for the pair in one process, the same as two processes natively,
  but one docker exec instead of two.
- `read_usage(accounts, start, end, duplicates)`: ONE `sacct` for all accounts (split
  only when `--accounts=` would exceed ~100 KB; Linux caps one argument at 128 KiB;
  3,000 names of 30 chars = 93 KB ran in 0.07 s, the same as no filter).

Writes (`apply(ops)`): consecutive sacctmgr ops share ONE `sacctmgr -i` process fed on
stdin, its stdout+stderr merged (`sh -c 'exec "$@" 2>&1'`) so that each error lands after
the `sacctmgr: <command>` echo of the command that caused it. scancel, mkhomedir_helper
and `load` run as their own processes. Ops run in the given order.

Many accounts with a DIFFERENT description each (e.g. the Waldur resource UUID, so a
crashed run can recognise its own accounts): use `AddAccountsDescribed`, which runs
`sacctmgr -i load file=/dev/stdin` with a flat file: ONE transaction. Measured on the
local cluster (22.05.8): 100 accounts with distinct descriptions in 0.9 s, against
52.9 s for a stdin batch of 100 `add account` lines (one commit each, ~0.5 s). A bad
line makes the whole load commit nothing. `load` also updates existing accounts
(description, organization, limits, and the PARENT: an existing account is moved). Moving
an account corrupts slurmdbd 22.05's association tree (lft/rgt; seen here: afterwards
removals delete wrong ranges and `list account withassoc` segfaults slurmdbd), so
`apply` refuses a load that would move an account (`AccountMoveRefused`). The check
uses the parents seen by this client's last `read_state()` (no extra process) when it is
younger than `state_max_age`, else one `list association` read.

Concurrent writers corrupt slurmdbd 22.05's association tree: a `load` (one long
transaction) running while another process adds accounts left children outside their
parent's lft/rgt range (reproduced on the local cluster; afterwards `list account
withassoc` segfaults slurmdbd). So every WRITE process of this client holds an exclusive
flock on `write_lock` (default `/run/lock/waldur-slurm-agent.sacctmgr.lock`) shared by all
agents and tests on the machine; reads take no lock. `write_lock=None` disables it.

Observed sacctmgr quirks handled here:
- Without `-i` and without a tty sacctmgr spins forever: always `-i`.
- readline redraws some long stdin lines with cursor-movement codes when it believes the
  screen is 80 columns wide; `COLUMNS=1000000` avoids that and echoes are matched by
  order anyway.
- `remove user where name=u account=a,b` is refused, all or nothing ("You can not remove
  the default account of a user"), when the accounts include the user's default, while
  removing the same associations one account per command works. Each command is its own
  slurmdbd transaction (~0.4 s), so `RemoveUsers` names every account that is no user's
  default in one command and each default account in its own (`removal_lines`), from the
  defaults of the last `read_state` as this client's writes changed them; unknown defaults
  get one command per account, and a refused grouped removal is re-run that way. A user
  whose default association is removed keeps an EMPTY default account: plan a
  `SetDefaultAccount` afterwards.
- `remove account where name=a,b` is refused the same way when one of the accounts is
  some user's default, while one name per command succeeds. `apply` then re-runs just
  that op one name per command (one more process, one commit per name).
- Removing a parent account leaves its child account RECORDS behind without
  association (orphans, invisible in `read_state`): remove the children too.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Iterable, Iterator, Mapping, Sequence

from .errors import (
    ACTIVE_JOBS_MARKER,
    AccountMoveRefused,
    ActiveJobsError,
    CommandNotFound,
    InvalidValue,
    SlurmCommandError,
    SlurmError,
    SlurmTimeout,
    SlurmTransientError,
    SlurmUnavailable,
    is_transient_output,
)
from .controls import AccountControls, controls_command, parse_controls
from .executor import CommandResult, Executor
from .ops import (
    AddAccounts,
    AddAccountsDescribed,
    AddUsers,
    CancelJobs,
    CancelUserJobs,
    CreateHomedirs,
    MoveAccounts,
    Op,
    RemoveAccounts,
    RemoveUsers,
    SacctmgrOp,
    SetDefaultAccount,
    validate_account,
)
from .parsing import (
    echoed_count,
    is_already,
    SlurmParseError,
    parse_limits,
    parse_sacct_time,
    parse_elapsed_raw,
    parse_tres,
    parse_version,
    split_batch_output,
    split_rows,
)

log = logging.getLogger(__name__)

# Merge stderr into stdout inside the executed process so the order is preserved.
MERGE_STDERR = ["sh", "-c", 'exec "$@" 2>&1', "sh"]
# Linux refuses a single argv string above 128 KiB (MAX_ARG_STRLEN).
MAX_ACCOUNTS_ARG = 100_000
SACCT_FORMAT = "JobID,Account,User,State,ElapsedRaw,ReqTRES,AllocTRES,Start,End"
DEFAULT_WRITE_LOCK = "/run/lock/waldur-slurm-agent.sacctmgr.lock"
STATE_ACCOUNT_FORMAT = "account,parentname,user,grptresmins,cluster,organization,description"
# Without it slurmdbd fills every association's inherited Max* limits with one `get_parent_limits` stored
# procedure call per change of parent in lft order, about two calls per allocation account (its own row and
# its users' rows): that was most of the dump's time at N=1,000 (measured in bench/; see docs/benchmarks.md).
# The fields read here (parent, users, GrpTRESMins, which is never inherited) are the same either way.
WITHOUT_PARENT_LIMITS = "WOPLimits"

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


@dataclass(frozen=True)
class SlurmAccount:
    name: str
    parent: str
    description: str
    organization: str
    limits: dict[str, int]  # account-level GrpTRESMins, TRES-minutes (mem in MB)
    users: frozenset[str]
    # why GrpTRESMins could not be read (``limits`` is then empty): fails only this account's limits
    limits_problem: str | None = None


@dataclass(frozen=True)
class SlurmState:
    accounts: dict[str, SlurmAccount]
    default_account: dict[str, str]  # user -> DefaultAccount ("" when it has none)
    # account -> its own GrpJobs/GrpSubmitJobs/QOS (what enforcement changes and restores)
    controls: dict[str, AccountControls] = field(default_factory=dict)


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    account: str
    user: str
    state: str
    elapsed_seconds: int
    req_tres: dict[str, Decimal]  # mem in MB
    alloc_tres: dict[str, Decimal]  # mem in MB
    start: datetime | None  # aware, in the SLURM host's local time zone
    end: datetime | None
    # why this record's TRES could not be read (both TRES dicts are then empty): it alone is not billed
    problem: str | None = None


@dataclass(frozen=True)
class OpResult:
    op: Op
    ok: bool
    already: bool = False  # sacctmgr said "Nothing new added/deleted/modified"
    error: SlurmError | None = None
    output: str = ""

    @property
    def transient(self) -> bool:
        return isinstance(self.error, SlurmTransientError)


class SlurmClient:
    def __init__(
        self,
        executor: Executor,
        *,
        timeout: float,
        cluster: str | None = None,
        batch_command_budget: float = 2.0,
        state_max_age: float = 600.0,
        write_lock: str | None = DEFAULT_WRITE_LOCK,
    ) -> None:
        """`timeout` bounds one SLURM command; a stdin batch of n commands gets
        `timeout + batch_command_budget * (n - 1)` (a write commits in ~0.3-0.6 s)."""
        if timeout <= 0:
            raise InvalidValue("timeout", timeout, "must be positive")
        self.executor = executor
        self.timeout = float(timeout)
        self.cluster = validate_account(cluster, "cluster") if cluster else None
        self.batch_command_budget = batch_command_budget
        self._discovered_cluster: str | None = None
        self.state_max_age = state_max_age
        self.write_lock = write_lock
        # account -> parent as last seen (read_state) and kept up to date by apply();
        # guards loads against moving accounts without an extra read.
        self._parents: dict[str, str] | None = None
        self._parents_at = 0.0
        # user -> DefaultAccount as last seen (read_state) and kept up to date by apply(): lets a removal
        # name many accounts in one command (see _removal_lines). None: not known, one command per account.
        self._defaults: dict[str, str | None] | None = None

    # ------------------------------------------------------------------ running
    def _run(self, argv: list[str], *, stdin: str | None = None, timeout: float | None = None) -> CommandResult:
        result = self.executor.run(argv, stdin=stdin, timeout=timeout or self.timeout)
        if result.exit_code == 127 and argv[: len(MERGE_STDERR)] == MERGE_STDERR:
            raise CommandNotFound(argv[len(MERGE_STDERR) :], result.stdout.strip())
        return result

    def _write(self, argv: list[str], *, stdin: str | None = None, timeout: float | None = None) -> CommandResult:
        """Run a writing command while holding the machine-wide write lock."""
        limit = timeout or self.timeout
        with self._write_locked(argv, limit):
            return self._run(argv, stdin=stdin, timeout=limit)

    @contextmanager
    def _write_locked(self, argv: list[str], timeout: float) -> Iterator[None]:
        if not self.write_lock:
            yield
            return
        try:
            fd = os.open(self.write_lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            log.warning("cannot open SLURM write lock %s (%s); writing without it", self.write_lock, exc)
            yield
            return
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise SlurmTimeout(["flock", self.write_lock, *argv], timeout) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _check(self, argv: list[str], result: CommandResult) -> CommandResult:
        """Raise for a failed read: transient when slurmdbd/slurmctld is unreachable."""
        if result.exit_code == 0 and not is_transient_output(result.stderr):
            return result
        text = result.stderr + result.stdout
        if is_transient_output(text):
            raise SlurmUnavailable(_first_error_line(text) or "SLURM unreachable", argv=argv, stderr=result.stderr)
        raise SlurmCommandError(argv, result.exit_code, result.stdout, result.stderr)

    def _sacctmgr_read(self, commands: list[str]) -> list[str]:
        """Run read commands through ONE `sacctmgr -i -n -P` on stdin; stdout per command."""
        argv = ["sacctmgr", "-i", "--noheader", "--parsable2"]
        stdin = "".join(c + "\n" for c in commands)
        result = self._check(argv, self._run(argv, stdin=stdin, timeout=self._batch_timeout(len(commands))))
        if result.stderr.strip():
            # A failing read command prints to stderr but the batch still exits 0.
            raise SlurmCommandError(argv, result.exit_code, result.stdout, result.stderr)
        _, sections = split_batch_output(result.stdout, commands)
        if echoed_count(result.stdout, len(commands)) < len(commands):
            raise SlurmCommandError(argv, result.exit_code, result.stdout, result.stderr, "incomplete batch output")
        return sections

    def _batch_timeout(self, n: int) -> float:
        return self.timeout + self.batch_command_budget * max(0, n - 1)

    # -------------------------------------------------------------------- reads
    def read_state(self) -> SlurmState:
        """Accounts (parent, description, organization, GrpTRESMins, users) and users'
        default accounts, in ONE sacctmgr process. The root account is left out, and so
        are account records without an association on the cluster (orphans left behind
        when their parent was removed)."""
        where = f" where cluster={self.cluster}" if self.cluster else ""
        accounts_out, users_out, controls_out = self._sacctmgr_read(
            [
                f"list account withassoc {WITHOUT_PARENT_LIMITS}{where} format={STATE_ACCOUNT_FORMAT}",
                "list user format=user,defaultaccount",
                controls_command(self.cluster),
            ]
        )
        state = parse_state(accounts_out, users_out, cluster=self.cluster)
        state = replace(state, controls=parse_controls(controls_out, cluster=self.cluster))
        self._parents = {name: acc.parent for name, acc in state.accounts.items()}
        self._parents_at = time.monotonic()
        self._defaults = dict(state.default_account)
        return state

    def read_usage(
        self,
        accounts: Iterable[str],
        start: datetime,
        end: datetime,
        duplicates: bool = False,
    ) -> list[JobRecord]:
        """Job allocations charged to `accounts` in [start, end), ONE sacct call.

        The window is sent in UTC (SLURM commands run with TZ=UTC); naive datetimes are taken as the
        agent's local time. Returned start/end times are aware (UTC). Never queries with an empty account list: without
        `--accounts` sacct would return every account's jobs.
        """
        names = sorted({validate_account(a, "account") for a in accounts})
        if not names:
            raise InvalidValue("accounts", [], "refusing to query sacct with an empty account list")
        if end <= start:
            raise InvalidValue("end", end, f"must be after start {start}")
        records: list[JobRecord] = []
        for chunk in _chunk_names(names, MAX_ACCOUNTS_ARG):
            argv = [
                "sacct",
                "--parsable2",
                "--noheader",
                "--noconvert",
                "--allusers",
                "--allocations",
                "--truncate",
                f"--starttime={_sacct_time(start)}",
                f"--endtime={_sacct_time(end)}",
                f"--accounts={','.join(chunk)}",
                f"--format={SACCT_FORMAT}",
            ]
            if duplicates:
                argv.append("--duplicates")
            if self.cluster:
                argv.append(f"--clusters={self.cluster}")
            result = self._check(argv, self._run(argv))
            records.extend(parse_jobs(result.stdout))
        return records

    def list_tres(self) -> list[str]:
        """TRES names known to slurmdbd: `cpu`, `mem`, ..., `gres/gpu`."""
        argv = ["sacctmgr", "-i", "--noheader", "--parsable2", "list", "tres", "format=type,name"]
        result = self._check(argv, self._run(argv))
        return [f"{t}/{n}" if n else t for t, n in split_rows(result.stdout, 2)]

    def version(self) -> str:
        """SLURM version, e.g. `22.05.8` (`sacctmgr -V` works natively and in a container)."""
        argv = ["sacctmgr", "-V"]
        result = self._check(argv, self._run(argv))
        return parse_version(result.stdout)

    def list_clusters(self) -> list[tuple[str, str]]:
        """(cluster, control host); the host is empty until slurmctld has registered."""
        argv = ["sacctmgr", "-i", "--noheader", "--parsable2", "list", "cluster", "format=cluster,controlhost"]
        result = self._check(argv, self._run(argv))
        return [(c, h) for c, h in split_rows(result.stdout, 2)]

    def cluster_name(self) -> str:
        """The configured cluster, or the only cluster in the DB (looked up once)."""
        if self.cluster:
            return self.cluster
        if self._discovered_cluster is None:
            names = [c for c, _ in self.list_clusters()]
            if len(names) != 1:
                raise SlurmCommandError(
                    ["sacctmgr", "list", "cluster"], 0, ",".join(names), "",
                    f"cannot pick a cluster among {names}; configure the cluster name",
                )
            self._discovered_cluster = names[0]
        return self._discovered_cluster

    # ------------------------------------------------------------------- writes
    def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        """Apply ops in order, in as few processes as possible; one OpResult per op.

        Consecutive sacctmgr ops share one `sacctmgr -i` process. Raises a
        `SlurmTransientError` only when nothing could run (slurmdbd down at start-up,
        timeout, docker down); per-op failures, including transient ones after the batch
        started, are returned in the results.
        """
        results: list[OpResult] = []
        pending: list[SacctmgrOp] = []

        def flush() -> None:
            if pending:
                batch = self._apply_batch_with_fallback(list(pending))
                for r in batch:
                    self._remember(r.op, r.ok)
                results.extend(batch)
                pending.clear()

        for op in ops:
            if isinstance(op, SacctmgrOp):
                pending.append(op)
                continue
            flush()
            if isinstance(op, AddAccountsDescribed):
                results.append(self._apply_load(op))
                self._remember(op, results[-1].ok)
            elif isinstance(op, CancelJobs):
                results.append(self._apply_simple(op, op.argv()))
            elif isinstance(op, CancelUserJobs):
                results.append(self._apply_reported(op, op.argv(), "wsa-scancel-failed "))
            elif isinstance(op, CreateHomedirs):
                results.append(self._apply_homedirs(op))
            else:
                raise TypeError(f"unknown op {op!r}")
        flush()
        return results

    def _apply_batch_with_fallback(self, ops: list[SacctmgrOp]) -> list[OpResult]:
        results = self._apply_batch(ops)
        # `remove account where name=a,b` is refused when the accounts hold some user's
        # default account, while the same removals one name per command succeed (22.05).
        # The same refusal (all or nothing) for a grouped user removal whose default account was not known.
        retry = [
            i for i, r in enumerate(results)
            if isinstance(r.error, DefaultAccountInUse) and (
                (isinstance(r.op, RemoveAccounts) and len(r.op.names) > 1)
                or (isinstance(r.op, RemoveUsers) and len(r.op.accounts) > 1)
            )
        ]  # fmt: skip
        if retry:
            again = self._apply_batch([results[i].op for i in retry], split_removals=True)  # type: ignore[misc]
            for i, r in zip(retry, again):
                results[i] = r
        return results

    def _apply_batch(self, ops: list[SacctmgrOp], *, split_removals: bool = False) -> list[OpResult]:
        defaults = self._known_defaults()
        lines_per_op = []
        for op in ops:
            lines_per_op.append(self._lines(op, split_removals=split_removals, defaults=defaults))
            if defaults is not None:
                track_defaults(defaults, op)  # what the earlier commands of this batch make of them
        commands = [line for lines in lines_per_op for line in lines]
        argv = [*MERGE_STDERR, "sacctmgr", "-i"]
        result = self._write(argv, stdin="".join(c + "\n" for c in commands), timeout=self._batch_timeout(len(commands)))
        preamble, sections = split_batch_output(result.stdout, commands)
        reached = echoed_count(result.stdout, len(commands))
        if is_transient_output(preamble):
            # sacctmgr could not reach slurmdbd at start-up; it still echoes the commands
            # but runs none of them
            raise SlurmUnavailable(_first_error_line(preamble), argv=argv, stderr=preamble)
        if reached == 0:
            text = preamble or result.stdout
            if is_transient_output(text):
                raise SlurmUnavailable(_first_error_line(text) or "slurmdbd unreachable", argv=argv, stderr=text)
            raise SlurmCommandError(argv, result.exit_code, result.stdout, result.stderr, "sacctmgr ran no command")
        results: list[OpResult] = []
        pos = 0
        for op, lines in zip(ops, lines_per_op):
            outputs = sections[pos : pos + len(lines)]
            op_reached = pos + len(lines) <= reached
            pos += len(lines)
            if not op_reached:
                # sacctmgr -i goes on after a failed command; it stops early only when it dies or loses slurmdbd,
                # so the command never ran and a later cycle can run it
                err = SlurmUnavailable("sacctmgr stopped before this command", argv=argv, stderr=result.stdout)
                results.append(OpResult(op, False, error=err))
                continue
            results.append(self._classify(op, lines, outputs, result.exit_code))
        return results

    def _known_defaults(self) -> dict[str, str | None] | None:
        if self._defaults is None or time.monotonic() - self._parents_at >= self.state_max_age:
            return None
        return dict(self._defaults)

    def _lines(
        self, op: SacctmgrOp, *, split_removals: bool = False, defaults: Mapping[str, str | None] | None = None
    ) -> list[str]:
        where_cluster = f" cluster={self.cluster}" if self.cluster else ""
        if split_removals and isinstance(op, RemoveAccounts):
            return [f"remove account where name={name}{where_cluster}" for name in op.names]
        if isinstance(op, RemoveUsers):
            return removal_lines(op, None if split_removals else defaults, where_cluster)
        return op.sacctmgr_lines(self.cluster)

    def _classify(self, op: Op, commands: list[str], outputs: list[str], exit_code: int) -> OpResult:
        all_already = True
        text = "\n".join(f"sacctmgr: {c}\n{o}" for c, o in zip(commands, outputs))
        for command, output in zip(commands, outputs):
            error = _section_error(command, output, exit_code)
            if error is not None:
                return OpResult(op, False, error=error, output=text)
            if not is_already(output):
                all_already = False
        return OpResult(op, True, already=all_already, output=text)

    def _current_parents(self, names: list[str]) -> dict[str, str]:
        """Parent of each of `names` that has an association on the cluster."""
        if self._parents is not None and time.monotonic() - self._parents_at < self.state_max_age:
            return {n: self._parents[n] for n in names if n in self._parents}
        found: dict[str, str] = {}
        cluster_opt = [f"cluster={self.cluster}"] if self.cluster else []
        for chunk in _chunk_names(sorted(names), MAX_ACCOUNTS_ARG):
            argv = [
                "sacctmgr", "-i", "--noheader", "--parsable2", "list", "association", WITHOUT_PARENT_LIMITS,
                "where", f"account={','.join(chunk)}", *cluster_opt, "format=account,parentname,user",
            ]  # fmt: skip
            result = self._check(argv, self._run(argv))
            for account, parent, user in split_rows(result.stdout, 3):
                if not user:
                    found[account] = parent
        return found

    def _remember(self, op: Op, ok: bool) -> None:
        if self._defaults is not None and isinstance(op, SacctmgrOp):
            if ok:
                track_defaults(self._defaults, op)
            else:
                self._defaults = None  # half-applied or refused: no longer known
        if not ok or self._parents is None:
            return
        if isinstance(op, AddAccountsDescribed):
            for name, parent in load_parents(op.load_file(self.cluster_name())).items():
                self._parents.setdefault(name, parent)
        elif isinstance(op, AddAccounts):
            for name in op.names:
                self._parents.setdefault(name, op.parent)
        elif isinstance(op, MoveAccounts):
            for name in op.names:
                self._parents[name] = op.parent
        elif isinstance(op, RemoveAccounts):
            self._parents = None  # children of removed accounts become orphans: re-read

    def _apply_load(self, op: AddAccountsDescribed) -> OpResult:
        cluster = self.cluster_name()
        argv = [*MERGE_STDERR, "sacctmgr", "-i", "load", "file=/dev/stdin"]
        data = op.load_file(cluster)
        wanted = load_parents(data)
        current = self._current_parents(list(wanted))
        moves = {n: (current[n], p) for n, p in wanted.items() if n in current and current[n] != p}
        if moves:
            return OpResult(op, False, error=AccountMoveRefused(moves))
        lines = len(op.entries) + len(getattr(op, "users", ()))
        result = self._write(argv, stdin=data, timeout=self._batch_timeout(1 + lines // 50))
        out = result.stdout
        if is_transient_output(out):
            raise SlurmUnavailable(_first_error_line(out) or "slurmdbd unreachable", argv=argv, stderr=out)
        if any(m in out for m in ("Problem with", "error:", "fatal:", "You need to add")):
            return OpResult(op, False, error=SlurmCommandError(argv, result.exit_code, out, "", _first_error_line(out)), output=out)
        if is_already(out):  # printed with rc 0 when the file matches the DB
            return OpResult(op, True, already=True, output=out)
        if result.exit_code == 0:
            return OpResult(op, True, output=out)
        return OpResult(op, False, error=SlurmCommandError(argv, result.exit_code, out, ""), output=out)

    def _apply_simple(self, op: Op, argv: list[str]) -> OpResult:
        result = self._run(argv)
        text = result.stdout + result.stderr
        if result.exit_code == 0 and not text.strip():
            return OpResult(op, True, output=text)
        if is_transient_output(text):
            return OpResult(op, False, error=SlurmUnavailable(_first_error_line(text), argv=argv, stderr=result.stderr), output=text)
        if result.exit_code == 0:
            return OpResult(op, True, output=text)
        return OpResult(op, False, error=SlurmCommandError(argv, result.exit_code, result.stdout, result.stderr), output=text)

    def _apply_reported(self, op: Op, argv: list[str], marker: str) -> OpResult:
        """A shell loop that names each item it failed on with ``marker``: failed when any did."""
        result = self._run(argv)
        text = result.stdout + result.stderr
        failed = [line[len(marker):] for line in result.stdout.splitlines() if line.startswith(marker)]
        if result.exit_code != 0 or failed:
            msg = f"failed for {'; '.join(failed)}" if failed else None
            return OpResult(op, False, error=SlurmCommandError(argv, result.exit_code, result.stdout, result.stderr, msg), output=text)
        return OpResult(op, True, output=text)

    def _apply_homedirs(self, op: CreateHomedirs) -> OpResult:
        argv = op.argv()
        result = self._run(argv)
        text = result.stdout + result.stderr
        failed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("wsa-homedir-failed ")]
        if result.exit_code != 0 or failed:
            msg = f"mkhomedir_helper failed for {', '.join(failed)}" if failed else None
            return OpResult(op, False, error=SlurmCommandError(argv, result.exit_code, result.stdout, result.stderr, msg), output=text)
        return OpResult(op, True, output=text)


# ------------------------------------------------------------------ pure helpers
def parse_state(accounts_out: str, users_out: str, *, cluster: str | None = None) -> SlurmState:
    """Build a SlurmState from `list account withassoc format=STATE_ACCOUNT_FORMAT` and
    `list user format=user,defaultaccount` parsable output (pure)."""
    info: dict[str, dict[str, object]] = {}
    for name, parent, user, grptresmins, row_cluster, org, desc in split_rows(accounts_out, 7, free_text_col=6):
        if not row_cluster or (cluster and row_cluster != cluster) or name == "root":
            continue  # orphan record, another cluster, or the root
        entry = info.setdefault(
            name, {"parent": "", "description": desc, "organization": org, "limits": {}, "users": set()}
        )
        if user:
            entry["users"].add(user)  # type: ignore[union-attr]
        else:
            entry["parent"] = parent
            try:
                entry["limits"] = parse_limits(grptresmins)
            except SlurmParseError as exc:
                entry["limits_problem"] = f"GrpTRESMins of account {name}: {exc}"
    accounts = {
        name: SlurmAccount(
            name=name,
            parent=str(e["parent"]),
            description=str(e["description"]),
            organization=str(e["organization"]),
            limits=dict(e["limits"]),  # type: ignore[arg-type]
            users=frozenset(e["users"]),  # type: ignore[arg-type]
            limits_problem=e.get("limits_problem"),  # type: ignore[arg-type]
        )
        for name, e in sorted(info.items())
    }
    defaults = {user: default for user, default in split_rows(users_out, 2)}
    return SlurmState(accounts=accounts, default_account=defaults)


def parse_jobs(text: str) -> list[JobRecord]:
    """Parse sacct output in SACCT_FORMAT (pure)."""
    records = []
    for job_id, account, user, state, elapsed_raw, req, alloc, start, end in split_rows(text, 9):
        state = state.split(" ")[0]  # "CANCELLED by 0" -> "CANCELLED"
        try:
            record = JobRecord(
                job_id=job_id,
                account=account,
                user=user,
                state=state,
                elapsed_seconds=parse_elapsed_raw(elapsed_raw),
                req_tres=parse_tres(req),
                alloc_tres=parse_tres(alloc),
                start=_utc(parse_sacct_time(start)),
                end=_utc(parse_sacct_time(end)),
            )
        except SlurmParseError as exc:
            # one record SLURM printed oddly is not billed (and said so); the others are
            record = JobRecord(job_id, account, user, state, 0, {}, {}, None, None, problem=str(exc))
        records.append(record)
    return records


_LOAD_PARENT = re.compile(r"^Parent - '([^']*)'")
_LOAD_ACCOUNT = re.compile(r"^Account - '([^']*)'")


def load_parents(load_file: str) -> dict[str, str]:
    """account -> parent as a sacctmgr load file places it (pure)."""
    parent = "root"
    placed: dict[str, str] = {}
    for line in load_file.splitlines():
        if m := _LOAD_PARENT.match(line):
            parent = m.group(1)
        elif m := _LOAD_ACCOUNT.match(line):
            placed[m.group(1)] = parent
    return placed


def _utc(dt: datetime | None) -> datetime | None:
    """A time sacct printed (it runs with TZ=UTC, see executor.COMMAND_ENV)."""
    return dt.replace(tzinfo=timezone.utc) if dt is not None else None


def _sacct_time(dt: datetime) -> str:
    # astimezone() on a naive datetime takes it as the agent's local time
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def removal_lines(op: RemoveUsers, defaults: Mapping[str, str | None] | None, where_cluster: str = "") -> list[str]:
    """The ``remove user`` commands of one op (pure).

    slurmdbd 22.05 refuses, all or nothing, a removal whose accounts include a user's DefaultAccount, and
    takes the same removal one account per command. Each command is its own transaction (0.39 s each
    measured: 100 removals took 39.4 s one per command, 1.1 s as one command). So the accounts that are no
    user's default go in one command (split only at the command-line limit) and each default account in
    its own; when the defaults are not known (``None``), one command per account.
    """
    users = ",".join(op.users)
    if defaults is None or any(u in defaults and defaults[u] is None for u in op.users):
        return [f"remove user where name={users} account={a}{where_cluster}" for a in op.accounts]
    own = {defaults.get(u) for u in op.users}
    shared = [a for a in op.accounts if a not in own]
    lines = [f"remove user where name={users} account={','.join(chunk)}{where_cluster}"
             for chunk in _chunk_names(shared, MAX_ACCOUNTS_ARG) if chunk]
    lines += [f"remove user where name={users} account={a}{where_cluster}" for a in op.accounts if a in own]
    return lines


def track_defaults(defaults: dict[str, str | None], op: SacctmgrOp) -> None:
    """Update user -> DefaultAccount for an applied op (None: unknown). A user added without an explicit
    default gets one from SLURM only when it had none: which one is not known here."""
    if isinstance(op, SetDefaultAccount):
        for user in op.users:
            defaults[user] = op.account
    elif isinstance(op, AddUsers):
        for user in op.users:
            if op.default_account:
                defaults[user] = op.default_account
            elif not defaults.get(user):
                defaults[user] = None
    elif isinstance(op, RemoveUsers):
        for user in op.users:
            if defaults.get(user) in op.accounts:
                defaults[user] = ""  # SLURM leaves an empty default (module docstring)
    elif isinstance(op, RemoveAccounts):
        for user, account in list(defaults.items()):
            if account in op.names:
                defaults[user] = ""


def _chunk_names(names: list[str], limit: int) -> list[list[str]]:
    chunks: list[list[str]] = [[]]
    size = 0
    for name in names:
        if chunks[-1] and size + len(name) + 1 > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(name)
        size += len(name) + 1
    return chunks


def _section_error(command: str, output: str, exit_code: int) -> SlurmError | None:
    argv = ["sacctmgr", "-i", command]
    if ACTIVE_JOBS_MARKER in output:
        return ActiveJobsError(argv, exit_code, output, "", "Job(s) active, cancel job(s) before remove")
    if DEFAULT_ACCOUNT_MARKER in output:
        return DefaultAccountInUse(argv, exit_code, output, "", DEFAULT_ACCOUNT_MARKER)
    if is_transient_output(output):
        return SlurmUnavailable(_first_error_line(output) or "slurmdbd unreachable", argv=argv, stderr=output)
    if not output.strip():
        # Every add/modify/remove answers with at least a line ("Nothing deleted", ...): silence means slurmdbd
        # went away while this command ran (seen when slurmdbd is killed mid-batch), not a refusal.
        return SlurmUnavailable("sacctmgr printed nothing for this command (slurmdbd lost?)", argv=argv)
    if any(m in output for m in _FAILURE_MARKERS):
        return SlurmCommandError(argv, exit_code, output, "", _first_error_line(output))
    if is_already(output) or any(m in output for m in _SUCCESS_MARKERS):
        return None
    return SlurmCommandError(argv, exit_code, output, "", f"unrecognised sacctmgr output: {output.strip()[:200]!r}")


def _first_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower() or "problem" in line.lower() or "fatal" in line.lower():
            return line
    return lines[0] if lines else ""
