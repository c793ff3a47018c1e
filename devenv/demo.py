"""The end-to-end demo behind ``devenv/demo``: a Waldur stand-in, the real local SLURM cluster, and the
agent run as real processes, exactly as an operator would run it.

Steps: load the components, place Create orders as a consumer would, run the pull daemon until the
accounts exist, run real jobs as the ordered users, run the push daemon, and print a report that compares
the usage Waldur received with what sacct says.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from waldur_standin.testing import StandIn

from waldur_slurm.components import load_components
from waldur_slurm.slurm.client import SlurmClient
from waldur_slurm.slurm.executor import NativeExecutor
from waldur_slurm.slurm.ops import CancelJobs, RemoveAccounts
from waldur_slurm.slurm.parsing import parse_tres

REPO = Path(__file__).resolve().parents[1]
# Minute units, so that a demo's few seconds of jobs show up as non-zero numbers (see the example file for
# production units such as k-Hours).
TRES_FILE = REPO / "devenv" / "demo-components.yaml"
DEFAULT_ACCOUNT = "waldur"  # the agent's embedded default SLURM_DEFAULT_ACCOUNT
PROFILE = os.environ.get("WSA_DEMO_PROFILE", "8")

# (project, resource name, team: [(Waldur username, cluster login, job cpus, job GPUs, job seconds)])
ORDERS = [
    ("Climate Modelling", "Ocean model 2026", [("alice", "wsa_alice", 2, 1, 6), ("bob", "wsa_bob", 4, 0, 4)]),
    ("Genome Assembly", "Assembly runs", [("carol", "wsa_carol", 1, 0, 5)]),
]


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def sh(argv: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kw)


def agent(env_file: Path, direction: str | None, *args: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WALDUR_", "SLURM_"))}
    if direction:
        env["WALDUR_SYNC_DIRECTION"] = direction
    argv = [sys.executable, "-m", "waldur_slurm.main", "--env-file", str(env_file), *args]
    print("$ " + " ".join(["python -m waldur_slurm.main", *args]) + (f"   (WALDUR_SYNC_DIRECTION={direction})" if direction else ""), flush=True)
    return subprocess.run(argv, env=env, cwd=REPO, timeout=300, check=False).returncode


def reset_slurm(slurm: SlurmClient) -> None:
    """Idempotence: remove what an earlier demo left under the default account, or create the account."""
    state = slurm.read_state()
    if DEFAULT_ACCOUNT not in state.accounts:
        sh(["sacctmgr", "-i", "add", "account", DEFAULT_ACCOUNT, "parent=root", "description=waldur demo", "organization=waldur"])
        return
    children: dict[str, list[str]] = {}
    for account in state.accounts.values():
        children.setdefault(account.parent, []).append(account.name)
    below, todo = [], list(children.get(DEFAULT_ACCOUNT, []))
    while todo:
        name = todo.pop()
        below.append(name)
        todo.extend(children.get(name, []))
    if below:
        slurm.apply([CancelJobs(tuple(below)), RemoveAccounts(tuple(reversed(below)))])
        print(f"removed {len(below)} accounts left by an earlier demo run")


def wait_for_jobs(job_ids: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = sh(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "--format=JobID,State"]).stdout
        states = dict(line.split("|", 1) for line in out.splitlines() if "|" in line)
        if len(states) == len(job_ids) and all(s in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for s in states.values()):
            time.sleep(1.5)  # let the accounting record settle (sacct shows COMPLETED within ~1 s)
            return
        time.sleep(1)
    raise SystemExit(f"demo: jobs {job_ids} did not finish in {timeout:.0f} s")


def sacct_usage(accounts: list[str]) -> dict[tuple[str, str], Decimal]:
    """Expected usage straight from sacct, independently of the agent: AllocTRES x ElapsedRaw, in TRES-minutes."""
    out = sh(
        ["sacct", "-X", "-n", "-P", "--noconvert", "--allusers", "--duplicates", "-S", "now-1days", "-E", "now",
         f"--accounts={','.join(accounts)}", "--format=Account,AllocTRES,ElapsedRaw"]
    ).stdout
    totals: dict[tuple[str, str], Decimal] = {}
    for line in out.splitlines():
        account, alloc, elapsed = line.split("|")
        for key, value in parse_tres(alloc).items():
            totals[(account, key)] = totals.get((account, key), Decimal(0)) + value * int(elapsed or 0) / 60
    return totals


def main() -> int:
    components = load_components(TRES_FILE)
    slurm = SlurmClient(NativeExecutor(), timeout=60)
    say(f"Local SLURM cluster: {slurm.version()}; resetting the '{DEFAULT_ACCOUNT}' subtree")
    reset_slurm(slurm)

    with StandIn(profile=PROFILE) as waldur, tempfile.TemporaryDirectory() as tmp:
        say(f"Waldur stand-in (profile {PROFILE}) at {waldur.url}")
        offering = waldur.setup_offering(components=[], name="HPC cluster (demo)")
        consumer = waldur.add_customer("Research Org")
        projects = []
        for project_name, resource_name, team in ORDERS:
            project = waldur.add_project(consumer, project_name)
            for username, login, *_ in team:
                user = waldur.add_user(username, full_name=username.title())
                waldur.add_team_member(project, user["uuid"], "admin" if login == team[0][1] else "member")
                waldur.add_offering_user(offering, user["uuid"], login)
            projects.append((project, resource_name, team))
        env_file = Path(tmp) / "agent.env"
        env_file.write_text(
            "\n".join(
                [
                    f"WALDUR_API_URL={waldur.url}/api/",
                    f"WALDUR_API_TOKEN={waldur.provider_token}",
                    f"WALDUR_OFFERING_UUID={offering}",
                    "SLURM_DEPLOYMENT_TYPE=native",
                    f"SLURM_TRES_CONFIG_PATH={TRES_FILE}",
                    "LOG_LEVEL=WARNING",
                ]
            )
            + "\n"
        )
        os.chmod(env_file, 0o600)

        say("Publishing the components of the TRES file to the offering")
        if agent(env_file, None, "--load-components"):
            return 1

        say("Placing Create orders as a consumer would")
        orders = []
        for project, resource_name, _team in projects:
            order = waldur.place_order(offering, project, name=resource_name, limits={})
            orders.append(order)
            print(f"order {order['uuid']}: Create '{resource_name}' -> {order['state']}")

        say("Running the pull daemon until every order is done")
        for attempt in range(1, 6):
            agent(env_file, "pull", "--once")
            state = waldur.state()
            pending = [o for o in orders if state_of(state, "orders", o["uuid"])["state"] != "done"]
            if not pending:
                break
        else:
            print("demo: orders did not complete", file=sys.stderr)
            return 1

        state = waldur.state()
        accounts = {o["resource_uuid"]: state_of(state, "resources", o["resource_uuid"])["backend_id"] for o in orders}
        say("Running real jobs as the ordered users")
        job_ids = []
        for (project, resource_name, team), order in zip(projects, orders):
            account = accounts[order["resource_uuid"]]
            for _username, login, cpus, gpus, seconds in team:
                argv = ["runuser", "-u", login, "--", "sbatch", "--parsable", f"--account={account}", f"-c{cpus}",
                        "--mem=256M", "--time=2", "--output=/dev/null", f"--wrap=sleep {seconds}"]
                if gpus:
                    argv.append(f"--gres=gpu:{gpus}")
                result = sh(argv, cwd="/tmp")
                if result.returncode:
                    print(f"sbatch failed: {result.stderr.strip()}", file=sys.stderr)
                    return 1
                job_ids.append(result.stdout.strip().split(";")[0])
                print(f"{login}: job {job_ids[-1]} in {account} ({cpus} CPUs, {gpus} GPU, {seconds} s)")
        wait_for_jobs(job_ids)

        say("Running the push daemon")
        if agent(env_file, "push", "--once"):
            return 1

        report(waldur.state(), orders, accounts, components)
    return 0


def state_of(state: dict, kind: str, uuid: str) -> dict:
    items = state[kind]
    if isinstance(items, dict):
        return items[uuid]
    return next(item for item in items if item["uuid"] == uuid)


def report(state: dict, orders: list[dict], accounts: dict[str, str], components: dict) -> None:
    say("Orders")
    for order in orders:
        o = state_of(state, "orders", order["uuid"])
        r = state_of(state, "resources", order["resource_uuid"])
        print(f"{o['type']:<9} {o['state']:<6} resource {r['name']!r:<22} {r['state']:<4} backend_id={r['backend_id']}")

    say(f"SLURM accounts and users under '{DEFAULT_ACCOUNT}'")
    tree = sh(["sacctmgr", "-n", "-P", "list", "assoc", "tree", "format=account,user,grptresmins"]).stdout
    printing = False
    for line in tree.splitlines():
        name = line.split("|")[0]
        if name.strip() == DEFAULT_ACCOUNT:
            printing, depth = True, len(name) - len(name.lstrip())
        elif printing and len(name) - len(name.lstrip()) <= depth:
            break
        if printing:
            account, user, limits = line.split("|")
            print(f"{account:<40} {user or '':<10} {limits}")

    say("Usage reported to Waldur vs sacct (this month)")
    expected = sacct_usage(sorted(accounts.values()))
    usages = list(state["usages"].values())
    print(f"{'account':<36} {'component':<9} {'Waldur':>10} {'sacct':>10}  unit")
    ok = True
    for resource_uuid, account in accounts.items():
        for key, component in components.items():
            reported = [Decimal(str(u["usage"])) for u in usages if u.get("resource_uuid") == resource_uuid and u.get("type") == key]
            waldur_value = (reported[-1] if reported else Decimal(0)).quantize(Decimal("0.01"))
            sacct_value = component.to_waldur(expected.get((account, key), Decimal(0)))
            match = "✔" if waldur_value == sacct_value else "✘"
            ok &= waldur_value == sacct_value
            print(f"{account:<36} {key:<9} {waldur_value:>10} {sacct_value:>10}  {component.measured_unit} {match}")
    print("\nall usage matches sacct" if ok else "\nMISMATCH between Waldur and sacct")


if __name__ == "__main__":
    sys.exit(main())
