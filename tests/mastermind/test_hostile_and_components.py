"""Hostile values and component mismatches through the REAL Mastermind: what a consumer or provider can type
reaches the agent exactly as the server stores it."""

from __future__ import annotations

import pytest

from tests.mastermind.conftest import Site, subtree_of
from tests.mastermind.test_lifecycle import done
from tests.support.mastermind import DEFAULT_COMPONENTS, DEFAULT_TRES, AccessLog, Mastermind, build_world

pytestmark = [pytest.mark.mastermind, pytest.mark.slurm]


def test_hostile_resource_name_and_logins(site: Site) -> None:
    """A resource name full of sacctmgr syntax, quotes and unicode makes a clean account name; logins that are
    not valid SLURM user names are skipped with a note, and the valid ones are added in the same order."""
    w = site.world
    good, bad, keyword = w.member("good"), w.member("bad"), w.member("kw")
    w.set_username(good, "wsa_alice")
    w.set_username(bad, "bob; sacctmgr -i remove account root")
    w.set_username(keyword, "where")
    name = "Ääkköset' where name=root set GrpTRESMins=cpu=0 -- \"x\""
    order = w.order_create(name, {"cpu": 1})
    run = site.pull_until(lambda: done(site, order["uuid"]))
    res = w.resource(w.order(order["uuid"])["marketplace_resource_uuid"])
    account = res["backend_id"]
    assert res["state"] == "OK"
    assert account.isascii() and all(c.isalnum() or c in "_-" for c in account), account
    tree = subtree_of(site.root)
    assert "wsa_alice" in tree[account].users
    assert not any(";" in u or " " in u for u in tree[account].users)
    assert "bob; sacctmgr" in run.stderr  # the skipped login is named for the operator


def test_offering_component_missing_from_the_tres_file(mastermind: Mastermind, slurm_root: str, tmp_path) -> None:
    """The offering sells a usage-type component the TRES file lacks: orders still work, and push reports the
    others without touching it."""
    world = build_world(mastermind, [*DEFAULT_COMPONENTS,
                                     {"type": "storage", "name": "Storage", "measured_unit": "TB", "billing_type": "usage"}])
    tres = tmp_path / "tres.yaml"
    tres.write_text(DEFAULT_TRES)
    site = Site(world, slurm_root, tres, AccessLog())
    order = world.order_create("partial", {"cpu": 1})
    site.pull_until(lambda: done(site, order["uuid"]))
    res = world.resource(world.order(order["uuid"])["marketplace_resource_uuid"])
    assert res["state"] == "OK" and res["backend_id"] in subtree_of(slurm_root)
    pushed = site.push()
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert "storage" not in world.usages(res["uuid"])
