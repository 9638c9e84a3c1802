"""Strided and widely padded training passes on tiles: the input gradient through the stride phases
(``conv_phases``), the forward and the weight gradient through ``conv_rows``' phases — against PyTorch
and the direct reference in float64 (rel. 1e-9) and float32 (rel. 1e-4) over random 1-D and 2-D
geometries (strides that leave a remainder, dilations sharing a factor with the stride, per-side
padding wider than the kernel, phases no tap reaches), float64 finite differences, and the plan's
bookkeeping (every tap in exactly one phase).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import assert_close, conv_layer_against_direct
from torch_reference import torch_conv_zero_padded

import convprop
from convprop.functional import conv_phases, conv_tiled
from convprop.functional.conv import (
    _resolve,
    conv1d_backward,
    conv2d_backward,
    conv_backward_from_context,
    conv_with_context,
)


@st.composite
def geometries(draw, ndim):
    """(N, C, O, size, kernel, stride, dilation, per-side pads): C large enough for the tiles' input
    gradient (more than half a tile's channels), strides 1–3, paddings up to wider than the kernel."""
    kernel = tuple(draw(st.integers(1, 5)) for _ in range(ndim))
    if kernel == (1,) * ndim:
        kernel = (2,) * ndim  # 1×1 kernels stay a product
    stride = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    pads = tuple((draw(st.integers(0, 5)), draw(st.integers(0, 5))) for _ in range(ndim))
    size = tuple(
        draw(st.integers(max(1, d * (k - 1) + 1 - sum(p)), d * (k - 1) + 14))
        for k, d, p in zip(kernel, dilation, pads, strict=True)
    )
    N, C, O = draw(st.integers(1, 3)), draw(st.integers(5, 11)), draw(st.integers(1, 10))
    return N, C, O, size, kernel, stride, dilation, pads


def _check(geometry, seed):
    N, C, O, size, kernel, stride, dilation, pads = geometry
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((N, C, *size)), rng.standard_normal((O, C, *kernel)), rng.standard_normal(O)
    options = dict(stride=stride, padding=pads, dilation=dilation)
    y, ctx = conv_with_context(x, w, b, **options, ndim=len(size))
    assert isinstance(ctx.algo, conv_tiled.Tiled) and not ctx.padded
    dy = rng.standard_normal(y.shape)
    ours = (y, *conv_backward_from_context(dy, ctx))
    backward = conv2d_backward if len(size) == 2 else conv1d_backward
    direct = backward(dy, x, w, **options, algorithm="direct")
    torch_result = torch_conv_zero_padded(x, w, b, dy, stride=stride, pads=pads, dilation=dilation)
    for name, got, want, ref in zip(("y", "dx", "dw", "db"), ours, torch_result, (None, *direct), strict=True):
        assert_close(got, want, f"{name} against torch, {geometry}")
        if ref is not None:
            assert_close(got, ref, f"{name} against direct, {geometry}")


@settings(max_examples=50, deadline=None)
@given(geometries(2), st.integers(0, 2**31 - 1))
def test_2d_against_torch_and_direct_float64(geometry, seed):
    _check(geometry, seed)


@settings(max_examples=25, deadline=None)
@given(geometries(1), st.integers(0, 2**31 - 1))
def test_1d_against_torch_and_direct_float64(geometry, seed):
    _check(geometry, seed)


@pytest.mark.parametrize(
    "N, C, O, size, kernel, stride, padding, dilation",
    [
        (3, 16, 12, (29, 30), (3, 3), (2, 2), 1, 1),  # resnet's stride-2 layers, odd sizes
        (2, 9, 8, (17, 16), (5, 4), (3, 2), ((2, 0), (1, 3)), (2, 1)),  # stride 3 with dilation 2
        (2, 12, 6, (11, 12), (3, 3), (1, 1), 4, 1),  # stride 1, padding 4 > d·(K − 1): one phase, cropped
        (1, 8, 4, (40,), (9,), (4,), 4, 1),  # 1-D
    ],
)
def test_float32_against_direct_float64(N, C, O, size, kernel, stride, padding, dilation):
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal((N, C, *size)), rng.standard_normal((O, C, *kernel)), rng.standard_normal(O)
    ctx = conv_layer_against_direct(x, w, b, rng, ndim=len(size), dtype=np.float32, rtol=1e-4, what="strided",
                                    stride=stride, padding=padding, dilation=dilation)  # fmt: skip
    assert isinstance(ctx.algo, conv_tiled.Tiled)


def test_finite_differences_through_the_phases():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 6, 9, 8)), rng.standard_normal((3, 6, 3, 2))
    options = dict(stride=(2, 3), padding=((1, 2), (3, 0)), dilation=(2, 1))

    def forward(x, w):
        return conv_with_context(x, w, None, **options, ndim=2)[0]

    def backward(dy, x, w):
        _, ctx = conv_with_context(x, w, None, **options, ndim=2)
        assert isinstance(ctx.algo, conv_tiled.Tiled)
        dx, dw, _ = conv_backward_from_context(dy, ctx)
        return dx, dw

    convprop.gradcheck(forward, backward, [x, w])  # raises GradcheckError on a mismatch


