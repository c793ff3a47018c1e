"""Order limits: validation of the values Waldur sends and their conversion to GrpTRESMins (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from waldur_slurm.domain.components import Component
from waldur_slurm.domain.values import BadValue, show
from waldur_slurm.pull.model import MAX_TRES_MINUTES, OrderInvalid

# --------------------------------------------------------------------------------------------------
# Validation and conversion


def validate_limits(raw: object, components: Mapping[str, Component]) -> tuple[dict[str, int], dict[str, Any], list[str]]:
    """The order's limits as (GrpTRESMins for limit-type components, the Waldur values kept, notes).

    Raises OrderInvalid naming the field and the value for unknown components, non-numbers, NaN or
    infinity, negative and too-large values. A null value means "not given". Values for usage-type
    components are ignored: their GrpTRESMins comes from the components file.
    """
    if raw is None:
        return {}, {}, []
    if not isinstance(raw, Mapping):
        raise OrderInvalid(f"limits {show(raw)} is not a mapping of component to number")
    slurm: dict[str, int] = {}
    waldur: dict[str, Any] = {}
    notes: list[str] = []
    for key in sorted(raw, key=str):
        value = raw[key]
        field_name = f"limits.{key}"
        component = components.get(key) if isinstance(key, str) else None
        if component is None:
            known = ", ".join(sorted(components)) or "none"
            raise OrderInvalid(f"{field_name} = {show(value)}: unknown component {show(key)} (known: {known})")
        if value is None:
            notes.append(f"{field_name} is null: treated as not given")
            continue
        try:
            minutes = component.to_slurm(value, field_name)
        except BadValue as exc:
            raise OrderInvalid(str(exc)) from None
        if minutes >= MAX_TRES_MINUTES:
            raise OrderInvalid(f"{field_name} = {show(value)} is too large ({minutes} TRES-minutes)")
        if component.accounting_type != "limit":
            notes.append(f"{field_name} ignored: {key} is a usage component, its limit comes from the components file")
            continue
        slurm[key] = minutes
        waldur[key] = value
    return slurm, waldur, notes


def create_limits(order_limits: Mapping[str, int], components: Mapping[str, Component]) -> dict[str, int]:
    """GrpTRESMins of a new account: the order's value for limit components, the file's otherwise."""
    limits: dict[str, int] = {}
    for key, component in sorted(components.items()):
        if component.accounting_type == "limit" and key in order_limits:
            limits[key] = order_limits[key]
        elif component.slurm_limit is not None:
            limits[key] = component.slurm_limit
    return limits


def limits_differ(current: Mapping[str, int], target: Mapping[str, int]) -> dict[str, int]:
    """The part of ``target`` that is not already set on the account."""
    return {k: v for k, v in target.items() if current.get(k) != v}
