"""conv_transpose1d/2d/3d: against PyTorch (float64, forward and every gradient, every algorithm), as the
adjoint of the convolution, as seed 002's full correlation with the rotated kernel, against direct in
float32, gradcheck, output_size, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from algorithm_cases import GENERAL
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import assert_close, check_against_torch
from scipy import signal

import convprop
from convprop.errors import ArgumentError
from convprop.functional import (
    conv1d,
    conv2d,
    conv3d,
    conv_transpose1d,
    conv_transpose1d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    conv_transpose3d,
    conv_transpose3d_backward,
    conv_transpose_output_padding,
)

FUNCTIONS = {
    1: (conv_transpose1d, conv_transpose1d_backward, TF.conv_transpose1d, conv1d),
    2: (conv_transpose2d, conv_transpose2d_backward, TF.conv_transpose2d, conv2d),
    3: (conv_transpose3d, conv_transpose3d_backward, TF.conv_transpose3d, conv3d),
}
ALGOS = [*GENERAL, "auto"]  # the specialised ones: tests/algorithm_cases.py


@st.composite
def transpose_cases(draw, ndim):
    """A valid transposed convolution: options, per-side pads and float64 arrays (x, weight, bias)."""
    groups_kind = draw(st.sampled_from(["one", "some", "depthwise"]))
    if groups_kind == "one":
        groups, cg, og = 1, draw(st.integers(1, 3)), draw(st.integers(1, 3))
    elif groups_kind == "some":
        groups, cg, og = draw(st.integers(2, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    else:
        groups, cg, og = draw(st.integers(1, 3)), draw(st.integers(1, 2)), 1
    top = {1: 5, 2: 4, 3: 3}[ndim]
    kernel = tuple(draw(st.integers(1, top)) for _ in range(ndim))
    stride = tuple(draw(st.sampled_from([1, 2, 3])) for _ in range(ndim))
    dilation = tuple(draw(st.sampled_from([1, 1, 2, 3])) for _ in range(ndim))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True))
    size = tuple(draw(st.integers(1, 5 if ndim < 3 else 3)) for _ in range(ndim))
    full = [  # the output size with no padding, per axis
        (n - 1) * s + d * (k - 1) + op + 1
        for n, s, d, k, op in zip(size, stride, dilation, kernel, output_padding, strict=True)
    ]
    kind = draw(st.sampled_from(["int", "per axis", "per side"]))
    if kind == "per side":
        pads = tuple(
            (draw(st.integers(0, (f - 1) // 2)), draw(st.integers(0, (f - 1) // 2))) for f in full
        )  # leaves >= 1 output position
        padding = pads
    elif kind == "per axis":
        padding = tuple(draw(st.integers(0, (f - 1) // 2)) for f in full)
        pads = tuple((p, p) for p in padding)
    else:
        padding = draw(st.integers(0, (min(full) - 1) // 2))
        pads = ((padding, padding),) * ndim
    batch = draw(st.sampled_from([None, 1, 2]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    C, O = cg * groups, og * groups
    x = rng.standard_normal((C, *size) if batch is None else (batch, C, *size))
    weight = rng.standard_normal((C, og, *kernel))
    bias = rng.standard_normal(O)
    options = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)
    return x, weight, bias, options, pads


def check_case(ndim, case, algorithm):
    x, weight, bias, options, pads = case
    forward, backward, torch_transpose, _ = FUNCTIONS[ndim]
    if algorithm == "depthwise" and (ndim == 3 or weight.shape[1] != 1):
        with pytest.raises(ArgumentError, match=r"algorithm='depthwise' cannot compute this convolution"):
            forward(x, weight, bias, algorithm=algorithm, **options)
        return
    unbatched = x.ndim == ndim + 1
    torch_options = {k: options[k] for k in ("stride", "output_padding", "groups", "dilation")}

    def reference(xt, wt, bt):  # torch with no padding, then the per-side crop
        y = torch_transpose(xt[None] if unbatched else xt, wt, bt, padding=0, **torch_options)
        crop = tuple(slice(before, y.shape[2 + a] - after) for a, (before, after) in enumerate(pads))
        y = y[(slice(None), slice(None), *crop)]
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
@given(case=transpose_cases(1))
def test_conv_transpose1d_matches_torch(algorithm, case):
    check_case(1, case, algorithm)


@pytest.mark.parametrize("algorithm", ALGOS)
@settings(max_examples=50)
@given(case=transpose_cases(2))
def test_conv_transpose2d_matches_torch(algorithm, case):
    check_case(2, case, algorithm)


@pytest.mark.parametrize("algorithm", ALGOS)
@settings(max_examples=30)
@given(case=transpose_cases(3))
def test_conv_transpose3d_matches_torch(algorithm, case):
    check_case(3, case, algorithm)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_symmetric_padding_is_torchs_padding(ndim):
    forward, _, torch_transpose, _ = FUNCTIONS[ndim]
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 4, *(4,) * ndim)), rng.standard_normal((4, 3, *(3,) * ndim))
    options = dict(stride=2, padding=1, output_padding=1, groups=1, dilation=1)
    ref = torch_transpose(torch.tensor(x), torch.tensor(w), **options).numpy()
    assert_close(forward(x, w, **options), ref, f"conv_transpose{ndim}d")


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("stride, dilation, padding", [(1, 1, 0), (2, 1, 1), (3, 2, ((1, 0),) * 3), (2, 3, 2)])
def test_transposed_convolution_is_the_adjoint_of_the_convolution(ndim, stride, dilation, padding):
    """⟨conv(x, w), y⟩ = ⟨x, conv_transpose(y, w)⟩ when conv_transpose's output has x's size."""
    _, _, _, conv = FUNCTIONS[ndim]
    forward = FUNCTIONS[ndim][0]
    padding = padding if isinstance(padding, int) else padding[:ndim]
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 4, *(9,) * ndim)), rng.standard_normal((6, 2, *(3,) * ndim))
    cx = conv(x, w, stride=stride, padding=padding, dilation=dilation, groups=2)
    y = rng.standard_normal(cx.shape)
    op = conv_transpose_output_padding(y.shape[2:], x.shape[2:], 3, stride, padding, dilation)
    ty = forward(y, w, stride=stride, padding=padding, output_padding=op, dilation=dilation, groups=2)
    assert ty.shape == x.shape
    np.testing.assert_allclose(np.vdot(cx, y), np.vdot(x, ty), rtol=1e-12)


def test_seed002_full_correlation_with_the_rotated_kernel():
    """Stride 1, no padding: the transposed convolution is seed 002's input gradient, the *full*
    correlation of its input with the kernel rotated by 180° (= scipy's full convolution)."""
    rng = np.random.default_rng(2)
    x, k = rng.standard_normal((4, 5)), rng.standard_normal((3, 2))
    full = signal.correlate2d(x, np.rot90(k, 2), mode="full")
    np.testing.assert_allclose(full, signal.convolve2d(x, k, mode="full"), rtol=1e-12)
    for algorithm in ALGOS:
        got = conv_transpose2d(x[None, None], k[None, None], algorithm=algorithm)[0, 0]
        assert_close(got, full, f"{algorithm}: full correlation with the rotated kernel")


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-9), (np.float32, 1e-4)])
@pytest.mark.parametrize("algorithm", ["scipy", "im2col", "gemm", "depthwise", "auto"])
@pytest.mark.parametrize(
    "ndim, C, og, groups, size, kernel, options",
    [
        (2, 4, 3, 2, (5, 4), (3, 2), dict(stride=(2, 1), padding=((1, 0), (0, 1)), output_padding=(1, 0))),
        (2, 3, 1, 3, (6, 5), (3, 3), dict(stride=1, padding=1)),  # depthwise 3×3 stride 1
        (2, 4, 2, 4, (4, 4), (3, 3), dict(stride=2, dilation=2, output_padding=1)),  # depthwise ×2
        (2, 2, 3, 1, (5, 5), (1, 1), dict(stride=1, dilation=3, output_padding=2)),  # 1×1, padding beyond
        (1, 3, 2, 1, (7,), (4,), dict(stride=3, padding=2, output_padding=2)),
        (3, 2, 2, 2, (3, 4, 3), (2, 3, 2), dict(stride=(1, 2, 2), padding=((0, 1), (1, 1), (0, 0)))),
    ],
)
def test_every_algorithm_matches_direct(ndim, C, og, groups, size, kernel, options, algorithm, dtype, tolerance):
    forward, backward, _, _ = FUNCTIONS[ndim]
    rng = np.random.default_rng(3)
    x, w, b = (
        rng.standard_normal((2, C, *size)),
        rng.standard_normal((C, og, *kernel)),
        rng.standard_normal(og * groups),
    )
    if algorithm == "depthwise" and (ndim == 3 or og != 1):
        with pytest.raises(ArgumentError, match="depthwise kernels"):
            forward(x, w, b, groups=groups, algorithm=algorithm, **options)
        return
    y = forward(x, w, b, groups=groups, algorithm="direct", **options)
    g = rng.standard_normal(y.shape)
    reference = (y, *backward(g, x, w, groups=groups, algorithm="direct", **options))
    cast = [a.astype(dtype) for a in (x, w, b, g)]
    y32 = forward(*cast[:3], groups=groups, algorithm=algorithm, **options)
    got = (y32, *backward(cast[3], *cast[:2], groups=groups, algorithm=algorithm, **options))
    for name, a, r in zip(("y", "dx", "dw", "db"), got, reference, strict=True):
        assert a.dtype == dtype and a.shape == r.shape
        assert_close(a, r, f"{algorithm} {name}", tolerance)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_gradcheck(ndim):
    forward, backward, _, _ = FUNCTIONS[ndim]
    rng = np.random.default_rng(4)
    x, w, b = (
        rng.standard_normal((1, 2, *(3,) * ndim)),
        rng.standard_normal((2, 2, *(2,) * ndim)),
        rng.standard_normal(4),
    )
    options = dict(stride=2, padding=1, output_padding=1, groups=2, dilation=1)
    result = convprop.gradcheck(
        lambda x, w, b: forward(x, w, b, **options),
        lambda g, x, w, b: backward(g, x, w, **options),
        [x, w, b],
        names=["x", "weight", "bias"],
    )
    assert result.ok


