"""Membership and usage reporting against the REAL Mastermind (Oct 2024) and real SLURM.

The usage check reads `sacct` itself, with its own parsing and arithmetic (not the agent's), and compares it with
what the server holds after a push.
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal

import pytest

from tests.mastermind.conftest import Site, subtree_of
from tests.mastermind.test_lifecycle import create, done
from tests.support.mastermind import AccessLog
from tests.support.slurm import submit_job, wait_jobs_in_sacct

pytestmark = [pytest.mark.mastermind, pytest.mark.slurm]

# Usage in TRES-minutes (unit_factor 1), so that jobs of a few seconds bill whole cents.
FACTORS = {"cpu": 1, "mem": 1, "gres/gpu": 1}
TRES_IN_MINUTES = """\
cpu:
  label: CPU
  measured_unit: CPU-minutes
  accounting_type: limit
  unit_factor: 1
mem:
  label: RAM
  measured_unit: MB-minutes
  accounting_type: usage
  unit_factor: 1
  limit: 100000000
gres/gpu:
  label: GPU
  measured_unit: GPU-minutes
  accounting_type: usage
  unit_factor: 1
  limit: 100000
"""


def test_membership_join_leave_and_username_change(site: Site) -> None:
    w = site.world
    alice = w.member("alice")
    w.set_username(alice, "wsa_alice")
    _order, res = create(site, "team")
    account = res["backend_id"]
    assert subtree_of(site.root)[account].users == {"wsa_alice"}

    # A member joins and gets a login: the next pass adds the association, in SLURM and in Waldur.
    carol = w.member("carol")
    w.set_username(carol, "wsa_carol")
    run = site.pull()
    assert run.returncode == 0, run.stderr[-3000:]
    assert subtree_of(site.root)[account].users == {"wsa_alice", "wsa_carol"}
    assert w.associations(res["uuid"]) == {"wsa_alice", "wsa_carol"}

    # A member leaves: the association goes.
    w.remove_member(alice)
    run = site.pull()
    assert run.returncode == 0, run.stderr[-3000:]
    assert subtree_of(site.root)[account].users == {"wsa_carol"}
    assert w.associations(res["uuid"]) == {"wsa_carol"}

    # An offering user's login changes: the old login leaves, the new one joins.
    w.set_username(carol, "wsa_dave")
    run = site.pull()
    assert run.returncode == 0, run.stderr[-3000:]
    assert subtree_of(site.root)[account].users == {"wsa_dave"}
    assert w.associations(res["uuid"]) == {"wsa_dave"}

    # Nothing changed: a pass reads, and writes nothing.
    mark = site.access.mark()
    run = site.pull()
    assert run.returncode == 0 and run.summary("membership")["writes"] == 0
    assert AccessLog.writes(site.access.since(mark, world=site.world)) == []


def sacct_usage(account: str) -> tuple[dict[str, Decimal], dict[tuple[str, str], Decimal]]:
    """This month's usage of ``account`` from sacct, parsed here: (component -> amount, (component, user) -> amount)."""
    out = subprocess.run(
        ["sacct", "-a", "-X", "-n", "-P", "--noconvert", f"--accounts={account}", "--starttime=now-1days",
         "--endtime=now", "--format=User,ElapsedRaw,AllocTRES"],
        capture_output=True, text=True, check=True, env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
    ).stdout
    minutes: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for line in out.splitlines():
        user, elapsed, tres = line.split("|")
        for item in tres.split(","):
            if "=" not in item:
                continue
            key, value = item.split("=", 1)
            if key not in FACTORS:
                continue
            scale = {"M": 1, "G": 1024, "T": 1024 * 1024}.get(value[-1], None)
            amount = Decimal(value[:-1]) * scale if scale is not None else Decimal(value)
            minutes[(key, user)] += amount * int(elapsed) / 60
    cents = Decimal("0.01")
    per_user = {k: (v / FACTORS[k[0]]).quantize(cents, ROUND_HALF_UP) for k, v in minutes.items()}
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for (key, _user), v in minutes.items():
        totals[key] += v
    return {k: (v / FACTORS[k]).quantize(cents, ROUND_HALF_UP) for k, v in totals.items()}, per_user


