"""Winograd F(2×2, 3×3) and F(4×4, 3×3) against the 1-D identity, ``direct``, PyTorch and their refusals.

float64 to rel. 1e-12 (the transforms are exact in exact arithmetic; only rounding separates them
from ``direct``), float32 within rel. 1e-4 of the float64 reference (the issue's bound; F(4×4)'s
larger transform entries cost more digits than F(2×2)'s). Tile sizes that do not divide the output,
every padding mode, per-side padding, unbatched inputs, the transposed convolution (whose forward is
the input gradient) and denormal inputs are in the tables.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import assert_close, check_against_torch

from convprop.errors import ArgumentError
from convprop.functional import conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward, conv_winograd

WINOGRAD = ["winograd2", "winograd4"]
TRANSFORMS = {2: (conv_winograd.F2_BT, conv_winograd.F2_G, conv_winograd.F2_AT),
              4: (conv_winograd.F4_BT, conv_winograd.F4_G, conv_winograd.F4_AT)}  # fmt: skip


@pytest.mark.parametrize("m", [2, 4])
def test_one_dimensional_identity(m):
    """Aᵀ [(G g) ⊙ (Bᵀ d)] is the valid correlation of an (m+2)-tile d with a 3-tap g: F(m, 3)."""
    BT, G, AT = TRANSFORMS[m]
    rng = np.random.default_rng(m)
    for _ in range(20):
        d, g = rng.standard_normal(m + 2), rng.standard_normal(3)
        assert_close(AT @ ((G @ g) * (BT @ d)), np.correlate(d, g, mode="valid"), f"F({m}, 3)", 1e-13)


# (N, C, H, W, O, padding, padding_mode): sizes that leave partial tiles for both m = 2 and m = 4
GEOMETRIES = [
    (2, 3, 9, 8, 4, 1, "zeros"),
    (3, 4, 10, 7, 6, 0, "zeros"),
    (1, 5, 3, 3, 2, 0, "zeros"),  # a single output pixel
    (2, 2, 14, 14, 3, 1, "reflect"),
    (2, 3, 6, 11, 5, ((2, 0), (1, 3)), "zeros"),  # per side
    (1, 4, 7, 5, 4, "same", "circular"),
    (2, 6, 5, 9, 8, 2, "replicate"),
]


def _all(x, w, b, kwargs, algorithm):
    y = conv2d(x, w, b, algorithm=algorithm, **kwargs)
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(x.dtype)
    return (y, *conv2d_backward(dy, x, w, algorithm=algorithm, **kwargs))


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-4)])
@pytest.mark.parametrize("algorithm", WINOGRAD)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_matches_direct(geometry, algorithm, dtype, tolerance):
    N, C, H, W, O, padding, mode = geometry
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((O, C, 3, 3)), rng.standard_normal(O)
    kwargs = dict(padding=padding, padding_mode=mode)
    reference = _all(x, w, b, kwargs, "direct")
    got = _all(x.astype(dtype), w.astype(dtype), b.astype(dtype), kwargs, algorithm)
    for name, g, r in zip(("y", "dx", "dw", "db"), got, reference, strict=True):
        assert g.dtype == dtype and g.shape == r.shape
        assert_close(g, r, f"{algorithm} {name} on {geometry}", tolerance)


@pytest.mark.parametrize("algorithm", WINOGRAD)
def test_float32_error_on_a_wide_layer(algorithm):
    """A digit model's second layer (32 → 64 channels, 14×14): the sum over 288 taps per output."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((4, 32, 14, 14)), rng.standard_normal((64, 32, 3, 3)) / np.sqrt(288)
    reference = _all(x, w, None, dict(padding=1), "direct")
    got = _all(x.astype(np.float32), w.astype(np.float32), None, dict(padding=1), algorithm)
    for name, g, r in zip(("y", "dx", "dw"), got, reference, strict=False):
        assert_close(g, r, f"{algorithm} {name}", 1e-4)


