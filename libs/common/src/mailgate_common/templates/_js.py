"""JavaScript value semantics the EmailEngine helpers rely on (truthiness, Number(), ==).

Template data is JSON: None stands for both null and undefined (a missing path is the common
case, so None behaves like undefined where the two differ: Number(undefined) is NaN).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeGuard

_NUMERIC = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")


def is_list(value: Any) -> TypeGuard[Sequence[Any]]:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def truthy(value: Any) -> bool:
    """JavaScript truthiness: arrays and objects are true even when empty."""
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0 and not math.isnan(value)
    if isinstance(value, str):
        return value != ""
    return True


def to_number(value: Any) -> float:
    """JavaScript Number(value); NaN when it is not a number."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return 0.0
        if _NUMERIC.match(text):
            return float(text)
        if text in ("Infinity", "+Infinity"):
            return math.inf
        if text == "-Infinity":
            return -math.inf
        return math.nan
    if is_list(value):
        if len(value) == 0:
            return 0.0
        if len(value) == 1:
            return to_number(to_primitive(value[0]) if is_list(value[0]) else value[0])
        return math.nan
    return math.nan


def to_primitive(value: Any) -> Any:
    """ToPrimitive for == between an object and a primitive (String(array), '[object Object]')."""
    if is_list(value):
        return ",".join("" if item is None else str(to_primitive(item)) for item in value)
    if isinstance(value, Mapping):
        return "[object Object]"
    return value


def _same_object(a: Any, b: Any) -> bool:
    unwrap_a = getattr(a, "_mg_data", a)
    unwrap_b = getattr(b, "_mg_data", b)
    return unwrap_a is unwrap_b


def loose_equals(a: Any, b: Any) -> bool:
    """JavaScript a == b."""
    a_obj = isinstance(a, Mapping) or is_list(a)
    b_obj = isinstance(b, Mapping) or is_list(b)
    if a_obj and b_obj:
        return _same_object(a, b)
    if a is None or b is None:
        return a is None and b is None
    if a_obj:
        a = to_primitive(a)
    if b_obj:
        b = to_primitive(b)
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return to_number(a) == to_number(b)


def is_nan(value: Any) -> bool:
    """JavaScript global isNaN(value)."""
    return math.isnan(to_number(value))


def number_text(value: float) -> str:
    """JavaScript Number.prototype.toString() for a finite or non-finite float."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign, digit_tuple, exp = Decimal(repr(value)).as_tuple()
    digits = "".join(map(str, digit_tuple))
    assert isinstance(exp, int)
    stripped = digits.rstrip("0")
    exp += len(digits) - len(stripped)
    digits = stripped or "0"
    k = len(digits)
    n = k + exp
    prefix = "-" if sign else ""
    if k <= n <= 21:
        return prefix + digits + "0" * (n - k)
    if 0 < n <= 21:
        return prefix + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return prefix + "0." + "0" * (-n) + digits
    e = n - 1
    mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{prefix}{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"


class JsFloat(float):
    """A float that prints like a JavaScript number (1e+21, 1e-7) where Python would differ."""

    def is_integer(self) -> bool:
        return abs(self) < 1e21 and float(self).is_integer()

    def __str__(self) -> str:
        return number_text(float(self))


def js_number(value: int | float) -> int | float:
    """Template data numbers: JSON numbers behave as JavaScript doubles when printed."""
    if isinstance(value, int):
        if abs(value) < 10**21:
            return value
        return JsFloat(value)
    if not math.isfinite(value) or abs(value) >= 1e21:
        return JsFloat(value)
    if value.is_integer():
        return value
    return value if number_text(value) == repr(value) else JsFloat(value)
