"""Bad input to conv2d/conv2d_backward: a clear ValueError/TypeError quoting what was given."""

from __future__ import annotations

import numpy as np
import pytest

from convprop.functional import conv2d, conv2d_backward

X = np.zeros((2, 4, 8, 8))
W = np.zeros((6, 4, 3, 3))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(x=np.zeros((2, 3, 8, 8))), ValueError, r"weight.shape\[1\] \(=4\) must be in_channels/groups \(=3/1=3\)"),
        (
            dict(weight=np.zeros((6, 2, 3, 3)), groups=3),
            ValueError,
            r"in_channels \(=4\) must be divisible by groups \(=3\)",
        ),
        (
            dict(weight=np.zeros((5, 2, 3, 3)), groups=2),
            ValueError,
            r"out_channels \(=weight.shape\[0\]=5\) must be divisible by groups \(=2\)",
        ),
        (dict(groups=0), ValueError, r"groups must be >= 1, got 0"),
        (dict(groups=1.5), TypeError, r"groups must be an int, got 1.5 of type float"),
        (dict(weight=np.zeros((6, 4, 9, 3))), ValueError, r"larger than the padded input \(8 = 8 \+ pads \(0, 0\)\)"),
        (dict(weight=np.zeros((6, 4, 3, 3)), dilation=4), ValueError, r"dilated size 9 along H"),
        (
            dict(x=np.zeros((8, 8))),
            ValueError,
            r"x must be \(N, C_in, H, W\) or unbatched \(C_in, H, W\), got shape \(8, 8\)",
        ),
        (dict(x=np.zeros((1, 2, 4, 8, 8))), ValueError, r"got shape \(1, 2, 4, 8, 8\)"),
        (
            dict(weight=np.zeros((6, 4, 3))),
            ValueError,
            r"weight must be \(C_out, C_in/groups, kH, kW\), got shape \(6, 4, 3\)",
        ),
        (dict(bias=np.zeros(5)), ValueError, r"bias must have shape \(C_out,\) = \(6,\), got \(5,\)"),
        (dict(bias=np.zeros((6, 1))), ValueError, r"got \(6, 1\)"),
        (dict(stride=0), ValueError, r"stride must be >= 1, got 0"),
        (dict(stride=(1, -2)), ValueError, r"stride must be >= 1, got \(1, -2\)"),
        (dict(dilation=0), ValueError, r"dilation must be >= 1, got 0"),
        (dict(stride=1.5), TypeError, r"stride must be an int or a pair of ints, got 1.5"),
        (dict(stride=(1, 2, 3)), TypeError, r"got \(1, 2, 3\)"),
        (dict(padding=-1), ValueError, r"padding must be >= 0, got -1"),
        (dict(padding=(0, -2)), ValueError, r"padding must be >= 0, got \(0, -2\)"),
        (
            dict(padding="full"),
            ValueError,
            r"padding must be an int, 2 ints, 2 \(before, after\) pairs, 'same' or 'valid', got 'full'",
        ),
        (dict(padding_mode="mirror"), ValueError, r"padding_mode must be one of .*'zeros'.*got 'mirror'"),
        (
            dict(padding=8, padding_mode="reflect"),
            ValueError,
            r"padding_mode='reflect' needs each pad smaller than the input size",
        ),
        (
            dict(padding=9, padding_mode="circular"),
            ValueError,
            r"padding_mode='circular' needs each pad at most the input size",
        ),
        (dict(algorithm="fft"), ValueError, r"algorithm must be 'auto' or one of .*got 'fft'"),
        (dict(x=np.array([["a"]])), TypeError, r"x must have dtype float32 or float64, got <U1"),
        (dict(x=X.astype(np.complex128)), TypeError, r"x must have dtype float32 or float64, got complex128"),
        (dict(x={"not": "an array"}), TypeError, r"x must have dtype float32 or float64, got object"),
        (dict(weight=W.astype(np.float32)), TypeError, r"one dtype .*x=float64, weight=float32"),
        (dict(bias=np.zeros(6, dtype=np.float32)), TypeError, r"x=float64, weight=float64, bias=float32"),
    ],
)
def test_conv2d_rejects(kwargs, error, match):
    args = dict(x=X, weight=W, bias=None) | kwargs
    with pytest.raises(error, match=match):
        conv2d(**args)


def test_backward_rejects_wrong_grad_output_shape():
    with pytest.raises(
        ValueError, match=r"grad_output must have the output's shape \(2, 6, 6, 6\), got \(2, 6, 5, 6\)"
    ):
        conv2d_backward(np.zeros((2, 6, 5, 6)), X, W)
    with pytest.raises(ValueError, match=r"grad_output must have the output's shape \(6, 6, 6\), got \(1, 6, 6, 6\)"):
        conv2d_backward(np.zeros((1, 6, 6, 6)), X[0], W)


def test_backward_rejects_mixed_dtypes_and_bad_arguments():
    with pytest.raises(TypeError, match=r"grad_output=float32, x=float64"):
        conv2d_backward(np.zeros((2, 6, 6, 6), dtype=np.float32), X, W)
    with pytest.raises(ValueError, match=r"stride must be >= 1"):
        conv2d_backward(np.zeros((2, 6, 6, 6)), X, W, stride=0)


def test_integer_lists_are_accepted_as_float64():
    y = conv2d([[[1, 2], [3, 4]]], [[[[1, 1], [1, 1]]]])
    assert y.dtype == np.float64 and y.shape == (1, 1, 1) and y[0, 0, 0] == 10


def test_a_remembered_geometry_still_refuses_what_it_refused():
    """conv remembers the geometry of plain-int (and string) arguments per shape; a value equal to a
    remembered one but of another type (2.0 == 2, True == 1) is still checked, and refused, and an
    error is raised again on every call, never remembered."""
    from convprop.functional import conv

    x, w = np.ones((2, 4, 8, 8), np.float32), np.ones((6, 4, 3, 3), np.float32)
    first = conv._resolve(x, w, 2, 2, 1, 1, 1, "zeros", "auto", "conv2d")[2]
    assert conv._resolve(x, w, 2, 2, 1, 1, 1, "zeros", "auto", "conv2d")[2] is first  # remembered
    conv2d(x, w, stride=2)
    with pytest.raises(TypeError, match=r"stride must be an int or a pair of ints, got 2\.0"):
        conv2d(x, w, stride=2.0)
    with pytest.raises(TypeError, match=r"stride must be an int or a pair of ints, got True"):
        conv2d(x, w, stride=True)
    with pytest.raises(TypeError, match=r"groups must be an int, got True"):
        conv2d(x, w, groups=True)
    for _ in range(2):
        with pytest.raises(ValueError, match=r"weight.shape\[1\] \(=4\) must be in_channels/groups"):
            conv2d(np.ones((2, 3, 8, 8), np.float32), w)
    np.testing.assert_array_equal(conv2d(x, w, stride=[2, 2], padding=[1, 1]), conv2d(x, w, stride=2, padding=1))
    np.testing.assert_array_equal(conv2d(x, w, padding="same"), conv2d(x, w, padding=1))
