"""Argument checks that raise a ValueError naming the parameter and what is allowed."""

from __future__ import annotations

import math
from collections.abc import Iterable


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> None:
    """Raise unless ``value`` is an int within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    low = "-inf" if minimum is None else minimum
    high = "inf" if maximum is None else maximum
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name}: got {value}; allowed: integers from {low} to {high}")


def check_positive(name: str, value) -> None:
    """Raise unless ``value`` is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: got {value!r}; allowed: a finite number > 0")


def check_choice(name: str, value, allowed: Iterable) -> None:
    """Raise unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name}: unknown value {value!r}; allowed: {', '.join(map(str, allowed))}")
