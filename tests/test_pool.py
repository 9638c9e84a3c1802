"""Pooling: forward, indices and gradients against PyTorch over random geometries; gradcheck; errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import assert_close, check_against_torch

import convprop
from convprop.functional import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    global_avg_pool2d,
    global_avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
    max_pool2d_with_indices,
)

N, C = 2, 3


@st.composite
def pool_cases(draw, dilation: bool = True):
    """A geometry (maybe one PyTorch rejects: then we must reject it too) and distinct-valued input."""
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    dil = (draw(st.integers(1, 3)), draw(st.integers(1, 2))) if dilation else (1, 1)
    size = (draw(st.integers(1, 11)), draw(st.integers(1, 11)))
    ceil_mode = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    x = np.random.default_rng(seed).permutation(N * C * size[0] * size[1]).reshape(N, C, *size) / 7.0  # no ties
    return x, kernel, stride, padding, dil, ceil_mode


def _torch_rejects(fn) -> bool:
    try:
        fn()
    except RuntimeError:
        return True
    return False


@settings(max_examples=40, deadline=None)
@given(pool_cases())
def test_max_pool2d_matches_torch(case):
    x, k, s, p, d, ceil = case
    try:
        max_pool2d(x, k, s, p, d, ceil)
    except ValueError as exc:
        if "entirely in the padding" in str(exc):  # PyTorch accepts these and corrupts memory in backward
            return
    if _torch_rejects(lambda: TF.max_pool2d(torch.tensor(x), k, s, p, d, ceil)):
        with pytest.raises(ValueError, match="too small"):
            max_pool2d(x, k, s, p, d, ceil)
        return
    y, idx = max_pool2d_with_indices(x, k, s, p, d, ceil)
    _, idx_ref = TF.max_pool2d(torch.tensor(x), k, s, p, d, ceil, return_indices=True)
    np.testing.assert_array_equal(idx, idx_ref.numpy())
    assert idx.dtype == np.int64
    check_against_torch(
        lambda x: max_pool2d(x, k, s, p, d, ceil),
        lambda g, x: (max_pool2d_backward(g, x, k, s, p, d, ceil, indices=idx),),
        lambda x: TF.max_pool2d(x, k, s, p, d, ceil),
        [x],
    )
    g = np.ones_like(y)
    np.testing.assert_array_equal(
        max_pool2d_backward(g, x, k, s, p, d, ceil), max_pool2d_backward(g, x, k, s, p, d, ceil, indices=idx)
    )


@settings(max_examples=40, deadline=None)
@given(pool_cases(dilation=False), st.booleans(), st.sampled_from([None, 1, 3, -2]))
def test_avg_pool2d_matches_torch(case, count_include_pad, divisor_override):
    x, k, s, p, _, ceil = case
    args = (k, s, p, ceil, count_include_pad, divisor_override)
    if _torch_rejects(lambda: TF.avg_pool2d(torch.tensor(x), *args)):
        with pytest.raises(ValueError, match="too small"):
            avg_pool2d(x, *args)
        return
    check_against_torch(
        lambda x: avg_pool2d(x, *args),
        lambda g, x: (avg_pool2d_backward(g, x, *args),),
        lambda x: TF.avg_pool2d(x, *args),
        [x],
    )


@settings(max_examples=40, deadline=None)
@given(
    st.tuples(st.integers(1, 13), st.integers(1, 13)),
    st.one_of(
        st.integers(1, 7), st.tuples(st.integers(1, 7), st.integers(1, 7)), st.tuples(st.none(), st.integers(1, 5))
    ),
    st.integers(0, 2**16),
)
def test_adaptive_avg_pool2d_matches_torch(size, output_size, seed):
    x = np.random.default_rng(seed).standard_normal((N, C, *size))
    check_against_torch(
        lambda x: adaptive_avg_pool2d(x, output_size),
        lambda g, x: (adaptive_avg_pool2d_backward(g, x, output_size),),
        lambda x: TF.adaptive_avg_pool2d(x, output_size),
        [x],
    )


def test_global_avg_pool2d_matches_torch():
    x = np.random.default_rng(0).standard_normal((N, C, 5, 7))
    y = check_against_torch(
        global_avg_pool2d, lambda g, x: (global_avg_pool2d_backward(g, x),), lambda x: TF.adaptive_avg_pool2d(x, 1), [x]
    )
    assert y.shape == (N, C, 1, 1)
    np.testing.assert_allclose(y[..., 0, 0], x.mean(axis=(2, 3)), rtol=1e-12)


def test_max_pool2d_ties_pick_the_first_maximum_like_torch():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, (N, C, 9, 8)).astype(np.float64)  # many ties
    x[0, 0, :3, :3] = -np.inf  # a window of only -inf: index of its first tap
    for k, s, p, d, ceil in [(3, 1, 1, 1, False), (2, 2, 0, 1, True), ((3, 2), (2, 1), (1, 0), (1, 2), True)]:
        y, idx = max_pool2d_with_indices(x, k, s, p, d, ceil)
        xt = torch.tensor(x, requires_grad=True)
        y_ref, idx_ref = TF.max_pool2d(xt, k, s, p, d, ceil, return_indices=True)
        np.testing.assert_array_equal(idx, idx_ref.numpy())
        np.testing.assert_array_equal(y, y_ref.detach().numpy())
        g = rng.standard_normal(y.shape)
        y_ref.backward(torch.tensor(g))
        assert_close(max_pool2d_backward(g, x, k, s, p, d, ceil, indices=idx), xt.grad.numpy(), "dx with ties")


CEIL_REMAINDER_CASES = [  # (input size, kernel, stride, padding, dilation, ceil_mode, count_include_pad)
    ((7, 8), 3, 2, 1, 1, True, True),  # ceil mode, the last window hangs over the right padding
    ((7, 8), 3, 2, 1, 1, True, False),
    ((6, 5), 2, 3, 1, 1, True, True),  # stride > kernel: rows never read get zero gradient
    ((9, 7), (3, 2), (2, 3), (1, 1), (2, 1), True, True),
    ((5, 6), 4, 1, 2, 1, False, True),
]


@pytest.mark.parametrize("size, k, s, p, d, ceil, cip", CEIL_REMAINDER_CASES)
def test_pool_backward_passes_gradcheck(size, k, s, p, d, ceil, cip):
    x = np.random.default_rng(2).permutation(size[0] * size[1] * 4).reshape(2, 2, *size) / 10.0  # distinct: no ties
    convprop.gradcheck(
        lambda x: max_pool2d(x, k, s, p, d, ceil),
        lambda g, x: (max_pool2d_backward(g, x, k, s, p, d, ceil),),
        [x],
        names=["x"],
    )
    convprop.gradcheck(
        lambda x: avg_pool2d(x, k, s, p, ceil, cip),
        lambda g, x: (avg_pool2d_backward(g, x, k, s, p, ceil, cip),),
        [x],
        names=["x"],
    )
    out = (3, 2)
    convprop.gradcheck(
        lambda x: adaptive_avg_pool2d(x, out), lambda g, x: (adaptive_avg_pool2d_backward(g, x, out),), [x], names=["x"]
    )


def test_unbatched_input_gives_unbatched_output():
    x = np.random.default_rng(3).standard_normal((C, 6, 5))
    for fwd, bwd, args in [
        (max_pool2d, max_pool2d_backward, (3, 2, 1)),
        (avg_pool2d, avg_pool2d_backward, (3, 2, 1)),
        (adaptive_avg_pool2d, adaptive_avg_pool2d_backward, ((2, 3),)),
    ]:
        y = fwd(x, *args)
        np.testing.assert_array_equal(y, fwd(x[None], *args)[0])
        g = np.ones_like(y)
        np.testing.assert_array_equal(bwd(g, x, *args), bwd(g[None], x[None], *args)[0])
    y, idx = max_pool2d_with_indices(x, 2)
    assert y.shape == idx.shape == (C, 3, 2)
    np.testing.assert_array_equal(
        max_pool2d_backward(np.ones_like(y), x, 2, indices=idx), max_pool2d_backward(np.ones_like(y), x, 2)
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(dtype):
    x = np.random.default_rng(4).standard_normal((N, C, 6, 6)).astype(dtype)
    for fwd, bwd, args in [
        (max_pool2d, max_pool2d_backward, (2,)),
        (avg_pool2d, avg_pool2d_backward, (3, 2, 1, True, False)),
        (adaptive_avg_pool2d, adaptive_avg_pool2d_backward, (4,)),
    ]:
        y = fwd(x, *args)
        assert y.dtype == dtype
        assert bwd(np.ones_like(y), x, *args).dtype == dtype
    assert global_avg_pool2d(x).dtype == dtype


BAD_CALLS = [
    (
        lambda: max_pool2d(np.zeros((2, 2, 4, 4)), 2, padding=2),
        ValueError,
        r"at most half of kernel_size.*padding=\(2, 2\)",
    ),
    (lambda: max_pool2d(np.zeros((2, 2, 4, 4)), 0), ValueError, r"kernel_size must be >= 1, got 0"),
    (lambda: max_pool2d(np.zeros((2, 2, 4, 4)), 2.5), TypeError, r"kernel_size must be an int.*2.5"),
    (lambda: max_pool2d(np.zeros((2, 2, 4, 4)), 2, dilation=0), ValueError, r"dilation must be >= 1, got 0"),
    (lambda: max_pool2d(np.zeros((2, 2, 2, 4)), 3), ValueError, r"too small.*output size \(0, 1\)"),
    (lambda: max_pool2d(np.zeros((4, 4)), 2), ValueError, r"\(N, C, H, W\).*got shape \(4, 4\)"),
    (lambda: max_pool2d(np.zeros((1, 1, 4, 4), dtype=np.int8) > 0, 2), TypeError, r"float32 or float64, got bool"),
    (lambda: max_pool2d(np.zeros((1, 1, 4, 4)), 2, ceil_mode=1), TypeError, r"ceil_mode must be a bool, got 1"),
    (lambda: avg_pool2d(np.zeros((1, 1, 4, 4)), 2, divisor_override=0), ValueError, r"divisor_override .* got 0"),
    (lambda: avg_pool2d(np.zeros((1, 1, 4, 4)), 2, count_include_pad="yes"), TypeError, r"count_include_pad .* 'yes'"),
    (lambda: adaptive_avg_pool2d(np.zeros((1, 1, 4, 4)), 0), ValueError, r"output_size must be >= 1, got 0"),
    (lambda: adaptive_avg_pool2d(np.zeros((1, 1, 4, 4)), (1, 2, 3)), TypeError, r"output_size .* \(1, 2, 3\)"),
    (
        lambda: max_pool2d_backward(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 4, 4)), 2),
        ValueError,
        r"shape \(1, 1, 2, 2\), got \(1, 1, 3, 3\)",
    ),
    (
        lambda: max_pool2d_backward(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 4, 4)), 2, indices=np.zeros((1, 1, 2, 2))),
        ValueError,
        r"indices must be an integer array .* got float64",
    ),
    (
        lambda: avg_pool2d_backward(np.zeros((1, 1, 2, 2), np.float32), np.zeros((1, 1, 4, 4)), 2),
        TypeError,
        r"grad_output=float32, x=float64",
    ),
]


@pytest.mark.parametrize("call, error, match", BAD_CALLS)
def test_bad_arguments_raise_with_the_value(call, error, match):
    with pytest.raises(error, match=match):
        call()


@st.composite
def plain_2x2_cases(draw):
    """The unrolled kernel's geometry: 2×2 windows, stride 2, no padding (odd sizes and ceil mode too)."""
    size = (draw(st.integers(2, 9)), draw(st.integers(2, 9)))
    x = np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal((N, C, *size))
    return x, 2, None, 0, 1, draw(st.booleans())