@st.composite
def torch_cases(draw):
    N, C, O = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    H, W = draw(st.integers(3, 13)), draw(st.integers(3, 13))
    padding = draw(st.sampled_from([0, 1, 2, (1, 0), (0, 2)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return rng.standard_normal((N, C, H, W)), rng.standard_normal((O, C, 3, 3)), rng.standard_normal(O), padding


@pytest.mark.parametrize("algorithm", WINOGRAD)
@settings(max_examples=25, deadline=None)
@given(case=torch_cases())
def test_matches_torch(algorithm, case):
    x, w, b, padding = case
    check_against_torch(
        lambda x, w, b: conv2d(x, w, b, padding=padding, algorithm=algorithm),
        lambda g, x, w, b: conv2d_backward(g, x, w, padding=padding, algorithm=algorithm),
        lambda x, w, b: TF.conv2d(x, w, b, padding=padding),
        [x, w, b],
        names=["x", "weight", "bias"],
        rtol=1e-11,
    )


@pytest.mark.parametrize("algorithm", WINOGRAD)
def test_transposed_convolution_uses_the_tiles(algorithm):
    """conv_transpose2d's forward is the convolution's input gradient: Winograd's full correlation."""
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal((2, 4, 6, 9)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(3)
    y = conv_transpose2d(x, w, b, padding=1, algorithm=algorithm)
    assert_close(y, conv_transpose2d(x, w, b, padding=1, algorithm="direct"), "forward")
    g = rng.standard_normal(y.shape)
    got = conv_transpose2d_backward(g, x, w, padding=1, algorithm=algorithm)
    for name, a, r in zip(("dx", "dw", "db"), got, conv_transpose2d_backward(g, x, w, padding=1, algorithm="direct"),
                          strict=True):  # fmt: skip
        assert_close(a, r, name, 1e-12)
    reference = TF.conv_transpose2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), padding=1).numpy()
    assert_close(y, reference, "against torch")


# Relative error bound with float32 subnormals (≈1e-40, ~16 significant bits) in x or the kernel.
# direct/gemm measure 3e-6 here. F(4×4)'s kernel transform divides by up to 24 (G's 1/24, 1/6 rows),
# pushing subnormal weights ~4.6 bits further below the normal range before the products: measured
# 2.4e-3, the price of tile 4 on denormal weights (docs/performance.md); normal-range inputs stay at 1e-4.
DENORMAL_BOUND = {("winograd2", "x"): 1e-4, ("winograd2", "weight"): 1e-4,
                  ("winograd4", "x"): 1e-3, ("winograd4", "weight"): 1e-2}  # fmt: skip


@pytest.mark.parametrize("algorithm, where", list(DENORMAL_BOUND))
def test_denormal_inputs_give_the_right_answer(algorithm, where):
    """float32 subnormals (1e-40) in the input or the kernel: finite, not flushed, close to float64."""
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3))
    x, w = (x * 1e-40, w) if where == "x" else (x, w * 1e-40)
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    small = x32 if where == "x" else w32
    assert np.all(np.abs(small) < np.finfo(np.float32).tiny)  # really subnormal
    reference = conv2d(x32.astype(np.float64), w32.astype(np.float64), padding=1, algorithm="direct")
    got = conv2d(x32, w32, padding=1, algorithm=algorithm)
    assert np.all(np.isfinite(got)) and np.abs(got).max() > 1e-41  # not flushed to zero
    assert_close(got, reference, f"{algorithm} with subnormal {where}", DENORMAL_BOUND[algorithm, where])


@pytest.mark.parametrize("algorithm", WINOGRAD)
@pytest.mark.parametrize(
    "weight_shape, options, reason",
    [
        ((4, 3, 5, 5), {}, r"kernel \(5, 5\) \(needs 3x3\)"),
        ((4, 3, 3, 3), dict(stride=2), r"stride \(2, 2\) \(needs 1\)"),
        ((4, 3, 3, 3), dict(dilation=(1, 2)), r"dilation \(1, 2\) \(needs 1\)"),
        ((3, 1, 3, 3), dict(groups=3), r"groups=3 \(needs 1\)"),
    ],
)
def test_refuses_what_it_cannot_compute(algorithm, weight_shape, options, reason):
    x = np.zeros((1, 3, 9, 9))
    with pytest.raises(ArgumentError, match=rf"algorithm='{algorithm}' cannot compute this convolution: .*{reason}"):
        conv2d(x, np.zeros(weight_shape), algorithm=algorithm, **options)


@pytest.mark.parametrize("algorithm", WINOGRAD)
def test_refuses_other_dimensions(algorithm):
    from convprop.functional import conv1d, conv3d

    with pytest.raises(ArgumentError, match="2-D only, this convolution has 1 spatial axes"):
        conv1d(np.zeros((1, 2, 8)), np.zeros((2, 2, 3)), algorithm=algorithm)
    with pytest.raises(ArgumentError, match="2-D only, this convolution has 3 spatial axes"):
        conv3d(np.zeros((1, 2, 5, 5, 5)), np.zeros((2, 2, 3, 3, 3)), algorithm=algorithm)


POINTS = {2: [0, 1, -1], 4: [0, 1, -1, 2, -2]}  # and ∞


@pytest.mark.parametrize("m", [2, 4])
def test_transforms_follow_from_the_interpolation_points(m):
    """docs/convolution.md 8.1: G's rows (1, p, p²), Aᵀ's columns (1, p, .., p^(m-1)), Bᵀ = V⁻¹, with
    ∞ as the last point; Lavin's matrices are these up to a scaling a_k of Aᵀ's column k and b_k of
    G's row k, undone by dividing Bᵀ's row k by a_k·b_k."""
    BT, G, AT = TRANSFORMS[m]
    points, a = POINTS[m], m + 2
    G0 = np.array([[1, p, p * p] for p in points] + [[0, 0, 1]], dtype=float)
    AT0 = np.array([[p**i for p in points] + [1 if i == m - 1 else 0] for i in range(m)], dtype=float)
    V = np.array([[p**row for p in points] + [1 if row == a - 1 else 0] for row in range(a)], dtype=float)
    BT0 = np.linalg.inv(V)
    b = np.array([G[k] @ G0[k] / (G0[k] @ G0[k]) for k in range(a)])  # row scalings of G
    scale_a = np.array([AT[:, k] @ AT0[:, k] / (AT0[:, k] @ AT0[:, k]) for k in range(a)])  # column scalings of Aᵀ
    np.testing.assert_allclose(G, b[:, None] * G0, atol=1e-15)
    np.testing.assert_allclose(AT, AT0 * scale_a, atol=1e-15)
    np.testing.assert_allclose(BT, BT0 / (scale_a * b)[:, None], atol=1e-12)
