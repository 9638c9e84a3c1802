"""The layers' constructor checks: the shared ones of :mod:`convprop.functional.validation`, re-exported so a
layer's check and its function's check give the same message and the same exception class."""

from __future__ import annotations

from ..functional.validation import (
    check_at_least,
    check_divisor_override,
    check_dtype,
    check_positive_int,
    check_probability,
)

__all__ = ["check_at_least", "check_divisor_override", "check_dtype", "check_positive_int", "check_probability"]
