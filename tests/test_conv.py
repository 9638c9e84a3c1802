"""conv2d and conv2d_backward: every algorithm against PyTorch and against the direct reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import assert_close, rel_error
from torch_reference import explicit_pads, torch_conv2d

import convprop
from convprop.errors import ArgumentError
from convprop.functional import ALGORITHMS, conv2d, conv2d_backward

ALGOS = [*ALGORITHMS, "auto"]
pytestmark = pytest.mark.filterwarnings(
    "ignore:Using padding=.same. with even kernel lengths:UserWarning"
)  # torch's own note


@st.composite
def conv_cases(draw):
    """A random but valid convolution: geometry, options and float64 data."""
    groups_kind = draw(st.sampled_from(["one", "some", "depthwise", "depthwise3x3"]))
    if groups_kind == "one":
        groups, cg, og = 1, draw(st.integers(1, 3)), draw(st.integers(1, 3))
    elif groups_kind == "some":
        groups, cg, og = draw(st.integers(2, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    else:
        groups = draw(st.integers(1, 4))
        cg, og = 1, draw(st.integers(1, 2))  # depthwise (with channel multiplier)
    kernel = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    stride = draw(
        st.sampled_from([1, 1, 1, 2, 3, (1, 2), (3, 1), (2, 3)])
    )  # stride 1 weighted: "same" is PyTorch's there
    dilation = draw(st.sampled_from([1, 1, 1, 2, 3, (1, 2), (2, 1)]))
    if groups_kind == "depthwise3x3":  # the unrolled 3×3 stride-1 kernels of conv_depthwise
        kernel, stride, dilation = (3, 3), 1, 1
    padding = draw(
        st.one_of(
            st.integers(0, 3),
            st.tuples(st.integers(0, 3), st.integers(0, 3)),
            st.sampled_from(["same", "valid"]),
        )
    )
    sp, dp = (
        (stride, stride) if isinstance(stride, int) else stride,
        (dilation, dilation) if isinstance(dilation, int) else dilation,
    )
    extent = [dp[a] * (kernel[a] - 1) + 1 for a in range(2)]
    size = [draw(st.integers(max(1, extent[a] - 4), extent[a] + 7)) for a in range(2)]
    pads = explicit_pads(padding, size, kernel, sp, dp)
    for a in range(2):
        if size[a] + sum(pads[a]) < extent[a]:
            size[a] = extent[a]  # too small to fit the kernel even padded: grow it
            pads = explicit_pads(padding, size, kernel, sp, dp)
    modes = ["zeros", "replicate"]
    if all(p < size[a] for a in range(2) for p in pads[a]):
        modes.append("reflect")
    if all(p <= size[a] for a in range(2) for p in pads[a]):
        modes.append("circular")
    padding_mode = draw(st.sampled_from(modes))
    batch = draw(st.sampled_from([None, 1, 2, 4]))  # None: one unbatched image
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    C, O = cg * groups, og * groups
    x = rng.standard_normal((C, *size) if batch is None else (batch, C, *size))
    weight = rng.standard_normal((O, cg, *kernel))
    bias = rng.standard_normal(O) if draw(st.booleans()) else None
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode)
    return x, weight, bias, options, rng


def refused(algorithm, x, weight, **options) -> bool:
    """An explicit algorithm that cannot compute the shape is refused with the reason (asserted here),
    never silently replaced: ``depthwise`` needs one input channel per group."""
    if algorithm != "depthwise" or weight.shape[1] == 1:
        return False
    with pytest.raises(ArgumentError, match=r"algorithm='depthwise' cannot .* one input channel per group"):
        conv2d(x, weight, algorithm=algorithm, **options)
    with pytest.raises(ArgumentError, match=r"algorithm='depthwise' cannot"):
        conv2d_backward(conv2d(x, weight, **options), x, weight, algorithm=algorithm, **options)
    return True


def check_against_torch(x, weight, bias, options, rng, algorithm):
    if refused(algorithm, x, weight, **options):
        return
    y = conv2d(x, weight, bias, algorithm=algorithm, **options)
    grad_output = rng.standard_normal(y.shape)
    ref_y, ref_dx, ref_dw, ref_db = torch_conv2d(x, weight, bias, grad_output, **options)
    dx, dw, db = conv2d_backward(grad_output, x, weight, algorithm=algorithm, **options)
    for name, got, ref in [("y", y, ref_y), ("dx", dx, ref_dx), ("dw", dw, ref_dw), ("db", db, ref_db)]:
        assert got.shape == ref.shape, f"{name}: shape {got.shape} != torch {ref.shape} ({options})"
        assert got.dtype == np.float64
        assert_close(got, ref, f"{name} ({options})", 1e-9)


@pytest.mark.parametrize("algorithm", ALGOS)
@settings(max_examples=200)
@given(case=conv_cases())
def test_matches_torch_float64(algorithm, case):
    check_against_torch(*case, algorithm)


@pytest.mark.parametrize(
    "options",
    [
        dict(stride=2, padding=0, dilation=1, groups=1, padding_mode="zeros"),  # (9 - 3) % 2 == 0 ... and 8:
        dict(stride=3, padding=1, dilation=1, groups=1, padding_mode="zeros"),
        dict(stride=(2, 3), padding=(1, 0), dilation=2, groups=1, padding_mode="reflect"),
        dict(stride=1, padding="same", dilation=1, groups=2, padding_mode="circular"),  # even kernel
        dict(stride=2, padding="same", dilation=1, groups=1, padding_mode="replicate"),
        dict(stride=1, padding=2, dilation=(1, 2), groups=4, padding_mode="zeros"),  # depthwise
    ],
)
@pytest.mark.parametrize("algorithm", ALGOS)
def test_named_geometries_match_torch(options, algorithm):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 10, 11))
    weight = rng.standard_normal((4, 4 // options["groups"], 4, 3))
    check_against_torch(x, weight, rng.standard_normal(4), options, rng, algorithm)


@pytest.mark.parametrize("algorithm", ALGOS)
def test_stride_remainder_gets_zero_gradient(algorithm):
    # H = 8, K = 3, stride 2: windows start at rows 0, 2, 4 and end at row 6; row 7 is never read.
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((1, 2, 8, 8)), rng.standard_normal((3, 2, 3, 3))
    if refused(algorithm, x, w, stride=2):
        return
    y = conv2d(x, w, stride=2, algorithm=algorithm)
    assert y.shape == (1, 3, 3, 3)
    dx, _, _ = conv2d_backward(np.ones_like(y), x, w, stride=2, algorithm=algorithm)
    assert np.all(dx[..., 7, :] == 0) and np.all(dx[..., :, 7] == 0)
    assert np.all(np.abs(dx[..., :7, :7]).sum(axis=(0, 1)) > 0)


@pytest.mark.parametrize("algorithm", ALGOS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(algorithm, dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 7, 7)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    if refused(algorithm, x, w, padding=1):
        return
    y = conv2d(x, w, b, padding=1, algorithm=algorithm)
    grads = conv2d_backward(np.ones_like(y), x, w, padding=1, algorithm=algorithm)
    assert y.dtype == dtype and all(g.dtype == dtype for g in grads)
    if dtype == np.float32:  # float32 result agrees with the float64 one to float32 precision
        y64 = conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), padding=1, algorithm="direct")
        assert rel_error(y, y64) < 1e-5


@pytest.mark.parametrize("algorithm", ALGOS)
def test_unbatched_input(algorithm):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 6, 5)), rng.standard_normal((3, 2, 2, 2))
    if refused(algorithm, x, w):
        return
    y = conv2d(x, w, algorithm=algorithm)
    assert y.shape == (3, 5, 4)
    np.testing.assert_allclose(y, conv2d(x[None], w, algorithm=algorithm)[0], rtol=1e-12)
    g = rng.standard_normal(y.shape)
    dx, dw, db = conv2d_backward(g, x, w, algorithm=algorithm)
    bdx, bdw, bdb = conv2d_backward(g[None], x[None], w, algorithm=algorithm)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (3,)
    for got, want in ((dx, bdx[0]), (dw, bdw), (db, bdb)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("algorithm", ALGOS)
@pytest.mark.parametrize(
    "options",
    [
        dict(stride=2, padding=1, dilation=1, groups=1, padding_mode="zeros"),
        dict(stride=(1, 2), padding="same", dilation=(2, 1), groups=2, padding_mode="reflect"),
        dict(stride=3, padding=(2, 1), dilation=1, groups=2, padding_mode="circular"),
        dict(stride=2, padding="same", dilation=1, groups=1, padding_mode="replicate"),
    ],
)
def test_gradcheck_finite_differences(algorithm, options):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 2, 7, 6))
    w = rng.standard_normal((4, 2 // options["groups"], 3, 2))
    b = rng.standard_normal(4)
    if refused(algorithm, x, w, **options):
        return
    result = convprop.gradcheck(
        lambda x, w, b: conv2d(x, w, b, algorithm=algorithm, **options),
        lambda g, x, w, b: conv2d_backward(g, x, w, algorithm=algorithm, **options),
        [x, w, b],
        names=["x", "weight", "bias"],
    )
    assert result.ok and max(result.max_abs_error) < 1e-6


def test_gradcheck_reports_a_wrong_gradient():
    x = np.random.default_rng(5).standard_normal((1, 1, 4, 4))
    w = np.ones((1, 1, 2, 2))

    def wrong_backward(g, x, w):
        dx, dw, _ = conv2d_backward(g, x, w)
        return dx, dw * 1.01

    with pytest.raises(convprop.GradcheckError, match="weight"):
        convprop.gradcheck(lambda x, w: conv2d(x, w), wrong_backward, [x, w], names=["x", "weight"])
    result = convprop.gradcheck(lambda x, w: conv2d(x, w), wrong_backward, [x, w], raise_on_failure=False)
    assert not result.ok and result.max_abs_error[0] < 1e-6 < result.max_abs_error[1]


@pytest.mark.parametrize("algorithm", ALGOS)
@pytest.mark.parametrize(
    "options",
    [
        dict(stride=1, padding=1),
        dict(stride=2, padding="same", groups=2, padding_mode="reflect"),
        dict(stride=(1, 2), padding=0, dilation=2, groups=4),
    ],
)
def test_layer_context_path_equals_the_functional_path(algorithm, options):
    """nn.Conv2d keeps the padded input (and unfolded columns) from forward: the same results (up to
    rounding: one product over the whole batch instead of one per chunk)."""
    from convprop.functional.conv import conv2d_backward_from_context, conv2d_with_context

    rng = np.random.default_rng(8)
    x, w, b = (
        rng.standard_normal((3, 4, 9, 8)),
        rng.standard_normal((4, 4 // options.get("groups", 1), 3, 3)),
        rng.standard_normal(4),
    )
    if refused(algorithm, x, w, **options):
        return
    y, context = conv2d_with_context(x, w, b, algorithm=algorithm, **options)
    np.testing.assert_allclose(y, conv2d(x, w, b, algorithm=algorithm, **options), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    for got, ref in zip(
        conv2d_backward_from_context(g, context), conv2d_backward(g, x, w, algorithm=algorithm, **options), strict=True
    ):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="grad_output must have the output's shape"):
        conv2d_backward_from_context(g[:, :2], context)


@pytest.mark.parametrize("algorithm", ALGOS)
@pytest.mark.parametrize("options", [dict(padding=1), dict(padding=1, groups=4), dict(stride=2, padding="same")])
def test_layer_context_path_in_float32_stays_close_to_float64_direct(algorithm, options):
    """The path training takes (context forward, param-only and full backward) in float32."""
    from convprop.functional.conv import (
        conv2d_backward_from_context,
        conv2d_param_grads_from_context,
        conv2d_with_context,
    )

    rng = np.random.default_rng(9)
    x, w, b = (
        rng.standard_normal((4, 4, 10, 9)),
        rng.standard_normal((8, 4 // options.get("groups", 1), 3, 3)),
        rng.standard_normal(8),
    )
    if refused(algorithm, x, w, **options):
        return
    y64 = conv2d(x, w, b, algorithm="direct", **options)
    g = rng.standard_normal(y64.shape)
    ref = conv2d_backward(g, x, w, algorithm="direct", **options)
    f32 = [a.astype(np.float32) for a in (x, w, b, g)]
    y, context = conv2d_with_context(*f32[:3], algorithm=algorithm, **options)
    assert y.dtype == np.float32 and rel_error(y, y64) < 1e-5
    dx, dw, db = conv2d_backward_from_context(f32[3], context)
    for got, want in zip((dx, dw, db), ref, strict=True):
        assert got.dtype == np.float32 and rel_error(got, want) < 1e-5
    for got, want in zip(conv2d_param_grads_from_context(f32[3], context), ref[1:], strict=True):
        assert got.dtype == np.float32 and rel_error(got, want) < 1e-5
