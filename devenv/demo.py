"""The end-to-end demo behind ``devenv/demo``: a Waldur stand-in, the real local SLURM cluster, and the
agent run as real processes, exactly as an operator would run it.

Steps: load the components, place Create orders as a consumer would, run the pull daemon until the
accounts exist, run real jobs as the ordered users, run the push daemon, and print a report that compares
the usage Waldur received (per account and per user) with this month's usage read from sacct by the demo
itself (its own parsing, not the agent's). The agent logs at INFO, so each cycle's summary line shows.
Exits non-zero on any mismatch, including usage that sacct shows and Waldur never received (a component never
reported shows as "—", not "0.00"; it matches only when sacct has nothing for it either).

``--keep`` leaves the stand-in running at the end and prints the environment to drive the agent by hand
(Ctrl-C stops it).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from waldur_standin.testing import StandIn

from waldur_slurm.domain.components import load_components
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.cli.executor import NativeExecutor
from waldur_slurm.slurm.ops import CancelJobs, RemoveAccounts

REPO = Path(__file__).resolve().parents[1]
# Minute units, so that a demo's few seconds of jobs show up as non-zero numbers (see the example file for
# production units such as k-Hours).
TRES_FILE = REPO / "devenv" / "demo-components.yaml"
DEFAULT_ACCOUNT = "waldur"  # the agent's embedded default SLURM_DEFAULT_ACCOUNT
PROFILE = os.environ.get("WSA_DEMO_PROFILE", "8")
KEEP_ENV_FILE = Path("/tmp/wsa-demo-agent.env")  # --keep: left behind for running the agent by hand
MB = {"K": Decimal(1) / 1024, "M": Decimal(1), "G": Decimal(1024), "T": Decimal(1024 * 1024)}

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


def month_start(now: datetime) -> datetime:
    """This billing month's first instant (the demo's TRES file bills in UTC, the agent's default)."""
    return now.astimezone(timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def own_tres(text: str) -> dict[str, Decimal]:
    """``cpu=2,mem=256M,gres/gpu=1`` -> counts, memory in MB: the demo's own reading, not the agent's parser."""
    out: dict[str, Decimal] = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key == "mem":
            unit = value[-1:].upper()
            out[key] = Decimal(value[:-1]) * MB[unit] if unit in MB else Decimal(value) / (1024 * 1024)
        elif value:
            out[key] = Decimal(value)
    return out


def sacct_usage(accounts: list[str], start: datetime) -> tuple[dict[tuple[str, str], Decimal],
                                                                dict[tuple[str, str, str], Decimal]]:
    """This month's usage straight from sacct: AllocTRES x ElapsedRaw in TRES-minutes, per account and per
    (account, user). Its own query, parsing and arithmetic, independent of the agent's."""
    out = sh(
        ["sacct", "-X", "-n", "-P", "--noconvert", "--allusers", "--duplicates",
         "-S", start.strftime("%Y-%m-%dT%H:%M:%S"), "-E", "now",
         f"--accounts={','.join(accounts)}", "--format=Account,User,AllocTRES,ElapsedRaw"],
        env={**os.environ, "TZ": "UTC"},
    ).stdout
    per_account: dict[tuple[str, str], Decimal] = {}
    per_user: dict[tuple[str, str, str], Decimal] = {}
    for line in out.splitlines():
        account, user, alloc, elapsed = line.split("|")
        for key, value in own_tres(alloc).items():
            minutes = value * int(elapsed or 0) / 60
            per_account[(account, key)] = per_account.get((account, key), Decimal(0)) + minutes
            per_user[(account, user, key)] = per_user.get((account, user, key), Decimal(0)) + minutes
    return per_account, per_user


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devenv/demo")
    parser.add_argument("--keep", action="store_true",
                        help="leave the Waldur stand-in running at the end and print the environment to run the "
                             "agent by hand (Ctrl-C stops it)")
    args = parser.parse_args(argv)
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
        env_file = KEEP_ENV_FILE if args.keep else Path(tmp) / "agent.env"
        env_file.write_text(
            "\n".join(
                [
                    f"WALDUR_API_URL={waldur.url}/api/",
                    f"WALDUR_API_TOKEN={waldur.provider_token}",
                    f"WALDUR_OFFERING_UUID={offering}",
                    "SLURM_DEPLOYMENT_TYPE=native",
                    f"SLURM_TRES_CONFIG_PATH={TRES_FILE}",
                    "LOG_LEVEL=INFO",  # each cycle's one summary line shows
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

        names = {f"hpc_{consumer}": "customer 'Research Org'"}
        names.update({f"hpc_{project}": f"project {project_name!r}"
                      for (project, _r, _t), (project_name, _rn, _tm) in zip(projects, ORDERS)})
        ok = report(waldur.state(), orders, accounts, components, names)
        if args.keep:
            keep_running(waldur, env_file)
    return 0 if ok else 1


def keep_running(waldur: StandIn, env_file: Path) -> None:
    say("--keep: the Waldur stand-in stays up; drive the agent by hand from another shell")
    print(f"stand-in: {waldur.url}   environment: {env_file} (mode 0600, holds the demo token)")
    print(env_file.read_text(), end="")
    print(f"""
  cd {REPO}
  WALDUR_SYNC_DIRECTION=pull .venv/bin/waldur-slurm-agent --env-file {env_file} --once
  WALDUR_SYNC_DIRECTION=push .venv/bin/waldur-slurm-agent --env-file {env_file} --once
  .venv/bin/waldur-slurm-agent --env-file {env_file} --diag

Press Ctrl-C to stop the stand-in.""", flush=True)
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # taken by sigwait, not by the default handlers
    received = signal.sigwait(stop)
    print(f"{signal.Signals(received).name}: stopping the stand-in", flush=True)


def state_of(state: dict, kind: str, uuid: str) -> dict:
    items = state[kind]
    if isinstance(items, dict):
        return items[uuid]
    return next(item for item in items if item["uuid"] == uuid)


def report(state: dict, orders: list[dict], accounts: dict[str, str], components: dict,
           names: dict[str, str]) -> bool:
    """Print what happened; True when every usage Waldur holds matches sacct and none is missing."""
    say("Orders")
    for order in orders:
        o = state_of(state, "orders", order["uuid"])
        r = state_of(state, "resources", order["resource_uuid"])
        print(f"{o['type']:<9} {o['state']:<6} resource {r['name']!r:<22} {r['state']:<4} backend_id={r['backend_id']}")

    resource_names = {account: state_of(state, "resources", uuid)["name"] for uuid, account in accounts.items()}
    names = {**names, **{account: f"resource {name!r}" for account, name in resource_names.items()}}
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
            label = "" if user else names.get(account.strip(), "")
            print(f"{account:<40} {user or '':<10} {label:<28} {limits}")

    start = month_start(datetime.now(timezone.utc))
    say(f"Usage reported to Waldur vs sacct (this month: since {start:%Y-%m-%d %H:%M} UTC)")
    expected, expected_users = sacct_usage(sorted(accounts.values()), start)
    usages = state["usages"]
    user_usages = list(state.get("user_usages", {}).values())
    ok = True

    def row(label: str, key: str, reported: Decimal | None, sacct_value: Decimal, unit: str) -> None:
        nonlocal ok
        if reported is None:
            # Never reported is not "0.00": shown as such. Waldur reads a missing value as zero (the agent
            # writes nothing for an idle component), so it matches only when sacct has nothing either.
            good = sacct_value == 0
            shown, verdict = "—", "✔ idle, nothing to report" if good else "✘ MISMATCH: never reported"
        else:
            good = reported == sacct_value
            shown, verdict = str(reported), "✔" if good else "✘ MISMATCH"
        ok &= good
        print(f"{label:<52} {key:<9} {shown:>10} {sacct_value:>10}  {unit} {verdict}")

    print(f"{'account (resource)':<52} {'component':<9} {'Waldur':>10} {'sacct':>10}  unit")
    for resource_uuid, account in accounts.items():
        for key, component in components.items():
            records = [u for u in usages.values() if u.get("resource_uuid") == resource_uuid and u.get("type") == key]
            reported = Decimal(str(records[-1]["usage"])).quantize(Decimal("0.01")) if records else None
            sacct_value = (expected.get((account, key), Decimal(0)) / component.unit_factor).quantize(Decimal("0.01"))
            row(f"{account} ({resource_names[account]})", key, reported, sacct_value, component.measured_unit)

    say("Per-user usage reported to Waldur vs sacct")
    print(f"{'account / user':<52} {'component':<9} {'Waldur':>10} {'sacct':>10}  unit")
    by_usage = {uuid: u for uuid, u in usages.items()}
    reported_users: dict[tuple[str, str, str], Decimal] = {}
    for uu in user_usages:
        cu = by_usage.get(uu.get("component_usage_uuid"))
        if cu is not None and cu.get("resource_uuid") in accounts:
            reported_users[(accounts[cu["resource_uuid"]], uu["username"], cu["type"])] = Decimal(str(uu["usage"]))
    for (account, user, key) in sorted(set(expected_users) | set(reported_users)):
        if key not in components:
            continue
        component = components[key]
        sacct_value = (expected_users.get((account, user, key), Decimal(0)) / component.unit_factor).quantize(Decimal("0.01"))
        row(f"{account} / {user}", key, reported_users.get((account, user, key)), sacct_value, component.measured_unit)

    print("\nall usage matches sacct" if ok else "\nMISMATCH between Waldur and sacct (see ✘ above)")
    return ok


if __name__ == "__main__":
    sys.exit(main())
