"""Hostile orders: names and limits crafted to break sacctmgr command lines, in one batch with a normal order.

Each gets a clear outcome (a valid account, or a rejection naming the field and the value); no sacctmgr clause
injection happens (the cluster's account list proves it); the normal order is unaffected.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.pull.conftest import MEM_LIMIT, PullEnv, read_state, sacctmgr, tree_of
from waldur_slurm.domain import naming
from waldur_slurm.slurm.ops import validate_account

pytestmark = pytest.mark.slurm


def test_hostile_names_and_limits(pull_env: PullEnv) -> None:
    env = pull_env
    pwned = f"pwned{secrets.token_hex(3)}"
    names = [
        'double " quote',
        "single ' quote",
        "a=b GrpTRESMins=cpu=1",
        f"x where name=root set GrpTRESMins=cpu=0",
        f"semi; add account {pwned} parent=root",
        f"line\nadd account {pwned} parent=root\n",
        "Ääkköset Привет 名前",
        "x" * 500,
        "!!!",  # nothing survives sanitising
        "",
    ]
    bad_limits: list[tuple[dict[str, Any], str]] = [
        ({"cpu": -1}, "limits.cpu = -1 is negative"),
        ({"cpu": "abc"}, "limits.cpu = 'abc' is not a finite number"),
        ({"cpu": "NaN"}, "limits.cpu = 'NaN' is not a finite number"),
        ({"cpu": 1e30}, "limits.cpu = 1e+30 is too large"),
        ({"cpu": 1, "bogus": 5}, "limits.bogus = 5: unknown component 'bogus'"),
        ({"cpu": [1, 2]}, "limits.cpu = [1, 2] is not a finite number"),
    ]
    hostile_project = env.standin.add_project(env.customer, f'P"; remove account where name=root; {pwned}\n')
    env.user("a", project=hostile_project)
    before_root = sacctmgr("show", "assoc", "where", "account=root", "user=", "format=account,grptresmins")

    normal = env.order(name="normal", limits={"cpu": 4, "gres/gpu": 1})
    by_name = {n: env.order(name=n or None, project=hostile_project) for n in names}
    rejected = [(env.order(name="bad limits", limits=lim), msg) for lim, msg in bad_limits]
    fractional = env.order(name="fractional", limits={"cpu": 2.5, "gres/gpu": 0.01})
    nulls = env.order(name="nulls", limits={"cpu": None, "gres/gpu": None})

    pull = env.reconciler()
    for _ in range(3):  # 2024: the allocation may appear only after the approval's cycle
        report = pull.run_cycle()
        assert report.failed == 0, report.notes
        if report.seen == 0:
            break
    state = env.standin.state()

    assert state["orders"][normal["uuid"]]["state"] == "done"
    normal_acc = state["resources"][normal["resource_uuid"]]["backend_id"]
    tree = tree_of(env.root)
    assert tree[normal_acc].limits == {"cpu": 240, "gres/gpu": 60, "mem": MEM_LIMIT}

    accounts = set()
    for name, o in by_name.items():
        assert state["orders"][o["uuid"]]["state"] == "done", name
        acc = state["resources"][o["resource_uuid"]]["backend_id"]
        assert validate_account(acc) == acc and acc in tree and len(acc) <= 34
        assert naming.resource_owner(tree[acc].description) == o["resource_uuid"]
        accounts.add(acc)
    assert len(accounts) == len(names)

    for o, message in rejected:
        order = state["orders"][o["uuid"]]
        assert order["state"] == "rejected"
        assert message in order["provider_rejection_comment"]
        assert state["resources"][o["resource_uuid"]]["backend_id"] == ""

    acc = state["resources"][fractional["resource_uuid"]]["backend_id"]
    assert tree[acc].limits == {"cpu": 150, "gres/gpu": 1, "mem": MEM_LIMIT}  # 2.5 h x 60, 0.01 h x 60 rounded up
    acc = state["resources"][nulls["resource_uuid"]]["backend_id"]
    assert tree[acc].limits == {"cpu": 600, "mem": MEM_LIMIT}  # null = not given: the file's default

    # No injection: no account named by the payload anywhere, root untouched, nothing else under our root.
    everything = read_state().accounts
    assert not [n for n in everything if pwned in n]
    assert sacctmgr("show", "assoc", "where", "account=root", "user=", "format=account,grptresmins") == before_root
    done = [normal, *by_name.values(), fractional, nulls]
    expected = {state["resources"][o["resource_uuid"]]["backend_id"] for o in done}
    expected |= {naming.customer_account(naming.NamingRules(), env.customer)}
    expected |= {naming.project_account(naming.NamingRules(), p) for p in (env.project, hostile_project)}
    assert set(tree) == expected
    assert not [e for e in env.standin.requests() if e["path"].endswith("/set_state_erred/")]
