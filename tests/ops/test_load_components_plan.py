"""The --load-components plan and its rendering (pure: no Waldur, no I/O)."""

from __future__ import annotations

from decimal import Decimal

from waldur_slurm.domain.components import Component
from waldur_slurm.tools.load_components import (
    CREATE,
    EXTRA,
    REMOVE,
    UNCHANGED,
    UPDATE,
    describe,
    format_table,
    plan_components,
    summary,
)
from waldur_slurm.waldur.models import OfferingComponent

CPU = Component("cpu", "CPU", "k-Hours", "usage", Decimal("10"), 60000)
MEM = Component("mem", "RAM", "GB-Hours", "usage", Decimal("1000"), 61440)
GPU = Component("gres/gpu", "GPU", "GPU-Hours", "limit", None, 60)


def waldur(type_: str, name: str, unit: str, billing: str, limit: object, *, builtin: bool = False,
           description: str = "") -> OfferingComponent:
    return OfferingComponent.from_json({"uuid": f"{abs(hash(type_)):032x}"[:32], "type": type_, "name": name,
                                        "measured_unit": unit, "billing_type": billing, "limit_amount": limit,
                                        "is_builtin": builtin, "description": description})


def test_empty_offering_creates_everything():
    actions = plan_components({"cpu": CPU, "mem": MEM}, [], remove_missing=False)
    assert [(a.key, a.action) for a in actions] == [("cpu", CREATE), ("mem", CREATE)]
    assert describe(actions[0]) == "name='CPU', measured_unit='k-Hours', billing_type='usage', limit_amount=10"


def test_matching_components_are_unchanged_whatever_the_number_format():
    current = [waldur("cpu", "CPU", "k-Hours", "usage", 10.0), waldur("mem", "RAM", "GB-Hours", "usage", "1000.00"),
               waldur("gres/gpu", "GPU", "GPU-Hours", "limit", None, description="from the UI")]
    actions = plan_components({"cpu": CPU, "mem": MEM, "gres/gpu": GPU}, current, remove_missing=True)
    assert {a.action for a in actions} == {UNCHANGED}
    assert summary(actions, 0, dry_run=False, source="tres.yaml") == (
        "nothing to change: the offering's components match tres.yaml")


def test_changed_fields_are_listed():
    current = [waldur("cpu", "Cores", "k-Hours", "limit", 16000), waldur("mem", "RAM", "GB-Hours", "usage", None)]
    actions = plan_components({"cpu": CPU, "mem": MEM}, current, remove_missing=False)
    assert [a.action for a in actions] == [UPDATE, UPDATE]
    assert [name for name, _, _ in actions[0].changes] == ["name", "billing_type", "limit_amount"]
    assert describe(actions[0]) == "name: 'Cores' -> 'CPU', billing_type: 'limit' -> 'usage', limit_amount: 16000 -> 10"
    assert describe(actions[1]) == "limit_amount: none -> 1000"
    assert actions[0].uuid == current[0].uuid


def test_extra_components_are_reported_and_removed_only_with_the_flag():
    current = [waldur("cpu", "CPU", "k-Hours", "usage", 10), waldur("node", "Nodes", "nodes", "usage", None),
               waldur("storage", "Storage", "GB", "fixed", None, builtin=True)]
    kept = plan_components({"cpu": CPU}, current, remove_missing=False)
    assert [(a.key, a.action) for a in kept] == [("cpu", UNCHANGED), ("node", EXTRA), ("storage", EXTRA)]
    assert "--remove-missing" in describe(kept[1])
    assert summary(kept, 0, dry_run=False, source="f") == (
        "nothing to change: the offering's components match f; 2 extra in Waldur")
    removed = plan_components({"cpu": CPU}, current, remove_missing=True)
    assert [(a.key, a.action) for a in removed] == [("cpu", UNCHANGED), ("node", REMOVE), ("storage", EXTRA)]
    assert describe(removed[2]) == "built-in: kept"
    assert summary(removed, 0, dry_run=True, source="f") == "1 would remove, 1 unchanged, 1 extra (dry run: nothing was changed)"


def test_table_is_aligned():
    table = format_table([("cpu", "created", "name='CPU'"), ("gres/gpu", "unchanged", "")])
    lines = table.splitlines()
    assert lines[0] == "component  result     details"
    assert lines[2] == "cpu        created    name='CPU'"
    assert lines[3] == "gres/gpu   unchanged"