def test_push_usage_limits_and_no_writes_when_nothing_changed(site: Site) -> None:
    w = site.world
    site.tres_path.write_text(TRES_IN_MINUTES)
    alice, bob = w.member("alice"), w.member("bob")
    w.set_username(alice, "wsa_alice")
    w.set_username(bob, "wsa_bob")
    _order, res = create(site, "billing", {"cpu": 50})
    account = res["backend_id"]

    jobs = [
        submit_job("wsa_alice", account, cpus=1, mem_mb=300, gpus=1, seconds=3),
        submit_job("wsa_bob", account, cpus=2, mem_mb=700, seconds=4),
    ]
    wait_jobs_in_sacct(jobs)

    pushed = site.push()
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    totals, per_user = sacct_usage(account)
    held = {k: Decimal(v) for k, v in w.usages(res["uuid"]).items()}
    assert held == {k: v for k, v in totals.items() if k in FACTORS}, (held, totals)
    held_users = {k: Decimal(v) for k, v in w.user_usages(res["uuid"]).items()}
    assert set(held_users) == {k for k, v in per_user.items()}
    for key, amount in per_user.items():
        assert abs(held_users[key] - amount) <= Decimal("0.01"), (key, held_users[key], amount)
    # the limits agree already (pull wrote them): none reported, and only limit-type keys on the resource
    assert w.resource(res["uuid"])["limits"] == {"cpu": 50}

    # Nothing changed: the next push reads and writes nothing.
    mark = site.access.mark()
    again = site.push()
    assert again.returncode == 0 and again.summary("push")["writes"] == 0
    assert AccessLog.writes(site.access.since(mark, world=site.world)) == []

    # An admin changes the account's CPU limit in SLURM by hand: push reports it, as a limit-type key only.
    subprocess.run(["sacctmgr", "-i", "modify", "account", account, "set", "GrpTRESMins=cpu=70"], check=True,
                   capture_output=True)
    mark = site.access.mark()
    changed = site.push()
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert w.resource(res["uuid"])["limits"] == {"cpu": 70}
    writes = AccessLog.writes(site.access.since(mark, world=site.world))
    assert [e[1] for e in writes] == [f"/api/marketplace-slurm-remote/{res['uuid']}/set_limits/"], writes

    # A push after an Update: the new limits agree with SLURM, so only new usage could be written (none).
    upd = w.update_limits(res["uuid"], {"cpu": 80})
    site.pull_until(lambda: done(site, upd))
    mark = site.access.mark()
    after_update = site.push()
    assert after_update.returncode == 0 and AccessLog.writes(site.access.since(mark, world=site.world)) == []
    assert {k: Decimal(v) for k, v in w.usages(res["uuid"]).items()} == held


def test_plan_switch_in_the_middle_of_the_month_is_not_billed_twice(mastermind, slurm_root, tmp_path) -> None:
    """The server keeps one usage record per plan period; after a switch, the new period's record must hold only
    the usage since the switch, so that the month's records add up to the month-to-date total once."""
    from tests.support.mastermind import build_world
    world = build_world(mastermind, plans=("Default", "Second"))
    tres = tmp_path / "tres.yaml"
    tres.write_text(TRES_IN_MINUTES)
    site = Site(world, slurm_root, tres, AccessLog())
    alice = world.member("alice")
    world.set_username(alice, "wsa_alice")
    _order, res = create(site, "switch", {"cpu": 50})
    account = res["backend_id"]

    wait_jobs_in_sacct([submit_job("wsa_alice", account, cpus=1, mem_mb=500, seconds=3)])
    assert site.push().returncode == 0
    before, _ = sacct_usage(account)

    switch = world.switch_plan(res["uuid"], "Second")
    site.pull_until(lambda: done(site, switch))
    wait_jobs_in_sacct([submit_job("wsa_alice", account, cpus=2, mem_mb=700, seconds=3)])
    pushed = site.push()
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    totals, _ = sacct_usage(account)
    assert totals["mem"] > before["mem"]
    records = world.usage_records(res["uuid"])
    billed: dict[str, Decimal] = defaultdict(Decimal)
    for r in records:
        billed[r["type"]] += Decimal(r["usage"])
    assert len([r for r in records if r["type"] == "mem"]) == 2  # one per plan period
    assert billed["mem"] == totals["mem"] and billed["cpu"] == totals["cpu"], (records, totals)

    # and a push with nothing new writes nothing
    mark = site.access.mark()
    assert site.push().returncode == 0
    assert AccessLog.writes(site.access.since(mark, world=world)) == []
