"""The SLURM side of the benchmark: bench-owned accounts, users and real jobs on the local cluster.

Every name a run creates starts with its tag ``wsab<6 hex>``: two root-level accounts whose description is
``wsa-bench root pid <driver pid>``, the accounts below them, the four Linux job owners (``<tag>j1..4``) and
the SLURM users of the pull scenario. Cleanup removes exactly that: this run's tag at the end, and at start
the tags whose driver process is gone (a crashed run). Two runs at once (a developer's full run and the test
suite's quick run) therefore never remove each other's accounts; they only slow each other down, which the
samples record.

Setup is batched: all new accounts and users of a step go through ONE ``sacctmgr -i`` process (multi-name
``add account`` in chunks, one ``add user`` per user pair). Jobs: an array job carries ONE account, so
arrays cannot give each of N accounts a record; instead each bench user submits one small job per account
in a single shell loop (``sbatch`` takes ~3 ms here), four users in parallel. The cost is the cluster's
throughput (16 advertised CPUs, ~8 one-second jobs per second), not the submission.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from waldur_slurm.slurm.cli.client import DEFAULT_WRITE_LOCK, SlurmClient
from waldur_slurm.slurm.cli.executor import NativeExecutor
from waldur_slurm.slurm.ops import AddAccounts, AddUsers

from .common import log, retry

BENCH_MARK = "wsa-bench root"  # description prefix of a run's root accounts; "pid N" follows
BENCH_ORG = "wsa-bench"
TAG_PREFIX = "wsab"
JOB_OWNERS = 4
ACCOUNT_CHUNK = 500  # names per `add account` / `remove account` command
JOB_SECONDS = 1  # ElapsedRaw >= 1, so every account has non-zero usage to report
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")


def sh(argv: Sequence[str], *, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "COLUMNS": "1000000"})


def job_owners(tag: str) -> tuple[str, ...]:
    return tuple(f"{tag}j{k}" for k in range(1, JOB_OWNERS + 1))


def ensure_linux_users(users: Iterable[str]) -> None:
    """The job owners; sacctmgr does not need Linux users, sbatch does."""
    for user in users:
        if sh(["id", "-u", user]).returncode != 0:
            r = sh(["useradd", "-M", "-s", "/usr/sbin/nologin", user])
            if r.returncode != 0 and sh(["id", "-u", user]).returncode != 0:
                raise RuntimeError(f"useradd {user} failed: {r.stderr.strip()}")


def remove_linux_users(tag: str) -> None:
    for line in open("/etc/passwd").read().splitlines():
        name = line.split(":", 1)[0]
        if name.startswith(tag) and name[len(tag) :].startswith("j"):
            sh(["userdel", name])


def submit_job_loops(per_user: dict[str, list[str]]) -> list[str]:
    """One `sleep 1` job per listed account, submitted by the user it is listed under: one shell loop per
    user, the users in parallel. Returns the job ids."""
    script = (
        'for a in "$@"; do sbatch --parsable --job-name=wsa-bench -A "$a" --mem=10M -c1 --time=1 '
        f'--chdir=/tmp --output=/dev/null --wrap "sleep {JOB_SECONDS}" || exit 1; done'
    )
    t0 = time.monotonic()
    procs = {
        user: subprocess.Popen(["runuser", "-u", user, "--", "sh", "-c", script, "sh", *accounts],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for user, accounts in per_user.items()
    }
    job_ids: list[str] = []
    for user, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        ids = [line.split(";")[0] for line in out.split()]
        job_ids.extend(ids)
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch as {user} failed after {len(ids)} jobs: {err.strip()[:300]}")
    log(f"SLURM: {len(job_ids)} jobs submitted in {time.monotonic() - t0:.1f} s")
    return job_ids


def wait_jobs(users: Sequence[str], job_ids: Sequence[str], started: datetime, timeout: float = 1800) -> float:
    """Until ``users`` have nothing queued and sacct shows every one of ``job_ids`` terminal; the seconds waited."""
    t0 = time.monotonic()
    names = ",".join(users)
    while sh(["squeue", "-h", "-u", names, "-o", "%i"]).stdout.strip():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"bench jobs still queued after {timeout:.0f} s")
        time.sleep(1)
    expected = set(job_ids)
    while True:
        r = sh(["sacct", "-X", "-n", "-P", "--allusers", "-u", names, "-S", started.strftime("%Y-%m-%dT%H:%M:%S"),
                "--format=JobID,State"])
        done = {line.split("|")[0] for line in r.stdout.splitlines()
                if "|" in line and line.split("|")[1].split(" ")[0] in TERMINAL}
        if r.returncode == 0 and expected <= done:
            break
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{len(expected - done)} bench jobs not terminal in sacct after {timeout:.0f} s")
        time.sleep(1)
    elapsed = time.monotonic() - t0
    log(f"SLURM: {len(expected)} jobs terminal in sacct after {elapsed:.1f} s of waiting")
    return elapsed


def chunks(items: Sequence[str], size: int) -> list[tuple[str, ...]]:
    return [tuple(items[i : i + size]) for i in range(0, len(items), size)]


def pair_of(users: Sequence[str], index: int) -> tuple[str, str]:
    """The two users of the index-th push account; the first one runs its job."""
    k = index % len(users)
    return users[k], users[(k + 1) % len(users)]


@dataclass
class BenchSlurm:
    """One bench run's SLURM state: the push root (allocations + jobs) and the pull root."""

    tag: str
    # Setup only: thousands of inserts into a busy slurmdbd can take many minutes.
    client: SlurmClient = field(default_factory=lambda: SlurmClient(NativeExecutor(), timeout=3600))
    push_accounts: list[str] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    pull_users: set[str] = field(default_factory=set)
    started: datetime = field(default_factory=datetime.now)

    @property
    def users(self) -> tuple[str, ...]:
        return job_owners(self.tag)

    def pair(self, index: int) -> tuple[str, str]:
        return pair_of(self.users, index)

    @property
    def push_root(self) -> str:
        return f"{self.tag}"

    @property
    def pull_root(self) -> str:
        return f"{self.tag}p"

    def account_name(self, index: int) -> str:
        # about the length of the agent's own names (hpc_<5 hex>_<name>, at most 34 characters)
        return f"{self.push_root}_{index:05d}_allocation"

    # ------------------------------------------------------------------ setup
    def _apply(self, ops: list, what: str) -> None:  # type: ignore[type-arg]
        def go() -> None:
            results = self.client.apply(ops)
            bad = [f"{r.op.describe()}: {r.error}" for r in results if not r.ok]
            if bad:
                raise RuntimeError(f"{what}: " + "; ".join(bad)[:600])

        retry(what, go)

    def create_roots(self) -> None:
        """Both roots; the bench users get the push root as their default account (so removing any
        allocation never touches a default association)."""
        ensure_linux_users(self.users)
        self._apply(
            [
                AddAccounts((self.push_root, self.pull_root), "root", description=f"{BENCH_MARK} pid {os.getpid()}",
                            organization=BENCH_ORG),
                AddUsers(self.users, (self.push_root,), default_account=self.push_root),
            ],
            "create bench roots",
        )

    def grow_push(self, n: int) -> list[str]:
        """Accounts 0..n-1 exist under the push root, each with its user pair; returns the new ones."""
        start = len(self.push_accounts)
        if n <= start:
            return []
        new = [self.account_name(i) for i in range(start, n)]
        ops: list = [  # type: ignore[type-arg]
            AddAccounts(chunk, self.push_root, description="wsa-bench allocation", organization=BENCH_ORG)
            for chunk in chunks(new, ACCOUNT_CHUNK)
        ]
        by_pair: dict[tuple[str, str], list[str]] = {}
        for i, name in enumerate(new, start):
            by_pair.setdefault(self.pair(i), []).append(name)
        for pair, names in sorted(by_pair.items()):
            ops.extend(AddUsers(pair, chunk) for chunk in chunks(names, ACCOUNT_CHUNK))
        t0 = time.monotonic()
        before = self.client.executor.process_count
        self._apply(ops, f"add {len(new)} accounts")
        log(f"SLURM: {len(new)} accounts + associations in {time.monotonic() - t0:.1f} s "
            f"({self.client.executor.process_count - before} process)")
        self.push_accounts.extend(new)
        return new

    def submit_jobs(self, indices: Iterable[int]) -> int:
        """One `sleep 1` job per account, submitted by its first user; one shell loop per user, in parallel."""
        per_user: dict[str, list[str]] = {}
        for i in indices:
            per_user.setdefault(self.pair(i)[0], []).append(self.push_accounts[i])
        ids = submit_job_loops(per_user)
        self.job_ids.extend(ids)
        return len(ids)

    def wait_jobs(self, timeout: float = 1800) -> float:
        """Until the bench users have nothing queued and sacct shows every submitted job terminal."""
        return wait_jobs(self.users, self.job_ids, self.started, timeout)

    # ------------------------------------------------------------------ cleanup
    def reset_pull(self) -> None:
        """Remove what a pull cycle made: its users (all their associations), then the accounts below the pull root."""
        users = sorted(self.pull_users)
        for chunk in chunks(users, ACCOUNT_CHUNK):
            retry("remove pull users", lambda c=chunk: _sacctmgr(f"remove user where name={','.join(c)}"))
        names = [n for n in subtree(self.client, self.pull_root) if n != self.pull_root]
        remove_accounts(names)

    def cleanup(self) -> None:
        self.pull_users.clear()
        cleanup_tag(self.client, self.tag)


