"""``conv_flat``: stride-1 2-D forwards on the padded grid, against the direct reference.

The grid's extra columns and the zero tail of each image's run must never reach a valid output, in
any geometry (rectangular and dilated kernels, no padding, even kernels with 'same'), with the batch
split into many chunks, in float64 (rel. 1e-9) and float32 (rel. 1e-4 of float64). A NaN in the
input must land exactly where the direct convolution puts it. The fused inference block built on the
grid (``conv2d_relu_pool``) must equal the unfused conv → ReLU → pool bit for bit, chunked or not.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import assert_close

from convprop.functional import conv_eval, conv_flat, conv_memory, fused, max_pool2d, relu
from convprop.functional.conv import _resolve, conv2d, conv2d_with_context
from convprop.functional.fused import conv2d_relu_pool

# (N, C, H, W, O, kernel, padding, dilation, padding_mode)
GEOMETRIES = [
    (3, 4, 9, 8, 5, 3, 1, 1, "zeros"),  # 3×3 'same'
    (2, 1, 12, 10, 4, 3, 1, 1, "zeros"),  # one input channel (the first layer)
    (2, 3, 10, 7, 4, (3, 2), (1, 0), (2, 1), "zeros"),  # rectangular, dilated rows
    (2, 3, 9, 11, 2, (2, 3), 0, (1, 2), "reflect"),  # no padding, dilated columns
    (2, 2, 8, 8, 3, 4, "same", 1, "zeros"),  # even kernel: asymmetric padding
    (2, 3, 7, 9, 4, (1, 3), (0, 1), 1, "circular"),  # one row of taps
    (2, 3, 7, 9, 4, (3, 1), (1, 0), 1, "replicate"),  # one column of taps: no tail
    (1, 2, 5, 5, 3, 5, 0, 1, "zeros"),  # a single output pixel
    (4, 6, 14, 14, 5, 5, 0, 1, "zeros"),  # LeNet-5's 5×5 without padding
]


def _case(geometry, dtype, seed=0):
    N, C, H, W, O, k, padding, dilation, mode = geometry
    rng = np.random.default_rng(seed)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C, kh, kw)).astype(dtype)
    return x, w, dict(padding=padding, dilation=dilation, padding_mode=mode)


def _resolved(x, w, options):
    """x batched (not padded), the weight and the geometry, as the forward passes them on."""
    x4, w4, geo, _, _ = _resolve(x, w, 2, 1, options["padding"], options["dilation"], 1, options["padding_mode"],
                                 "auto", "conv2d")  # fmt: skip
    return x4, w4, geo


@pytest.fixture(params=["whole", "one image a chunk"])
def chunking(request, monkeypatch):
    if request.param != "whole":
        monkeypatch.setattr(conv_flat, "CHUNK_BYTES", 1)  # at least one image per chunk: every image its own
    return request.param


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_forward_equals_direct(geometry, chunking):
    x, w, options = _case(geometry, np.float64)
    x4, w4, geo = _resolved(x, w, options)
    assert conv_flat.applies(geo)
    reference = conv2d(x, w, **options, algorithm="direct")
    assert_close(conv_flat.forward(x4, w4, geo), reference, f"{geometry} float64")
    x32, w32, _ = _resolved(x.astype(np.float32), w.astype(np.float32), options)
    got = conv_flat.forward(x32, w32, geo)
    assert got.dtype == np.float32
    assert_close(got, reference, f"{geometry} float32", rtol=1e-4)


@pytest.mark.parametrize(
    "geometry, algorithm, keep, expected",
    [
        (GEOMETRIES[5], "auto", False, True),  # eval forward, a padding not of zeros: the grid
        (GEOMETRIES[0], "auto", False, False),  # zero padding: conv_rows' tiles
        (GEOMETRIES[5], "gemm", False, False),  # an explicit algorithm runs as named
        (GEOMETRIES[5], "auto", True, False),  # training keeps conv_gemm's columns
        (GEOMETRIES[1], "auto", False, False),  # one input channel: conv_rows' tiles (im2col with other paddings)
    ],
)
def test_which_forwards_run_on_the_grid(geometry, algorithm, keep, expected, monkeypatch):
    x, w, options = _case(geometry, np.float64)
    calls = []
    real = conv_flat.forward
    monkeypatch.setattr(conv_flat, "forward", lambda *a: calls.append(1) or real(*a))
    if keep:
        got, _ = conv2d_with_context(x, w, **options, algorithm=algorithm)
    else:
        got = conv2d(x, w, **options, algorithm=algorithm)
    assert bool(calls) is expected
    assert_close(got, conv2d(x, w, **options, algorithm="direct"), algorithm)


def test_applies_to_stride_one_dense_2d_only():
    x, w = np.zeros((1, 4, 8, 8)), np.zeros((4, 2, 3, 3))
    for stride, groups, applies in [(1, 1, True), (2, 1, False), ((1, 2), 1, False), (1, 2, False)]:
        _, _, geo, _, _ = _resolve(x, w if groups == 2 else np.zeros((4, 4, 3, 3)), 2, stride, 1, 1, groups,
                                   "zeros", "auto", "conv2d")  # fmt: skip
        assert conv_flat.applies(geo) is applies, (stride, groups)


@pytest.mark.parametrize("row", [0, 4, 6])  # first row, the middle, the last: near the runs' tails too
def test_a_nan_lands_where_the_direct_convolution_puts_it(row, chunking):
    x, w, options = _case(GEOMETRIES[2], np.float64)
    x[1, 2, row, -1] = np.nan  # the last column: what a grid row's extra columns read
    x4, w4, geo = _resolved(x, w, options)
    got, reference = conv_flat.forward(x4, w4, geo), conv2d(x, w, **options, algorithm="direct")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(reference))
    finite = ~np.isnan(reference)
    assert_close(got[finite], reference[finite], "finite outputs")


def test_a_non_contiguous_input_with_no_padding():
    x, w, options = _case(GEOMETRIES[3], np.float64)
    view = np.swapaxes(np.swapaxes(x, 2, 3).copy(), 2, 3)  # same values, not C-contiguous
    assert not view.flags.c_contiguous
    assert_close(conv2d(view, w, **options, algorithm="gemm"), conv2d(x, w, **options, algorithm="direct"), "view")


POOL = dict(kernel_size=(2, 2), stride=(2, 2), padding=0, dilation=1, ceil_mode=False)


@pytest.mark.parametrize("pool", [POOL, None], ids=["2x2 pool", "no pool"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("geometry", [GEOMETRIES[0], GEOMETRIES[1], GEOMETRIES[8]], ids=["3x3", "one channel", "5x5"])
def test_fused_block_equals_the_unfused_layers_exactly(geometry, dtype, pool, chunking, monkeypatch):
    """On the grid (several input channels) or in im2col chunks (one channel, pooled), chunked or not:
    what a padding other than zeros runs (zero padding takes ``conv_rows``' tiles, switched off here on
    both sides: the unfused conv2d then runs the grid's product too, not the tiles, whose sums BLAS
    need not reproduce to the last bit — on an AMD EPYC, OpenBLAS's float64 product differed from the
    tiles by an ulp or two in the last output channel)."""
    monkeypatch.setattr(fused, "uses_rows", lambda *a: False)
    monkeypatch.setattr(conv_eval, "uses_rows", lambda *a: False)
    x, w, options = _case(geometry, dtype)
    b = np.random.default_rng(2).standard_normal(w.shape[0]).astype(dtype)
    x[0, 0, 2, 3] = np.nan  # a NaN: the pool's general kernel for that chunk, ReLU keeps it
    options |= dict(stride=1, groups=1, algorithm="auto")
    calls = []
    for name in ("grid_chunks", "_im2col_in_chunks"):
        module = conv_flat if name == "grid_chunks" else fused
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    got = conv2d_relu_pool(x, w, b, options, relu=True, pool=pool)
    expected = "grid_chunks" if x.shape[1] > 1 else "_im2col_in_chunks" if pool else None
    assert (calls[:1] or [None])[0] == expected
    y = relu(conv2d(x, w, b, **options))
    reference = max_pool2d(y, **pool) if pool else y
    assert got.dtype == dtype and np.isnan(got).any()
    np.testing.assert_array_equal(got, reference)
    for bias in (None, -b):  # no bias; a bias that drives values to ≤ 0 (−0.0 must come out as +0.0)
        got = conv2d_relu_pool(x, w, bias, options, relu=True, pool=pool)
        y = relu(conv2d(x, w, bias, **options))
        np.testing.assert_array_equal(got, max_pool2d(y, **pool) if pool else y)
        assert not np.signbit(got[~np.isnan(got)]).any()


def test_chunks_stay_within_the_memory_bound():
    """The chunk budget is the smaller of CHUNK_BYTES and input + output (conv_memory's rule)."""
    x, w, options = _case(GEOMETRIES[0], np.float64)
    x4, w4, geo = _resolved(x, w, options)
    sizes = [chunk.stop - chunk.start for chunk, _ in conv_flat.grid_chunks(x4, w4, geo)]
    per_image = x.shape[1] * 9 * geo.out_size[0] * geo.padded_size[1] * 8
    budget = conv_memory.unfold_budget(x.shape[0], x.shape[1], geo.padded_size, w.shape[0], geo.out_size, 8)
    assert sum(sizes) == x.shape[0] and max(sizes) == max(1, budget // per_image)
