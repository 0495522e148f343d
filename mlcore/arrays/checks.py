"""Argument checks shared by the constructors and functions that take plain numbers.

Each check names the argument, says what was expected and what came, and returns the value
as a Python ``int`` or ``float``. Python and NumPy numbers (anything registered with
:mod:`numbers`: ``np.int64``, ``np.float32``, 0-d values that say they are numbers) are
accepted alike; bools, strings, NaN and arrays are refused.
"""

from __future__ import annotations

import math
import numbers
from typing import TypeGuard

from ..errors import InvalidParameterError

__all__ = ["real", "integer", "is_integer", "is_real"]


def is_integer(value: object) -> TypeGuard[numbers.Integral]:
    """An int or a NumPy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) \
        and type(value).__name__ != "bool_"


def is_real(value: object) -> TypeGuard[numbers.Real]:
    """An int, a float or a NumPy number of either kind, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) \
        and type(value).__name__ != "bool_"


def real(name: str, value: object, low: float = -math.inf, high: float = math.inf, *,
         open_low: bool = False, open_high: bool = False, example: str = "",
         owner: str = "") -> float:
    """``value`` as a finite float in the interval (``[low, high]`` unless opened)."""
    interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    interval = "" if math.isinf(low) and math.isinf(high) else " in " + interval
    if not is_real(value):
        raise InvalidParameterError(
            f"{_who(owner, name)} must be a number{interval}, received {value!r} of type "
            f"{type(value).__name__}.{_fix(example)}", value)
    v = float(value)
    inside = (low < v if open_low else low <= v) and (v < high if open_high else v <= high)
    if not (math.isfinite(v) and inside):
        what = f"be{interval} (a finite number)" if interval else "be a finite number"
        raise InvalidParameterError(
            f"{_who(owner, name)} must {what}, received {value!r}.{_fix(example)}", value)
    return v


def integer(name: str, value: object, low: int = 0, *, example: str = "",
            owner: str = "") -> int:
    """``value`` as an int ``>= low`` (a NumPy integer is accepted; 2.0 and "2" are not)."""
    if is_integer(value) and int(value) >= low:
        return int(value)
    raise InvalidParameterError(
        f"{_who(owner, name)} must be an integer >= {low}, received {value!r} of type "
        f"{type(value).__name__}.{_fix(example)}", value)


def _who(owner: str, name: str) -> str:
    return f"{owner}: {name}" if owner else name


def _fix(example: str) -> str:
    return f" Pass, for example, {example}." if example else ""


def seed(value: object, name: str = "seed") -> int | None:
    """A random seed: None (fresh entropy) or an integer >= 0 (NumPy's generators refuse
    negative seeds, with a message that does not name the argument)."""
    if value is None:
        return None
    return integer(name, value, 0, example=f"{name}=0, or None for a fresh random one")
