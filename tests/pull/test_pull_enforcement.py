"""Enforcement of Waldur 8's paused / downscaled / restrict_member_access flags on the real cluster.

The flags are set as staff does it, through the stand-in's 8.x ``set_<flag>`` actions; SLURM is the real
local cluster, jobs are real jobs of the Linux test users. Every count (SLURM processes, Waldur requests)
is exact.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pull.conftest import PullEnv, read_state, sacctmgr, tree_of
from tests.support.slurm import job_states, submit_job, wait_jobs_in_sacct
from waldur_slurm.slurm.model import AccountControls
from waldur_slurm.slurm.ops import AddAccountsDescribed, AddUsers
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.cli.executor import NativeExecutor
from waldur_slurm.domain import naming

pytestmark = pytest.mark.slurm


def controls(account: str) -> AccountControls:
    return read_state().controls[account]


def posts(env: PullEnv, since: int) -> list[str]:
    return [e["path"] for e in env.standin.requests(since) if e["method"] != "GET"]


def created(env: PullEnv, pull, **kw) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    order = env.order(**kw)
    report = pull.run_cycle()
    assert report.done == 1, report.notes
    res = order["resource_uuid"]
    return res, env.waldur_resource(res)["backend_id"]


def cancel_and_wait(*jobs: str) -> None:
    """End this test's jobs before the fixture removes the accounts (a loaded cluster takes a while)."""
    subprocess.run(["scancel", *jobs], capture_output=True, timeout=60)
    wait_jobs_in_sacct(list(jobs), timeout=180)


@pytest.fixture
def qos_name() -> Iterator[str]:
    """A QoS name of this test's own (QoS are global on the shared cluster); removed after the test."""
    name = f"wsaq{secrets.token_hex(4)}"
    yield name
    subprocess.run(["sacctmgr", "-i", "remove", "qos", name], capture_output=True, timeout=60)


def test_pause_blocks_new_jobs_keeps_running_ones_and_unpause_restores_the_operators_limits(
        pull_env_8: PullEnv, tmp_path: Path) -> None:
    env = pull_env_8
    env.user(username="wsa_alice")
    out: list[str] = []
    pull = env.reconciler(env.settings(WALDUR_STATE_DIR=str(tmp_path / "state")), out=out)
    res, account = created(env, pull)
    sacctmgr("-i", "modify", "account", "where", f"name={account}", "set", "GrpJobs=7")  # the operator's own
    running = submit_job("wsa_alice", account, seconds=90, time_limit_min=3)
    wait_jobs_in_sacct([running], states=frozenset({"RUNNING"}))

    assert env.standin.set_resource_flag(res, "paused", True) == 200
    dry = pull.run_cycle(dry_run=True)
    assert any(f"pause account {account}" in line for line in out), (dry.summary(), dry.notes, out)
    assert (dry.slurm_processes, controls(account).grp_jobs) == (1, 7)  # one read; nothing changed

    mark = len(env.standin.requests())
    report = pull.run_cycle()
    assert report.slurm_processes == 2, report.notes  # one read, ONE sacctmgr write for the enforcement
    assert report.http_requests == 2 and posts(env, mark) == []  # orders, resources; no Waldur write
    assert report.enforced == {"paused": 1, "downscaled": 0, "restrict_member_access": 0}
    assert controls(account) == AccountControls(grp_jobs=0, grp_submit_jobs=0)
    with pytest.raises(AssertionError, match="AssocGrpSubmitJobsLimit|accounting/QOS policy"):
        submit_job("wsa_alice", account)
    assert job_states([running])[running] == "RUNNING"
    record = json.loads((tmp_path / "state" / "enforcement.json").read_text())
    assert record == {"accounts": {account: {"paused": {"grp_jobs": 7, "grp_submit_jobs": None}}}}

    idle = pull.run_cycle()
    assert (idle.slurm_processes, idle.writes) == (1, 0)  # the read only: nothing to change

    assert env.standin.set_resource_flag(res, "paused", False) == 200
    # a new agent process (the records come from the state directory)
    fresh = env.reconciler(env.settings(WALDUR_STATE_DIR=str(tmp_path / "state")))
    report = fresh.run_cycle()
    assert report.slurm_processes == 2
    assert controls(account) == AccountControls(grp_jobs=7)  # exactly the operator's value, GrpSubmitJobs none
    assert job_states([running])[running] == "RUNNING"
    assert fresh.run_cycle().slurm_processes == 0  # nothing flagged, nothing recorded: SLURM untouched
    cancel_and_wait(running)


def test_pause_cancels_jobs_only_when_opted_in(pull_env_8: PullEnv, tmp_path: Path) -> None:
    env = pull_env_8
    env.user(username="wsa_bob")
    pull = env.reconciler(env.settings(WALDUR_STATE_DIR=str(tmp_path), SLURM_CANCEL_JOBS_OF_PAUSED="true"))
    res, account = created(env, pull)
    job = submit_job("wsa_bob", account, seconds=90, time_limit_min=3)
    wait_jobs_in_sacct([job], states=frozenset({"RUNNING"}))
    env.standin.set_resource_flag(res, "paused", True)
    report = pull.run_cycle()
    assert report.slurm_processes == 3  # read, the sacctmgr batch, one scancel
    assert wait_jobs_in_sacct([job])[job] == "CANCELLED"
    assert pull.run_cycle().slurm_processes == 1  # cancelled once, when the pause began


