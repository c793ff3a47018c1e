"""``--load-components``: make the offering's components match the TRES file.

Plan (pure) then apply: components in the file and not in Waldur are created, those that differ are
updated (``type``, ``name`` = label, ``measured_unit``, ``billing_type`` = accounting_type,
``limit_amount`` = limit), the rest are left alone. Components in Waldur that the file does not name are
reported, and removed only with ``--remove-missing``. A second run finds nothing to do and says so.
A broken TRES file never gets here: ``load_settings`` refuses it, naming the key and the problem.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TextIO

from waldur_slurm.domain.components import Component

if TYPE_CHECKING:
    from waldur_slurm.config import Settings
    from waldur_slurm.waldur.models import OfferingComponent

log = logging.getLogger("waldur_slurm.tools.load_components")

EXIT_OK = 0
EXIT_FAILED = 1

CREATE, UPDATE, UNCHANGED, EXTRA, REMOVE = "create", "update", "unchanged", "extra", "remove"
_DONE = {CREATE: "created", UPDATE: "updated", UNCHANGED: "unchanged", EXTRA: "extra", REMOVE: "removed"}
_PLANNED = {CREATE: "would create", UPDATE: "would update", UNCHANGED: "unchanged", EXTRA: "extra",
            REMOVE: "would remove"}


@dataclass(frozen=True)
class ComponentAction:
    key: str
    action: str  # create | update | unchanged | extra | remove
    component: Component | None = None  # the file's component (create/update/unchanged)
    uuid: str | None = None  # the Waldur component (update/unchanged/extra/remove)
    changes: tuple[tuple[str, Any, Any], ...] = ()  # (field, in Waldur, in the file) for update
    note: str = ""
    existing: OfferingComponent | None = None


def desired_fields(component: Component) -> dict[str, Any]:
    """The Waldur fields a TRES file entry determines.

    A file entry without ``limit`` or ``description`` leaves Waldur's value alone (the API cannot clear a
    limit, and a description typed in the UI is worth keeping).
    """
    fields: dict[str, Any] = {
        "name": component.label,
        "measured_unit": component.measured_unit,
        "billing_type": component.accounting_type,
    }
    if component.limit is not None:
        fields["limit_amount"] = component.limit
    if component.description:
        fields["description"] = component.description
    return fields


def _current_fields(component: OfferingComponent) -> dict[str, Any]:
    return {
        "name": component.name,
        "measured_unit": component.measured_unit,
        "billing_type": component.billing_type,
        "limit_amount": component.limit_amount,
        "description": component.description,
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (Decimal, int, float)) and isinstance(b, (Decimal, int, float)):
        return Decimal(str(a)) == Decimal(str(b))  # 10 == 10.0 == Decimal("10.00")
    return a == b


def diff_component(component: Component, current: OfferingComponent) -> tuple[tuple[str, Any, Any], ...]:
    have = _current_fields(current)
    return tuple(
        (name, have.get(name), want)
        for name, want in desired_fields(component).items()
        if not _same(have.get(name), want)
    )


def plan_components(
    desired: Mapping[str, Component], current: Sequence[OfferingComponent], *, remove_missing: bool
) -> list[ComponentAction]:
    """What to do to make ``current`` (Waldur) match ``desired`` (the file). Pure."""
    by_type = {c.type: c for c in current}
    actions: list[ComponentAction] = []
    for key, component in desired.items():
        existing = by_type.get(key)
        if existing is None:
            actions.append(ComponentAction(key, CREATE, component))
            continue
        changes = diff_component(component, existing)
        action = UPDATE if changes else UNCHANGED
        actions.append(ComponentAction(key, action, component, existing.uuid, changes, existing=existing))
    for existing in current:
        if existing.type in desired:
            continue
        if existing.is_builtin:
            actions.append(ComponentAction(existing.type, EXTRA, uuid=existing.uuid, note="built-in: kept"))
        elif remove_missing:
            actions.append(ComponentAction(existing.type, REMOVE, uuid=existing.uuid))
        else:
            actions.append(ComponentAction(existing.type, EXTRA, uuid=existing.uuid,
                                           note="not in the TRES file (--remove-missing removes it)"))
    return actions


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return repr(value) if isinstance(value, str) else str(value)


def describe(action: ComponentAction) -> str:
    if action.note:
        return action.note
    if action.action == CREATE and action.component is not None:
        return ", ".join(f"{k}={_show(v)}" for k, v in desired_fields(action.component).items())
    if action.action == UPDATE:
        return ", ".join(f"{name}: {_show(old)} -> {_show(new)}" for name, old, new in action.changes)
    return ""


def format_table(rows: Sequence[tuple[str, str, str]]) -> str:
    header = ("component", "result", "details")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(2)]
    lines = [f"{header[0]:<{widths[0]}}  {header[1]:<{widths[1]}}  {header[2]}"]
    lines.append(f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * 7}")
    for key, result, details in rows:
        lines.append(f"{key:<{widths[0]}}  {result:<{widths[1]}}  {details}".rstrip())
    return "\n".join(lines)


def apply_actions(waldur: Any, actions: Sequence[ComponentAction], *, dry_run: bool,
                  out: TextIO) -> tuple[list[tuple[str, str, str]], int]:
    """Carry out the plan, one component at a time, printing progress. Returns table rows and failures."""
    rows: list[tuple[str, str, str]] = []
    failures = 0
    for action in actions:
        label = (_PLANNED if dry_run else _DONE)[action.action]
        details = describe(action)
        if not dry_run and action.action in (CREATE, UPDATE, REMOVE):
            print(f"{action.action} {action.key} ...", file=out, flush=True)
            try:
                if action.action == CREATE:
                    assert action.component is not None
                    waldur.create_component(**_write_arguments(action.component, None))
                elif action.action == UPDATE:
                    assert action.component is not None and action.uuid is not None
                    waldur.update_component(action.uuid, **_write_arguments(action.component, action.existing))
                else:
                    waldur.remove_component(action.uuid)
            except Exception as exc:
                if _is_auth_error(exc):
                    raise
                failures += 1
                label = "FAILED"
                details = f"{action.action}: {exc}"
                log.error("component %s: %s failed: %s", action.key, action.action, exc)
        rows.append((action.key, label, details))
    return rows, failures


def _write_arguments(component: Component, existing: OfferingComponent | None) -> dict[str, Any]:
    """Arguments of WaldurClient.create_component/update_component: the file's fields, and for an update the
    current values of everything the file does not determine, so that an update changes only those."""
    args: dict[str, Any] = {
        "type": component.key,
        "name": component.label,
        "billing_type": component.accounting_type,
        "measured_unit": component.measured_unit,
        "description": component.description or (existing.description if existing else ""),
        "limit_amount": component.limit if component.limit is not None else (existing.limit_amount if existing else None),
    }
    if existing is not None:
        args["limit_period"] = existing.limit_period
        args["unit_factor"] = existing.unit_factor
        args["article_code"] = existing.article_code or None
    return args


def _is_auth_error(exc: BaseException) -> bool:
    try:
        from waldur_slurm.waldur.errors import WaldurAuthError
    except ImportError:
        return False
    return isinstance(exc, WaldurAuthError)


def summary(actions: Sequence[ComponentAction], failures: int, *, dry_run: bool, source: str) -> str:
    counts = {kind: sum(1 for a in actions if a.action == kind) for kind in (CREATE, UPDATE, UNCHANGED, EXTRA, REMOVE)}
    if not any(counts[k] for k in (CREATE, UPDATE, REMOVE)):
        tail = f"; {counts[EXTRA]} extra in Waldur" if counts[EXTRA] else ""
        return f"nothing to change: the offering's components match {source}{tail}"
    words = (_PLANNED if dry_run else _DONE)
    parts = [f"{counts[k]} {words[k]}" for k in (CREATE, UPDATE, REMOVE, UNCHANGED, EXTRA) if counts[k]]
    text = ", ".join(parts)
    if failures:
        text += f"; {failures} FAILED"
    if dry_run:
        text += " (dry run: nothing was changed)"
    return text


def run(settings: Settings, waldur: Any | None = None, *, dry_run: bool = False, remove_missing: bool = False,
        out: TextIO | None = None) -> int:
    """Entry point of ``--load-components``; returns the exit code.

    0: the offering matches the file (or would, for a dry run); 1: a component could not be written, or
    Waldur could not be reached; 3 (``loop.EXIT_AUTH``): Waldur refused the token.
    """
    from waldur_slurm.daemon.loop import EXIT_AUTH
    from waldur_slurm.waldur.errors import WaldurAuthError, WaldurError, WaldurNotFound

    out = out or sys.stdout
    own_client = waldur is None
    if waldur is None:
        from waldur_slurm.daemon.wiring import make_waldur_client

        waldur = make_waldur_client(settings)
    try:
        try:
            offering = waldur.get_offering()
        except WaldurNotFound:
            print(f"error: offering {settings.offering_uuid} not found, or the token's user does not manage it "
                  "(WALDUR_OFFERING_UUID)", file=out, flush=True)
            return EXIT_FAILED
        print(f"offering {offering.name!r} ({settings.offering_uuid}), TRES file {settings.tres_config_path}"
              f"{' (dry run)' if dry_run else ''}", file=out, flush=True)
        actions = plan_components(settings.components, offering.components, remove_missing=remove_missing)
        rows, failures = apply_actions(waldur, actions, dry_run=dry_run, out=out)
    except WaldurAuthError as exc:
        print(f"error: Waldur refused the API token: {exc} (check WALDUR_API_TOKEN and the user's role)",
              file=out, flush=True)
        return EXIT_AUTH
    except WaldurError as exc:
        print(f"error: {exc}", file=out, flush=True)
        return EXIT_FAILED
    finally:
        if own_client:
            waldur.close()
    print(format_table(rows), file=out)
    print(summary(actions, failures, dry_run=dry_run, source=settings.tres_config_path), file=out, flush=True)
    return EXIT_FAILED if failures else EXIT_OK
