"""conv1d, conv2d, conv3d against PyTorch (float64, forward and every gradient, every algorithm), per-side
padding against torch's F.pad followed by a valid convolution, every algorithm against direct in float64
and float32, and gradcheck on the new functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from algorithm_cases import GENERAL
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import assert_close, check_against_torch

import convprop
from convprop.errors import ArgumentError
from convprop.functional import (
    conv1d,
    conv1d_backward,
    conv2d,
    conv2d_backward,
    conv3d,
    conv3d_backward,
)

FUNCTIONS = {1: (conv1d, conv1d_backward, TF.conv1d), 2: (conv2d, conv2d_backward, TF.conv2d),
             3: (conv3d, conv3d_backward, TF.conv3d)}  # fmt: skip
ALGOS = [*GENERAL, "auto"]  # the specialised ones: tests/algorithm_cases.py
TORCH_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def explicit_pads(padding, size, kernel, stride, dilation):
    """((before, after), ...) from the documented rules, written independently of convprop."""
    n = len(size)
    if padding == "valid":
        return ((0, 0),) * n
    if padding == "same":  # PyTorch's rule at stride 1, TensorFlow's otherwise; odd pixel after
        pads = []
        for L, k, s, d in zip(size, kernel, stride, dilation, strict=True):
            total = d * (k - 1) if s == 1 else max((math.ceil(L / s) - 1) * s + d * (k - 1) + 1 - L, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    if isinstance(padding, int):
        return ((padding, padding),) * n
    return tuple(p if isinstance(p, tuple) else (p, p) for p in padding)


def torch_padded(x, pads, mode):
    """F.pad's flat (last axis first) widths from ((before, after), ...)."""
    flat = [w for before_after in reversed(pads) for w in before_after]
    return TF.pad(x, flat, mode=TORCH_MODE[mode]) if any(flat) else x


