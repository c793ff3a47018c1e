"""Waldur-side failures: one resource's error does not stop the others; an unreachable Waldur writes nothing."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.push.conftest import PushEnv, writes
from tests.support.waldur import make_client
from tests.support.slurm import submit_job, wait_jobs_in_sacct
from waldur_slurm.push.usage import billing_window

pytestmark = pytest.mark.slurm
SET_USAGE = "/api/marketplace-component-usages/set_usage/"


def _three_busy_resources(env: PushEnv) -> tuple[list[str], list[str]]:
    users = {"a": ["wsa_alice"], "b": ["wsa_bob"], "c": ["wsa_carol"]}
    accounts = env.add_accounts(list(users), users=users)
    resources = env.add_resources(accounts)
    jobs = [submit_job(members[0], env.account(s), cpus=2, mem_mb=100, seconds=1) for s, members in users.items()]
    wait_jobs_in_sacct(jobs)
    return accounts, resources


def test_one_resource_failing_does_not_stop_the_others(push_env_8: PushEnv) -> None:
    env = push_env_8.setup()
    _, resources = _three_busy_resources(env)
    now = datetime.now(timezone.utc)
    period = billing_window(now, env.settings().billing_timezone).period.isoformat()
    reporter = env.reporter(now=lambda: now)
    # The first set_usage of the cycle is refused (a permanent 400 for that resource, whichever it is).
    env.standin.inject_fault(SET_USAGE, status=400, count=1, method="POST")
    first = reporter.run_cycle()
    assert (first.failed, first.deferred, first.done) == (1, 0, 2), (first, env.requests_since(0)[-12:])
    reported = {r for (r, t) in env.usages(period) if t == "cpu"}
    assert len(reported) == 2
    assert any("set_usage" in n or "usage" in n for n in first.notes)
    # the next cycle reports the one that failed, and only it
    mark = env.mark()
    second = reporter.run_cycle()
    assert (second.failed, second.done) == (0, 3), second.notes
    assert {r for (r, t) in env.usages(period) if t == "cpu"} == set(resources)
    assert sum(1 for w in writes(env.requests_since(mark)) if w.endswith("set_usage/")) == 1


def test_transient_write_errors_defer_and_waldur_down_writes_nothing(push_env_8: PushEnv) -> None:
    env = push_env_8.setup()
    _, resources = _three_busy_resources(env)
    now = datetime.now(timezone.utc)
    period = billing_window(now, env.settings().billing_timezone).period.isoformat()
    reporter = env.reporter(now=lambda: now)

    # Waldur's resource list answers 503 (every retry): no write, no crash, everything deferred.
    env.standin.inject_fault("/api/marketplace-provider-resources/", status=503, count=None, method="GET")
    mark = env.mark()
    down = reporter.run_cycle()
    env.standin.clear_faults()
    assert writes(env.requests_since(mark)) == []
    assert down.failed == 0 and any(n.startswith("Waldur unreachable: read failed") for n in down.unreachable)

    # A dropped connection after set_usage was applied: the facade re-reads the month's usage, finds it
    # applied, and goes on (per-user usages included); nothing is sent twice.
    env.standin.inject_fault(SET_USAGE, kind="drop", when="after", count=None, method="POST")
    mark = env.mark()
    flaky = reporter.run_cycle()
    env.standin.clear_faults()
    assert (flaky.failed, flaky.deferred, flaky.done) == (0, 0, 3), flaky.notes
    assert sum(1 for w in writes(env.requests_since(mark)) if w.endswith("set_usage/")) == 3

    mark = env.mark()
    up = reporter.run_cycle()
    assert (up.failed, up.deferred, up.done) == (0, 0, 3), up.notes
    assert writes(env.requests_since(mark)) == []  # all of it was in already
    assert {r for (r, t) in env.usages(period) if t == "cpu"} == set(resources)
    assert {r for (r, t, u) in env.user_usages(period) if t == "cpu"} == set(resources)


def test_the_uuid_lookup_failing_defers_only_the_user_usages(push_env_8: PushEnv) -> None:
    """The offering-wide list that finds the new usage records answers 503 (every retry): the totals are in,
    the per-user usages wait for the next cycle, which writes them and nothing else."""
    env = push_env_8.setup()
    _, resources = _three_busy_resources(env)
    now = datetime.now(timezone.utc)
    period = billing_window(now, env.settings().billing_timezone).period.isoformat()
    reporter = env.reporter(now=lambda: now)
    # the first list of the month's usages (what Waldur holds) passes; the lookup after set_usage fails
    env.standin.inject_fault("/api/marketplace-component-usages/", status=503, count=None, method="GET", skip=1)
    first = reporter.run_cycle()
    env.standin.clear_faults()
    assert (first.failed, first.deferred, first.done) == (0, 3, 0), first.notes
    assert any("usage records" in n and "503" in n for n in first.notes), first.notes
    assert {r for (r, t) in env.usages(period) if t == "cpu"} == set(resources)
    assert env.user_usages(period) == {}

    mark = env.mark()
    second = reporter.run_cycle()
    assert (second.failed, second.deferred, second.done) == (0, 0, 3), second.notes
    assert {r for (r, t, u) in env.user_usages(period) if t == "cpu"} == set(resources)
    assert {w for w in writes(env.requests_since(mark))} == {"POST /api/marketplace-component-usages/{uuid}/set_user_usages/"}


def test_a_set_usage_answered_after_the_timeout_is_applied_once(push_env: PushEnv) -> None:
    """The month's first set_usage can take longer than REQUESTS_TIMEOUT on a real server (invoice items are
    built; 24 of them timed out at N=500 and the server did them twice). The stand-in applies each set_usage,
    then answers after the client's timeout: each is sent once, checked by a re-read, and counted done."""
    env = push_env.setup()
    _, resources = _three_busy_resources(env)
    env.client = make_client(env.standin, env.offering, timeout=1.0)
    env.clients.append(env.client)
    now = datetime.now(timezone.utc)
    period = billing_window(now, env.settings().billing_timezone).period.isoformat()
    env.standin.inject_fault(SET_USAGE, kind="delay", when="after", delay=1.5, count=None, method="POST")
    mark = env.mark()
    cycle = env.reporter(now=lambda: now).run_cycle()
    log = env.requests_since(mark)
    assert (cycle.failed, cycle.deferred, cycle.done) == (0, 0, 3), cycle.notes
    assert sum(1 for e in log if e["method"] == "POST" and e["path"] == SET_USAGE) == 3  # one application each
    checks = [e for e in log if e["method"] == "GET" and e["path"] == "/api/marketplace-component-usages/"
              and "resource_uuid=" in e["query"]]
    assert len(checks) == 3  # one re-read per timed-out write
    assert {r for (r, t) in env.usages(period) if t == "cpu"} == set(resources)
    assert {r for (r, t, u) in env.user_usages(period) if t == "cpu"} == set(resources)
