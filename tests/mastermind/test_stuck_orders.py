"""An order the REAL server refuses to complete, cycle after cycle: given up after WALDUR_ORDER_MAX_FAILED_CYCLES,
marked erred where the server allows, otherwise held with one line per cycle; the SLURM side is never lost.

The fault is made in the server's own database (a trigger that refuses one resource's move to OK, and in the second
test to Erred too), so the server answers 500 and rolls back, exactly as it does for the KeyError in its Update
callback that issue 11 found.
"""

from __future__ import annotations

import time

import pytest

from tests.mastermind.conftest import Site, subtree_of
from tests.mastermind.test_lifecycle import create, done
from tests.support.mastermind import Daemon, ResourceStateFault

pytestmark = [pytest.mark.mastermind, pytest.mark.slurm]

OK, ERRED = 2, 3


def daemon_env(site: Site, **extra: str) -> dict[str, str]:
    return site.env("pull", WALDUR_PULL_PERIOD_SECONDS="1", WALDUR_MEMBERSHIP_PERIOD_SECONDS="3600",
                    WALDUR_ORDER_MAX_FAILED_CYCLES="3", **extra)


def ok_refusals(entries: list[tuple[str, str, int]], resource: str) -> int:
    return sum(1 for m, path, status in entries
               if m == "POST" and path == f"/api/marketplace-slurm-remote/{resource}/set_state/" and status == 500)


def test_update_the_server_never_completes_is_given_up_and_marked_erred(site: Site) -> None:
    w = site.world
    _order, res = create(site)
    with ResourceStateFault(res["uuid"], [OK]):
        upd = w.update_limits(res["uuid"], {"cpu": 8})
        mark = site.access.mark()
        daemon = Daemon(daemon_env(site))
        try:
            w.wait_order(upd, lambda o: o["state"] == "erred", timeout=90)
            time.sleep(3)  # three more periods: nothing more is sent for the order
        finally:
            log = daemon.stop()
    order = w.order(upd)
    assert "failed in 3 pull cycles in a row with a server error" in order["error_message"], order["error_message"]
    assert w.resource(res["uuid"])["state"] == "Erred"
    assert ok_refusals(site.access.since(mark, world=w), res["uuid"]) == 3
    assert "given up and marked erred" in log
    assert "(1 of 3 before the order is given up)" in log and "(2 of 3 before the order is given up)" in log
    assert "Traceback" not in log
    # the SLURM side is kept: the new limit is in place
    assert subtree_of(site.root)[res["backend_id"]].limits["cpu"] == 8 * 60


def test_order_that_cannot_even_be_marked_erred_is_held_with_one_line_per_cycle(site: Site) -> None:
    w = site.world
    _order, res = create(site)
    upd = w.update_limits(res["uuid"], {"cpu": 9})
    with ResourceStateFault(res["uuid"], [OK, ERRED]):
        mark = site.access.mark()
        daemon = Daemon(daemon_env(site))
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and ok_refusals(site.access.since(mark, world=w), res["uuid"]) < 3:
                time.sleep(0.5)
            time.sleep(4)  # a few more periods while the order is held
        finally:
            log = daemon.stop()
        sent = site.access.since(mark, world=w)
    assert ok_refusals(sent, res["uuid"]) == 3  # and not one more: held, not retried blindly
    assert w.order(upd)["state"] == "executing"
    assert "given up:" in log and "not marked erred" in log
    held_lines = [line for line in log.splitlines() if "is given up:" in line]
    assert len(held_lines) >= 2, log[-3000:]
    assert "stuck=1" in log
    assert "Traceback" not in log

    # The fault is gone; a restarted agent tries again and completes the order.
    site.pull_until(lambda: done(site, upd))
    assert w.resource(res["uuid"])["state"] == "OK"
    assert subtree_of(site.root)[res["backend_id"]].limits["cpu"] == 9 * 60
