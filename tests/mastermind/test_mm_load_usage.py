"""--load-usage against the REAL Mastermind (Oct 2024) and real SLURM: what the 2024 server accepts and skips.

The 2024 server has no report ``date``: ``set_usage`` files every report under the month it receives it in. So the
agent sends no past month there (not even with a staff token), and the current month in full. The last step shows
the server's behaviour itself: a report dated in the previous month lands in the current one.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tests.mastermind.conftest import Site
from tests.mastermind.test_lifecycle import create
from tests.mastermind.test_membership_push import FACTORS, TRES_IN_MINUTES, sacct_usage
from tests.support.mastermind import AccessLog, staff_token
from tests.support.slurm import submit_job, wait_jobs_in_sacct
from waldur_slurm.tools.load_usage import REASON_2024

pytestmark = [pytest.mark.mastermind, pytest.mark.slurm]


def test_load_usage_on_the_2024_server_skips_past_months_and_reports_the_current_one(site: Site) -> None:
    w = site.world
    site.tres_path.write_text(TRES_IN_MINUTES)
    alice, bob = w.member("alice"), w.member("bob")
    w.set_username(alice, "wsa_alice")
    w.set_username(bob, "wsa_bob")
    _order, res = create(site, "onboard", {"cpu": 50})
    account = res["backend_id"]
    wait_jobs_in_sacct([
        submit_job("wsa_alice", account, cpus=1, mem_mb=300, gpus=1, seconds=3),
        submit_job("wsa_bob", account, cpus=2, mem_mb=700, seconds=4),
    ])
    now = datetime.now(timezone.utc)
    this_month = f"{now:%Y-%m}"
    previous = f"{now.replace(day=1) - timedelta(days=1):%Y-%m}"

    # dry run: the plan is printed, nothing reaches the server as a write
    mark = site.access.mark()
    dry = site.pull("--load-usage", f"{previous}..{this_month}", "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert AccessLog.writes(site.access.since(mark, world=w)) == []
    assert f"[dry-run] resource {res['uuid']} ({account}): set usage {this_month}:" in dry.stdout

    mark = site.access.mark()
    run = site.pull("--load-usage", f"{previous}..{this_month}")
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    progress = [line for line in run.stdout.splitlines() if line.startswith("load-usage ")]
    assert progress[0] == (f"load-usage {previous}: nothing sent: no component of the offering may be reported for this "
                           f"month; " + "; ".join(f"skipped {k}: {REASON_2024}" for k in sorted(FACTORS)))
    assert progress[1].startswith(f"load-usage {this_month}: 1 resource(s): 1 written (")
    assert "1 SLURM process(es)" in progress[2]  # one sacct, for the current month only
    totals, per_user = sacct_usage(account)
    assert {k: Decimal(v) for k, v in w.usages(res["uuid"]).items()} == {k: v for k, v in totals.items() if k in FACTORS}
    held_users = {k: Decimal(v) for k, v in w.user_usages(res["uuid"]).items()}
    assert set(held_users) == set(per_user)
    # one set_usage, then one set_user_usage per (component, user): the 2024 server has no bulk call
    # (the per-user calls name the new usage records, which the world does not know: matched by their uuids)
    records = {r["uuid"].replace("-", "") for r in w.usage_records(res["uuid"])}
    paths = [e[1] for e in AccessLog.writes(site.access.since(mark))
             if e[1] == "/api/marketplace-component-usages/set_usage/" or any(u in e[1] for u in records)]
    assert paths.count("/api/marketplace-component-usages/set_usage/") == 1
    assert len([p for p in paths if p.endswith("/set_user_usage/")]) == len(per_user)
    assert len(paths) == 1 + len(per_user) == len(AccessLog.writes(site.access.since(mark, world=w))) + len(per_user)

    # idempotent, and a staff token changes nothing on this server: the past month stays skipped
    mark = site.access.mark()
    again = site.pull("--load-usage", f"{previous}..{this_month}", WALDUR_API_TOKEN=staff_token())
    assert again.returncode == 0, again.stderr[-3000:]
    assert AccessLog.writes(site.access.since(mark, world=w)) == []
    assert f"load-usage {previous}: nothing sent" in again.stdout

    # Why: the server files a report dated in the previous month under the current one.
    staff = w.mm.staff
    staff.post("/api/marketplace-component-usages/set_usage/", {
        "resource": res["uuid"], "date": f"{previous}-15T12:00:00Z",
        "usages": [{"type": "gres/gpu", "amount": "1234.00"}]}, expect=(200, 201))
    gpu = [r for r in w.usage_records(res["uuid"]) if r["type"] == "gres/gpu"]
    assert [(r["billing_period"][:7], Decimal(r["usage"])) for r in gpu] == [(this_month, Decimal("1234.00"))]
