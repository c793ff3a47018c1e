"""Issue 12 item 3: a Terminate reports the account's final usage, including the job it cancels, before the
order completes. Real SLURM (a real job running in the account), real stand-in, both profiles."""

from __future__ import annotations

import subprocess
import time
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import pytest

from tests.pull.conftest import PullEnv, tree_of
from tests.support.slurm import job_states, submit_job, wait_jobs_in_sacct

pytestmark = pytest.mark.slurm

# TRES-minutes as Waldur units, so that a job of seconds gives visible amounts; limits far above the job's
# time limit, so that GrpTRESMins enforcement lets it start.
MINUTES_TRES = """\
cpu: {label: CPU, measured_unit: CPU-minutes, accounting_type: limit, unit_factor: 1}
mem: {label: RAM, measured_unit: MB-minutes, accounting_type: usage, unit_factor: 1, limit: 1000000}
gres/gpu: {label: GPU, measured_unit: GPU-minutes, accounting_type: limit, unit_factor: 1}
"""


def _billed(job: str) -> dict[str, Decimal]:
    """What the job used, from the test's own sacct call: TRES x ElapsedRaw / 60, half up to cents."""
    out = subprocess.run(["sacct", "-n", "-P", "--noconvert", "--allocations", f"--jobs={job}",
                          "--format=ElapsedRaw,AllocTRES"], capture_output=True, text=True, timeout=60, check=True).stdout
    elapsed, tres = out.strip().splitlines()[0].split("|")
    values = dict(item.split("=", 1) for item in tres.split(","))
    cpu = Fraction(int(values["cpu"]) * int(elapsed), 60)
    mem = Fraction(int(values["mem"].rstrip("M")) * int(elapsed), 60)
    return {k: (Decimal(v.numerator) / Decimal(v.denominator)).quantize(Decimal("0.01"), ROUND_HALF_UP)
            for k, v in (("cpu", cpu), ("mem", mem))}


def test_terminate_reports_the_final_usage_of_the_job_it_cancels(pull_env: PullEnv) -> None:
    env = pull_env
    env.tres_path.write_text(MINUTES_TRES)
    env.user(username="wsa_alice")
    created = env.order(name="final usage", limits={"cpu": 10000, "gres/gpu": 10})
    res = created["resource_uuid"]
    pull = env.reconciler()
    for _ in range(3):  # 2024: the allocation may appear only after the approval's cycle
        pull.run_cycle()
        if env.waldur_order(created["uuid"])["state"] == "done":
            break
    account = env.waldur_resource(res)["backend_id"]
    assert account in tree_of(env.root)

    job = submit_job("wsa_alice", account, cpus=2, mem_mb=200, seconds=600, time_limit_min=15)
    wait_jobs_in_sacct([job], states=frozenset({"RUNNING"}))
    time.sleep(3)  # let it run a few seconds: the usage the Terminate must not lose

    terminated = env.order("Terminate", resource=res)
    for _ in range(30):  # the first cycle cancels the job; the account goes once slurmdbd has its end
        pull.run_cycle()
        if env.waldur_order(terminated["uuid"])["state"] == "done":
            break
        time.sleep(1)
    assert env.waldur_order(terminated["uuid"])["state"] == "done"
    assert job_states([job])[job] == "CANCELLED"
    assert account not in tree_of(env.root)

    expected = _billed(job)
    assert expected["cpu"] > 0
    usages = {u["type"]: Decimal(u["usage"]) for u in env.standin.state()["usages"].values() if u["resource_uuid"] == res}
    assert usages == expected  # before the fix: nothing was ever reported for the job
    state = env.standin.state()
    users = {(state["usages"][uu["component_usage_uuid"]]["type"], uu["username"]): Decimal(uu["usage"])
             for uu in state["user_usages"].values() if state["usages"][uu["component_usage_uuid"]]["resource_uuid"] == res}
    assert users == {("cpu", "wsa_alice"): expected["cpu"], ("mem", "wsa_alice"): expected["mem"]}
    # reported before completion: the order was still executing when the usage was written
    log = env.standin.requests()
    set_usage = max(e["seq"] for e in log if e["path"].endswith("/set_usage/"))
    done = max(e["seq"] for e in log if f"/marketplace-orders/{terminated['uuid']}/" in e["path"] and e["method"] == "POST")
    assert set_usage < done
    assert "set_state_erred" not in env.order_posts(terminated["uuid"])


def test_a_transient_failure_of_the_final_report_makes_the_terminate_wait(pull_env_8: PullEnv) -> None:
    env = pull_env_8
    env.tres_path.write_text(MINUTES_TRES)
    env.user(username="wsa_bob")
    created = env.order(name="waits", limits={"cpu": 10000, "gres/gpu": 10})
    res = created["resource_uuid"]
    pull = env.reconciler()
    assert pull.run_cycle().done == 1
    account = env.waldur_resource(res)["backend_id"]
    job = submit_job("wsa_bob", account, cpus=1, mem_mb=100, seconds=2)
    wait_jobs_in_sacct([job])

    terminated = env.order("Terminate", resource=res)
    env.standin.inject_fault("/api/marketplace-component-usages/set_usage/", status=503, count=None, method="POST")
    report = pull.run_cycle()
    assert (report.done, report.failed, report.deferred) == (0, 0, 1), report.notes
    assert "final usage not reported yet" in "\n".join(report.notes)
    assert env.waldur_order(terminated["uuid"])["state"] == "executing"  # waits: not completed, not erred
    assert account not in tree_of(env.root)  # SLURM's part is done; sacct keeps the job records

    env.standin.clear_faults()
    report = pull.run_cycle()  # the account is gone: the retry reads sacct by the resource's backend_id
    assert (report.done, report.failed) == (1, 0), report.notes
    assert env.waldur_order(terminated["uuid"])["state"] == "done"
    usages = {u["type"]: Decimal(u["usage"]) for u in env.standin.state()["usages"].values() if u["resource_uuid"] == res}
    assert usages == _billed(job)
