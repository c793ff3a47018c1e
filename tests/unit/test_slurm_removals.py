"""Grouped user removals (pure): which `remove user` commands an op becomes, and how the defaults move."""

from __future__ import annotations

from waldur_slurm.slurm.cli.render import removal_lines, track_defaults
from waldur_slurm.slurm.ops import AddUsers, RemoveAccounts, RemoveUsers, SetDefaultAccount


def test_accounts_that_are_no_users_default_share_one_command_each_default_gets_its_own() -> None:
    op = RemoveUsers(("u1", "u2"), ("a", "b", "c", "d"))
    assert removal_lines(op, {"u1": "c", "u2": "x"}) == [
        "remove user where name=u1,u2 account=a,b,d",
        "remove user where name=u1,u2 account=c",
    ]
    assert removal_lines(op, {"u1": "x", "u2": ""}, " cluster=k") == ["remove user where name=u1,u2 account=a,b,c,d cluster=k"]
    assert removal_lines(RemoveUsers(("u1",), ("c",)), {"u1": "c"}) == ["remove user where name=u1 account=c"]


def test_unknown_defaults_mean_one_command_per_account() -> None:
    op = RemoveUsers(("u1", "u2"), ("a", "b"))
    per_account = ["remove user where name=u1,u2 account=a", "remove user where name=u1,u2 account=b"]
    assert removal_lines(op, None) == per_account
    assert removal_lines(op, {"u1": "x", "u2": None}) == per_account  # u2 was added without a known default


def test_defaults_follow_the_ops_of_a_batch() -> None:
    d: dict[str, str | None] = {"u1": "a", "u2": "", "u3": "z"}
    track_defaults(d, SetDefaultAccount(("u1",), "b"))
    track_defaults(d, AddUsers(("u2", "u3", "u4"), ("c",)))  # u2 and u4 had none: SLURM picks one, unknown here
    track_defaults(d, AddUsers(("u5",), ("e",), default_account="e"))
    assert d == {"u1": "b", "u2": None, "u3": "z", "u4": None, "u5": "e"}
    track_defaults(d, RemoveUsers(("u1", "u3"), ("b", "y")))
    track_defaults(d, RemoveAccounts(("e",)))
    assert d == {"u1": "", "u2": None, "u3": "z", "u4": None, "u5": ""}
