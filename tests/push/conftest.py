"""Push tests: the real SLURM cluster (accounts under this test's ``slurm_root``) and a real stand-in.

``push_env`` gives one environment per test and Waldur profile: an offering, a project, a facade, a SLURM
client, and helpers to create accounts (ONE batched sacctmgr process), resources, settings and reporters,
and to read back what Waldur stored. Expectations are computed by the tests themselves from a raw ``sacct``
call (``raw_sacct``), never with the code under test.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from waldur_standin.testing import StandIn

from tests.support.waldur import make_client
from waldur_slurm.config import Settings, load_settings
from waldur_slurm.push.reporter import PushReporter
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.cli.executor import NativeExecutor
from waldur_slurm.slurm.ops import AddAccounts, AddUsers
from waldur_slurm.waldur.client import WaldurClient

# SLURM-side TRES file: TRES-minutes, so that seconds-long test jobs give visible amounts.
MINUTES_YAML = """
cpu: {label: CPU, measured_unit: CPU-minutes, accounting_type: usage, unit_factor: 1}
mem: {label: RAM, measured_unit: MB-minutes, accounting_type: usage, unit_factor: 1}
gres/gpu: {label: GPU, measured_unit: GPU-minutes, accounting_type: usage, unit_factor: 1}
"""
MINUTES_COMPONENTS = [
    {"type": "cpu", "name": "CPU", "measured_unit": "CPU-minutes", "billing_type": "usage", "unit_factor": 1},
    {"type": "mem", "name": "RAM", "measured_unit": "MB-minutes", "billing_type": "usage", "unit_factor": 1},
    {"type": "gres/gpu", "name": "GPU", "measured_unit": "GPU-minutes", "billing_type": "usage", "unit_factor": 1},
]
CENT = Decimal("0.01")


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class RawJob:
    job_id: str
    account: str
    user: str
    alloc: dict[str, Decimal]
    elapsed: int
    state: str
    start: datetime | None = None  # UTC; --truncate puts an earlier job's start at the window start


def _tres(text: str) -> dict[str, Decimal]:
    """AllocTRES as sacct prints it with --noconvert: mem carries a unit letter, M being the base."""
    out: dict[str, Decimal] = {}
    for part in filter(None, text.split(",")):
        key, value = part.split("=", 1)
        scale = {"K": Decimal(1) / 1024, "M": Decimal(1), "G": Decimal(1024), "T": Decimal(1024**2)}
        if value[-1] in scale:
            out[key] = Decimal(value[:-1]) * scale[value[-1]]
        else:
            out[key] = Decimal(value)
    return out


def raw_sacct(accounts: Sequence[str], start: datetime, end: datetime, *, duplicates: bool = True) -> list[RawJob]:
    """The test's own sacct read (not SlurmClient): allocations in [start, end), truncated to it."""
    fmt = "%Y-%m-%dT%H:%M:%S"
    argv = [
        "sacct", "--parsable2", "--noheader", "--noconvert", "--allusers", "--allocations", "--truncate",
        f"--starttime={start.astimezone(timezone.utc).strftime(fmt)}", f"--endtime={end.astimezone(timezone.utc).strftime(fmt)}",
        f"--accounts={','.join(accounts)}", "--format=JobID,Account,User,AllocTRES,ElapsedRaw,State,Start",
    ]  # fmt: skip
    if duplicates:
        argv.append("--duplicates")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, env={"TZ": "UTC", "PATH": "/usr/bin:/bin", "LC_ALL": "C"})
    assert r.returncode == 0, r.stderr
    jobs = []
    for line in r.stdout.splitlines():
        job_id, account, user, alloc, elapsed, state, start = line.split("|")
        began = datetime.strptime(start, fmt).replace(tzinfo=timezone.utc) if start[:1].isdigit() else None
        jobs.append(RawJob(job_id, account, user, _tres(alloc), int(elapsed), state.split(" ")[0], began))
    return jobs


def expected_usage(jobs: Sequence[RawJob], factors: dict[str, int]) -> tuple[dict[tuple[str, str], Decimal], dict[tuple[str, str, str], Decimal]]:
    """(account, type) -> amount and (account, type, user) -> amount, in Waldur units, from raw records."""
    totals: dict[tuple[str, str], Decimal] = {}
    users: dict[tuple[str, str, str], Decimal] = {}
    for job in jobs:
        for key, factor in factors.items():
            if key in job.alloc and job.elapsed:
                seconds = job.alloc[key] * job.elapsed
                totals[(job.account, key)] = totals.get((job.account, key), Decimal(0)) + seconds
                users[(job.account, key, job.user)] = users.get((job.account, key, job.user), Decimal(0)) + seconds
    def conv(d: dict[Any, Decimal]) -> dict[Any, Decimal]:
        return {k: cents(v / 60 / factors[k[1]]) for k, v in d.items()}
    return conv(totals), conv(users)


