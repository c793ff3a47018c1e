"""The TRES / components file: which SLURM TRES are sold in Waldur, and how their units convert.

Each top-level key is a SLURM TRES name (``cpu``, ``mem``, ``gres/gpu``, ``billing``, ...), which is also
the Waldur component ``type``. ``limit`` is in Waldur units; ``unit_factor`` says how many SLURM units
(TRES-minutes, with mem in MB) make one Waldur unit, e.g. 60000 CPU-minutes per CPU k-Hour.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from waldur_slurm.domain.values import to_decimal

ACCOUNTING_TYPES = ("usage", "limit")
ALLOWED_FIELDS = {"limit", "measured_unit", "accounting_type", "label", "unit_factor", "description"}
REQUIRED_FIELDS = ("measured_unit", "accounting_type", "label")

# TRES names SLURM knows: the built-in types, and typed ones ("gres/gpu", "license/matlab", ...).
_TRES_KEY = re.compile(
    r"^(cpu|mem|node|billing|energy|vmem|pages|fs/disk|fs/lustre|(gres|license|bb|ic)/[a-z0-9][a-z0-9_.:-]{0,62})$"
)
CENT = Decimal("0.01")


def to_cents(value: Decimal) -> Decimal:
    """Waldur keeps usage to 2 decimal places; every amount sent is rounded here, half up."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


class ComponentsError(ValueError):
    """The components file cannot be used; the message names the file, the key and the problem."""


@dataclass(frozen=True)
class Component:
    key: str
    label: str
    measured_unit: str
    accounting_type: str  # "usage" or "limit"
    limit: Decimal | None  # in Waldur units
    unit_factor: int = 1
    description: str = ""

    def to_slurm(self, amount: Decimal | int | float | str, field: str | None = None) -> int:
        """Waldur units -> whole SLURM TRES-minutes (mem in MB), rounded half up.

        Raises BadValue naming ``field`` (default: the component key) for anything that is not a finite,
        non-negative number below 10^MAX_EXPONENT, before any arithmetic on it.
        """
        value = to_decimal(amount, field or self.key, allow_negative=False)
        return int((value * self.unit_factor).to_integral_value(rounding=ROUND_HALF_UP))

    def to_waldur(self, minutes: Decimal | int, field: str | None = None) -> Decimal:
        """SLURM TRES-minutes -> Waldur units, to the 2 decimal places Waldur stores (BadValue when unbounded)."""
        value = to_decimal(minutes, field or self.key)
        return to_cents(value / self.unit_factor)

    @property
    def slurm_limit(self) -> int | None:
        """The file's default limit as GrpTRESMins (used for usage-type components)."""
        return None if self.limit is None else self.to_slurm(self.limit)


def parse_amount(value: Any) -> Decimal | None:
    """A number from YAML or JSON as an exact Decimal; None for anything else (bools, text, NaN/inf floats).

    Strings may still spell "NaN" or "Infinity": callers check ``is_finite()``.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value.bit_length() > 4096:
        return None  # Decimal(int) refuses more than 4,300 digits; no amount is that large
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            return None
    return None


def parse_components(data: Any, source: str) -> dict[str, Component]:
    """Validate the parsed YAML document; ``source`` names the file in error messages."""
    if not isinstance(data, dict) or not data:
        raise ComponentsError(f"{source}: expected a mapping of TRES names to component settings")
    components: dict[str, Component] = {}
    for raw_key, spec in data.items():
        key = str(raw_key)
        where = f"{source}: key {key!r}"
        if not _TRES_KEY.match(key):
            raise ComponentsError(
                f"{where}: not a SLURM TRES name (expected cpu, mem, node, billing, gres/<name>, license/<name>, ...)"
            )
        if not isinstance(spec, dict):
            raise ComponentsError(f"{where}: expected a mapping with {', '.join(REQUIRED_FIELDS)}")
        unknown = sorted(set(map(str, spec)) - ALLOWED_FIELDS)
        if unknown:
            raise ComponentsError(f"{where}: unknown field(s) {', '.join(unknown)}")
        for name in REQUIRED_FIELDS:
            value = spec.get(name)
            if not isinstance(value, str) or not value.strip():
                raise ComponentsError(f"{where}: field {name!r} must be a non-empty string, got {value!r}")
        accounting_type = spec["accounting_type"].strip()
        if accounting_type not in ACCOUNTING_TYPES:
            raise ComponentsError(
                f"{where}: accounting_type {accounting_type!r} is invalid: expected 'usage' or 'limit'"
            )
        limit = None
        if spec.get("limit") is not None:
            limit = parse_amount(spec["limit"])
            if limit is None or not limit.is_finite() or limit < 0:
                raise ComponentsError(f"{where}: limit {spec['limit']!r} must be a non-negative number")
        factor = spec.get("unit_factor", 1)
        if isinstance(factor, bool) or not isinstance(factor, int) or factor <= 0:
            raise ComponentsError(f"{where}: unit_factor {factor!r} must be a positive integer")
        description = spec.get("description", "") or ""
        if not isinstance(description, str):
            raise ComponentsError(f"{where}: description must be a string")
        components[key] = Component(
            key=key,
            label=spec["label"].strip(),
            measured_unit=spec["measured_unit"].strip(),
            accounting_type=accounting_type,
            limit=limit,
            unit_factor=factor,
            description=description.strip(),
        )
    return components


def load_components(path: str | Path) -> dict[str, Component]:
    """Read and validate the TRES file; every problem raises ComponentsError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ComponentsError(f"{path}: file not found") from None
    except OSError as exc:
        raise ComponentsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ComponentsError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_components(data, str(path))
