"""--diag-account, pure: resolving the argument, comparing both views, the commands and the JSON document."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction

import pytest

from waldur_slurm.domain.components import Component
from waldur_slurm.tools.diag_account import SlurmSide, UnknownAllocation, WaldurSide, compare, render_text, resolve
from waldur_slurm.domain.naming import NamingRules
from waldur_slurm.pull.model import PlanConfig
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.model import SlurmAccount, SlurmState
from waldur_slurm.slurm.cli.executor import NativeExecutor
from waldur_slurm.push.usage import AccountUsage, billing_window, to_waldur_usage
from waldur_slurm.waldur.models import ComponentUsage, OfferingUser, Resource, TeamMember, UserUsage

UTC = timezone.utc
NOW = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
WINDOW = billing_window(NOW, UTC)  # type: ignore[arg-type]
RES, CUST, PROJ = "a" * 32, "c" * 32, "d" * 32
ACC = "hpc_aaaaa_alloc"
CPU = Component("cpu", "CPU", "CPU-minutes", "limit", None, 1)
MEM = Component("mem", "RAM", "MB-minutes", "usage", Decimal(1000), 1)
COMPONENTS = {"cpu": CPU, "mem": MEM}
CONFIG = PlanConfig(naming=NamingRules(), default_account="waldur", components=COMPONENTS)
# no process is started: the rendering of an op is pure (this is what apply() would feed sacctmgr -i)
RENDER = SlurmClient(NativeExecutor(), timeout=5).command_lines


def _resource(**kw: object) -> Resource:
    raw = {"uuid": RES, "name": "Alloc", "state": "OK", "backend_id": ACC, "limits": {"cpu": 5},
           "project_uuid": PROJ, "customer_uuid": CUST, **kw}
    return Resource.from_json(raw)


def _waldur(team: list[str], *, associations: frozenset[str] | None = None, usage: dict[str, str] | None = None,
            per_user: dict[str, dict[str, str]] | None = None, outside: tuple[str, ...] = ()) -> WaldurSide:
    """``outside``: offering users who are not in the resource's team (e.g. left the project)."""
    members = [TeamMember(uuid=f"{i:032x}", username=f"w-{name}") for i, name in enumerate(team, 1)]
    ous = [OfferingUser.from_json({"uuid": f"{i + 100:032x}", "user_uuid": f"{i:032x}", "username": name})
           for i, name in enumerate([*team, *outside], 1)]
    usages = [ComponentUsage.from_json({"uuid": f"{i + 200:032x}", "resource_uuid": RES, "type": k, "usage": v})
              for i, (k, v) in enumerate((usage or {}).items())]
    user_usages = [UserUsage(uuid=f"{i + 300:032x}", component_usage_uuid=None, username=u, usage=Decimal(v), component_type=k)
                   for i, (k, users) in enumerate((per_user or {}).items()) for u, v in users.items()]
    return WaldurSide(_resource(), members, ous, usages, user_usages, associations)


def _state(users: set[str], limits: dict[str, int], parent: str = f"hpc_{PROJ}") -> SlurmState:
    accounts = {
        "waldur": SlurmAccount("waldur", "root", "", "", {}, frozenset()),
        f"hpc_{CUST}": SlurmAccount(f"hpc_{CUST}", "waldur", f"waldur customer {CUST}", "", {}, frozenset()),
        f"hpc_{PROJ}": SlurmAccount(f"hpc_{PROJ}", f"hpc_{CUST}", f"waldur project {PROJ}", "", {}, frozenset()),
        ACC: SlurmAccount(ACC, parent, f"waldur resource {RES}", "", limits, frozenset(users)),
    }
    return SlurmState(accounts=accounts, default_account={u: ACC for u in users})


def _usage(seconds: dict[str, int]) -> SlurmSide:
    return to_waldur_usage(AccountUsage(ACC, {"cpu": Fraction(sum(seconds.values()))},
                                        {u: {"cpu": Fraction(s)} for u, s in seconds.items()}), COMPONENTS)  # type: ignore[return-value]


def test_resolve_by_uuid_dashed_or_not_and_by_account_case_insensitive() -> None:
    other = Resource.from_json({"uuid": "b" * 32, "backend_id": "other"})
    listed = [_resource(), other]
    dashed = f"{RES[:8]}-{RES[8:12]}-{RES[12:16]}-{RES[16:20]}-{RES[20:]}"
    assert resolve(dashed, listed).uuid == RES and resolve(RES.upper(), listed).uuid == RES
    assert resolve(ACC.upper(), listed).uuid == RES and resolve(" other ", listed).uuid == "b" * 32


