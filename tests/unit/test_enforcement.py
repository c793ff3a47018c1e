"""Enforcement planning (pure): flags + SLURM snapshot + records -> ops and new records; no I/O."""

from __future__ import annotations

from waldur_slurm.slurm.cli import render

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from waldur_slurm.domain import naming
from waldur_slurm.pull.enforcement import (
    DOWNSCALED,
    PAUSED,
    RESTRICTED,
    EnforceConfig,
    plan_enforcement,
)
from waldur_slurm.slurm.model import SlurmAccount, SlurmState
from waldur_slurm.slurm.cli.controls import controls_command, parse_controls
from waldur_slurm.slurm.model import AccountControls
from waldur_slurm.slurm.errors import InvalidValue
from waldur_slurm.slurm.ops import (
    AddQos,
    AddUsers,
    CancelJobs,
    RemoveUsers,
    SetAccountQos,
    SetDefaultAccount,
    SetJobLimits,
)
from waldur_slurm.waldur.models import Resource

CFG = EnforceConfig(downscaled_qos="down", default_account="waldur")
R1, R2 = "a" * 32, "b" * 32


def account(name: str, uuid: str | None = None, users: set[str] = frozenset()) -> SlurmAccount:  # type: ignore[assignment]
    desc = naming.resource_marker(uuid) if uuid else ""
    return SlurmAccount(name, "proj", desc, "", {}, frozenset(users))


def state(*accounts: SlurmAccount, controls: dict[str, AccountControls] | None = None,
          defaults: dict[str, str] | None = None) -> SlurmState:
    accs = {a.name: a for a in accounts}
    ctl = {a.name: AccountControls() for a in accounts}
    ctl.update(controls or {})
    return SlurmState(accs, dict(defaults or {}), ctl)


def res(uuid: str, backend_id: str, **flags: bool) -> Resource:
    return Resource(uuid=uuid, backend_id=backend_id, state="OK", **flags)


def test_pause_records_the_old_limits_and_sets_both_to_zero_in_one_op_for_all_accounts() -> None:
    s = state(account("x1", R1), account("x2", R2),
              controls={"x1": AccountControls(grp_jobs=7), "x2": AccountControls(grp_submit_jobs=3)})
    plan = plan_enforcement([res(R1, "x1", paused=True), res(R2, "x2", paused=True)], s, {}, CFG)
    assert plan.ops == [SetJobLimits(("x1", "x2"), grp_jobs=0, grp_submit_jobs=0)]
    assert plan.records == {"x1": {PAUSED: {"grp_jobs": 7, "grp_submit_jobs": None}},
                            "x2": {PAUSED: {"grp_jobs": None, "grp_submit_jobs": 3}}}
    assert plan.counts() == {PAUSED: 2, DOWNSCALED: 0, RESTRICTED: 0}
    assert render.sacctmgr_lines(plan.ops[0], None) == ["modify account where name=x1,x2 set GrpJobs=0 GrpSubmitJobs=0"]


def test_a_paused_account_already_at_zero_needs_no_op_and_unpause_restores_what_was_there() -> None:
    paused = state(account("x1", R1), controls={"x1": AccountControls(grp_jobs=0, grp_submit_jobs=0)})
    records = {"x1": {PAUSED: {"grp_jobs": 7, "grp_submit_jobs": None}}}
    assert plan_enforcement([res(R1, "x1", paused=True)], paused, records, CFG).ops == []
    plan = plan_enforcement([res(R1, "x1", paused=False)], paused, records, CFG)
    assert plan.ops == [SetJobLimits(("x1",), grp_jobs=7, grp_submit_jobs=-1)]
    assert plan.records == {}


def test_unpause_leaves_a_field_the_operator_changed_meanwhile() -> None:
    s = state(account("x1", R1), controls={"x1": AccountControls(grp_jobs=5, grp_submit_jobs=0)})
    plan = plan_enforcement([res(R1, "x1")], s, {"x1": {PAUSED: {"grp_jobs": None, "grp_submit_jobs": None}}}, CFG)
    assert plan.ops == [SetJobLimits(("x1",), grp_jobs=None, grp_submit_jobs=-1)]


def test_drift_is_repaired_without_overwriting_the_record() -> None:
    s = state(account("x1", R1), controls={"x1": AccountControls(grp_jobs=-1 + 1 + 4)})
    records = {"x1": {PAUSED: {"grp_jobs": 9, "grp_submit_jobs": None}}}
    plan = plan_enforcement([res(R1, "x1", paused=True)], s, records, CFG)
    assert plan.ops == [SetJobLimits(("x1",), grp_jobs=0, grp_submit_jobs=0)]
    assert plan.records == records


