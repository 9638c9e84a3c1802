"""Argument checks shared by every functional operation: arrays must be float32 or float64, and the
arrays of one call must share a dtype (float32 in, float32 out). Errors quote what was received."""

from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(value, name: str) -> np.ndarray:
    """``value`` as a float32/float64 ndarray, or a TypeError saying what was received."""
    if isinstance(value, np.ndarray):
        array = value
    else:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} must be an array of numbers, got {type(value).__name__}: {exc}") from None
        if array.dtype.kind in "iub" and array.size:
            array = array.astype(np.float64)  # plain Python lists of ints are fine
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {array.dtype}")
    return array


def check_same_dtype(**arrays: np.ndarray | None) -> np.dtype:
    dtypes = {name: a.dtype for name, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{name}={dt}" for name, dt in dtypes.items())
        raise TypeError(f"all arrays must share one dtype (float32 or float64), got {listed}")
    return next(iter(dtypes.values()))


def check_positive_int(value, name: str) -> int:
    """``value`` as a Python int >= 1 (bools refused), or a ValueError quoting it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)