@pytest.mark.parametrize(("target", "problem"), [
    ("e" * 32, "no resource with this UUID in the offering"),
    ("nosuch", "no resource of the offering has this SLURM account as its backend_id"),
    ("", "no resource of the offering has this SLURM account as its backend_id"),
    ("dup", "the backend_id of 2 resources"),
])
def test_resolve_unknown_or_ambiguous_names_the_option_and_value(target: str, problem: str) -> None:
    listed = [_resource(), Resource.from_json({"uuid": "b" * 32, "backend_id": "dup"}),
              Resource.from_json({"uuid": "f" * 32, "backend_id": "DUP"}), Resource.from_json({"uuid": "1" * 32})]
    with pytest.raises(UnknownAllocation) as err:
        resolve(target, listed)
    assert str(err.value).startswith(f"--diag-account {target!r}: ") and problem in str(err.value)


def test_matching_allocation_has_no_difference_and_no_command() -> None:
    diag = compare(_waldur(["alice", "bob"], usage={"cpu": "2.00", "mem": "0.00"}, per_user={"cpu": {"alice": "2.00"}}),
                   SlurmSide(_state({"alice", "bob"}, {"cpu": 5, "mem": 1000}), _usage({"alice": 120})),
                   CONFIG, COMPONENTS, WINDOW, RENDER)
    assert diag.differences == [] and diag.commands == []
    assert diag.slurm["tree"] == ["root", "waldur", f"hpc_{CUST}", f"hpc_{PROJ}", ACC]
    assert diag.waldur["grp_tres_mins"] == diag.slurm["grp_tres_mins"] == {"cpu": 5, "mem": 1000}
    assert render_text(diag)[-2:] == ["no sacctmgr command needed",
                                      "note: associations: Waldur 8.x keeps none (the per-user usage records carry the users)"]


def test_every_difference_is_marked_and_the_commands_come_from_the_ops() -> None:
    # carol joined the team, dave left it (his association stays in SLURM), an admin changed the CPU limit,
    # and SLURM counts usage the push has not reported yet
    diag = compare(_waldur(["alice", "carol"], associations=frozenset({"alice"}), usage={"cpu": "1.00"},
                           per_user={"cpu": {"alice": "1.00"}}, outside=("dave",)),
                   SlurmSide(_state({"alice", "dave"}, {"cpu": 99, "mem": 1000}), _usage({"alice": 60, "dave": 60})),
                   PlanConfig(naming=NamingRules(), default_account="waldur", components=COMPONENTS, keeps_associations=True, allocation_after_approval=True),
                   COMPONENTS, WINDOW, RENDER)
    kinds = [d.what for d in diag.differences]
    assert sorted(set(kinds)) == ["associations", "limits", "usage", "users"]
    assert diag.commands == [
        f"sacctmgr -i add user carol account={ACC} DefaultAccount={ACC}",
        f"sacctmgr -i remove user where name=dave account={ACC}",
        f"sacctmgr -i modify account where name={ACC} set GrpTRESMins=cpu=5",
    ]
    usage = [d for d in diag.differences if d.what == "usage"]
    assert [(d.waldur, d.slurm) for d in usage] == [("1.00", "2.00"), ("0.00", "1.00")]  # cpu total, then dave
    assert "Waldur 8.x keeps none" not in " ".join(diag.notes)
    text = "\n".join(render_text(diag))
    assert "✘ users" in text and "✘ GrpTRESMins" in text and "✘ associations" in text and "✔ tree" in text
    doc = diag.as_dict()
    assert json.loads(json.dumps(doc)) == doc and doc["match"] is False and doc["commands"] == diag.commands


def test_missing_account_and_a_tree_in_the_wrong_place() -> None:
    gone = compare(_waldur(["alice"]), SlurmSide(SlurmState(accounts={}, default_account={}), None),
                   CONFIG, COMPONENTS, WINDOW, RENDER)
    assert [d.what for d in gone.differences] == ["account"] and gone.commands == []
    assert "SLURM has no account" in gone.differences[0].detail and gone.slurm["exists"] is False
    moved = compare(_waldur(["alice"]), SlurmSide(_state({"alice"}, {"cpu": 5, "mem": 1000}, parent="waldur"), None),
                    CONFIG, COMPONENTS, WINDOW, RENDER)
    assert [d.what for d in moved.differences] == ["tree"]
    assert moved.differences[0].slurm == ["root", "waldur", ACC]


def test_a_user_without_a_usable_default_account_is_a_difference_with_its_command() -> None:
    state = _state({"alice"}, {"cpu": 5, "mem": 1000})
    state = SlurmState(accounts=state.accounts, default_account={"alice": "root"})
    diag = compare(_waldur(["alice"]), SlurmSide(state, None), CONFIG, COMPONENTS, WINDOW, RENDER)
    assert [d.what for d in diag.differences] == ["default_account"]
    assert diag.commands == [f"sacctmgr -i modify user where name=alice set DefaultAccount={ACC}"]


def test_help_lists_both_options() -> None:
    from waldur_slurm.main import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "--load-usage FROM..TO" in text and "--diag-account NAME_OR_RESOURCE_UUID" in text
    assert "--json with --diag-account: print one JSON document" in text