@dataclass
class PushEnv:
    standin: StandIn
    root: str
    tmp: Path
    profile: str
    offering: str = ""
    project: str = ""
    client: WaldurClient | None = None
    slurm: SlurmClient = field(default_factory=lambda: SlurmClient(NativeExecutor(), timeout=60))
    clients: list[WaldurClient] = field(default_factory=list)

    def setup(self, components: list[dict[str, Any]] | None = None) -> PushEnv:
        self.offering = self.standin.setup_offering(components or MINUTES_COMPONENTS)
        self.project = self.standin.add_project(self.standin.add_customer("Research Org"), "Project A")
        self.client = self.new_client()
        return self

    def new_client(self) -> WaldurClient:
        client = make_client(self.standin, self.offering)
        self.clients.append(client)
        return client

    def account(self, suffix: str) -> str:
        return f"{self.root}_{suffix}"

    def add_accounts(
        self, suffixes: Sequence[str], *, users: dict[str, Sequence[str]] | None = None, limits: dict[str, int] | None = None
    ) -> list[str]:
        """Accounts under the test root, created (with their users: suffix -> users) through ONE sacctmgr process."""
        names = tuple(self.account(s) for s in suffixes)
        ops: list[Any] = [AddAccounts(names, self.root, description="push test", organization="pytest", limits=limits or {})]
        for suffix, members in (users or {}).items():
            ops.append(AddUsers(tuple(members), (self.account(suffix),)))
        before = self.slurm.executor.process_count
        results = self.slurm.apply(ops)
        assert all(r.ok for r in results), [str(r.error) for r in results if not r.ok]
        assert self.slurm.executor.process_count - before == 1
        return list(names)

    def add_resources(self, backend_ids: Sequence[str], *, limits: dict[str, Any] | None = None, state: str = "OK") -> list[str]:
        return self.standin.create_resources(
            self.offering, self.project, len(backend_ids), backend_ids=list(backend_ids), limits=limits, state=state
        )

    def settings(self, yaml_text: str = MINUTES_YAML, **env: str) -> Settings:
        path = self.tmp / "components.yaml"
        path.write_text(yaml_text)
        base = {
            "WALDUR_API_URL": self.standin.url,
            "WALDUR_API_TOKEN": self.standin.provider_token,
            "WALDUR_OFFERING_UUID": self.offering,
            "WALDUR_SYNC_DIRECTION": "push",
            "SLURM_DEPLOYMENT_TYPE": "native",
            "SLURM_TRES_CONFIG_PATH": str(path),
        }
        base.update(env)
        return load_settings(base)

    def reporter(self, settings: Settings | None = None, *, now: Callable[[], datetime] | None = None, **kw: Any) -> PushReporter:
        assert self.client is not None
        extra: dict[str, Any] = dict(kw)
        if now is not None:
            extra["now"] = now
        extra.setdefault("echo", lambda line: None)
        return PushReporter(settings or self.settings(), self.client, self.slurm, **extra)

    # ---------------------------------------------------------------- what Waldur stored
    def resource(self, uuid: str) -> dict[str, Any]:
        return self.standin.state()["resources"][uuid]

    def usages(self, period: str) -> dict[tuple[str, str], Decimal]:
        """(resource uuid, type) -> usage of billing period "YYYY-MM-01"."""
        st = self.standin.state()
        return {(u["resource_uuid"], u["type"]): Decimal(u["usage"]) for u in st["usages"].values() if u["billing_period"] == period}

    def user_usages(self, period: str) -> dict[tuple[str, str, str], Decimal]:
        st = self.standin.state()
        out = {}
        for uu in st["user_usages"].values():
            cu = st["usages"][uu["component_usage_uuid"]]
            if cu["billing_period"] == period:
                out[(cu["resource_uuid"], cu["type"], uu["username"])] = Decimal(uu["usage"])
        return out

    def mark(self) -> int:
        log = self.standin.requests()
        return log[-1]["seq"] if log else 0

    def requests_since(self, seq: int) -> list[dict[str, Any]]:
        return self.standin.requests(since=seq)

    def close(self) -> None:
        for c in self.clients:
            c.close()


def writes(log: list[dict[str, Any]]) -> list[str]:
    return [f"{e['method']} {e['route'] or e['path']}" for e in log if e["method"] != "GET"]


@pytest.fixture(params=["8", "2024"])
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _push_env(profile: str, slurm_root: str, tmp_path: Path) -> Iterator[PushEnv]:
    with StandIn(profile=profile) as server:
        env = PushEnv(standin=server, root=slurm_root, tmp=tmp_path, profile=profile)
        try:
            yield env
        finally:
            env.close()


@pytest.fixture
def push_env(profile: str, slurm_root: str, tmp_path: Path) -> Iterator[PushEnv]:
    """Both Waldur profiles (test ids [8] and [2024])."""
    yield from _push_env(profile, slurm_root, tmp_path)


@pytest.fixture
def push_env_8(slurm_root: str, tmp_path: Path) -> Iterator[PushEnv]:
    """Profile 8 only: for behaviour that happens before any flavour-specific Waldur call."""
    yield from _push_env("8", slurm_root, tmp_path)


def replace_settings(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **changes)
