"""1-D and 3-D pooling (and per-side padding in every dimension) against PyTorch: forward, indices and
gradients over random geometries in float64; the 1-D compiled path against the NumPy reference; gradcheck."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import check_against_torch

import convprop
from convprop.errors import ArgumentError
from convprop.functional import (
    adaptive_avg_pool1d,
    adaptive_avg_pool1d_backward,
    adaptive_avg_pool3d,
    adaptive_avg_pool3d_backward,
    avg_pool1d,
    avg_pool1d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    avg_pool3d,
    avg_pool3d_backward,
    max_pool1d,
    max_pool1d_backward,
    max_pool1d_with_indices,
    max_pool2d,
    max_pool2d_backward,
    max_pool3d,
    max_pool3d_backward,
    max_pool3d_with_indices,
)

N, C = 2, 2
MAX = {1: (max_pool1d, max_pool1d_backward, TF.max_pool1d), 2: (max_pool2d, max_pool2d_backward, TF.max_pool2d),
       3: (max_pool3d, max_pool3d_backward, TF.max_pool3d)}  # fmt: skip
AVG = {1: (avg_pool1d, avg_pool1d_backward, TF.avg_pool1d), 2: (avg_pool2d, avg_pool2d_backward, TF.avg_pool2d),
       3: (avg_pool3d, avg_pool3d_backward, TF.avg_pool3d)}  # fmt: skip


@st.composite
def pool_cases(draw, ndim, dilation=True):
    """A geometry (maybe one PyTorch rejects: then we must reject it too) and distinct-valued input."""
    kernel = tuple(draw(st.integers(1, 4 if ndim < 3 else 3)) for _ in range(ndim))
    stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(*(st.integers(1, 3) for _ in range(ndim)))))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dil = tuple(draw(st.integers(1, 2)) for _ in range(ndim)) if dilation else (1,) * ndim
    size = tuple(draw(st.integers(1, 11 if ndim == 1 else 5)) for _ in range(ndim))
    ceil_mode = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.permutation(N * C * math.prod(size)).reshape(N, C, *size) / 7.0  # no ties
    return x, kernel, stride, padding, dil, ceil_mode


def _torch_rejects(fn) -> bool:
    try:
        fn()
    except RuntimeError:
        return True
    return False


@pytest.mark.parametrize("ndim", [1, 3])
@settings(max_examples=50)
@given(data=st.data())
def test_max_pool_matches_torch(ndim, data):
    x, k, s, p, d, ceil = data.draw(pool_cases(ndim))
    forward, backward, torch_pool = MAX[ndim]
    try:
        forward(x, k, s, p, d, ceil)
    except ArgumentError as exc:
        if "entirely in the padding" in str(exc):  # PyTorch accepts these and corrupts memory in backward
            return
    if _torch_rejects(lambda: torch_pool(torch.tensor(x), k, s, p, d, ceil)):
        with pytest.raises(ArgumentError, match="too small"):
            forward(x, k, s, p, d, ceil)
        return
    with_indices = max_pool1d_with_indices if ndim == 1 else max_pool3d_with_indices
    _, idx = with_indices(x, k, s, p, d, ceil)
    _, idx_ref = torch_pool(torch.tensor(x), k, s, p, d, ceil, return_indices=True)
    np.testing.assert_array_equal(idx, idx_ref.numpy())
    check_against_torch(
        lambda x: forward(x, k, s, p, d, ceil),
        lambda g, x: (backward(g, x, k, s, p, d, ceil, indices=idx),),
        lambda x: torch_pool(x, k, s, p, d, ceil),
        [x],
    )
    g = np.ones_like(idx, dtype=x.dtype)
    np.testing.assert_array_equal(backward(g, x, k, s, p, d, ceil), backward(g, x, k, s, p, d, ceil, indices=idx))


@pytest.mark.parametrize("ndim", [1, 3])
@settings(max_examples=50)
@given(data=st.data(), count_include_pad=st.booleans(), divisor_override=st.sampled_from([None, None, 1, 3, -2]))
def test_avg_pool_matches_torch(ndim, data, count_include_pad, divisor_override):
    x, k, s, p, _, ceil = data.draw(pool_cases(ndim, dilation=False))
    forward, backward, torch_pool = AVG[ndim]
    args = (k, s, p, ceil, count_include_pad, divisor_override)
    if ndim == 1:  # torch's avg_pool1d has no divisor_override: avg_pool2d at unit height is the same pooling
        stride = None if s is None else (1, *((s,) if isinstance(s, int) else s))

        def torch_pool(x, k, s, p, ceil, count, divisor):
            return TF.avg_pool2d(x[:, :, None], (1, *k), stride, (0, *p), ceil, count, divisor)[:, :, 0]

    if _torch_rejects(lambda: torch_pool(torch.tensor(x), *args)):
        with pytest.raises(ArgumentError, match="too small"):
            forward(x, *args)
        return
    check_against_torch(
        lambda x: forward(x, *args),
        lambda g, x: (backward(g, x, *args),),
        lambda x: torch_pool(x, *args),
        [x],
    )


@st.composite
def per_side_cases(draw):
    """Per-side padding ((before, after), ...), each at most half the kernel, in 1, 2 or 3 dimensions."""
    ndim = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 4 if ndim < 3 else 3)) for _ in range(ndim))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    pads = tuple((draw(st.integers(0, k // 2)), draw(st.integers(0, k // 2))) for k in kernel)
    size = tuple(draw(st.integers(k, k + (6 if ndim < 3 else 3))) for k in kernel)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.permutation(N * C * math.prod(size)).reshape(N, C, *size) / 7.0
    return ndim, x, kernel, stride, pads


def _torch_pad(x, pads, value):
    return TF.pad(x, [w for pair in reversed(pads) for w in pair], value=value)


@settings(max_examples=60)
@given(case=per_side_cases())
def test_per_side_padding_is_torchs_pad_then_a_valid_pool(case):
    """Max pooling pads with -inf and average pooling (counting the padding) with zeros, as F.pad would."""
    ndim, x, k, s, pads = case
    (max_forward, max_backward, torch_max), (avg_forward, avg_backward, torch_avg) = MAX[ndim], AVG[ndim]
    check_against_torch(
        lambda x: max_forward(x, k, s, pads),
        lambda g, x: (max_backward(g, x, k, s, pads),),
        lambda x: torch_max(_torch_pad(x, pads, -math.inf), k, s),
        [x],
    )
    check_against_torch(
        lambda x: avg_forward(x, k, s, pads),
        lambda g, x: (avg_backward(g, x, k, s, pads),),
        lambda x: torch_avg(_torch_pad(x, pads, 0.0), k, s),
        [x],
    )


@settings(max_examples=40)
@given(
    size=st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 7)),
    output_size=st.one_of(
        st.integers(1, 5), st.tuples(st.integers(1, 5), st.none(), st.integers(1, 4)), st.just((2, 3, 1))
    ),
    seed=st.integers(0, 2**16),
)
def test_adaptive_avg_pool3d_matches_torch(size, output_size, seed):
    x = np.random.default_rng(seed).standard_normal((N, C, *size))
    check_against_torch(
        lambda x: adaptive_avg_pool3d(x, output_size),
        lambda g, x: (adaptive_avg_pool3d_backward(g, x, output_size),),
        lambda x: TF.adaptive_avg_pool3d(x, output_size),
        [x],
    )


@settings(max_examples=40)
@given(size=st.integers(1, 15), output_size=st.integers(1, 8), seed=st.integers(0, 2**16), unbatched=st.booleans())
def test_adaptive_avg_pool1d_matches_torch(size, output_size, seed, unbatched):
    x = np.random.default_rng(seed).standard_normal((C, size) if unbatched else (N, C, size))
    check_against_torch(
        lambda x: adaptive_avg_pool1d(x, output_size),
        lambda g, x: (adaptive_avg_pool1d_backward(g, x, output_size),),
        lambda x: TF.adaptive_avg_pool1d(x, output_size),
        [x],
    )


@settings(max_examples=30, deadline=None)
@given(
    ndim=st.sampled_from([1, 2, 3]),
    sizes=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 4)), min_size=3, max_size=3),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_adaptive_pool_as_one_product_equals_the_per_axis_products(ndim, sizes, dtype, seed):
    """Small pools run as one product with the axes' Kronecker matrix: forward and backward as the
    per-axis products (``WHOLE_MAP_ENTRIES`` = 0), to rounding, in float32 and float64."""
    from convprop.functional import pool_adaptive

    in_size, out_size = tuple(s for s, _ in sizes[:ndim]), tuple(min(o, s) for s, o in sizes[:ndim])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 2, *in_size)).astype(dtype)
    g = rng.standard_normal((3, 2, *out_size)).astype(dtype)
    assert pool_adaptive._whole_map(in_size, out_size, dtype) is not None
    one = pool_adaptive._adaptive(x, ndim, out_size), pool_adaptive._adaptive_backward(g, x, ndim, out_size)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pool_adaptive, "WHOLE_MAP_ENTRIES", 0)
        per_axis = pool_adaptive._adaptive(x, ndim, out_size), pool_adaptive._adaptive_backward(g, x, ndim, out_size)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    for a, b in zip(one, per_axis, strict=True):
        assert a.dtype == b.dtype == dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_large_adaptive_pool_keeps_the_per_axis_products_and_matches_torch():
    """Beyond ``WHOLE_MAP_ENTRIES`` (here 60² → 9² = 291,600 entries) the per-axis path, against PyTorch."""
    from convprop.functional import adaptive_avg_pool2d, adaptive_avg_pool2d_backward, pool_adaptive

    assert pool_adaptive._whole_map((60, 60), (9, 9), np.float64) is None
    x = np.random.default_rng(5).standard_normal((1, 2, 60, 60))
    check_against_torch(
        lambda x: adaptive_avg_pool2d(x, 9),
        lambda g, x: (adaptive_avg_pool2d_backward(g, x, 9),),
        lambda x: TF.adaptive_avg_pool2d(x, 9),
        [x],
    )


def test_adaptive_pool_of_an_empty_batch():
    y = adaptive_avg_pool3d(np.zeros((0, 2, 3, 3, 3)), 1)
    assert y.shape == (0, 2, 1, 1, 1)
    dx = adaptive_avg_pool3d_backward(np.zeros((0, 2, 1, 1, 1)), np.zeros((0, 2, 3, 3, 3)), 1)
    assert dx.shape == (0, 2, 3, 3, 3)


@settings(max_examples=60)
@given(case=pool_cases(1), values=st.sampled_from(["distinct", "ties", "nan", "inf"]))
def test_compiled_1d_max_pool_equals_the_numpy_reference(case, values):
    """1-D runs the compiled 2-D kernel at unit height: exactly the N-d reference's values and indices."""
    from convprop.functional import pool

    x, k, s, p, d, ceil = case
    rng = np.random.default_rng(0)
    if values == "ties":
        x = np.round(x / x.max() * 3)
    elif values in ("nan", "inf"):
        x = x.copy()
        x[rng.random(x.shape) < 0.3] = np.nan if values == "nan" else -np.inf
    try:
        xb, geo, _ = pool._resolve(x, k, s, p, d, ceil, ndim=1)
    except ArgumentError:
        return
    y, idx = max_pool1d_with_indices(x, k, s, p, d, ceil)
    y_ref, idx_ref = pool._max_pool_taps(xb, geo)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)


