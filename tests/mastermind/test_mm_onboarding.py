"""Issue 15's features that the 2024 server supports, against the REAL Mastermind (Oct 2024) and real SLURM:
the ignore lists, cancelling a leaving member's jobs, adopting an existing account, and ``--diag-account``.

(Enforcement and past-month usage are not here: the 2024 server has no set_paused/... actions, and files every
usage report under the current month; tests/mastermind/test_mm_load_usage.py shows the latter.)
"""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess

import pytest

from tests.mastermind.conftest import Site, subtree_of
from tests.mastermind.test_lifecycle import create, done
from tests.support.mastermind import AccessLog
from tests.support.slurm import submit_job, wait_jobs_in_sacct

pytestmark = [pytest.mark.mastermind, pytest.mark.slurm]


def sacctmgr(*args: str) -> None:
    subprocess.run(["sacctmgr", "-i", *args], check=True, capture_output=True, text=True, timeout=60)


def test_ignored_user_and_a_leaving_members_jobs(site: Site) -> None:
    w = site.world
    alice, dave, carol = w.member("alice"), w.member("dave"), w.member("carol")
    w.set_username(alice, "wsa_alice")
    w.set_username(dave, "wsa_dave")
    w.set_username(carol, "wsa_carol")
    knobs = {"SLURM_IGNORE_USERS": "wsa_carol", "SLURM_CANCEL_JOBS_OF_LEAVING_MEMBERS": "true"}

    order = w.order_create("keep manual", {"cpu": 5})
    site.pull_until(lambda: done(site, order["uuid"]), **knobs)
    res = w.resource(w.order(order["uuid"])["marketplace_resource_uuid"])
    account = res["backend_id"]
    # the ignored login is a member with a login, and still never added, in SLURM or in Waldur
    assert subtree_of(site.root)[account].users == {"wsa_alice", "wsa_dave"}
    assert w.associations(res["uuid"]) == {"wsa_alice", "wsa_dave"}
    sacctmgr("add", "user", "wsa_carol", f"account={account}")  # the site adds it by hand

    # carol leaves the team: her manual association stays. dave leaves while his job runs: the job is cancelled
    # before his association goes, in SLURM and in Waldur.
    job = submit_job("wsa_dave", account, seconds=120, time_limit_min=3)
    wait_jobs_in_sacct([job], states=frozenset({"RUNNING"}), timeout=60)
    w.remove_member(carol)
    w.remove_member(dave)
    run = site.pull(**knobs)
    assert run.returncode == 0, run.stderr[-3000:]
    assert wait_jobs_in_sacct([job])[job] == "CANCELLED"
    if "wsa_dave" in subtree_of(site.root)[account].users:
        # slurmdbd refused while the cancelled job was still ending: the next pass removes it
        run = site.pull(**knobs)
        assert run.returncode == 0, run.stderr[-3000:]
    assert subtree_of(site.root)[account].users == {"wsa_alice", "wsa_carol"}
    assert w.associations(res["uuid"]) == {"wsa_alice"}

    # nothing changed: no write anywhere, the manual association included
    mark = site.access.mark()
    idle = site.pull(**knobs)
    assert idle.returncode == 0 and idle.summary("membership")["writes"] == 0, idle.stderr[-3000:]
    assert AccessLog.writes(site.access.since(mark, world=w)) == []

    # Terminate: alice's association goes; the account stays for the ignored user's, and Waldur's resource ends
    w.terminate(res["uuid"])
    site.pull_until(lambda: w.resource(res["uuid"])["state"] == "Terminated", **knobs)
    assert subtree_of(site.root)[account].users == {"wsa_carol"}