def test_downscale_puts_the_account_in_the_qos_and_restores_its_own_list(
        pull_env_8: PullEnv, tmp_path: Path, qos_name: str) -> None:
    env = pull_env_8
    env.user(username="wsa_carol")
    pull = env.reconciler(env.settings(WALDUR_STATE_DIR=str(tmp_path), SLURM_DOWNSCALED_QOS=qos_name))
    res, account = created(env, pull)
    env.standin.set_resource_flag(res, "downscaled", True)
    report = pull.run_cycle()
    assert report.slurm_processes == 2, report.notes  # add qos + modify in the same sacctmgr process
    assert controls(account) == AccountControls(qos=(qos_name,))
    assert qos_name in sacctmgr("list", "qos", "format=name").split()
    job = submit_job("wsa_carol", account, seconds=60)
    r = subprocess.run(["squeue", "-h", "-j", job, "-o", "%q"], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == qos_name  # a job without --qos is in it
    cancel_and_wait(job)

    env.standin.set_resource_flag(res, "downscaled", False)
    assert pull.run_cycle().slurm_processes == 2
    assert controls(account) == AccountControls()  # inherited again, as before
    assert pull.run_cycle().enforced == {"paused": 0, "downscaled": 0, "restrict_member_access": 0}


def test_restriction_removes_members_keeps_manual_ones_and_restores_with_defaults(
        pull_env_8: PullEnv, tmp_path: Path) -> None:
    env = pull_env_8
    _, alice = env.user("a")
    _, bob = env.user("b")
    _, kept = env.user("k")
    pull = env.reconciler(env.settings(WALDUR_STATE_DIR=str(tmp_path), SLURM_IGNORE_USERS=kept))
    # SLURM_IGNORE_USERS: the ignored member is never added by the Create either
    res, account = created(env, pull)
    admin = f"adm{secrets.token_hex(3)}"
    slurm = SlurmClient(NativeExecutor(), timeout=30)
    assert all(r.ok for r in slurm.apply([AddUsers((admin, kept), (account,))]))
    assert tree_of(env.root)[account].users == {alice, bob, admin, kept}
    alice_default = read_state().default_account[alice]
    assert alice_default == account

    env.standin.set_resource_flag(res, "restrict_member_access", True)
    report = pull.run_cycle()
    assert report.slurm_processes == 2, report.notes
    assert report.http_requests == 3  # orders, resources, offering users
    assert tree_of(env.root)[account].users == {admin, kept}
    membership = pull.run_membership()
    assert membership.writes == 0 and tree_of(env.root)[account].users == {admin, kept}  # not re-added

    env.standin.set_resource_flag(res, "restrict_member_access", False)
    assert pull.run_cycle().slurm_processes == 2
    state = read_state()
    assert {u for u in state.accounts[account].users} == {alice, bob, admin, kept}
    assert state.default_account[alice] == account


def test_thousand_paused_accounts_take_one_read_and_one_write(pull_env_8: PullEnv, tmp_path: Path) -> None:
    env = pull_env_8
    n = 1000
    uuids = env.standin.create_resources(env.offering, env.project, n, backend_ids=[f"e{secrets.token_hex(6)}" for _ in range(n)])
    names = {u: env.standin.state()["resources"][u]["backend_id"] for u in uuids}
    slurm = SlurmClient(NativeExecutor(), timeout=120)
    (made,) = slurm.apply([AddAccountsDescribed(
        tuple((names[u], naming.resource_marker(u)) for u in uuids), env.root)])
    assert made.ok, made.error
    for u in uuids:
        env.standin.patch_resource(u, paused=True)
    pull = env.reconciler(env.settings(WALDUR_STATE_DIR=str(tmp_path)))
    mark = len(env.standin.requests())
    report = pull.run_cycle()
    assert report.slurm_processes == 2, report.notes  # one read_state, ONE sacctmgr for all 1,000 pauses
    assert report.writes == 1 and report.enforced == {"paused": n, "downscaled": 0, "restrict_member_access": 0}
    resource_pages = -(-n // 300)
    # the flavour probe (first use of the client), the orders, the resource pages; no Waldur write
    assert report.http_requests == 1 + 1 + resource_pages and posts(env, mark) == []
    state = read_state()
    assert all(state.controls[names[u]] == AccountControls(0, 0) for u in uuids)
    again = pull.run_cycle()
    assert (again.slurm_processes, again.writes, again.http_requests) == (1, 0, 1 + resource_pages)
    for u in uuids:
        env.standin.patch_resource(u, paused=False)
    back = pull.run_cycle()
    assert back.slurm_processes == 2 and back.writes == 1
    state = read_state()
    assert all(state.controls[names[u]] == AccountControls() for u in uuids)


def test_a_leaving_members_jobs_are_cancelled_before_the_association_goes(pull_env: PullEnv) -> None:
    env = pull_env
    dave_uuid, _ = env.user(username="wsa_dave")
    _, stays = env.user("s")
    pull = env.reconciler(env.settings(SLURM_CANCEL_JOBS_OF_LEAVING_MEMBERS="true"))
    res, account = created(env, pull)
    job = submit_job("wsa_dave", account, seconds=120, time_limit_min=3)
    env.standin.remove_team_member(env.project, dave_uuid)
    report = pull.run_membership()
    assert report.slurm_processes == 3, report.notes  # read, ONE shell of scancels, the sacctmgr batch
    assert wait_jobs_in_sacct([job])[job] == "CANCELLED"
    users = tree_of(env.root)[account].users
    if "wsa_dave" in users:  # slurmdbd refused while the cancelled job was still ending: the next pass removes it
        assert pull.run_membership().slurm_processes == 3
    assert tree_of(env.root)[account].users == {stays}
