"""convprop.gradcheck refuses to pass what it cannot check: NaN or infinite gradients and tolerances."""

from __future__ import annotations

import numpy as np
import pytest

import convprop
from convprop.errors import ArgumentError, ArgumentTypeError
from convprop.gradcheck import GradcheckError, gradcheck

X = np.array([[0.5, -1.0, 2.0]])


def square(x):
    return x * x


def square_backward(g, x):
    return (2 * g * x,)


def poisoned(value, where):
    """The right gradient of x² with ``value`` written into one entry."""

    def backward(g, x):
        (dx,) = square_backward(g, x)
        dx[where] = value
        return (dx,)

    return backward


@pytest.mark.parametrize(
    ("backward", "forward", "says"),
    [
        (
            poisoned(np.nan, (0, 1)),
            square,
            "analytic gradient holds 1 NaN and 0 infinite value(s) of 3, first at (0, 1)",
        ),
        (
            poisoned(np.inf, (0, 2)),
            square,
            "analytic gradient holds 0 NaN and 1 infinite value(s) of 3, first at (0, 2)",
        ),
        (poisoned(-np.inf, (0, 0)), square, "analytic gradient holds 0 NaN and 1 infinite value(s)"),
        (
            square_backward,
            lambda x: np.where(x > 1.5, np.nan, x * x),
            "x: the numeric gradient holds 3 NaN and 0 infinite value(s) of 3",
        ),
        (
            poisoned(np.nan, (0, 0)),
            lambda x: x * x * np.inf,
            "analytic gradient holds 1 NaN and 0 infinite value(s) of 3, "
            "first at (0, 0) and the numeric gradient holds",
        ),
    ],
)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf in the numeric one
def test_a_non_finite_gradient_is_a_failure_and_says_which(backward, forward, says):
    result = gradcheck(forward, backward, [X.copy()], names=["x"], raise_on_failure=False)
    assert result.ok is False
    assert result.max_abs_error == [np.inf] and result.max_rel_error == [np.inf]
    assert len(result.failures) == 1 and result.failures[0].startswith("x: ") and says in result.failures[0]
    with pytest.raises(GradcheckError, match="gradient check failed"):
        gradcheck(forward, backward, [X.copy()], names=["x"])


@pytest.mark.parametrize(
    ("option", "value", "error", "message"),
    [
        ("atol", np.nan, ArgumentError, "atol must be a finite number >= 0, got nan"),
        ("atol", np.inf, ArgumentError, "atol must be a finite number >= 0, got inf"),
        ("rtol", np.nan, ArgumentError, "rtol must be a finite number >= 0, got nan"),
        ("rtol", -1e-5, ArgumentError, "rtol must be a finite number >= 0, got -1e-05"),
        ("eps", 0.0, ArgumentError, "eps must be a finite number > 0, got 0.0"),
        ("eps", np.inf, ArgumentError, "eps must be a finite number > 0, got inf"),
        ("atol", "1e-6", ArgumentTypeError, "atol must be a number, got '1e-6'"),
        ("atol", True, ArgumentTypeError, "atol must be a number, got True"),
    ],
)
def test_a_tolerance_that_cannot_fail_is_refused(option, value, error, message):
    with pytest.raises(error, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        gradcheck(square, square_backward, [X.copy()], **{option: value})


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_inputs_are_refused_by_name(value):
    x = X.copy()
    x[0, 1] = value
    with pytest.raises(ArgumentError, match=r"gradcheck needs finite inputs; x holds .* first at \(0, 1\)"):
        gradcheck(square, square_backward, [x], names=["x"])


def test_a_nan_entry_among_good_ones_is_counted_by_the_elementwise_check():
    """A NaN that survives into ``diff`` (not possible after the finiteness check, but the comparison
    is written ``~(diff <= tol)`` so that it would fail): the honest gradient still passes."""
    result = gradcheck(square, square_backward, [X.copy()], names=["x"])
    assert result.ok and result.failures == [] and np.isfinite(result.max_abs_error).all()


def test_a_non_finite_parameter_is_refused_by_its_name_in_gradcheck_module():
    layer = convprop.nn.Linear(3, 2, rng=0, dtype=np.float64)
    layer.weight.data[1, 2] = np.nan
    with pytest.raises(ArgumentError, match=r"weight holds 1 NaN and 0 infinite value\(s\) of 6, first at \(1, 2\)"):
        convprop.gradcheck_module(layer, X.copy())
