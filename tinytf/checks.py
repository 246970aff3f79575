"""Argument checks: one clear error naming the argument, the value seen and what was expected.

Shared by every layer (data generators, training, benchmarks). Configuration arrives as
static Python values, so these checks run at trace time, never inside compiled code.
"""

from __future__ import annotations

import jax
import numpy as np


def check_key(key, name: str = "key") -> None:
    """Reject things that are not a JAX random key (a common slip: passing an int seed)."""
    if isinstance(key, (int, np.integer)) or key is None:
        raise TypeError(
            f"{name} must be a JAX random key such as jax.random.key(0), got {type(key).__name__} {key!r}"
        )
    if not isinstance(key, jax.Array | np.ndarray):
        raise TypeError(f"{name} must be a JAX random key such as jax.random.key(0), got {type(key).__name__}")


def check_int(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int, raising if it is not a Python int in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{name} must be a Python int (a static configuration value; close over it with "
            f"functools.partial under jit), got {type(value).__name__} {value!r}"
        )
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_positive(name: str, value, *, allow_none: bool = False) -> None:
    """Raise ValueError unless ``value`` is an int >= 1 (or None when ``allow_none``)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}")


def check_number(name: str, value, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a float, raising unless it is a finite number in the given range."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not np.isfinite(value) or below or above:
        lo = "" if low is None else f"{'(' if low_open else '['}{low}"
        hi = "" if high is None else f"{high}{')' if high_open else ']'}"
        where = f"in {lo or '(-inf'}, {hi or 'inf)'}"
        raise ValueError(f"{name} must be a finite number {where}, got {value!r}")
    return value


def check_prob(name: str, value) -> float:
    """Return ``value`` as a float, raising unless it is a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a float in [0, 1], got {type(value).__name__} {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value
