"""``conv_tile``: the register-blocked tile, in every shape a CPU may get, against a plain NumPy sum.

The tile shape follows the machine's vector registers (16 float32 lanes with AVX-512, 8 with AVX2, 4
with SSE or NEON), so the tests build the tile for each of them, whatever machine runs them: LLVM
lowers a vector wider than the hardware's to several registers, so every shape runs (and must be
right) anywhere. ``acc[o, q] = Σ_t w[o, t] · x[q + offs[t]]`` for every row of the accumulator that
is a real channel and every position, in float64 (rel. 1e-12) and float32 (rel. 1e-5); channels past
O (the last tile's padding) must not disturb the real ones.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from convprop.functional import conv_tile
from convprop.functional.conv_rows import _offsets


def _accumulate(vector_bytes, vectors, channels):
    tile = conv_tile.make_tile(vector_bytes, vectors, channels)

    @njit
    def accumulate(x, w, offs, acc):
        step = vectors * (vector_bytes // acc.itemsize)
        for o0 in range(0, w.shape[0], channels):
            for q in range(0, acc.shape[1], step):
                tile(x, q, w, offs, acc, o0)

    return accumulate


def _reference(x, w, offs, length):
    acc = np.zeros((w.shape[0], length))
    for t, off in enumerate(offs):
        acc += w[:, t : t + 1].astype(np.float64) * x[off : off + length].astype(np.float64)
    return acc


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize(
    "vector_bytes, vectors, channels",
    [(64, 3, 8), (64, 2, 8), (32, 2, 4), (16, 2, 4), (64, 1, 3), (32, 3, 2)],
    ids=["AVX-512", "AVX-512, two vectors", "AVX2", "SSE/NEON", "one vector, 3 channels", "three vectors, 2 channels"],
)
@pytest.mark.parametrize("O, taps", [(8, 9), (5, 27), (16, 1), (3, 50)])
def test_every_tile_shape_sums_the_taps(vector_bytes, vectors, channels, dtype, rtol, O, taps):
    rng = np.random.default_rng(O * taps)
    step = vectors * vector_bytes // np.dtype(dtype).itemsize
    length = 3 * step
    offs = np.sort(rng.choice(200, size=taps, replace=False)).astype(np.int64)
    x = rng.standard_normal(200 + length).astype(dtype)
    w = rng.standard_normal((O, taps)).astype(dtype)
    acc = np.full((-(-O // channels) * channels, length), np.nan, dtype=dtype)  # every row written
    _accumulate(vector_bytes, vectors, channels)(x, w, offs, acc)
    assert not np.isnan(acc).any()
    reference = _reference(x, w, offs, length)
    scale = np.abs(reference).max()
    np.testing.assert_allclose(acc[:O], reference, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_machines_tile_is_what_conv_rows_runs(dtype):
    """The module's own ``accumulate`` (this machine's shape) on a real layout: 3 → 5 channels, 3×3."""
    C, H, W, O = 3, 6, 7, 5
    rng = np.random.default_rng(2)
    step = conv_tile.block(dtype)
    Hp, Wp = H + 2, W + 2
    L = H * Wp
    rounded = -(-L // step) * step
    S = Hp * Wp + rounded - L + 2
    buffer = np.zeros(C * S, dtype=dtype)
    planes = rng.standard_normal((C, H, W)).astype(dtype)
    for c in range(C):
        buffer[c * S : c * S + Hp * Wp].reshape(Hp, Wp)[1:-1, 1:-1] = planes[c]
    w = rng.standard_normal((O, C * 9)).astype(dtype)
    offs, _ = _offsets(C, 3, 3, S, Wp, 1, 1, 1, 1)
    acc = np.empty((-(-O // conv_tile.CHANNELS) * conv_tile.CHANNELS, rounded), dtype=dtype)
    conv_tile.accumulate(buffer, w, offs, acc)
    reference = _reference(buffer, w, offs, rounded)
    np.testing.assert_allclose(acc[:O], reference, rtol=0, atol=1e-5 * np.abs(reference).max())


def test_the_shape_follows_the_vector_registers():
    assert conv_tile.VECTOR_BYTES in (16, 32, 64)
    vectors, channels = conv_tile.SHAPE
    registers = 32 if conv_tile.VECTOR_BYTES == 64 else 16
    assert vectors * channels + vectors + 1 <= registers  # accumulators, inputs, one broadcast weight
    assert conv_tile.block(np.float32) == conv_tile.VECTOR_BYTES // 4  # one vector: remainders take smaller tiles
    assert conv_tile.block(np.float64) == conv_tile.block(np.float32) // 2


@pytest.mark.parametrize("vectors", range(1, 8))
def test_the_remainders_of_a_grid_row_take_smaller_tiles(vectors):
    """``accumulate`` over a row of any whole number of vectors: whole tiles, then two vectors, then one."""
    lanes = conv_tile.VECTOR_BYTES // 4
    length, O, taps = vectors * lanes, 11, 7
    rng = np.random.default_rng(vectors)
    offs = np.sort(rng.choice(60, size=taps, replace=False)).astype(np.int64)
    x = rng.standard_normal(60 + length).astype(np.float32)
    w = rng.standard_normal((O, taps)).astype(np.float32)
    acc = np.full((-(-O // conv_tile.CHANNELS) * conv_tile.CHANNELS, length), np.nan, dtype=np.float32)
    conv_tile.accumulate(x, w, offs, acc)
    reference = _reference(x, w, offs, length)
    np.testing.assert_allclose(acc[:O], reference, rtol=0, atol=1e-5 * np.abs(reference).max())
    assert not np.isnan(acc).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("vectors", [1, 2, 3, 4, 5, 7])
def test_many_taps_take_the_wide_tile_with_the_same_bits(vectors, dtype):
    """From ``WIDE_TAPS`` taps ``accumulate`` runs ``WIDE_VECTORS``-wide tiles (then two vectors, then
    one): every tile sums tap by tap, so the result is bit for bit one-vector tiles' everywhere."""
    lanes = conv_tile.VECTOR_BYTES // np.dtype(dtype).itemsize
    length, O, taps = vectors * lanes, 6, conv_tile.WIDE_TAPS + 17
    rng = np.random.default_rng(vectors)
    offs = np.sort(rng.choice(2 * taps, size=taps, replace=False)).astype(np.int64)
    x = rng.standard_normal(2 * taps + length).astype(dtype)
    w = rng.standard_normal((O, taps)).astype(dtype)
    rows = -(-O // conv_tile.CHANNELS) * conv_tile.CHANNELS
    acc = np.full((rows, length), np.nan, dtype=dtype)
    conv_tile.accumulate(x, w, offs, acc)
    narrow = np.full((rows, length), np.nan, dtype=dtype)
    _accumulate(conv_tile.VECTOR_BYTES, 1, conv_tile.CHANNELS)(x, w, offs, narrow)
    np.testing.assert_array_equal(acc, narrow)
    reference = _reference(x, w, offs, length)
    np.testing.assert_allclose(acc[:O], reference, rtol=0, atol=1e-5 * np.abs(reference).max())
