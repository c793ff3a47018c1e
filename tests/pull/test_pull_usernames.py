"""Issue 12 items 10/11: offering usernames that differ only in case are never merged into one SLURM user, and
usernames that are sacctmgr keywords never reach a command line. Real stand-in (both profiles), real SLURM."""

from __future__ import annotations

import logging
import secrets

import pytest

from tests.pull.conftest import PullEnv, sacctmgr, tree_of

pytestmark = pytest.mark.slurm


def test_case_twins_and_keywords_are_noted_and_skipped(pull_env: PullEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    env = pull_env
    tag = secrets.token_hex(3)
    _, normal = env.user("n")
    env.user(username=f"Twin{tag}")
    env.user(username=f"twin{tag}")
    for word in ("where", "set", "name"):
        env.user(username=word)
    order = env.order(name="names")
    lines: list[str] = []
    report = env.reconciler(out=lines).run_cycle()
    for _ in range(2):  # 2024: the allocation may appear only after the approval's cycle
        if env.waldur_order(order["uuid"])["state"] == "done":
            break
        report = env.reconciler().run_cycle()
    assert env.waldur_order(order["uuid"])["state"] == "done", report.notes
    account = env.waldur_resource(order["resource_uuid"])["backend_id"]
    assert tree_of(env.root)[account].users == frozenset({normal})  # before the fix: twin<tag> (both people) too
    notes = caplog.text  # an order's notes are logged with its uuid
    assert f"'Twin{tag}'" in notes and f"'twin{tag}'" in notes and "differs only in case" in notes
    for word in ("where", "set", "name"):
        assert f"offering username {word!r} is a sacctmgr keyword" in notes
    assert not sacctmgr("list", "user", "format=user", "where", f"name=twin{tag}").strip()
