"""Constructor argument checks shared by the layers: errors quote what was given and what was expected."""

from __future__ import annotations

import numbers

import numpy as np

from ..functional.validation import FLOAT_DTYPES, check_positive_int

__all__ = ["check_dtype", "check_positive_int", "check_probability"]


def check_probability(value, name: str, *, allow_one: bool = False) -> float:
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and value >= 0
        and (value <= 1 if allow_one else value < 1)
    )
    if not ok:
        raise ValueError(f"{name} must be a number in [0, {'1]' if allow_one else '1)'}, got {value!r}")
    return float(value)


def check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt
