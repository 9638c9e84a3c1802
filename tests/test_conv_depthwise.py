"""``conv_depthwise``: one input channel per group, a plane at a time — against PyTorch and the direct
reference in float64 (rel. 1e-9) and float32 (rel. 1e-4) over random 1-D and 2-D geometries (depth
multipliers, strides that leave a remainder, dilation, per-side padding up to wider than the
kernel, an empty batch), through the layer's pair (the context keeps x unpadded; one backward pass),
the stateless pair, the eval forward and the padded protocol (other padding modes, the transposed
convolution); float64 finite differences; non-finite inputs and weights (the row-by-row loops);
the images split between threads giving the one-thread answer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import assert_close, conv_layer_against_direct
from torch_reference import torch_conv_zero_padded

import convprop
from convprop.functional import conv_depthwise, threads
from convprop.functional.conv import (
    conv1d,
    conv1d_backward,
    conv2d,
    conv2d_backward,
    conv_backward_from_context,
    conv_param_grads_from_context,
    conv_with_context,
)
from convprop.functional.conv_transpose import conv_transpose2d


@st.composite
def geometries(draw, ndim):
    """(N, C, multiplier, size, kernel, stride, dilation, per-side pads) of a depthwise convolution."""
    kernel = tuple(draw(st.integers(1, 5)) for _ in range(ndim))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    pads = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(ndim))
    size = tuple(
        draw(st.integers(max(1, d * (k - 1) + 1 - sum(p)), d * (k - 1) + 12))
        for k, d, p in zip(kernel, dilation, pads, strict=True)
    )
    N, C, multiplier = draw(st.integers(0, 3)), draw(st.integers(2, 5)), draw(st.integers(1, 3))  # C = 1: dense
    return N, C, multiplier, size, kernel, stride, dilation, pads


def _check_all_paths(geometry, seed, dtype=np.float64):
    """Every way into the kernels against PyTorch (float64) and against direct."""
    N, C, m, size, kernel, stride, dilation, pads = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, *size))
    w, b = rng.standard_normal((C * m, 1, *kernel)), rng.standard_normal(C * m)
    options = dict(stride=stride, padding=pads, dilation=dilation, groups=C)
    ndim = len(size)
    forward, backward = (conv2d, conv2d_backward) if ndim == 2 else (conv1d, conv1d_backward)
    y, ctx = conv_with_context(x, w, b, **options, ndim=ndim)
    assert ctx.algo is conv_depthwise and not ctx.padded and ctx.xp is x  # no padded copy kept
    dy = rng.standard_normal(y.shape)
    layer = (y, *conv_backward_from_context(dy, ctx))
    stateless = (forward(x, w, b, **options), *backward(dy, x, w, **options))
    want = torch_conv_zero_padded(x, w, b, dy, stride=stride, pads=pads, dilation=dilation, groups=C)
    direct = (forward(x, w, b, **options, algorithm="direct"), *backward(dy, x, w, **options, algorithm="direct"))
    for name, a, c, t, r in zip(("y", "dx", "dw", "db"), layer, stateless, want, direct, strict=True):
        assert_close(a, t, f"{name} (layer) against torch, {geometry}")
        assert_close(c, t, f"{name} (stateless) against torch, {geometry}")
        assert_close(a, r, f"{name} (layer) against direct, {geometry}")
    dw, db = conv_param_grads_from_context(dy, ctx)
    assert_close(dw, want[2], f"dw without dx, {geometry}")
    assert_close(db, want[3], f"db without dx, {geometry}")


@settings(max_examples=60, deadline=None)
@given(geometries(2), st.integers(0, 2**31 - 1))
def test_2d_against_torch_and_direct_float64(geometry, seed):
    _check_all_paths(geometry, seed)


@settings(max_examples=30, deadline=None)
@given(geometries(1), st.integers(0, 2**31 - 1))
def test_1d_against_torch_and_direct_float64(geometry, seed):
    _check_all_paths(geometry, seed)


@pytest.mark.parametrize(
    "N, C, m, size, kernel, stride, pads",
    [
        (3, 8, 1, (30, 31), (3, 3), (1, 1), ((1, 1), (1, 1))),  # the common layer: KW = 3 in one loop
        (2, 5, 2, (17, 16), (5, 5), (2, 2), ((2, 2), (2, 2))),  # MobileNet's strided 5×5, multiplier 2
        (2, 4, 1, (23,), (7,), (1,), ((3, 3),)),  # 1-D, KW = 7: two fused loops and one single
        (1, 3, 3, (9, 12), (4, 6), (3, 1), ((0, 1), (4, 0))),  # remainder rows, odd sides
    ],
)
def test_float32_against_direct_float64(N, C, m, size, kernel, stride, pads):
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal((N, C, *size)), rng.standard_normal((C * m, 1, *kernel)), rng.standard_normal(C * m)
    ctx = conv_layer_against_direct(x, w, b, rng, ndim=len(size), dtype=np.float32, rtol=1e-4, what="depthwise",
                                    stride=stride, padding=pads, groups=C)  # fmt: skip
    assert ctx.algo is conv_depthwise


@pytest.mark.parametrize("stride", [1, 2])
def test_finite_differences(stride):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 3, 7, 8)), rng.standard_normal((6, 1, 3, 2))
    options = dict(stride=stride, padding=((1, 2), (0, 1)), dilation=(2, 1), groups=3)

    def forward(x, w):
        return conv2d(x, w, **options)

    def backward(dy, x, w):
        _, ctx = conv_with_context(x, w, None, **options, ndim=2)
        dx, dw, _ = conv_backward_from_context(dy, ctx)
        return dx, dw

    convprop.gradcheck(forward, backward, [x, w])  # raises GradcheckError on a mismatch


def _same_non_finite(got, want, what):
    """Equal NaN and infinity positions (and signs), the finite values close."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN positions")
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want), err_msg=f"{what}: +inf positions")
    finite = np.isfinite(want)
    assert_close(got[finite], want[finite], what)