def test_cancel_only_when_opted_in_and_only_when_the_pause_starts() -> None:
    s = state(account("x1", R1))
    cfg = EnforceConfig(downscaled_qos="down", cancel_jobs_of_paused=True)
    plan = plan_enforcement([res(R1, "x1", paused=True)], s, {}, cfg)
    assert plan.ops[-1] == CancelJobs(("x1",))  # after the sacctmgr op: nothing starts in between
    again = plan_enforcement([res(R1, "x1", paused=True)], s, plan.records, cfg)
    assert not any(isinstance(op, CancelJobs) for op in again.ops)
    assert not any(isinstance(op, CancelJobs) for op in plan_enforcement([res(R1, "x1", paused=True)], s, {}, CFG).ops)


def test_downscale_sets_the_qos_creates_it_and_restores_the_list_and_default() -> None:
    s = state(account("x1", R1), account("x2", R2),
              controls={"x2": AccountControls(qos=("normal", "high"), default_qos="high")})
    plan = plan_enforcement([res(R1, "x1", downscaled=True), res(R2, "x2", downscaled=True)], s, {}, CFG)
    assert plan.ops[0] == AddQos("down")
    assert set(plan.ops[1:]) == {SetAccountQos(("x1",), ("down",), None), SetAccountQos(("x2",), ("down",), "down")}
    assert plan.records["x2"] == {DOWNSCALED: {"qos": ["normal", "high"], "default_qos": "high"}}
    now = state(account("x1", R1), account("x2", R2),
                controls={"x1": AccountControls(qos=("down",)), "x2": AccountControls(qos=("down",), default_qos="down")})
    back = plan_enforcement([res(R1, "x1"), res(R2, "x2")], now, plan.records, CFG)
    assert set(back.ops) == {SetAccountQos(("x1",), (), None), SetAccountQos(("x2",), ("normal", "high"), "high")}
    assert back.records == {}
    assert render.sacctmgr_lines(SetAccountQos(("x1",), (), None), None) == ["modify account where name=x1 set qos="]
    assert render.sacctmgr_lines(SetAccountQos(("x1",), (), ""), "c") == ["modify account where name=x1 cluster=c set qos= defaultqos=-1"]


def test_downscale_end_leaves_a_qos_the_operator_changed() -> None:
    s = state(account("x1", R1), controls={"x1": AccountControls(qos=("special",))})
    plan = plan_enforcement([res(R1, "x1")], s, {"x1": {DOWNSCALED: {"qos": [], "default_qos": ""}}}, CFG)
    assert plan.ops == [] and plan.records == {}
    assert any("changed by someone else" in n for n in plan.notes)


def test_restriction_removes_only_members_and_restores_them_with_their_default() -> None:
    acc = account("x1", R1, users={"alice", "bob", "admin", "root", "keep"})
    s = state(acc, defaults={"alice": "x1", "bob": "other"})
    cfg = EnforceConfig(downscaled_qos="down", ignore_users=frozenset({"keep"}))
    plan = plan_enforcement([res(R1, "x1", restrict_member_access=True)], s, {}, cfg,
                            members={"alice", "keep"}, added_by_agent={"x1": {"bob"}})
    assert plan.ops == [RemoveUsers(("alice", "bob"), ("x1",))]  # not admin (manual), root, or ignored keep
    assert plan.records == {"x1": {RESTRICTED: {"users": ["alice", "bob"], "defaults": ["alice"]}}}
    after = state(account("x1", R1, users={"admin", "root", "keep"}), defaults={"alice": "", "bob": "other"})
    back = plan_enforcement([res(R1, "x1")], after, plan.records, cfg, members={"alice"})
    assert back.ops == [AddUsers(("alice", "bob"), ("x1",)), SetDefaultAccount(("alice",), "x1")]
    assert back.records == {}


def test_someone_readding_a_member_while_restricted_is_removed_again_and_remembered() -> None:
    s = state(account("x1", R1, users={"carol"}))
    records = {"x1": {RESTRICTED: {"users": ["alice"], "defaults": []}}}
    plan = plan_enforcement([res(R1, "x1", restrict_member_access=True)], s, records, CFG, members={"carol"})
    assert plan.ops == [RemoveUsers(("carol",), ("x1",))]
    assert plan.records["x1"][RESTRICTED]["users"] == ["alice", "carol"]


