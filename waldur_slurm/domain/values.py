"""Checked numbers from Waldur and SLURM: every value that reaches arithmetic passes through here first.

A value from outside (an order limit, a usage Waldur holds, a TRES count sacct prints) can be anything:
text, NaN, ``1e999999``, an integer of 5,000 digits. Python's Decimal and int raise several unrelated
exceptions on those (``InvalidOperation``, ``Overflow``, ``ValueError`` for int->str conversions beyond
4,300 digits), and even formatting such a value into an error message can raise. Here each problem
becomes one typed error, ``BadValue``, whose message names the field and the value; planners catch it
per order, resource or record, so one bad value never stops a cycle.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Any

# Magnitudes beyond this are refused before any arithmetic. 10^24 is far above any real quantity (a
# limit of 2^62 TRES-minutes is ~4.6 x 10^18) and keeps every product of the agent's conversions inside
# Decimal's default 28-digit precision and exponent range.
MAX_EXPONENT = 24
# Integers wider than this are never converted to text (Python refuses beyond 4,300 digits).
_MAX_INT_BITS = 4 * 1024


class BadValue(ValueError):
    """A value from Waldur or SLURM that cannot be used. Fails only the item (order, resource, record)
    it belongs to; the message names the field and the value."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{field} = {show(value)} {problem}")


def show(value: object, limit: int = 60) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters; never raises (huge ints included)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _MAX_INT_BITS:
        digits = int(value.bit_length() * math.log10(2)) + 1
        return f"<{'-' if value < 0 else ''}integer of about {digits} digits>"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a hostile object's __repr__ must not break the message
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def to_decimal(value: Any, field: str, *, allow_negative: bool = True) -> Decimal:
    """``value`` (int, float, Decimal or decimal text) as an exact, finite, bounded Decimal.

    Raises BadValue naming ``field`` for bools, text that is not a number, NaN and infinities, magnitudes
    of 10^MAX_EXPONENT or more, and (unless ``allow_negative``) negative values.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise BadValue(field, value, "is not a finite number")
    if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        raise BadValue(field, value, "is too large")
    try:
        if isinstance(value, float):
            number = Decimal(repr(value)) if math.isfinite(value) else Decimal("NaN")
        elif isinstance(value, str):
            number = Decimal(value.strip())
        else:
            number = Decimal(value)
    except (InvalidOperation, ValueError):
        raise BadValue(field, value, "is not a finite number") from None
    if not number.is_finite():
        raise BadValue(field, value, "is not a finite number")
    if number and number.adjusted() >= MAX_EXPONENT:
        raise BadValue(field, value, "is too large")
    if number.is_zero():
        return Decimal(0)  # "1e-999999" is zero at any precision the agent uses; drop the extreme exponent
    if number.adjusted() < -MAX_EXPONENT:
        raise BadValue(field, value, "is too small")
    if number < 0 and not allow_negative:
        raise BadValue(field, value, "is negative")
    return number