def test_a_non_finite_input_or_weight_gives_direct_s_answer():
    """A zero of δ's grid times an infinite input (weight gradient) or weight (input gradient) would be a
    NaN the true sum does not have: those planes run row by row over the valid columns."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 3, 9, 9)), rng.standard_normal((3, 1, 3, 3))
    x[0, 1, 4, 8] = np.inf  # the last column: the grid's columns past OW read it when padding = 0
    x[1, 2, 0, 0] = np.nan
    w[2, 0, 1, 1] = -np.inf
    dy = rng.standard_normal((2, 3, 7, 7))
    options = dict(padding=0, groups=3)
    with np.errstate(invalid="ignore", over="ignore"):
        _, ctx = conv_with_context(x, w, None, **options, ndim=2)
        ours = conv_backward_from_context(dy, ctx)
        want = conv2d_backward(dy, x, w, **options, algorithm="direct")
    for name, got, ref in zip(("dx", "dw"), ours[:2], want[:2], strict=True):
        _same_non_finite(got, ref, name)


def test_threads_split_the_batch_to_the_same_answer(monkeypatch):
    rng = np.random.default_rng(11)
    x, w, b = rng.standard_normal((5, 4, 10, 10)), rng.standard_normal((8, 1, 3, 3)), rng.standard_normal(8)
    dy = rng.standard_normal((5, 8, 10, 10))

    def run():
        y, ctx = conv_with_context(x, w, b, padding=1, groups=4, ndim=2)
        return (y, *conv_backward_from_context(dy, ctx))

    monkeypatch.setattr(threads, "THREADS", 2)
    split = run()
    monkeypatch.setattr(threads, "THREADS", 1)
    for name, a, c in zip(("y", "dx", "dw", "db"), split, run(), strict=True):
        assert_close(a, c, f"{name}: two threads against one")


@pytest.mark.parametrize("mode", ["reflect", "circular", "replicate"])
def test_other_padding_modes_take_the_padded_protocol(mode):
    rng = np.random.default_rng(13)
    x, w, b = rng.standard_normal((2, 3, 8, 7)), rng.standard_normal((6, 1, 3, 3)), rng.standard_normal(6)
    options = dict(stride=(2, 1), padding=1, groups=3, padding_mode=mode)
    y, ctx = conv_with_context(x, w, b, **options, ndim=2)
    assert ctx.algo is conv_depthwise and ctx.padded
    dy = rng.standard_normal(y.shape)
    ours = (y, *conv_backward_from_context(dy, ctx))
    want = (conv2d(x, w, b, **options, algorithm="direct"), *conv2d_backward(dy, x, w, **options, algorithm="direct"))
    for name, got, ref in zip(("y", "dx", "dw", "db"), ours, want, strict=True):
        assert_close(got, ref, f"{mode} {name}")


def test_transposed_depthwise_against_torch():
    """The transposed convolution's forward is the padded protocol's input gradient (of the depthwise
    convolution 4 → 8 channels it is the adjoint of)."""
    rng = np.random.default_rng(17)
    x, w, b = rng.standard_normal((2, 8, 6, 5)), rng.standard_normal((8, 1, 3, 3)), rng.standard_normal(4)
    ours = conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1, groups=4)
    want = F.conv_transpose2d(*(torch.tensor(a) for a in (x, w, b)), stride=2, padding=1, output_padding=1, groups=4)
    assert_close(ours, want.numpy(), "conv_transpose2d, groups = C")


def test_3d_is_refused_saying_why():
    reason = r"compiled for 1-D and 2-D convolutions, this one has 3 spatial axes"
    x, w = np.zeros((1, 2, 4, 4, 4)), np.zeros((2, 1, 3, 3, 3))
    with pytest.raises(convprop.errors.ArgumentError, match=reason):
        convprop.functional.conv3d(x, w, groups=2, algorithm="depthwise")