def test_ignored_default_foreign_and_unknown_accounts_are_never_touched() -> None:
    s = state(account("waldur"), account("ign", R1), account("other", R2), account("free"))
    cfg = EnforceConfig(downscaled_qos="down", default_account="waldur", ignore_accounts=frozenset({"ign"}))
    resources = [res("c" * 32, "waldur", paused=True), res(R1, "ign", paused=True),
                 res("d" * 32, "other", paused=True), res("e" * 32, "missing", paused=True)]
    plan = plan_enforcement(resources, s, {}, cfg)
    assert plan.ops == [] and plan.records == {}
    assert len(plan.notes) == 3  # default, ignored, another resource's account; a missing account is silent


def test_records_of_a_vanished_account_are_dropped_and_a_lost_resource_is_restored() -> None:
    s = state(account("x1", R1), controls={"x1": AccountControls(grp_jobs=0, grp_submit_jobs=0)})
    records = {"gone": {PAUSED: {"grp_jobs": None, "grp_submit_jobs": None}},
               "x1": {PAUSED: {"grp_jobs": None, "grp_submit_jobs": None}}}
    plan = plan_enforcement([], s, records, CFG)  # x1's resource is no longer listed (Terminated)
    assert plan.ops == [SetJobLimits(("x1",), grp_jobs=-1, grp_submit_jobs=-1)]
    assert plan.records == {}


def test_records_after_a_failed_step_keep_the_old_value() -> None:
    s = state(account("x1", R1), account("x2", R2))
    plan = plan_enforcement([res(R1, "x1", paused=True, downscaled=True), res(R2, "x2", paused=True)], s, {}, CFG)
    after = plan.records_after({("x1", DOWNSCALED)})
    assert after == {"x1": {PAUSED: {"grp_jobs": None, "grp_submit_jobs": None}},
                     "x2": {PAUSED: {"grp_jobs": None, "grp_submit_jobs": None}}}
    assert json.loads(json.dumps(after)) == after  # what the store writes


@settings(max_examples=200, deadline=None)
@given(
    before=st.tuples(st.one_of(st.none(), st.integers(0, 50)), st.one_of(st.none(), st.integers(0, 50))),
    qos=st.lists(st.sampled_from(["normal", "high", "low"]), unique=True, max_size=3),
    flags=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=6),
)
def test_any_sequence_of_flags_ends_where_it_started_once_cleared(before, qos, flags) -> None:  # type: ignore[no-untyped-def]
    """Simulate SLURM applying each plan; clearing every flag must give back the account's own values."""
    default = qos[0] if qos else ""
    ctl = AccountControls(grp_jobs=before[0], grp_submit_jobs=before[1], qos=tuple(qos), default_qos=default)
    records: dict = {}
    for paused, downscaled in [*flags, (False, False)]:
        s = state(account("x1", R1), controls={"x1": ctl})
        plan = plan_enforcement([res(R1, "x1", paused=paused, downscaled=downscaled)], s, records, CFG)
        for op in plan.ops:
            ctl = _apply(ctl, op)
        records = plan.records
    assert records == {}
    assert ctl == AccountControls(grp_jobs=before[0], grp_submit_jobs=before[1], qos=tuple(qos), default_qos=default)


def _apply(ctl: AccountControls, op: object) -> AccountControls:
    from dataclasses import replace

    if isinstance(op, SetJobLimits):
        conv = lambda v, old: old if v is None else (None if v == -1 else v)  # noqa: E731
        return replace(ctl, grp_jobs=conv(op.grp_jobs, ctl.grp_jobs), grp_submit_jobs=conv(op.grp_submit_jobs, ctl.grp_submit_jobs))
    if isinstance(op, SetAccountQos):
        return replace(ctl, qos=op.qos, default_qos=ctl.default_qos if op.default_qos is None else op.default_qos)
    return ctl


def test_ops_validate_their_values() -> None:
    with pytest.raises(InvalidValue):
        SetJobLimits(("x",))
    with pytest.raises(InvalidValue):
        SetJobLimits(("x",), grp_jobs=-2)
    with pytest.raises(InvalidValue):
        SetJobLimits(("root",), grp_jobs=0)
    with pytest.raises(InvalidValue):
        SetAccountQos(("x",), ("a b",))
    with pytest.raises(InvalidValue):
        SetAccountQos(("x",), ("normal",), "high")
    with pytest.raises(InvalidValue):
        AddQos("bad;name")


def test_parse_controls() -> None:
    text = "x1|0|0|down|down|c\nx2|||||c\nx3|abc||||c\nroot||||normal|c\nx4|||normal,high||other\nbad|row\n\n"
    assert parse_controls(text, cluster="c") == {
        "x1": AccountControls(0, 0, ("down",), "down"),
        "x2": AccountControls(),
    }
    assert "user=" in controls_command(None) and "cluster=c" in controls_command("c")
