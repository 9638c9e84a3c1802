"""The argument checks of convprop, in one place: functional, nn, optim, data and train all call these, so
one check gives one message and one exception class wherever it is called from.

Each check returns the value in its canonical Python form (an ``int``, a ``float``, an ndarray, a dtype)
or raises, quoting what was received and what was expected:

==========================  ======================================  =====================  ====================
check                       accepts                                 wrong type             wrong value
==========================  ======================================  =====================  ====================
``as_float_array``          float32/float64 arrays (int lists ok)   ``ArgumentTypeError``
``check_same_dtype``        arrays of one call sharing a dtype      ``ArgumentTypeError``
``check_dtype``             float32 or float64                      ``ArgumentTypeError``
``check_positive_int``      an int >= 1 (bools refused)             ``ArgumentTypeError``  ``ArgumentError``
``check_nonzero_int``       an int != 0 (bools refused)             ``ArgumentTypeError``  ``ArgumentError``
``check_real``              a finite real number (bools refused)    ``ArgumentTypeError``  ``ArgumentError``
``check_at_least``          a finite real >= low (or > low)         ``ArgumentTypeError``  ``ArgumentError``
``check_probability``       a real in [0, 1) (or [0, 1])            ``ArgumentTypeError``  ``ArgumentError``
``check_divisor_override``  None or a non-zero int (as PyTorch)     ``ArgumentTypeError``  ``ArgumentError``
==========================  ======================================  =====================  ====================

``ArgumentError`` is also a ``ValueError`` and ``ArgumentTypeError`` a ``TypeError`` (``convprop.errors``).
This module is part of the functional core: it imports nothing of convprop but ``convprop.errors``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ..errors import ArgumentError, ArgumentTypeError

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

__all__ = [
    "FLOAT_DTYPES",
    "as_float_array",
    "check_at_least",
    "check_divisor_override",
    "check_dtype",
    "check_nonzero_int",
    "check_positive_int",
    "check_probability",
    "check_real",
    "check_same_dtype",
]


def as_float_array(value: Any, name: str) -> np.ndarray:
    """``value`` as a float32/float64 ndarray, or an ArgumentTypeError saying what was received."""
    if isinstance(value, np.ndarray):
        array = value
    else:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise ArgumentTypeError(f"{name} must be an array of numbers, got {type(value).__name__}: {exc}") from None
        if array.dtype.kind in "iub" and array.size:
            array = array.astype(np.float64)  # plain Python lists of ints are fine
    if array.dtype not in FLOAT_DTYPES:
        raise ArgumentTypeError(f"{name} must have dtype float32 or float64, got {array.dtype}")
    return array


def check_same_dtype(**arrays: np.ndarray | None) -> np.dtype:
    """The one dtype the given arrays share (``None`` entries skipped), or an ArgumentTypeError listing them."""
    first = None
    for a in arrays.values():  # (a plain loop first: this runs several times per layer call)
        if a is None:
            continue
        if first is None:
            first = a.dtype
        elif a.dtype != first:
            listed = ", ".join(f"{name}={a.dtype}" for name, a in arrays.items() if a is not None)
            raise ArgumentTypeError(f"all arrays must share one dtype (float32 or float64), got {listed}")
    if first is None:
        raise ValueError("check_same_dtype needs at least one array")  # a caller's bug, not the user's
    return first


def check_dtype(dtype: DTypeLike) -> np.dtype:
    """``dtype`` as ``np.dtype`` if it is float32 or float64 (a layer's parameter dtype)."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ArgumentTypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise ArgumentTypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _check_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    return int(value)


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as a Python int >= 1 (bools refused)."""
    v = _check_int(value, name)
    if v < 1:
        raise ArgumentError(f"{name} must be >= 1, got {value!r}")
    return v


def check_nonzero_int(value: Any, name: str) -> int:
    """``value`` as a Python int other than 0 (bools refused)."""
    v = _check_int(value, name)
    if v == 0:
        raise ArgumentError(f"{name} must be a non-zero int, got {value!r}")
    return v


def check_real(value: Any, name: str) -> float:
    """``value`` as a finite Python float (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    if not math.isfinite(value):
        raise ArgumentError(f"{name} must be finite, got {value!r}")
    return float(value)


def check_at_least(value: Any, name: str, low: float, *, strict: bool = False) -> float:
    """``value`` as a finite float ``>= low`` (``> low`` if ``strict``)."""
    v = check_real(value, name)
    if v < low or (strict and v == low):
        raise ArgumentError(f"{name} must be {'>' if strict else '>='} {low}, got {value!r}")
    return v


def check_probability(value: Any, name: str, *, allow_one: bool = False) -> float:
    """``value`` as a float in [0, 1) (``allow_one``: [0, 1])."""
    v = check_real(value, name)
    if not 0.0 <= v <= 1.0 or (v == 1.0 and not allow_one):
        raise ArgumentError(f"{name} must be in [0, {'1]' if allow_one else '1)'}, got {value!r}")
    return v


def check_divisor_override(value: Any) -> int | None:
    """Average pooling's ``divisor_override``: None, or a non-zero int (negative allowed, as in PyTorch)."""
    if value is None:
        return None
    try:
        return check_nonzero_int(value, "divisor_override")
    except ArgumentTypeError:
        raise ArgumentTypeError(
            f"divisor_override must be None or a non-zero int, got {value!r} of type {type(value).__name__}"
        ) from None
    except ArgumentError:
        raise ArgumentError(f"divisor_override must be None or a non-zero int, got {value!r}") from None
