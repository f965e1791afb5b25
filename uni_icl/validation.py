"""Checks that raise a ValueError naming the parameter (or stored field) and what is allowed.

They check arguments before any work starts, and values loaded from the cache (a loaded value that
fails a check is treated as missing by the store). :class:`NonFiniteError`, a ValueError, says
that a number is inf or NaN: raised by a computation (inputs, losses, scores), it stops the run
with nothing cached.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch


class NonFiniteError(ValueError):
    """A number is inf or NaN where a finite one is required: the run stops and nothing is cached."""


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


def check_number(name: str, value, *, minimum: float = -math.inf, maximum: float = math.inf) -> None:
    """Raise unless ``value`` is a finite int or float within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise NonFiniteError(f"{name}: got {value!r}; allowed: finite numbers")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name}: got {value!r}; allowed: numbers from {minimum} to {maximum}")


def check_numbers(name: str, values, *, minimum: float = -math.inf, maximum: float = math.inf) -> None:
    """Raise unless ``values`` is a list of finite numbers within [minimum, maximum]."""
    if not isinstance(values, list):
        raise ValueError(f"{name}: expected a list of numbers, got {type(values).__name__}")
    for index, value in enumerate(values):
        check_number(f"{name}[{index}]", value, minimum=minimum, maximum=maximum)


def check_keys(name: str, data, expected: Iterable[str]) -> None:
    """Raise unless ``data`` is a dict whose keys are exactly ``expected``."""
    if not isinstance(data, dict):
        raise ValueError(f"{name}: expected a dict, got {type(data).__name__}")
    expected = set(expected)
    if set(data) != expected:
        missing, unknown = sorted(expected - set(data)), sorted(set(data) - expected)
        raise ValueError(f"{name}: missing keys {missing}, unexpected keys {unknown}")


def check_state_dict(name: str, weights, reference: Mapping[str, torch.Tensor]) -> None:
    """Raise unless ``weights`` holds finite tensors with the names and shapes of ``reference``."""
    if not isinstance(weights, Mapping):
        raise ValueError(f"{name}: expected a dict of tensors, got {type(weights).__name__}")
    check_keys(name, dict(weights), reference)
    for key, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor) or tensor.shape != reference[key].shape:
            raise ValueError(f"{name}: {key} is not a tensor of shape {tuple(reference[key].shape)}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name}: {key} holds inf or NaN")


def check_finite(name: str, values: Iterable[float]) -> None:
    """Raise :class:`NonFiniteError` naming ``name`` if any of ``values`` is inf or NaN."""
    bad = [value for value in values if not math.isfinite(value)]
    if bad:
        raise NonFiniteError(f"{name}: got {bad[0]}; allowed: finite numbers (nothing was cached)")
