"""The compiled direct loops (``direct_compiled``) against ``direct``, PyTorch, and their refusals.

Same arithmetic as the specification with the sums reassociated (the output channel vectorised),
so float64 agrees to rel. 1e-12 and float32 within rel. 1e-4 of float64. LeNet-5's 6 → 16 5×5
layer, odd batch sizes (the split between threads), strides, dilation and padding modes in the table.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import assert_close, check_against_torch

from convprop.errors import ArgumentError
from convprop.functional import conv1d, conv2d, conv2d_backward, threads

# (N, C, H, W, O, kernel, stride, padding, dilation, padding_mode)
GEOMETRIES = [
    (5, 6, 14, 14, 16, 5, 1, 0, 1, "zeros"),  # LeNet-5's second layer, an odd batch
    (1, 1, 28, 28, 6, 5, 1, 2, 1, "zeros"),  # LeNet-5's first layer, one image (one thread)
    (2, 3, 9, 8, 4, 3, 1, 1, 1, "reflect"),
    (3, 4, 10, 7, 6, (3, 2), (2, 1), (1, 0), (1, 2), "zeros"),  # rectangular, strided, dilated
    (2, 4, 9, 9, 8, 3, 3, 0, 1, "replicate"),  # stride 3 leaves rows with zero gradient
    (2, 5, 8, 8, 3, 1, 1, 0, 1, "zeros"),  # 1×1
    (1, 2, 3, 3, 2, 3, 1, 0, 1, "zeros"),  # a single output pixel
    (2, 3, 7, 6, 3, 5, 1, "same", 1, "circular"),
]


def _all(x, w, b, kwargs, algorithm):
    y = conv2d(x, w, b, algorithm=algorithm, **kwargs)
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(x.dtype)
    return (y, *conv2d_backward(dy, x, w, algorithm=algorithm, **kwargs))


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-4)])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_matches_direct(geometry, dtype, tolerance):
    N, C, H, W, O, k, stride, padding, dilation, mode = geometry
    kh, kw = (k, k) if isinstance(k, int) else k
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((O, C, kh, kw)), rng.standard_normal(O)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, padding_mode=mode)
    reference = _all(x, w, b, kwargs, "direct")
    got = _all(x.astype(dtype), w.astype(dtype), b.astype(dtype), kwargs, "direct_compiled")
    for name, g, r in zip(("y", "dx", "dw", "db"), got, reference, strict=True):
        assert g.dtype == dtype and g.shape == r.shape
        assert_close(g, r, f"direct_compiled {name} on {geometry}", tolerance)


def test_one_thread_and_several_agree_bit_for_bit(monkeypatch):
    """The split of the batch between threads changes no forward or input-gradient value."""
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((7, 6, 14, 14)).astype(np.float32), rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    threaded = _all(x, w, None, {}, "direct_compiled")
    monkeypatch.setattr(threads, "THREADS", 1)
    single = _all(x, w, None, {}, "direct_compiled")
    np.testing.assert_array_equal(threaded[0], single[0])
    np.testing.assert_array_equal(threaded[1], single[1])
    assert_close(threaded[2], single[2], "dw (partial sums added in another order)", 1e-6)


@st.composite
def torch_cases(draw):
    N, C, O = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 5))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    H = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), 12))
    W = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]), 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((O, C, kh, kw)), rng.standard_normal(O)
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation)


@settings(max_examples=40, deadline=None)
@given(case=torch_cases())
def test_matches_torch(case):
    x, w, b, options = case
    check_against_torch(
        lambda x, w, b: conv2d(x, w, b, algorithm="direct_compiled", **options),
        lambda g, x, w, b: conv2d_backward(g, x, w, algorithm="direct_compiled", **options),
        lambda x, w, b: TF.conv2d(x, w, b, **options),
        [x, w, b],
        names=["x", "weight", "bias"],
    )


@pytest.mark.parametrize("where", ["x", "weight"])
def test_denormal_inputs_give_the_right_answer(where):
    """float32 subnormals (1e-40) in the input or the kernel: the error of float32 direct itself."""
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((3, 6, 14, 14)), rng.standard_normal((16, 6, 5, 5))
    x, w = (x * 1e-40, w) if where == "x" else (x, w * 1e-40)
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    reference = conv2d(x32.astype(np.float64), w32.astype(np.float64), algorithm="direct")
    got = conv2d(x32, w32, algorithm="direct_compiled")
    assert np.all(np.isfinite(got)) and np.abs(got).max() > 1e-41  # not flushed to zero
    assert_close(got, reference, f"subnormal {where}", 1e-4)


def test_refuses_what_it_cannot_compute():
    with pytest.raises(
        ArgumentError, match=r"'direct_compiled' cannot .*: .*dense convolutions \(groups=1\), got groups=2"
    ):
        conv2d(np.zeros((1, 4, 6, 6)), np.zeros((4, 2, 3, 3)), groups=2, algorithm="direct_compiled")
    with pytest.raises(ArgumentError, match=r"'direct_compiled' cannot .*: .*2-D only, this convolution has 1 spatial"):
        conv1d(np.zeros((1, 2, 8)), np.zeros((2, 2, 3)), algorithm="direct_compiled")