@settings(max_examples=60, deadline=None)
@given(st.one_of(pool_cases(), plain_2x2_cases()), st.sampled_from(["distinct", "ties", "nan", "inf"]))
def test_compiled_max_pool_equals_the_numpy_reference(case, values):
    """The compiled kernels that run by default give exactly the reference's values and indices."""
    from convprop.functional import pool

    x, k, s, p, d, ceil = case
    rng = np.random.default_rng(0)
    if values == "ties":
        x = np.round(x / x.max() * 3)  # few distinct values: many ties per window
    elif values in ("nan", "inf"):
        x = x.copy()
        x[rng.random(x.shape) < 0.3] = np.nan if values == "nan" else -np.inf
    try:
        x4, geo, _ = pool._resolve(x, k, s, p, d, ceil)
    except ValueError:
        return
    y, idx = max_pool2d_with_indices(x, k, s, p, d, ceil)
    y_ref, idx_ref = pool._max_pool_taps(x4, geo)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    dy = rng.standard_normal(y.shape)
    # overlapping windows sum their gradients in another order: equal up to rounding
    np.testing.assert_allclose(
        max_pool2d_backward(dy, x, k, s, p, d, ceil, indices=idx),
        pool._max_pool_backward_taps(dy, idx, x4, geo),
        rtol=1e-14,
        atol=1e-14,
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "k, s, p, d, ceil", [(2, None, 0, 1, False), (2, None, 0, 1, True), (3, 2, 1, 1, True), (2, 1, 1, 2, False)]
)
@pytest.mark.parametrize("values", ["normal", "ties", "nan"])
def test_compiled_max_pool_matches_torch_in_both_dtypes(dtype, k, s, p, d, ceil, values):
    """Values and indices equal torch's exactly, float32 included, on the 2×2 fast path and the general one."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    if values == "ties":
        x = np.round(x).astype(dtype)
    elif values == "nan":
        x[rng.random(x.shape) < 0.2] = np.nan
    y, idx = max_pool2d_with_indices(x, k, s, p, d, ceil)
    ty, tidx = TF.max_pool2d(torch.from_numpy(x), k, s, p, d, ceil, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    assert y.dtype == dtype


def test_max_pool_backward_rejects_indices_outside_the_plane():
    x, dy = np.zeros((1, 2, 4, 4)), np.ones((1, 2, 2, 2))
    idx = np.zeros((1, 2, 2, 2), dtype=np.int64)
    idx[0, 0, 0, 0] = 16  # one past the 4×4 plane: would land in the next channel
    with pytest.raises(ValueError, match=r"indices must lie in \[0, H·W\) = \[0, 16\).*to 16"):
        max_pool2d_backward(dy, x, 2, indices=idx)


def test_a_remembered_geometry_still_refuses_what_it_refused():
    """The geometry of plain-int arguments is remembered per input size; a value that is equal to a
    remembered one but of another type (2.0 == 2, True == 1) is still checked, and refused."""
    from convprop.functional import pool_window

    x = np.ones((2, 3, 8, 8), np.float32)
    first = pool_window.resolve(x, 2, 2, None, 0, 1, False)[1]
    assert pool_window.resolve(x[:1], 2, 2, None, 0, 1, False)[1] is first  # same sizes: the same geometry
    assert pool_window.resolve(np.ones((3, 9, 9)), 2, 2, None, 0, 1, False)[1].in_size == (9, 9)
    with pytest.raises(TypeError, match=r"kernel_size must be an int or a pair of ints, got 2\.0"):
        max_pool2d(x, 2.0)
    with pytest.raises(TypeError, match=r"kernel_size must be an int or a pair of ints, got True"):
        max_pool2d(x, True)
    with pytest.raises(ValueError, match=r"padding should be at most half of kernel_size"):
        max_pool2d(x, 2, padding=2)  # an error is raised each time, never remembered
    with pytest.raises(ValueError, match=r"padding should be at most half of kernel_size"):
        max_pool2d(x, 2, padding=2)
    # a list is not remembered (unhashable) but gives the same answer
    np.testing.assert_array_equal(max_pool2d(x, [2, 2]), max_pool2d(x, (2, 2)))
    with pytest.raises(TypeError, match=r"ceil_mode must be a bool, got 1"):
        max_pool2d(x, 2, ceil_mode=1)
    with pytest.raises(TypeError, match=r"kernel_size must be an int or a pair of ints, got \(True, 2\)"):
        max_pool2d(x, (True, 2))
