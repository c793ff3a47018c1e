"""The Waldur side of the benchmark: stand-in data for the push/membership world and for the pull orders.

The stand-in runs in the driver process (``waldur_standin.testing.StandIn``, its own event-loop thread); the
measured agent always runs in a child process, so the agent's wall time, CPU and peak RSS are its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from waldur_standin.testing import StandIn

from .slurm_side import BenchSlurm

# Push: usage-based components in TRES-minutes, so that one-second jobs give non-zero amounts (0.02 CPU-min).
PUSH_TRES = """\
cpu: {label: CPU, measured_unit: CPU-minutes, accounting_type: usage, unit_factor: 1}
mem: {label: RAM, measured_unit: MB-minutes, accounting_type: usage, unit_factor: 1}
gres/gpu: {label: GPU, measured_unit: GPU-minutes, accounting_type: usage, unit_factor: 1}
"""
PUSH_COMPONENTS = [
    {"type": "cpu", "name": "CPU", "measured_unit": "CPU-minutes", "billing_type": "usage", "unit_factor": 1},
    {"type": "mem", "name": "RAM", "measured_unit": "MB-minutes", "billing_type": "usage", "unit_factor": 1},
    {"type": "gres/gpu", "name": "GPU", "measured_unit": "GPU-minutes", "billing_type": "usage", "unit_factor": 1},
]
# Pull: the usual production shape (limit-based CPU/GPU hours, usage-based memory with a limit).
PULL_TRES = """\
cpu: {label: CPU, measured_unit: CPU-Hours, accounting_type: limit, unit_factor: 60, limit: 10}
mem: {label: RAM, measured_unit: GB-Hours, accounting_type: usage, unit_factor: 61440, limit: 100}
gres/gpu: {label: GPU, measured_unit: GPU-Hours, accounting_type: limit, unit_factor: 60}
"""
PULL_COMPONENTS = [
    {"type": "cpu", "name": "CPU", "measured_unit": "CPU-Hours", "billing_type": "limit", "unit_factor": 60},
    {"type": "mem", "name": "RAM", "measured_unit": "GB-Hours", "billing_type": "usage", "unit_factor": 61440},
    {"type": "gres/gpu", "name": "GPU", "measured_unit": "GPU-Hours", "billing_type": "limit", "unit_factor": 60},
]
ORDER_LIMITS = {"cpu": 5, "gres/gpu": 1}


def snapshot(standin: StandIn, path: Path) -> Path:
    """The stand-in's whole state to a file (through /control/dump: a PUT of the state is capped at 1 MB)."""
    standin.control("POST", "dump", {"path": str(path)})
    return path


def restore(standin: StandIn, path: Path) -> None:
    standin.control("POST", "load", {"path": str(path)})
    standin.clear_requests()
PROJECTS_PER_CUSTOMER = 10


def agent_env(standin: StandIn, offering: str, tres_path: Path, default_account: str, **extra: str) -> dict[str, str]:
    env = {
        "WALDUR_API_URL": standin.url + "/api/",
        "WALDUR_API_TOKEN": standin.provider_token,
        "WALDUR_OFFERING_UUID": offering,
        "SLURM_DEPLOYMENT_TYPE": "native",
        "SLURM_DEFAULT_ACCOUNT": default_account,
        "SLURM_TRES_CONFIG_PATH": str(tres_path),
        "SLURM_COMMAND_TIMEOUT": "300",
        "REQUESTS_TIMEOUT": "60",
        "LOG_LEVEL": "WARNING",
    }
    env.update(extra)
    return env


@dataclass
class PushWorld:
    """N OK resources whose backend_ids are the bench push accounts; project k's team is user pair k, so the
    membership pass finds SLURM and Waldur in agreement (the steady state it runs in almost always)."""

    standin: StandIn
    slurm: BenchSlurm
    tres_path: Path
    offering: str = ""
    projects: dict[tuple[str, str], str] = field(default_factory=dict)
    resources: list[str] = field(default_factory=list)

    def setup(self) -> PushWorld:
        self.tres_path.write_text(PUSH_TRES)
        w = self.standin
        self.offering = w.setup_offering(PUSH_COMPONENTS, name="Bench SLURM (push)")
        customer = w.add_customer("Bench Research Org")
        users = {}
        for login in self.slurm.users:
            u = w.add_user("w-" + login, full_name=login)
            w.add_offering_user(self.offering, u["uuid"], login)
            users[login] = u["uuid"]
        for k in range(len(self.slurm.users)):
            pair = self.slurm.pair(k)
            project = w.add_project(customer, f"Bench project {k}")
            for login in pair:
                w.add_team_member(project, users[login], "member")
            self.projects[pair] = project
        return self

    def grow(self, n: int) -> None:
        """Resources 0..n-1, created in bulk per project (their Create orders done, plan periods open)."""
        start = len(self.resources)
        by_pair: dict[tuple[str, str], list[int]] = {}
        for i in range(start, n):
            by_pair.setdefault(self.slurm.pair(i), []).append(i)
        made: dict[int, str] = {}
        for pair, indices in by_pair.items():
            uuids = self.standin.create_resources(
                self.offering, self.projects[pair], len(indices), name_prefix="bench",
                backend_ids=[self.slurm.account_name(i) for i in indices],
            )
            made.update(zip(indices, uuids))
        self.resources.extend(made[i] for i in range(start, n))

    def env(self, **extra: str) -> dict[str, str]:
        # SLURM_DEFAULT_ACCOUNT is where pull would create customers; it must not be the bench users' default
        # account (the push root), or the membership pass would "repair" their defaults as if set to root.
        return agent_env(self.standin, self.offering, self.tres_path, self.slurm.pull_root, **extra)


@dataclass
class PullWorld:
    """N Create orders (pending-provider), each in its own project with a team of two users who have offering
    users; ten projects per customer. The state is snapshotted so that every run starts from the same orders."""

    standin: StandIn
    slurm: BenchSlurm
    tres_path: Path
    n: int
    offering: str = ""
    snapshot: Path | None = None
    users: list[str] = field(default_factory=list)

    def setup(self) -> PullWorld:
        self.tres_path.write_text(PULL_TRES)
        w = self.standin
        w.reset()
        self.offering = w.setup_offering(PULL_COMPONENTS, name="Bench SLURM (pull)")
        customer = ""
        for i in range(self.n):
            if i % PROJECTS_PER_CUSTOMER == 0:
                customer = w.add_customer(f"Bench Customer {i // PROJECTS_PER_CUSTOMER}")
            project = w.add_project(customer, f"Bench Project {i}")
            for suffix in ("a", "b"):
                login = f"{self.slurm.tag}u{i:04d}{suffix}"
                u = w.add_user("w-" + login, full_name=login)
                w.add_team_member(project, u["uuid"], "admin" if suffix == "a" else "member")
                w.add_offering_user(self.offering, u["uuid"], login)
                self.users.append(login)
            w.place_order(self.offering, project, name=f"Allocation {i}", limits=dict(ORDER_LIMITS))
        self.slurm.pull_users.update(self.users)
        self.snapshot = snapshot(w, self.tres_path.with_name(f"pull-{self.n}.state.json"))
        return self

    def restore(self) -> None:
        assert self.snapshot is not None
        restore(self.standin, self.snapshot)

    def env(self, **extra: str) -> dict[str, str]:
        return agent_env(self.standin, self.offering, self.tres_path, self.slurm.pull_root, **extra)
