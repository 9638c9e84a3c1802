"""``conv_rows``: the direct stride-1 kernel on the padded grid, one kernel row per pass.

Against the direct reference in float64 (rel. 1e-9) and float32 (rel. 1e-4 of float64), for kernels
of width 3 and 5 and heights 1 to 5, odd and even output-channel counts (the pass pairs channels),
asymmetric padding, no padding, one image and several (the batch is split between threads). Its
epilogues (bias, ReLU, eval batch norm, 2×2 max-pool) must equal the unfused arithmetic bit for bit,
and ``auto`` must run it only where ``conv.uses_rows`` says.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import assert_close

from convprop.functional import conv_rows, max_pool2d, norm_compiled, relu
from convprop.functional.conv import _resolve, conv2d, conv2d_with_context, uses_rows
from convprop.functional.conv_resolve import _choose
from convprop.functional.fused import conv2d_norm_relu, conv2d_relu_pool

# (N, C, H, W, O, kernel, padding, padding_mode)
GEOMETRIES = [
    (3, 4, 9, 8, 5, 3, 1, "zeros"),  # 3×3 'same', odd O: two pairs and one channel alone
    (1, 1, 12, 10, 4, 3, 1, "zeros"),  # one image, one input channel
    (2, 3, 10, 7, 6, (5, 3), (2, 1), "zeros"),  # tall kernel
    (2, 3, 9, 11, 2, (3, 5), 0, "zeros"),  # wide kernel, no padding
    (2, 2, 8, 9, 3, (4, 3), "same", "zeros"),  # even height: asymmetric padding
    (2, 3, 7, 9, 4, (1, 3), (0, 1), "zeros"),  # one row of taps
    (4, 6, 14, 14, 16, 5, 0, "zeros"),  # LeNet-5's 5×5 without padding
    (2, 3, 8, 8, 3, 3, 0, "reflect"),  # a padding mode, but no padding to make
    (5, 8, 28, 28, 8, 3, 1, "zeros"),  # resnet's first stage
]


def _case(geometry, dtype, seed=0):
    N, C, H, W, O, k, padding, mode = geometry
    rng = np.random.default_rng(seed)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C, kh, kw)).astype(dtype)
    return x, w, dict(padding=padding, dilation=1, padding_mode=mode)


def _resolved(x, w, options, stride=1, groups=1):
    """x batched (not padded), the weight and the geometry, as the forward passes them on."""
    x4, w4, geo, _, _ = _resolve(x, w, 2, stride, options["padding"], options["dilation"], groups,
                                 options["padding_mode"], "auto", "conv2d")  # fmt: skip
    return x4, w4, geo


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_forward_equals_direct(geometry):
    x, w, options = _case(geometry, np.float64)
    x4, w4, geo = _resolved(x, w, options)
    assert conv_rows.applies(geo)
    reference = conv2d(x, w, **options, algorithm="direct")
    assert_close(conv_rows.forward(x4, w4, geo), reference, f"{geometry} float64")
    x32, w32, _ = _resolved(x.astype(np.float32), w.astype(np.float32), options)
    got = conv_rows.forward(x32, w32, geo)
    assert got.dtype == np.float32
    assert_close(got, reference, f"{geometry} float32", rtol=1e-4)


def test_a_non_contiguous_input():
    x, w, options = _case(GEOMETRIES[0], np.float64)
    view = np.swapaxes(np.swapaxes(x, 2, 3).copy(), 2, 3)  # same values, not C-contiguous
    x4, w4, geo = _resolved(view, w, options)
    assert not x4.flags.c_contiguous
    assert_close(conv_rows.forward(x4, w4, geo), conv2d(x, w, **options, algorithm="direct"), "view")


@pytest.mark.parametrize(
    "weight, stride, dilation, groups, mode, expected",
    [
        ((4, 4, 3, 3), 1, 1, 1, "zeros", True),
        ((4, 4, 3, 3), 2, 1, 1, "zeros", True),  # strided: through the stride phases
        ((4, 4, 3, 3), 1, 2, 1, "zeros", True),  # dilated: other offsets
        ((4, 2, 3, 3), 1, 1, 2, "zeros", False),  # grouped
        ((4, 4, 3, 4), 1, 1, 1, "zeros", True),  # any kernel width
        ((4, 4, 3, 3), 1, 1, 1, "reflect", False),  # a border to reflect, not zeros
    ],
)
def test_applies(weight, stride, dilation, groups, mode, expected):
    x = np.zeros((1, 4, 16, 16))
    _, _, geo = _resolved(x, np.zeros(weight), dict(padding=1, dilation=dilation, padding_mode=mode), stride, groups)
    assert conv_rows.applies(geo) is expected


@pytest.mark.parametrize("row", [0, 4, 9])  # first row, the middle, the last
def test_a_nan_lands_where_the_direct_convolution_puts_it(row):
    x, w, options = _case(GEOMETRIES[2], np.float64)
    x[1, 2, row, -1] = np.nan  # the last column: what a grid row's extra columns read
    x4, w4, geo = _resolved(x, w, options)
    got, reference = conv_rows.forward(x4, w4, geo), conv2d(x, w, **options, algorithm="direct")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(reference))
    finite = ~np.isnan(reference)
    assert_close(got[finite], reference[finite], "finite outputs")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_epilogues_equal_the_unfused_arithmetic_bit_for_bit(dtype):
    x, w, options = _case(GEOMETRIES[0], dtype)
    x4, w4, geo = _resolved(x, w, options)
    rng = np.random.default_rng(1)
    b = rng.standard_normal(w.shape[0]).astype(dtype)
    mean, scale, shift = (rng.standard_normal(w.shape[0]).astype(dtype) for _ in range(3))
    y = conv_rows.forward(x4, w4, geo) + b.reshape(-1, 1, 1)  # the conv, then add_bias
    out, _ = conv_rows.run(x4, w4, geo, conv_rows.PLAIN, b)
    np.testing.assert_array_equal(out, y)
    out, _ = conv_rows.run(x4, w4, geo, conv_rows.RELU, -np.abs(b) - 50)  # every value ≤ 0: +0.0, not −0.0
    assert not out.any() and not np.signbit(out).any()
    out, _ = conv_rows.run(x4, w4, geo, conv_rows.RELU, b)
    np.testing.assert_array_equal(out, np.maximum(y, 0))
    out, saw_nan = conv_rows.run(x4, w4, geo, conv_rows.RELU_POOL, b)
    np.testing.assert_array_equal(out, max_pool2d(relu(y), 2))
    assert not saw_nan
    assert out.shape == (3, 5, 4, 4)
    normalised = np.empty_like(y)
    norm_compiled.normalise(y.reshape(*y.shape[:2], -1), mean, scale, shift, normalised.reshape(*y.shape[:2], -1))
    out, _ = conv_rows.run(x4, w4, geo, conv_rows.NORM, b, (mean, scale, shift))
    np.testing.assert_array_equal(out, normalised)
    out, _ = conv_rows.run(x4, w4, geo, conv_rows.NORM_RELU, b, (mean, scale, shift))
    np.testing.assert_array_equal(out, np.maximum(normalised, 0))


def test_a_nan_in_a_pooled_window_is_reported():
    x, w, options = _case(GEOMETRIES[0], np.float64)
    x[2, 1, 4, 4] = np.nan
    x4, w4, geo = _resolved(x, w, options)
    assert conv_rows.run(x4, w4, geo, conv_rows.RELU_POOL)[1]
    assert not conv_rows.run(x4[:2], w4, geo, conv_rows.RELU_POOL)[1]  # the NaN is in image 2


@pytest.mark.parametrize(
    "shape, algorithm, expected",
    [
        ((8, 8, 28), "auto", True),  # resnet's first stage
        ((1, 16, 28), "auto", True),  # lenet's first layer: one input channel
        ((16, 32, 14), "auto", True),  # lenet's second layer
        ((32, 32, 7), "auto", True),  # rows of 7
        ((32, 64, 14), "auto", True),  # C·O = 2048
        ((8, 8, 28), "gemm", False),  # an explicit algorithm runs as named
    ],
)
def test_which_forwards_run_conv_rows(shape, algorithm, expected, monkeypatch):
    C, O, H = shape
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, C, H, H)), rng.standard_normal((O, C, 3, 3))
    _, _, geo = _resolved(x, w, dict(padding=1, dilation=1, padding_mode="zeros"))
    assert uses_rows(algorithm, _choose(algorithm, geo), geo) is expected
    calls = []
    real = conv_rows.run
    monkeypatch.setattr(conv_rows, "run", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = conv2d(x, w, padding=1, algorithm=algorithm)
    assert bool(calls) is expected
    assert_close(got, conv2d(x, w, padding=1, algorithm="direct"), f"{shape} {algorithm}")
    calls.clear()
    from convprop.functional import conv_tiled  # training: conv_tiled's forward, same rule (or its lanes')

    lanes = conv_tiled.forward_lanes
    monkeypatch.setattr(conv_tiled, "forward_lanes", lambda *a, **k: calls.append(1) or lanes(*a, **k))
    conv2d_with_context(x, w, padding=1, algorithm=algorithm)
    assert bool(calls) is expected


POOL = dict(kernel_size=(2, 2), stride=(2, 2), padding=0, dilation=1, ceil_mode=False)


@pytest.mark.parametrize("pool", [POOL, None], ids=["2x2 pool", "no pool"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_blocks_equal_the_unfused_layers_exactly(dtype, pool):
    x, w, options = _case(GEOMETRIES[8], dtype)
    b = np.random.default_rng(2).standard_normal(w.shape[0]).astype(dtype)
    x[0, 0, 2, 3] = np.nan  # a NaN: the pooled block reruns unfused, ReLU keeps it
    options |= dict(stride=1, groups=1, algorithm="auto")
    got = conv2d_relu_pool(x, w, b, options, relu=True, pool=pool)
    y = relu(conv2d(x, w, b, **options))
    reference = max_pool2d(y, **pool) if pool else y
    assert got.dtype == dtype and np.isnan(got).any()
    np.testing.assert_array_equal(got, reference)
    rng = np.random.default_rng(3)
    mean, shift = rng.standard_normal((2, w.shape[0])).astype(dtype)
    scale = rng.uniform(0.5, 2, w.shape[0]).astype(dtype)
    got = conv2d_norm_relu(x, w, b, options, (mean, scale, shift))
    z = conv2d(x, w, b, **options)
    expected = np.empty_like(z)
    norm_compiled.normalise(z.reshape(*z.shape[:2], -1), mean, scale, shift, expected.reshape(*z.shape[:2], -1))
    np.testing.assert_array_equal(got, np.maximum(expected, 0))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "kernel, dilation, padding",
    [((3, 3), (2, 2), 2), ((2, 4), (1, 3), "same"), ((7, 1), (1, 1), (3, 0)), ((1, 1), (1, 1), 0)],
    ids=["dilated", "even, dilated columns", "one column of taps", "1x1"],
)
def test_any_kernel_and_dilation_equals_direct(kernel, dilation, padding, dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 11, 13)).astype(dtype)
    w = rng.standard_normal((9, 4, *kernel)).astype(dtype)
    options = dict(padding=padding, dilation=dilation, padding_mode="zeros")
    x4, w4, geo = _resolved(x, w, options)
    assert conv_rows.applies(geo)
    reference = conv2d(x.astype(np.float64), w.astype(np.float64), **options, algorithm="direct")
    got = conv_rows.forward(x4, w4, geo)
    assert got.dtype == dtype
    assert_close(got, reference, f"{kernel} {dilation} {dtype.__name__}", rtol=1e-9 if dtype == np.float64 else 1e-4)


def test_a_1x1_kernel_stays_a_plain_product():
    x, w = np.zeros((2, 8, 9, 9)), np.zeros((4, 8, 1, 1))
    _, _, geo = _resolved(x, w, dict(padding=0, dilation=1, padding_mode="zeros"))
    assert conv_rows.applies(geo) and not uses_rows("auto", _choose("auto", geo), geo)
    assert not uses_rows("auto", _choose("auto", geo), geo, 2)


def test_a_strided_1x1_kernel_runs_on_tiles_for_small_batches_or_a_narrow_blas(monkeypatch):
    """resnet's projections: on the tiles below STRIDED_1X1_BATCH images, and at any batch where
    OpenBLAS's kernels are narrower than AVX-512's; else the product of the sampled input."""
    from convprop.functional import conv_eval, threads

    x, w = np.zeros((2, 8, 9, 9)), np.zeros((4, 8, 1, 1))
    _, _, geo = _resolved(x, w, dict(padding=0, dilation=1, padding_mode="zeros"), stride=2)
    algo = _choose("auto", geo)
    monkeypatch.setattr(conv_eval, "VECTOR_BYTES", 64)
    monkeypatch.setattr(threads, "blas_vector_bytes", lambda: 64)
    assert uses_rows("auto", algo, geo, 1) and uses_rows("auto", algo, geo, conv_eval.STRIDED_1X1_BATCH - 1)
    assert not uses_rows("auto", algo, geo, conv_eval.STRIDED_1X1_BATCH) and not uses_rows("auto", algo, geo)
    assert not uses_rows("gemm", algo, geo, 1)
    monkeypatch.setattr(threads, "blas_vector_bytes", lambda: 32)  # AVX2 kernels beside AVX-512 tiles
    assert uses_rows("auto", algo, geo, 1000)
    monkeypatch.setattr(threads, "blas_vector_bytes", lambda: None)  # a BLAS of unknown width: as wide
    assert not uses_rows("auto", algo, geo, 1000)
    monkeypatch.setattr(conv_eval, "VECTOR_BYTES", 32)  # AVX2 tiles and AVX2 BLAS (an AMD Zen 3): the tiles
    assert uses_rows("auto", algo, geo, 1000)
    monkeypatch.setattr(threads, "blas_vector_bytes", lambda: 32)
    assert uses_rows("auto", algo, geo, 1000)


@pytest.mark.parametrize(
    "cores, expected",
    [(["SkylakeX"], 64), (["Haswell"], 32), (["Haswell", "SkylakeX"], 32), (["Neoverse"], None), ([], None)],
)
def test_blas_vector_bytes_reads_openblas_core_type(cores, expected, monkeypatch):
    import threadpoolctl

    from convprop.functional import threads

    found = [{"internal_api": "openblas", "architecture": core} for core in cores] + [{"internal_api": "mkl"}]
    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: found)
    threads.blas_vector_bytes.cache_clear()
    try:
        assert threads.blas_vector_bytes() == expected
    finally:
        threads.blas_vector_bytes.cache_clear()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "size, kernel, stride, dilation, padding",
    [
        ((14, 14), (3, 3), (2, 2), (1, 1), 1),  # resnet's downsampling conv
        ((14, 14), (1, 1), (2, 2), (1, 1), 0),  # its 1×1 projection: one phase of four
        ((13, 11), (3, 3), (2, 2), (1, 1), 1),  # odd sizes: a remainder row and column
        ((12, 17), (4, 3), (3, 2), (1, 1), (2, 1)),  # stride 3 × 2, even kernel height
        ((15, 16), (3, 3), (2, 2), (2, 1), 2),  # stride and dilation together
        ((10, 9), (5, 5), (1, 3), (1, 1), 0),  # one axis strided
    ],
)
def test_strides_through_phases_equal_direct(size, kernel, stride, dilation, padding, dtype):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 5, *size)).astype(dtype)
    w = rng.standard_normal((7, 5, *kernel)).astype(dtype)
    x[1, 2, 3, 4] = np.nan  # lands where the direct convolution puts it, nowhere else
    options = dict(padding=padding, dilation=dilation, padding_mode="zeros")
    x4, w4, geo, _, _ = _resolve(x, w, 2, stride, padding, dilation, 1, "zeros", "auto", "conv2d")
    assert conv_rows.applies(geo)
    reference = conv2d(x.astype(np.float64), w.astype(np.float64), stride=stride, **options, algorithm="direct")
    got = conv_rows.forward(x4, w4, geo)
    assert got.dtype == dtype and got.shape == reference.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(reference))
    finite = ~np.isnan(reference)
    assert_close(got[finite], reference[finite], f"{stride} {kernel} {dtype.__name__}",
                 rtol=1e-9 if dtype == np.float64 else 1e-4)  # fmt: skip


@pytest.mark.parametrize("stride, dilation, padding", [(1, 1, 4), (2, 1, 3), (3, 2, "valid")])
def test_1d_runs_as_2d_of_height_one(stride, dilation, padding):
    from convprop.functional import conv1d

    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((4, 6, 41)), rng.standard_normal((5, 6, 9))
    x4, w4, geo, algo, _ = _resolve(x, w, 1, stride, padding, dilation, 1, "zeros", "auto", "conv1d")
    assert conv_rows.applies(geo) and uses_rows("auto", algo, geo)
    got = conv_rows.forward(x4, w4, geo)
    reference = conv1d(x, w, stride=stride, padding=padding, dilation=dilation, algorithm="direct")
    assert got.shape == reference.shape
    assert_close(got, reference, f"1-D stride {stride}")
    assert_close(conv1d(x, w, stride=stride, padding=padding, dilation=dilation), reference, "conv1d's eval path")