@st.composite
def conv_cases(draw, ndim):
    """A valid convolution with ``ndim`` spatial axes: options and float64 arrays (x, weight, bias)."""
    groups_kind = draw(st.sampled_from(["one", "some", "depthwise"]))
    if groups_kind == "one":
        groups, cg, og = 1, draw(st.integers(1, 3)), draw(st.integers(1, 3))
    elif groups_kind == "some":
        groups, cg, og = draw(st.integers(2, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    else:
        groups, cg, og = draw(st.integers(1, 3)), 1, draw(st.integers(1, 2))
    top = {1: 5, 2: 4, 3: 3}[ndim]
    kernel = tuple(draw(st.integers(1, top)) for _ in range(ndim))  # non-square / non-cubic
    stride = tuple(draw(st.sampled_from([1, 1, 2, 3])) for _ in range(ndim))  # remainders included
    dilation = tuple(draw(st.sampled_from([1, 1, 2])) for _ in range(ndim))
    padding = draw(
        st.one_of(
            st.integers(0, 2),
            st.tuples(*(st.integers(0, 2) for _ in range(ndim))),
            st.tuples(*(st.tuples(st.integers(0, 3), st.integers(0, 3)) for _ in range(ndim))),  # per side
            st.sampled_from(["same", "valid"]),
        )
    )
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    size = [draw(st.integers(max(1, e - 2), e + (6 if ndim < 3 else 3))) for e in extent]
    pads = explicit_pads(padding, size, kernel, stride, dilation)
    for a in range(ndim):
        if size[a] + sum(pads[a]) < extent[a]:
            size[a] = extent[a]
            pads = explicit_pads(padding, size, kernel, stride, dilation)
    modes = ["zeros", "replicate"]
    if all(p < size[a] for a in range(ndim) for p in pads[a]):
        modes.append("reflect")
    if all(p <= size[a] for a in range(ndim) for p in pads[a]):
        modes.append("circular")
    mode = draw(st.sampled_from(modes))
    batch = draw(st.sampled_from([None, 1, 2]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    C, O = cg * groups, og * groups
    x = rng.standard_normal((C, *size) if batch is None else (batch, C, *size))
    weight = rng.standard_normal((O, cg, *kernel))
    bias = rng.standard_normal(O)
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=mode)
    return x, weight, bias, options, pads


def refused(algorithm, x, weight, ndim, options) -> bool:
    """``depthwise`` is 1-D or 2-D with one input channel per group; elsewhere it must refuse, saying why."""
    if algorithm != "depthwise" or (ndim in (1, 2) and weight.shape[1] == 1):
        return False
    forward = FUNCTIONS[ndim][0]
    with pytest.raises(ArgumentError, match=r"algorithm='depthwise' cannot compute this convolution: the depthwise"):
        forward(x, weight, algorithm=algorithm, **options)
    return True


def check_case(ndim, case, algorithm):
    x, weight, bias, options, pads = case
    if refused(algorithm, x, weight, ndim, options):
        return
    forward, backward, torch_conv = FUNCTIONS[ndim]
    unbatched = x.ndim == ndim + 1
    mode = options["padding_mode"]
    torch_options = dict(stride=options["stride"], dilation=options["dilation"], groups=options["groups"])

    def reference(xt, wt, bt):  # torch: F.pad, then a valid convolution
        xb = xt[None] if unbatched else xt
        y = torch_conv(torch_padded(xb, pads, mode), wt, bt, padding=0, **torch_options)
        return y[0] if unbatched else y

    check_against_torch(
        lambda x, w, b: forward(x, w, b, algorithm=algorithm, **options),
        lambda g, x, w, b: backward(g, x, w, algorithm=algorithm, **options),
        reference,
        [x, weight, bias],
        names=["x", "weight", "bias"],
    )


@pytest.mark.parametrize("algorithm", ALGOS)
@settings(max_examples=50)
@given(case=conv_cases(1))
def test_conv1d_matches_torch(algorithm, case):
    check_case(1, case, algorithm)


@pytest.mark.parametrize("algorithm", ALGOS)
@settings(max_examples=40)
@given(case=conv_cases(2))
def test_conv2d_per_side_padding_matches_torch(algorithm, case):
    check_case(2, case, algorithm)


@pytest.mark.parametrize("algorithm", ALGOS)
@settings(max_examples=30)
@given(case=conv_cases(3))
def test_conv3d_matches_torch(algorithm, case):
    check_case(3, case, algorithm)


def test_torch_symmetric_padding_equals_the_per_side_form():
    """``padding=(1, 2)`` (symmetric, per axis) is ``((1, 1), (2, 2))``, and torch agrees with both."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2))
    ours = conv2d(x, w, padding=((1, 1), (2, 2)))
    np.testing.assert_array_equal(ours, conv2d(x, w, padding=(1, 2)))
    assert_close(ours, TF.conv2d(torch.tensor(x), torch.tensor(w), padding=(1, 2)).numpy(), "per side vs torch")


# (ndim, N, C, size, O, kernel, stride, padding, dilation, groups, padding_mode): small, for `direct`
GEOMETRIES = [
    (1, 2, 3, (11,), 4, (3,), (2,), 1, (1,), 1, "zeros"),
    (1, 2, 4, (9,), 4, (4,), (1,), "same", (2,), 2, "reflect"),
    (1, 3, 1, (12,), 5, (1,), (1,), 0, (1,), 1, "zeros"),  # pointwise
    (1, 2, 4, (10,), 8, (3,), (3,), ((2, 0),), (1,), 4, "circular"),  # depthwise ×2, per side
    (3, 2, 2, (5, 6, 4), 4, (3, 2, 2), (2, 1, 1), ((1, 0), (0, 1), (1, 1)), (1, 2, 1), 2, "zeros"),
    (3, 1, 3, (4, 5, 5), 3, (1, 1, 1), (1, 1, 1), 0, (1, 1, 1), 1, "zeros"),  # pointwise
    (3, 2, 3, (6, 5, 5), 6, (2, 3, 3), (1, 2, 2), "same", (1, 1, 1), 3, "replicate"),
    (2, 2, 3, (7, 8), 4, (3, 2), (2, 3), ((0, 2), (1, 0)), (2, 1), 1, "reflect"),
]


def _inputs(geometry, seed=0):
    ndim, N, C, size, O, kernel, stride, padding, dilation, groups, mode = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, *size))
    w = rng.standard_normal((O, C // groups, *kernel))
    b = rng.standard_normal(O)
    return ndim, x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=mode)


def _all(ndim, x, w, b, options, algorithm):
    forward, backward, _ = FUNCTIONS[ndim]
    y = forward(x, w, b, algorithm=algorithm, **options)
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(x.dtype)
    return (y, *backward(dy, x, w, algorithm=algorithm, **options))


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-9), (np.float32, 1e-4)])
@pytest.mark.parametrize("algorithm", ["scipy", "im2col", "gemm", "auto"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_every_algorithm_matches_direct(geometry, algorithm, dtype, tolerance):
    ndim, x, w, b, options = _inputs(geometry)
    reference = _all(ndim, x, w, b, options, "direct")
    got = _all(ndim, x.astype(dtype), w.astype(dtype), b.astype(dtype), options, algorithm)
    for name, g, r in zip(("y", "dx", "dw", "db"), got, reference, strict=True):
        assert g.dtype == dtype and g.shape == r.shape
        assert_close(g, r, f"{algorithm} {name} on {geometry}", tolerance)


@pytest.mark.parametrize("algorithm", ["direct", "gemm", "scipy"])
@pytest.mark.parametrize("geometry", [GEOMETRIES[0], GEOMETRIES[3], GEOMETRIES[4]], ids=str)
def test_gradcheck(geometry, algorithm):
    ndim, x, w, b, options = _inputs(geometry)
    x, w = x[:1, :, ...], w  # one image keeps the finite differences quick
    forward, backward, _ = FUNCTIONS[ndim]
    result = convprop.gradcheck(
        lambda x, w, b: forward(x, w, b, algorithm=algorithm, **options),
        lambda g, x, w, b: backward(g, x, w, algorithm=algorithm, **options),
        [x, w, b],
        names=["x", "weight", "bias"],
    )
    assert result.ok


@pytest.mark.parametrize("ndim", [1, 3])
def test_unbatched_equals_a_batch_of_one(ndim):
    forward, backward, _ = FUNCTIONS[ndim]
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, *(6,) * ndim)), rng.standard_normal((3, 2, *(2,) * ndim))
    y = forward(x, w, padding=1)
    np.testing.assert_allclose(y, forward(x[None], w, padding=1)[0], rtol=1e-12)
    g = rng.standard_normal(y.shape)
    (dx, dw, db), (bdx, bdw, bdb) = backward(g, x, w, padding=1), backward(g[None], x[None], w, padding=1)
    for got, want in ((dx, bdx[0]), (dw, bdw), (db, bdb)):
        np.testing.assert_allclose(got, want, rtol=1e-12)


X1, X2, X3 = np.zeros((1, 2, 8)), np.zeros((1, 2, 8, 8)), np.zeros((1, 2, 4, 4, 4))
W1, W2 = np.zeros((3, 2, 3)), np.zeros((3, 2, 3, 3))
PAIRS = r"per-side padding needs one \(before, after\) pair per spatial axis "


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: conv1d(X1, W2), r"conv1d: weight must be \(C_out, C_in/groups, kL\), got shape \(3, 2, 3, 3\)"),
        (
            lambda: conv3d(X3, W2),
            r"conv3d: weight must be \(C_out, C_in/groups, kD, kH, kW\), got shape \(3, 2, 3, 3\)",
        ),
        (
            lambda: conv1d(X2, W1),
            r"conv1d: x must be \(N, C_in, L\) or unbatched \(C_in, L\), got shape \(1, 2, 8, 8\)",
        ),
        (lambda: conv2d(X2, W2, padding=((1, 1),)), PAIRS + r"\(2\), got \(\(1, 1\),\)"),
        (lambda: conv1d(X1, W1, padding=((1, 1), (0, 0))), PAIRS + r"\(1\), got \(\(1, 1\), \(0, 0\)\)"),
        (lambda: conv2d(X2, W2, padding=((1, -1), (0, 0))), r"padding must be >= 0, got \(\(1, -1\), \(0, 0\)\)"),
        (lambda: conv2d(X2, W2, padding=((1, 2, 3), (0, 0))), r"pair \(before, after\) of ints, got \(\(1, 2, 3\), "),
        (
            lambda: conv3d(np.zeros((1, 4, 4, 4, 4)), np.zeros((4, 1, 3, 3, 3)), groups=4, algorithm="depthwise"),
            r"algorithm='depthwise' cannot compute this convolution: the depthwise kernels are compiled for 1-D "
            r"and 2-D convolutions, this one has 3 spatial axes",
        ),
        (lambda: conv1d(X1, W1, stride=(1, 2)), r"stride must be an int or a sequence of one int, got \(1, 2\)"),
        (lambda: conv3d(X3, np.zeros((3, 2, 3, 3, 5))), r"dilated size 5 along W\) is larger than the padded input"),
    ],
)
def test_bad_arguments_are_refused_quoting_the_value(call, match):
    with pytest.raises((ArgumentError, TypeError), match=match):
        call()
