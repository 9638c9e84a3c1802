"""The one window geometry: property tests of its adjoint identities and its size arithmetic.

⟨pad x, g⟩ = ⟨x, pad_backward g⟩ for every padding mode, and ⟨windows(x), c⟩ = ⟨x, scatter_windows(c)⟩,
in 1, 2 and 3 dimensions; output sizes against the definition (count the windows that fit); ceil-mode
trailing padding covers the last window exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convprop.errors import ArgumentError
from convprop.functional.geometry import (
    PADDING_MODES,
    Window,
    ceil_mode_pads,
    output_size,
    pad,
    pad_backward,
    pool_output_size,
    resolve_padding,
    scatter_windows,
    windows,
)


@st.composite
def padded_arrays(draw):
    ndim = draw(st.integers(1, 3))
    size = tuple(draw(st.integers(1, 5)) for _ in range(ndim))
    mode = draw(st.sampled_from(PADDING_MODES))
    limit = {"zeros": 4, "replicate": 4}.get(mode)
    pads = []
    for n in size:
        top = limit if limit is not None else (n - 1 if mode == "reflect" else n)
        pads.append((draw(st.integers(0, top)), draw(st.integers(0, top))))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return rng.standard_normal((2, 1, *size)), tuple(pads), mode, rng


@settings(max_examples=80)
@given(case=padded_arrays())
def test_pad_backward_is_the_adjoint_of_pad(case):
    x, pads, mode, rng = case
    padded = pad(x, pads, mode)
    assert padded.shape[2:] == tuple(n + b + a for n, (b, a) in zip(x.shape[2:], pads, strict=True))
    g = rng.standard_normal(padded.shape)
    back = pad_backward(g, x.shape[2:], pads, mode)
    assert back.shape == x.shape
    np.testing.assert_allclose(np.vdot(padded, g), np.vdot(x, back), rtol=1e-12, atol=1e-12)


@st.composite
def window_cases(draw):
    ndim = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    size = tuple(d * (k - 1) + 1 + draw(st.integers(0, 5)) for k, d in zip(kernel, dilation, strict=True))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return Window.fitted(size, kernel, stride, dilation, ((0, 0),) * ndim), rng


@settings(max_examples=80)
@given(case=window_cases())
def test_scatter_windows_is_the_adjoint_of_windows(case):
    window, rng = case
    x = rng.standard_normal((2, 3, *window.in_size))
    view = windows(x, window.kernel, window.stride, window.dilation, window.out_size)  # (N, C, *K, *Q)
    c = rng.standard_normal(view.shape)
    back = np.zeros_like(x)
    scatter_windows(c, back, window.stride, window.dilation)
    np.testing.assert_allclose(np.vdot(view, c), np.vdot(x, back), rtol=1e-12, atol=1e-12)
    for tap, slices in window.taps():  # each tap's slice reads exactly the view's plane
        np.testing.assert_array_equal(x[(Ellipsis, *slices)], view[(slice(None), slice(None), *tap)])


@settings(max_examples=80)
@given(
    size=st.integers(1, 12),
    pads=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 4),
    dilation=st.integers(1, 3),
    ceil_mode=st.booleans(),
)
def test_output_sizes_count_the_windows_that_fit(size, pads, kernel, stride, dilation, ceil_mode):
    extent = dilation * (kernel - 1) + 1
    padded = size + sum(pads)
    fitting = sum(1 for start in range(0, padded, stride) if start + extent <= padded)
    if padded >= extent:
        assert output_size(size, pads, kernel, stride, dilation) == fitting
    pads = (min(pads[0], kernel // 2), min(pads[1], kernel // 2))  # pooling's limit
    out = pool_output_size(size, pads, kernel, stride, dilation, ceil_mode)
    if not ceil_mode:
        assert out == output_size(size, pads, kernel, stride, dilation)
    elif out >= 1:  # every ceil-mode window starts inside the input or the leading pad ...
        assert (out - 1) * stride < size + pads[0]
        before, after = ceil_mode_pads(pads, size, kernel, stride, dilation, out)
        assert before == pads[0] and after >= pads[1]
        assert (out - 1) * stride + extent <= size + before + after  # ... and the extra padding holds it
        assert after == pads[1] or (out - 1) * stride + extent == size + before + after


@pytest.mark.parametrize(
    "padding, pads",
    [
        (1, ((1, 1), (1, 1))),
        ((1, 2), ((1, 1), (2, 2))),
        (((0, 1), (2, 3)), ((0, 1), (2, 3))),
        ([[0, 1], [2, 3]], ((0, 1), (2, 3))),
        ("valid", ((0, 0), (0, 0))),
        ("same", ((1, 1), (0, 1))),  # kernel (3, 2): the odd pixel goes after
    ],
)
def test_padding_forms(padding, pads):
    assert resolve_padding(padding, (6, 6), (3, 2), (1, 1), (1, 1)) == pads


@pytest.mark.parametrize(
    "padding, match",
    [
        (((1, 1),), r"per-side padding needs one \(before, after\) pair per spatial axis \(2\), got \(\(1, 1\),\)"),
        (((1, 1), (1, 1), (1, 1)), r"spatial axis \(2\), got \(\(1, 1\), \(1, 1\), \(1, 1\)\)"),
        (((1, -1), (0, 0)), r"padding must be >= 0, got \(\(1, -1\), \(0, 0\)\)"),
        ("full", r"got 'full'"),
    ],
)
def test_bad_padding_forms(padding, match):
    with pytest.raises(ArgumentError, match=match):
        resolve_padding(padding, (6, 6), (3, 3), (1, 1), (1, 1))


@pytest.mark.parametrize("value", [0.0, -np.inf, 2.5])
def test_pad_fills_small_and_large_arrays_alike(value, monkeypatch):
    """pad() zero-fills small arrays whole and writes only the borders of large ones: the same result."""
    from convprop.functional import geometry

    x = np.random.default_rng(0).standard_normal((2, 3, 5, 4))
    pads = ((1, 2), (0, 3))
    small = geometry.pad(x, pads, value=value)
    monkeypatch.setattr(geometry, "SMALL_PAD_BYTES", 0)
    large = geometry.pad(x, pads, value=value)
    np.testing.assert_array_equal(small, large)
    np.testing.assert_array_equal(small, np.pad(x, [(0, 0), (0, 0), *pads], constant_values=value))