@pytest.mark.parametrize("ndim", [1, 3])
@pytest.mark.parametrize("unbatched", [False, True])
def test_gradcheck_and_unbatched(ndim, unbatched):
    rng = np.random.default_rng(1)
    shape = (C, *(5,) * ndim) if unbatched else (1, C, *(5,) * ndim)
    x = rng.permutation(math.prod(shape)).reshape(shape) / 3.0
    adaptive = (adaptive_avg_pool1d, adaptive_avg_pool1d_backward) if ndim == 1 else (
        adaptive_avg_pool3d, adaptive_avg_pool3d_backward)  # fmt: skip
    cases = [
        (lambda x: MAX[ndim][0](x, 2, 2, 1, 1, True), lambda g, x: (MAX[ndim][1](g, x, 2, 2, 1, 1, True),)),
        (lambda x: AVG[ndim][0](x, 3, 2, 1, True, False), lambda g, x: (AVG[ndim][1](g, x, 3, 2, 1, True, False),)),
        (lambda x: adaptive[0](x, 3), lambda g, x: (adaptive[1](g, x, 3),)),
    ]
    for forward, backward in cases:
        assert forward(x).ndim == x.ndim
        assert convprop.gradcheck(forward, backward, [x]).ok


PAIRS = r"per-side padding needs one \(before, after\) pair per spatial axis "


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: max_pool1d(np.zeros((1, 2, 8)), 2, padding=((1, 1), (0, 0))), PAIRS + r"\(1\)"),
        (lambda: avg_pool3d(np.zeros((1, 2, 4, 4, 4)), 2, padding=((1, 1),)), PAIRS + r"\(3\), got \(\(1, 1\),\)"),
        (
            lambda: max_pool2d(np.zeros((1, 2, 8, 8)), 2, padding=((0, 2), (0, 0))),
            r"padding should be at most half of kernel_size, got padding=\(\(0, 2\), \(0, 0\)\) "
            r"for kernel_size=\(2, 2\)",
        ),
        (
            lambda: max_pool3d(np.zeros((2, 4, 4)), 2),
            r"x must be \(N, C, D, H, W\) or unbatched \(C, D, H, W\) with non-empty C, D, H, W, got shape \(2, 4, 4\)",
        ),
        (
            lambda: avg_pool1d(np.zeros((1, 2, 3)), 5),
            r"input of spatial size \(3,\) is too small for kernel_size=\(5,\)",
        ),
        (
            lambda: avg_pool3d(np.zeros((1, 2, 1, 4, 4)), 2, padding=1),
            r"input of spatial size \(1, 4, 4\) is too small for kernel_size=\(2, 2, 2\): avg_pool3d needs",
        ),
        (
            lambda: adaptive_avg_pool3d(np.zeros((1, 2, 4, 4, 4)), (2, 2)),
            r"output_size must be an int or 3 ints \(or None\), got \(2, 2\)",
        ),
        (lambda: adaptive_avg_pool1d(np.zeros((1, 2, 4)), 0), r"output_size must be >= 1, got 0"),
        (
            lambda: max_pool1d_backward(np.zeros((1, 2, 3)), np.zeros((1, 2, 8)), 2),
            r"grad_output must have the output's shape \(1, 2, 4\), got \(1, 2, 3\)",
        ),
    ],
)
def test_bad_arguments_are_refused_quoting_the_value(call, match):
    with pytest.raises((ArgumentError, TypeError), match=match):
        call()