def test_adopting_an_existing_account_and_the_refusals(site: Site) -> None:
    w = site.world
    alice = w.member("alice")
    w.set_username(alice, "wsa_alice")
    legacy, manual, group = (f"{p}{secrets.token_hex(3)}" for p in ("leg", "man", "grp"))
    for name in (legacy, manual, group):
        sacctmgr("add", "account", name, f"parent={site.root}", "description=made by hand")
    # `group` is the parent of an account the agent manages (its description names a resource)
    managed_child = f"hpc_{secrets.token_hex(3)}"
    sacctmgr("add", "account", managed_child, f"parent={group}", f"description=waldur resource {secrets.token_hex(16)}")
    knobs = {"SLURM_IGNORE_ACCOUNTS": manual}

    def create_naming(name: str, backend_id: str) -> tuple[dict, object]:
        """A Create order whose resource the provider has already pointed at ``backend_id``."""
        order = w.order_create(name, {"cpu": 5})
        w.staff.post(f"/api/marketplace-provider-resources/{order['marketplace_resource_uuid']}/set_backend_id/",
                     {"backend_id": backend_id})
        run = site.pull(**knobs)
        return order, run

    # adopted: the account is now Waldur's (its limits and the team), where it was, under its name
    order, run = create_naming("adopt", legacy)
    site.pull_until(lambda: done(site, order["uuid"]), **knobs)
    res = w.resource(w.order(order["uuid"])["marketplace_resource_uuid"])
    assert res["backend_id"] == legacy and res["state"] == "OK"
    tree = subtree_of(site.root)
    assert tree[legacy].parent == site.root
    assert tree[legacy].limits.get("cpu") == 5 * 60
    assert tree[legacy].users == {"wsa_alice"}

    # refused, with a message that names the account; SLURM is not touched
    before = subtree_of(site.root)
    for name, why in ((manual, "SLURM_IGNORE_ACCOUNTS"), (site.root, "default account"), (group, "an ancestor of")):
        order, run = create_naming("refuse", name)
        assert run.returncode in (0, 1), run.stderr[-3000:]
        refused = w.order(order["uuid"])
        assert refused["state"] in ("rejected", "erred"), refused
        assert f"account {name!r}" in run.stderr and why in run.stderr, run.stderr[-3000:]
        comment = refused.get("provider_rejection_comment") or refused.get("error_message") or ""
        if comment:  # the 2024 server keeps no comment on a rejection; where it keeps one, it names the account
            assert f"account {name!r}" in comment, comment
    assert subtree_of(site.root) == before


def test_diag_account_against_the_real_server(site: Site) -> None:
    w = site.world
    alice, bob = w.member("alice"), w.member("bob")
    w.set_username(alice, "wsa_alice")
    w.set_username(bob, "wsa_bob")
    _order, res = create(site, "diag me", {"cpu": 5})
    account = res["backend_id"]

    def diag(name: str, code: int = 0) -> dict:
        """--diag-account NAME --json: exit 0 when both sides agree, 1 when they differ."""
        mark = site.access.mark()
        run = site.pull("--diag-account", name, "--json")
        assert run.returncode == code, run.stderr[-3000:]
        assert AccessLog.writes(site.access.since(mark)) == []  # it reads only
        assert w.agent_token not in run.stdout + run.stderr
        return json.loads(run.stdout)

    # just made: both views match, by account name or by the resource's UUID
    doc = diag(account)
    assert doc["match"] is True and doc["differences"] == [] and doc["commands"] == [], doc["differences"]
    assert doc["resource"]["uuid"].replace("-", "") == res["uuid"].replace("-", "")
    assert doc["server_flavour"] == "2024"
    assert doc["slurm"]["users"] == doc["waldur"]["expected_users"] == ["wsa_alice", "wsa_bob"]
    assert doc["waldur"]["associations"] == ["wsa_alice", "wsa_bob"]  # the 2024 server holds them
    assert diag(res["uuid"])["account"] == account

    # SLURM drifts by hand: every difference is marked, and the printed commands make SLURM match again
    sacctmgr("remove", "user", "wsa_bob", f"account={account}")
    sacctmgr("modify", "account", account, "set", "GrpTRESMins=cpu=99")
    drift = diag(account, 1)
    assert drift["match"] is False
    # (bob's default account may have been this one: the shared test logins move between tests' accounts)
    kinds = {d["what"] for d in drift["differences"]}
    assert kinds - {"default_account"} == {"users", "limits", "associations"}, drift["differences"]
    assert drift["commands"][0].startswith(f"sacctmgr -i add user wsa_bob account={account}")
    default = [f"sacctmgr -i modify user where name=wsa_bob set DefaultAccount={account}"] if "default_account" in kinds else []
    assert drift["commands"][1:] == [*default, f"sacctmgr -i modify account where name={account} set GrpTRESMins=cpu=300"]
    for command in drift["commands"]:
        subprocess.run(shlex.split(command), check=True, capture_output=True, timeout=60)
    fixed = diag(account)
    assert fixed["match"] is True and fixed["commands"] == [], fixed["differences"]

    # an allocation the offering does not have: exit 2 and one line that names it
    run = site.pull("--diag-account", "hpc_no_such_account")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == ("waldur-slurm-agent: --diag-account 'hpc_no_such_account': no resource "
                                                   "of the offering has this SLURM account as its backend_id")