@pytest.mark.parametrize("K, d, s", [(3, 1, 2), (5, 2, 2), (4, 3, 2), (3, 1, 3), (7, 2, 3), (2, 1, 4), (3, 3, 3)])
def test_every_tap_lies_in_exactly_one_phase_with_a_dilated_step(K, d, s):
    """k·d = q·s + r: the taps of phase r have q stepping by d / gcd(d, s) (a dilated sub-kernel)."""
    seen = []
    for r in range(s):
        taps = conv_phases.taps_of_phase(K, d, s, r)
        assert all(k * d == q * s + r for k, q in taps)
        qs = [q for _, q in taps]
        assert all(b - a == d // math.gcd(d, s) for a, b in itertools.pairwise(qs))
        seen += [k for k, _ in taps]
    assert sorted(seen) == list(range(K))


def test_phases_no_tap_reaches_stay_zero():
    """Stride 4 with a 2-wide kernel: half of each row's phases receive nothing."""
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 9, 13, 13)), rng.standard_normal((5, 9, 2, 2))
    _, _, geo, _, _ = _resolve(x, w, 2, 4, 0, 1, 1, "zeros", "auto", "conv2d")
    dy = rng.standard_normal((2, 5, *geo.out_size))
    dx = conv_phases.grad_input(dy, w, geo, None)
    assert not dx[:, :, 2::4].any() and not dx[:, :, :, 3::4].any() and not dx[:, :, 12].any()
    assert_close(dx, conv2d_backward(dy, x, w, stride=4, algorithm="direct")[0], "dx, stride 4")


@pytest.mark.parametrize(
    "C, O, size, kernel, stride, padding, output_padding, dilation",
    [
        (9, 6, (7, 6), (4, 4), 2, 1, 0, 1),  # the benchmark's kind: 4×4, stride 2
        (6, 10, (5, 8), (3, 2), (3, 2), (2, 0), (1, 1), (1, 2)),  # output padding, dilation
        (8, 7, (11,), (5,), 3, 2, 2, 1),  # 1-D
    ],
)
def test_transposed_convolutions_train_on_the_tiles(C, O, size, kernel, stride, padding, output_padding, dilation):
    """conv_transpose's forward is the tiles' input gradient, its backward their forward and weight gradient."""
    from convprop.functional.conv_transpose import conv_transpose_backward_from_context, conv_transpose_with_context

    rng = np.random.default_rng(8)
    x, w, b = rng.standard_normal((2, C, *size)), rng.standard_normal((C, O, *kernel)), rng.standard_normal(O)
    options = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation)
    y, ctx = conv_transpose_with_context(x, w, b, **options, ndim=len(size))
    assert isinstance(ctx.algo, conv_tiled.Tiled)
    dy = rng.standard_normal(y.shape)
    ours = (y, *conv_transpose_backward_from_context(dy, ctx))
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = (F.conv_transpose2d if len(size) == 2 else F.conv_transpose1d)(xt, wt, bt, **options)
    yt.backward(torch.tensor(dy))
    for name, got, want in zip(("y", "dx", "dw", "db"), ours, (yt, xt.grad, wt.grad, bt.grad), strict=True):
        assert_close(got, want.detach().numpy(), f"transposed {name}")
    y32, ctx32 = conv_transpose_with_context(*(a.astype(np.float32) for a in (x, w, b)), **options, ndim=len(size))
    ours32 = (y32, *conv_transpose_backward_from_context(dy.astype(np.float32), ctx32))
    for name, got, want in zip(("y", "dx", "dw", "db"), ours32, ours, strict=True):
        assert got.dtype == np.float32
        assert_close(got, want, f"float32 transposed {name}", rtol=1e-4)


def test_an_input_no_tap_reads_has_gradient_zero():
    """Stride 2, dilation 2, padding 1: every tap reads an even padded row, and the one real row is
    odd — no phase receives anything (the plan is empty) and dx is zero, as direct's."""
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((2, 9, 1, 1)), rng.standard_normal((4, 9, 2, 2))
    options = dict(stride=2, padding=1, dilation=2)
    _, _, geo, _, _ = _resolve(x, w, 2, 2, 1, 2, 1, "zeros", "auto", "conv2d")
    assert len(conv_phases.plan(geo, x.dtype).kernel_rows) == 0
    y, ctx = conv_with_context(x, w, None, **options, ndim=2)
    assert isinstance(ctx.algo, conv_tiled.Tiled)
    dy = rng.standard_normal(y.shape)
    dx, dw, _ = conv_backward_from_context(dy, ctx)
    want = conv2d_backward(dy, x, w, **options, algorithm="direct")
    assert not dx.any() and not want[0].any()
    assert_close(dw, want[1], "dW of an input no tap reads")