@contextmanager
def write_locked() -> Iterator[None]:
    """The machine-wide write lock every SlurmClient writer takes (concurrent sacctmgr writers corrupt
    slurmdbd 22.05's association tree; see waldur_slurm/slurm/client.py). Held by the bench's raw writes."""
    try:
        fd: int | None = os.open(DEFAULT_WRITE_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        fd = None  # as SlurmClient does: write without the lock rather than not at all
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _sacctmgr(line: str) -> str:
    """One removal command; "Nothing deleted" (already gone) is success."""
    with write_locked():
        r = sh(["sacctmgr", "-i"], stdin=line + "\n", timeout=600)
    text = r.stdout + r.stderr
    if " Deleting " in text or " Nothing deleted" in text:
        return text
    raise RuntimeError(f"sacctmgr {line[:60]}... (rc {r.returncode}): {text.strip()[-400:]}")


def subtree(client: SlurmClient, root: str) -> list[str]:
    state = client.read_state()
    children: dict[str, list[str]] = {}
    for acc in state.accounts.values():
        children.setdefault(acc.parent, []).append(acc.name)
    out: list[str] = []
    todo = [root] if root in state.accounts else []
    while todo:
        name = todo.pop()
        out.append(name)
        todo.extend(children.get(name, []))
    return out


def remove_accounts(names: Sequence[str]) -> None:
    for chunk in chunks(list(names), ACCOUNT_CHUNK):
        retry("remove accounts", lambda c=chunk: _sacctmgr(f"remove account where name={','.join(c)}"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_tag(client: SlurmClient, tag: str) -> int:
    """Remove everything of one run: its jobs, its SLURM users (all their associations, defaults included,
    in one command per chunk), its accounts (subtrees of its roots, plus records left without an
    association by a removal cut short), and its Linux job owners. Returns the accounts removed."""
    owners = job_owners(tag)
    sh(["scancel", "-u", ",".join(owners)])
    state = retry("read state", client.read_state)
    users = sorted(u for u in state.default_account if u.startswith(tag))
    for chunk in chunks(users, ACCOUNT_CHUNK):
        retry("remove bench users", lambda c=chunk: _sacctmgr(f"remove user where name={','.join(c)}"))
    roots = [name for name, acc in state.accounts.items() if acc.parent == "root" and name.startswith(tag)]
    names: list[str] = []
    for root in roots:
        names.extend(subtree(client, root))
    for _ in range(30):
        try:
            remove_accounts(names)
            break
        except RuntimeError as exc:
            if "Job(s) active" not in str(exc):
                raise
            time.sleep(1)  # cancelled jobs still completing
    r = sh(["sacctmgr", "-n", "-P", "list", "account", "format=account,description"])
    orphans = [line.split("|")[0] for line in r.stdout.splitlines()
               if line.startswith(tag) and "|wsa-bench" in line and line.split("|")[0] not in names]
    if orphans:
        remove_accounts(orphans)
    remove_linux_users(tag)
    if names or orphans or users:
        log(f"cleanup {tag}: removed {len(names) + len(orphans)} accounts and {len(users)} users")
    return len(names) + len(orphans)


def cleanup_bench(client: SlurmClient | None = None) -> int:
    """Remove what crashed runs left: the tags whose root says ``pid N`` of a process that is gone (and the
    roots of bench versions that wrote no pid). A run in progress is never touched."""
    client = client or SlurmClient(NativeExecutor(), timeout=300)
    r = sh(["sacctmgr", "-n", "-P", "list", "account", "format=account,description"])
    dead: set[str] = set()
    for line in r.stdout.splitlines():
        name, _, desc = line.partition("|")
        if not (name.startswith(TAG_PREFIX) and desc.startswith(BENCH_MARK)):
            continue
        pid = desc[len(BENCH_MARK) :].strip().removeprefix("pid").strip()
        if not pid.isdigit() or not _alive(int(pid)):
            dead.add(name[: len(TAG_PREFIX) + 6])
    return sum(cleanup_tag(client, tag) for tag in sorted(dead))
