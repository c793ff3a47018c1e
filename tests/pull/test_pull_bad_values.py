"""Issue 12: a value from Waldur that breaks arithmetic fails only its own order, never the cycle.

Real stand-in (both profiles), real SLURM: the good order next to the bad ones is provisioned in the same
cycle; each bad one is rejected with a message naming the field and the value.
"""

from __future__ import annotations

import pytest

from tests.pull.conftest import PullEnv, tree_of

pytestmark = pytest.mark.slurm


def test_overflowing_limits_fail_only_their_order(pull_env: PullEnv) -> None:
    env = pull_env
    good = env.order(name="good", limits={"cpu": 4, "gres/gpu": 1})
    huge = env.order(name="huge", limits={"cpu": "1e999999", "gres/gpu": 1})
    tiny = env.order(name="tiny", limits={"cpu": "-1e999999", "gres/gpu": 1})
    long_text = env.order(name="long", limits={"cpu": "9" * 5000, "gres/gpu": 1})

    report = env.reconciler().run_cycle()  # before the fix: decimal.Overflow escaped here

    state = env.standin.state()
    good_acc = state["resources"][good["resource_uuid"]]["backend_id"]
    assert good_acc and tree_of(env.root)[good_acc].limits["cpu"] == 240
    for order, text in ((huge, "limits.cpu = '1e999999' is too large"),
                        (tiny, "limits.cpu = '-1e999999' is too large"),
                        (long_text, "limits.cpu = '" + "9" * 56 + "... is too large")):
        got = state["orders"][order["uuid"]]
        assert got["state"] == "rejected", got
        assert text in got["provider_rejection_comment"]
        assert len(got["provider_rejection_comment"]) < 300
        assert state["resources"][order["resource_uuid"]]["backend_id"] == ""
    assert report.failed == 0, report.notes
