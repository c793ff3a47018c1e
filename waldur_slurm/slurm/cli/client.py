"""``SlurmClient``: the command-line SLURM backend (``SlurmBackend``) over a native or docker-exec ``Executor``.

Reads cost one process whatever the number of accounts; writes are batched (one ``sacctmgr -i`` stdin
batch, one ``sacctmgr load`` transaction for new accounts) under a machine-wide write lock. The measured
facts and the sacctmgr 22.05 quirks this handles are in docs/architecture.md ("The SLURM CLI backend").
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from typing import Iterable, Iterator, Mapping, Sequence

from ..errors import (
    AccountMoveRefused,
    CommandNotFound,
    InvalidValue,
    SlurmCommandError,
    SlurmTimeout,
    SlurmUnavailable,
    is_transient_output,
)
from ..model import JobRecord, OpResult, SlurmState
from . import render
from .controls import controls_command, parse_controls
from .output import DefaultAccountInUse, first_error_line, section_error
from .render import MAX_ACCOUNTS_ARG, chunk_names, load_parents, removal_lines, track_defaults
from .executor import CommandResult, Executor
from ..ops import (
    AddAccounts,
    AddAccountsDescribed,
    CancelJobs,
    CancelUserJobs,
    CreateHomedirs,
    MoveAccounts,
    Op,
    RemoveAccounts,
    RemoveUsers,
    validate_account,
)
from .parsing import (
    parse_jobs,
    parse_state,
    echoed_count,
    is_already,
    parse_version,
    split_batch_output,
    split_rows,
)

log = logging.getLogger(__name__)

# Merge stderr into stdout inside the executed process so the order is preserved.
MERGE_STDERR = ["sh", "-c", 'exec "$@" 2>&1', "sh"]
SACCT_FORMAT = "JobID,Account,User,State,ElapsedRaw,ReqTRES,AllocTRES,Start,End"
DEFAULT_WRITE_LOCK = "/run/lock/waldur-slurm-agent.sacctmgr.lock"
STATE_ACCOUNT_FORMAT = "account,parentname,user,grptresmins,cluster,organization,description"
# Without it slurmdbd fills every association's inherited Max* limits with one `get_parent_limits` stored
# procedure call per change of parent in lft order, about two calls per allocation account (its own row and
# its users' rows): that was most of the dump's time at N=1,000 (measured in bench/; see docs/benchmarks.md).
# The fields read here (parent, users, GrpTRESMins, which is never inherited) are the same either way.
WITHOUT_PARENT_LIMITS = "WOPLimits"

def _open_lock(path: str) -> int | OSError:
    """The lock file's descriptor. flock needs no write access: a lock file another user made (root's 0644, as
    after a root run) is opened read-only, so a non-root agent still takes the same lock."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        try:
            return os.open(path, os.O_RDONLY)
        except OSError:
            return exc


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
        self._lock_warned = False

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
        fd = _open_lock(self.write_lock)
        if isinstance(fd, OSError):
            if not self._lock_warned:
                self._lock_warned = True
                log.warning("cannot open SLURM write lock %s (%s); writing without it", self.write_lock, fd)
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
            raise SlurmUnavailable(first_error_line(text) or "SLURM unreachable", argv=argv, stderr=result.stderr)
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
    def unreachable(self) -> str | None:
        """Why SLURM cannot be reached, or None; cheap and spawns no process (the loop runs it every idle cycle).

        Native mode: ``sacctmgr`` must be on the PATH the commands get. Docker mode: the head-node container must
        exist and run (one Docker API call, no exec). Whether slurmdbd answers is left to the first cycle that
        reads SLURM: probing it would cost a process per idle cycle.
        """
        return self.executor.unreachable()

    @property
    def process_count(self) -> int:
        return self.executor.process_count

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
        for chunk in chunk_names(names, MAX_ACCOUNTS_ARG):
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
        pending: list[Op] = []

        def flush() -> None:
            if pending:
                batch = self._apply_batch_with_fallback(list(pending))
                for r in batch:
                    self._remember(r.op, r.ok)
                results.extend(batch)
                pending.clear()

        for op in ops:
            if render.is_sacctmgr(op):
                pending.append(op)
                continue
            flush()
            if isinstance(op, AddAccountsDescribed):
                results.append(self._apply_load(op))
                self._remember(op, results[-1].ok)
            elif isinstance(op, CancelJobs):
                results.append(self._apply_simple(op, render.argv(op)))
            elif isinstance(op, CancelUserJobs):
                results.append(self._apply_reported(op, render.argv(op), "wsa-scancel-failed "))
            elif isinstance(op, CreateHomedirs):
                results.append(self._apply_homedirs(op))
            else:
                raise TypeError(f"unknown op {op!r}")
        flush()
        return results

    def _apply_batch_with_fallback(self, ops: list[Op]) -> list[OpResult]:
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

    def _apply_batch(self, ops: list[Op], *, split_removals: bool = False) -> list[OpResult]:
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
            raise SlurmUnavailable(first_error_line(preamble), argv=argv, stderr=preamble)
        if reached == 0:
            text = preamble or result.stdout
            if is_transient_output(text):
                raise SlurmUnavailable(first_error_line(text) or "slurmdbd unreachable", argv=argv, stderr=text)
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

    def command_lines(self, op: Op) -> list[str]:
        """The ``sacctmgr`` command lines ``apply`` would run for ``op`` when the users' default accounts are not
        known (each removal on its own): printed by ``--diag-account``, never run there."""
        return self._lines(op)

    def _lines(
        self, op: Op, *, split_removals: bool = False, defaults: Mapping[str, str | None] | None = None
    ) -> list[str]:
        where_cluster = f" cluster={self.cluster}" if self.cluster else ""
        if split_removals and isinstance(op, RemoveAccounts):
            return [f"remove account where name={name}{where_cluster}" for name in op.names]
        if isinstance(op, RemoveUsers):
            return removal_lines(op, None if split_removals else defaults, where_cluster)
        return render.sacctmgr_lines(op, self.cluster)

    def _classify(self, op: Op, commands: list[str], outputs: list[str], exit_code: int) -> OpResult:
        all_already = True
        text = "\n".join(f"sacctmgr: {c}\n{o}" for c, o in zip(commands, outputs))
        for command, output in zip(commands, outputs):
            error = section_error(command, output, exit_code)
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
        for chunk in chunk_names(sorted(names), MAX_ACCOUNTS_ARG):
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
        if self._defaults is not None and render.is_sacctmgr(op):
            if ok:
                track_defaults(self._defaults, op)
            else:
                self._defaults = None  # half-applied or refused: no longer known
        if not ok or self._parents is None:
            return
        if isinstance(op, AddAccountsDescribed):
            for name, parent in load_parents(render.load_file(op, self.cluster_name())).items():
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
        data = render.load_file(op, cluster)
        wanted = load_parents(data)
        current = self._current_parents(list(wanted))
        moves = {n: (current[n], p) for n, p in wanted.items() if n in current and current[n] != p}
        if moves:
            return OpResult(op, False, error=AccountMoveRefused(moves))
        lines = len(op.entries) + len(getattr(op, "users", ()))
        result = self._write(argv, stdin=data, timeout=self._batch_timeout(1 + lines // 50))
        out = result.stdout
        if is_transient_output(out):
            raise SlurmUnavailable(first_error_line(out) or "slurmdbd unreachable", argv=argv, stderr=out)
        if any(m in out for m in ("Problem with", "error:", "fatal:", "You need to add")):
            return OpResult(op, False, error=SlurmCommandError(argv, result.exit_code, out, "", first_error_line(out)), output=out)
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
            return OpResult(op, False, error=SlurmUnavailable(first_error_line(text), argv=argv, stderr=result.stderr), output=text)
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
        argv = render.argv(op)
        result = self._run(argv)
        text = result.stdout + result.stderr
        failed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("wsa-homedir-failed ")]
        if result.exit_code != 0 or failed:
            msg = f"mkhomedir_helper failed for {', '.join(failed)}" if failed else None
            return OpResult(op, False, error=SlurmCommandError(argv, result.exit_code, result.stdout, result.stderr, msg), output=text)
        return OpResult(op, True, output=text)


# ------------------------------------------------------------------ pure helpers
def _sacct_time(dt: datetime) -> str:
    # astimezone() on a naive datetime takes it as the agent's local time
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