@pytest.mark.parametrize("wanted", [(9, 9), (10, 10), (10, 9), (9, 10)])
def test_output_padding_for_an_output_size_is_torchs(wanted):
    layer = torch.nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, dtype=torch.float64)
    x = torch.zeros(1, 2, 5, 5, dtype=torch.float64)
    expected = layer(x, output_size=wanted).shape[2:]
    op = conv_transpose_output_padding((5, 5), wanted, 3, stride=2, padding=1)
    y = conv_transpose2d(x.numpy(), layer.weight.detach().numpy(), stride=2, padding=1, output_padding=op)
    assert y.shape[2:] == tuple(expected) == wanted


X2, W2 = np.zeros((1, 4, 5, 5)), np.zeros((4, 2, 3, 3))


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: conv_transpose2d(X2, W2, stride=2, output_padding=2),
            r"output_padding \(=\(2, 2\)\) must be smaller than either stride \(=\(2, 2\)\) or dilation \(=\(1, 1\)\)",
        ),
        (
            lambda: conv_transpose2d(X2, W2, stride=1, dilation=2, output_padding=(1, 2)),
            r"output_padding \(=\(1, 2\)\) must be smaller",
        ),
        (
            lambda: conv_transpose1d(np.zeros((1, 4, 5)), W2),
            r"conv_transpose1d: weight must be \(C_in, C_out/groups, kL\), got shape \(4, 2, 3, 3\)",
        ),
        (
            lambda: conv_transpose3d(np.zeros((1, 4, 5, 5, 5)), W2),
            r"conv_transpose3d: weight must be \(C_in, C_out/groups, kD, kH, kW\)",
        ),
        (lambda: conv_transpose2d(X2, np.zeros((3, 2, 3, 3))), r"weight.shape\[0\] \(=3\) must be in_channels \(=4\)"),
        (lambda: conv_transpose2d(X2, W2, groups=3), r"in_channels \(=4\) must be divisible by groups \(=3\)"),
        (
            lambda: conv_transpose2d(X2, W2, padding=((1, 1),)),
            r"per-side padding needs one \(before, after\) pair per spatial axis \(2\), got \(\(1, 1\),\)",
        ),
        (
            lambda: conv_transpose2d(X2, W2, padding="same"),
            r"padding must be an int, 2 ints or 2 \(before, after\) pairs, got 'same'",
        ),
        (
            lambda: conv_transpose2d(np.zeros((1, 4, 1, 1)), W2, padding=2),
            r"the output would have spatial size \(-1, -1\) \(< 1\)",
        ),
        (
            lambda: conv_transpose_output_padding((5, 5), (12, 9), 3, stride=2, padding=1),
            r"requested an output size of \(12, 9\), but valid sizes range from \(9, 9\) to \(10, 10\)",
        ),
        (
            lambda: conv_transpose2d(X2, np.zeros((4, 2, 3, 3)), algorithm="depthwise"),
            r"algorithm='depthwise' cannot compute this convolution: the depthwise kernels need one input channel",
        ),
        (
            lambda: conv_transpose2d_backward(np.zeros((1, 2, 6, 6)), X2, W2),
            r"grad_output must have the output's shape \(1, 2, 7, 7\), got \(1, 2, 6, 6\)",
        ),
    ],
)
def test_bad_arguments_are_refused_quoting_the_value(call, match):
    with pytest.raises(ArgumentError, match=match):
        call()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "ndim, stride, padding, kernel",
    [(2, 2, 1, 4), (2, 1, 1, 3), (2, 3, 0, 2), (1, 2, 1, 4), (3, 1, 1, 3), (3, 2, 0, 2)],
)
def test_the_bias_added_as_it_is_stored_gives_the_bits_of_adding_it_after(ndim, stride, padding, kernel, dtype):
    """The tiles' passes add a transposed convolution's bias as each value is stored (and after them
    where a stride leaves positions no tap reaches: kernel 2 < stride 3): the bits of ``y += b``."""
    from convprop.functional.conv_transpose import conv_transpose_with_context

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 9, *(5,) * ndim)).astype(dtype)
    w = rng.standard_normal((9, 6, *(kernel,) * ndim)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype) * 10
    without, _ = conv_transpose_with_context(x, w, None, stride, padding, ndim=ndim)
    with_bias, _ = conv_transpose_with_context(x, w, b, stride, padding, ndim=ndim)
    np.testing.assert_array_equal(with_bias, without + b.reshape(-1, *(1,) * ndim))
