"""1,000 resources with real accounts: constant SLURM processes, list requests ~ N/page_size, writes only
for what changed. Counts, never time (time belongs to bench/)."""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from tests.push.conftest import MINUTES_COMPONENTS, PushEnv, writes
from tests.support.slurm import submit_job, wait_jobs_in_sacct

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
N = 1000
CHANGED_LIMITS = 7
# Only limit-type components may carry resource limits (the 2024 server rejects the others at the next Update),
# so the limits compared here are GPU's, billed as "limit"; CPU and RAM stay usage-type and give the usage.
COMPONENTS = [dict(c, billing_type="limit") if c["type"] == "gres/gpu" else c for c in MINUTES_COMPONENTS]


def test_thousand_resources(push_env: PushEnv) -> None:
    env = push_env.setup(COMPONENTS)
    suffixes = [f"s{i:04d}" for i in range(N)]
    users = {"s0000": ["wsa_alice"], "s0001": ["wsa_bob"], "s0002": ["wsa_carol"]}
    # all 1,000 accounts (and the three users) in ONE sacctmgr process: add_accounts asserts it
    accounts = env.add_accounts(suffixes, users=users, limits={"gres/gpu": 6000})
    resources = env.add_resources(accounts, limits={"gres/gpu": 6000})
    for uuid in resources[-CHANGED_LIMITS:]:
        env.standin.patch_resource(uuid, limits={"gres/gpu": 1})  # Waldur disagrees with SLURM for these
    jobs = [submit_job(u[0], env.account(s), cpus=2, mem_mb=100, seconds=1) for s, u in users.items()]
    wait_jobs_in_sacct(jobs)

    now = datetime.now(timezone.utc)
    # no re-read of the previous month, whatever today's date (its third process is counted in test_push_usage)
    reporter = env.reporter(now=lambda: now, previous_month_grace=timedelta(0))
    page = env.client.page_size if env.client else 300
    resource_pages = math.ceil(N / page)

    mark = env.mark()
    first = reporter.run_cycle()
    log = env.requests_since(mark)
    assert (first.seen, first.failed, first.deferred) == (N, 0, 0), first.notes[:5]
    assert first.slurm_processes == 2  # one dump + one sacct, whatever N (<= 3 even at a month start)
    assert first.http_requests == len(log)
    routes = Counter(f"{e['method']} {e['route']}" for e in log)
    assert routes["GET /api/marketplace-provider-resources/"] == resource_pages
    assert routes["GET /api/marketplace-orders/"] == 1  # the month's plan switches (none)
    # the month's usages offering-wide, then ONE offering-wide list for the uuids of the records that the
    # three set_usage calls created (one page, fewer requests than one list per resource)
    assert routes["GET /api/marketplace-component-usages/"] == 2, routes
    assert routes["GET /api/marketplace-component-user-usages/"] == 1
    assert routes["POST /api/marketplace-component-usages/set_usage/"] == len(users)
    if env.profile == "8":
        assert routes["POST /api/marketplace-provider-resources/{uuid}/set_limits/"] == CHANGED_LIMITS
        assert routes["POST /api/marketplace-component-usages/{uuid}/set_user_usages/"] == 2 * len(users)  # cpu, mem
        expected_writes = len(users) + CHANGED_LIMITS + 2 * len(users)
    else:
        assert routes["POST /api/marketplace-slurm-remote/{uuid}/set_limits/"] == CHANGED_LIMITS
        assert routes["POST /api/marketplace-component-usages/{uuid}/set_user_usage/"] == 2 * len(users)
        assert routes["POST /api/marketplace-slurm-remote/{uuid}/create_association/"] == len(users)
        assert routes["GET /api/slurm-associations/"] == 1
        expected_writes = len(users) + CHANGED_LIMITS + 2 * len(users) + len(users)
    assert len(writes(log)) == expected_writes
    assert first.writes == expected_writes

    mark = env.mark()
    second = reporter.run_cycle()
    log = env.requests_since(mark)
    assert writes(log) == []
    assert (second.writes, second.done, second.slurm_processes) == (0, N, 2)
    # reads only: the resource pages, the offering, the month's plan-switch orders, one usage list and one
    # user-usage list (+ associations)
    lists = resource_pages + 1 + 1 + 1 + 1 + (1 if env.profile == "2024" else 0)
    assert len(log) == lists == second.http_requests
