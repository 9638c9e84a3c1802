"""Convolution tiles with the output channels in the vector lanes: the weight gradient and the forward.

``conv_tile``'s tiles put V consecutive grid positions in a vector: every multiply-add of a grid
column past the output's width (2·p of a row padded by p, the rounding to whole vectors) is work
that is thrown away, 12–30% of the small maps' grids (mnist-2's 14² on 16 columns: 224 positions for
196 outputs; the 3-D benchmark layer's 4,608 for 4,096), and the weight gradient's partial sums must
be reduced across the lanes at each image's end. Here a vector holds V output channels instead, and
only the outputs' own positions p are visited, each through q(p), its index on the same grid (the
stride phases of ``conv_rows``, the volume of ``conv_volume``), and off[t], each tap's offset::

    dW[o, t] = Σ_n Σ_p δ[n, o, p] · buffer_n[q(p) + off[t]]
    y[n, o, p] = Σ_t w[o, t] · buffer_n[q(p) + off[t]]

- **Weight gradient** (:func:`accumulate_lanes`): a tile is OV vectors of channels × CT taps. Per
  position it loads OV vectors of δ (copied channels-last, δT[p, o], by 16 × 16 shuffle transposes:
  :func:`transpose_into`), broadcasts CT inputs and makes OV·CT fused multiply-adds into OV·CT
  accumulators that stay in the registers over a whole image (or a stack of small ones); then each is
  added to the sums (T', O'). No lanes are reduced, and every product is one the definition has, so
  an infinity or a NaN in the input gives what the sums give (no finiteness check, no fallback). db
  comes from the same copy of δ (:func:`add_columns`, in float64) while it is in the cache.
- **Forward** (``conv_lanes_forward.accumulate_forward``): a tile is OV vectors of channels × PP positions; per tap
  it loads OV vectors of the weights (channels last, (T, O')), broadcasts PP inputs and makes OV·PP
  multiply-adds: tap by tap with one rounding each, ``conv_tile``'s order, so the same bits as the
  direct tiles. The sums (P', O') go back to (O, P) by the same transposes with the bias added
  (:func:`untranspose_into`: the bits of the direct tiles' epilogue, which adds zeros without a bias).

Tiles (AVX-512's 32 vector registers; 16 integer ones hold the tile's input pointers or position
indices) follow how many vectors of channels remain: 4, 2 or 1 (:data:`TILES`, ``conv_lanes_forward.FORWARD_TILES``);
a last tile's taps or positions past the end read the last one's (sums that are never read). Which
passes take them: :func:`on_lanes` (the weight gradient) and ``conv_tiled.forward_on_lanes`` (the
forward), on AVX-512 only (:data:`LANES`), where they were measured (AMD EPYC Zen 5, 4 December: the
weight gradient of mnist-2's layer 0.67–0.85 of ``conv_tile_grad``'s time, resnet's 32 → 32 on 7²
0.59–0.75, the CIFAR and strided layers 0.90–1.05; the forward 0.89–0.95 where the grid is at least
1.1 times the output; docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .conv_tile import VECTOR_BYTES, array_shape, intrinsic_arguments, load_vector, splat, store_vector, vector_fma
from .threads import parallel, ranges

# (vectors of output channels, taps) of the weight gradient's tiles, widest first: OV·CT accumulators,
# OV δ vectors and one broadcast in the registers (32 with AVX-512, 16 with AVX2). (AVX-512, lenet's,
# resnet's and the conv benchmark's layers: 4 × 6, 2 × 6, 1 × 8 ran 0.6–0.9 of the time of 2 × 12 and
# 1 × 12, whose twelve input pointers no longer fit the integer registers; 1 × 4 and 4 × 4 were
# slower. AVX2's tiles are the same rule scaled to 16 registers, not measured.)
TILES = ((4, 6), (2, 6), (1, 8)) if VECTOR_BYTES == 64 else ((2, 4), (2, 4), (1, 8))
# Whether passes take these tiles (:func:`on_lanes`): with AVX-512, where they were measured; AVX2
# machines keep ``conv_tile_grad``'s and ``conv_tile``'s, measured there.
LANES = VECTOR_BYTES == 64
EXTRA_TAPS = max(taps for _, taps in TILES) - 1  # a last tile's taps past T


def make_lane_tile(vectors: int, taps: int) -> Any:
    """``lane_tile(x, d, pos, offs, o0, t0, part)``, an intrinsic for njit code: for v < vectors,
    j < taps, ``part[t0 + j, o0 + v·V + l] += Σ_p d[p, o0 + v·V + l] · x[pos[p] + offs[t0 + j]]``
    (l < V, the lanes) over every row p of d.

    x: 1-D (the buffer), d: (P, O') C-contiguous with O' a multiple of V, pos: (P,) int64, offs:
    (T',) int64, part: (T', O') C-contiguous; o0 a multiple of V with o0 + vectors·V <= O', t0 + taps
    <= T'. No bounds are checked: the caller sizes the arrays."""

    def lane_tile(  # pragma: no cover
        typingctx: Any, x: Any, d: Any, pos: Any, offs: Any, o0: Any, t0: Any, part: Any
    ) -> Any:
        sig = types.void(x, d, pos, offs, o0, t0, part)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            data, ints, vec, lanes, itemsize = intrinsic_arguments(context, builder, signature, args, (0, 1, 2, 3, 6))
            xs, ds, ps, os_, sums = (data[k] for k in (0, 1, 2, 3, 6))
            o0_, t0_ = ints[4], ints[5]
            i64 = ir.IntType(64)
            P = array_shape(context, builder, signature, args, 2)[0]
            width = array_shape(context, builder, signature, args, 1)[1]
            bases = [
                builder.gep(xs, [builder.load(builder.gep(os_, [builder.add(t0_, ir.Constant(i64, j))]))])
                for j in range(taps)
            ]
            zero = ir.Constant(vec, [0.0] * lanes)
            slots = [[cgutils.alloca_once_value(builder, zero) for _ in range(taps)] for _ in range(vectors)]
            fma = vector_fma(builder, vec)
            with cgutils.for_range(builder, P) as loop:
                p = loop.index
                q = builder.load(builder.gep(ps, [p]))
                row = builder.add(builder.mul(p, width), o0_)
                deltas = [
                    load_vector(builder, vec, itemsize, ds, builder.add(row, ir.Constant(i64, v * lanes)))
                    for v in range(vectors)
                ]
                for j in range(taps):
                    scalar = builder.load(builder.gep(bases[j], [q]))
                    value = splat(builder, scalar, vec)
                    for v in range(vectors):
                        slot = slots[v][j]
                        builder.store(builder.call(fma, [deltas[v], value, builder.load(slot)]), slot)
            for j in range(taps):
                first = builder.add(builder.mul(builder.add(t0_, ir.Constant(i64, j)), width), o0_)
                for v in range(vectors):
                    at = builder.add(first, ir.Constant(i64, v * lanes))
                    total = builder.fadd(load_vector(builder, vec, itemsize, sums, at), builder.load(slots[v][j]))
                    store_vector(builder, vec, itemsize, total, sums, at)
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(lane_tile)


WIDE, PAIR = TILES[0][0], TILES[1][0]
tile_wide, tile_pair, tile_one = (make_lane_tile(v, t) for v, t in TILES)


@njit(cache=True, nogil=True)
def accumulate_lanes(
    x: np.ndarray, d: np.ndarray, pos: np.ndarray, offs: np.ndarray, taps: int, part: np.ndarray
) -> None:  # pragma: no cover
    """part (T', O') += every tile's sums over the positions of d (P, O'): x the buffer, pos (P,) the
    positions' grid indices, offs (T',) the taps' offsets, T' >= ``taps`` + :data:`EXTRA_TAPS`."""
    lanes = VECTOR_BYTES // x.itemsize
    count, T = d.shape[1] // lanes, taps
    v = 0
    while count - v >= WIDE:
        for t0 in range(0, T, TILES[0][1]):
            tile_wide(x, d, pos, offs, v * lanes, t0, part)
        v += WIDE
    while count - v >= PAIR:
        for t0 in range(0, T, TILES[1][1]):
            tile_pair(x, d, pos, offs, v * lanes, t0, part)
        v += PAIR
    while count - v >= 1:
        for t0 in range(0, T, TILES[2][1]):
            tile_one(x, d, pos, offs, v * lanes, t0, part)
        v += 1


def _transposed(builder: Any, rows: list[Any], lanes: int) -> list[Any]:  # pragma: no cover
    """The V × V block of ``rows`` (V vectors) transposed: log2(V) rounds of two-source shuffles, each
    exchanging the off-diagonal sub-blocks of every 2b × 2b block (b = V/2, V/4, …, 1)."""
    i32 = ir.IntType(32)
    rows = list(rows)
    b = lanes // 2
    while b >= 1:
        low = ir.Constant(ir.VectorType(i32, lanes), [c if c & b == 0 else lanes + c - b for c in range(lanes)])
        high = ir.Constant(ir.VectorType(i32, lanes), [c + b if c & b == 0 else lanes + c for c in range(lanes)])
        for i in range(lanes):
            if i & b == 0:
                first, second = rows[i], rows[i + b]
                rows[i] = builder.shuffle_vector(first, second, low)
                rows[i + b] = builder.shuffle_vector(first, second, high)
        b //= 2
    return rows


def _block_codegen(biased: bool) -> Any:
    """The code of :func:`_transpose_block` (``biased`` False) and :func:`_biased_block`."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]  # pragma: no cover
        arrays = (0, 2, 5) if biased else (0, 2)
        data, ints, vec, lanes, itemsize = intrinsic_arguments(context, builder, signature, args, arrays)
        s0_, d0_, width_ = ints[1], ints[3], ints[4]
        i64 = ir.IntType(64)
        P = array_shape(context, builder, signature, args, 0)[1]
        rows = [load_vector(builder, vec, itemsize, data[0], builder.add(s0_, builder.mul(P, ir.Constant(i64, i))))
                for i in range(lanes)]  # fmt: skip
        if biased:  # + bias[b0 + l] in lane l of every row (a row's lanes are channels)
            bias = load_vector(builder, vec, itemsize, data[5], ints[6])
            rows = [builder.fadd(row, bias) for row in rows]
        for j, row in enumerate(_transposed(builder, rows, lanes)):
            at = builder.add(d0_, builder.mul(width_, ir.Constant(i64, j)))
            store_vector(builder, vec, itemsize, row, data[2], at)
        return context.get_dummy_value()

    return codegen


@intrinsic
def _transpose_block_intrinsic(typingctx, src, s0, dst, d0, width):  # type: ignore[no-untyped-def]  # pragma: no cover
    """A V × V block transposed: dst[d0 + j·width + i] = src[s0 + i·P + j] for i, j < V, with P the
    length of src's rows (src 2-D C-contiguous, dst 1-D)."""
    return types.void(src, s0, dst, d0, width), _block_codegen(False)


@intrinsic
def _biased_block_intrinsic(typingctx, src, s0, dst, d0, width, bias, b0):  # type: ignore[no-untyped-def]  # pragma: no cover
    """:func:`_transpose_block` with a bias per column of src: dst[d0 + j·width + i] = src[s0 + i·P + j]
    + bias[b0 + j] for i, j < V (src's rows positions and its columns channels, dst's rows channels:
    each value plus its channel's bias, one rounding)."""
    return types.void(src, s0, dst, d0, width, bias, b0), _block_codegen(True)


_transpose_block: Any = _transpose_block_intrinsic  # (called in compiled code)
_biased_block: Any = _biased_block_intrinsic


@njit(cache=True, nogil=True)
def transpose_into(dy: np.ndarray, n: int, d: np.ndarray, row: int) -> None:  # pragma: no cover
    """d[row + p, o] = dy[n, o, p] for image n of dy (N, O, P): V × V blocks by shuffles
    (:func:`_transpose_block`), the remaining channels and positions value by value."""
    O, P, width = dy.shape[1], dy.shape[2], d.shape[1]
    lanes = VECTOR_BYTES // dy.itemsize
    image, flat = dy[n], d.reshape(d.size)
    O_, P_ = O - O % lanes, P - P % lanes  # the blocks' channels and positions
    for o0 in range(0, O_, lanes):
        for p0 in range(0, P_, lanes):
            _transpose_block(image, o0 * P + p0, flat, (row + p0) * width + o0, width)
    for o in range(O_):
        for p in range(P_, P):
            d[row + p, o] = image[o, p]
    for o in range(O_, O):
        for p in range(P):
            d[row + p, o] = image[o, p]


def padded_offsets(offs: np.ndarray) -> np.ndarray:
    """The taps' offsets and :data:`EXTRA_TAPS` more, reading tap T − 1's (a last tile's)."""
    return np.concatenate([offs, np.full(EXTRA_TAPS, offs[-1], dtype=np.int64)])


def on_lanes(O: int, dtype: Any) -> bool:
    """Whether a weight gradient of O output channels takes these tiles: with AVX-512 (:data:`LANES`),
    at least a vector of channels and at most a quarter more rounded up to whole vectors (lenet's
    first layer's 6 → 16 and resnet's 8 → 16 ran 2.4–3.3× ``conv_tile_grad``'s time)."""
    lanes = VECTOR_BYTES // np.dtype(dtype).itemsize
    return LANES and lanes <= O and 4 * channels_padded(O, dtype) <= 5 * O


def channels_padded(O: int, dtype: Any) -> int:
    """O' : the output channels rounded up to whole vectors."""
    lanes = VECTOR_BYTES // np.dtype(dtype).itemsize
    return -(-O // lanes) * lanes


@njit(cache=True, nogil=True)
def add_columns(d: np.ndarray, rows: int, bias: np.ndarray) -> None:  # pragma: no cover
    """bias (O',) float64 += the sums of d's first ``rows`` rows, column by column (δ's channels: the
    bias gradient, from the channels-last copy while it is in the cache)."""
    for p in range(rows):
        row = d[p]
        for o in range(row.shape[0]):
            bias[o] += row[o]


def summed(
    images: Callable[[int, int, np.ndarray, np.ndarray], None],
    N: int,
    O: int,
    T: int,
    dtype: Any,
    threads: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(dW (O, T), db (O,)): ``images(n0, n1, part, bias)`` adds the weight gradient's sums over
    images n0..n1 into ``part`` (T', O') and δ's over them into ``bias`` (O', float64: db from sums
    more exact than float32's, rounded once); the batch split between ``threads`` threads, one pair
    of arrays each, added over the parts."""
    parts = ranges(N, threads)
    O_ = channels_padded(O, dtype)
    sums = np.zeros((len(parts), T + EXTRA_TAPS, O_), dtype=dtype)
    bias = np.zeros((len(parts), O_), dtype=np.float64)
    parallel([partial(images, n0, n1, sums[k], bias[k]) for k, (n0, n1) in enumerate(parts)])
    total = sums[0] if len(parts) == 1 else sums.sum(axis=0)
    return np.ascontiguousarray(total[:T, :O].T), bias.sum(axis=0)[:O].astype(dtype)


@njit(cache=True, nogil=True)
def untranspose_into(src: np.ndarray, bias: np.ndarray, out: np.ndarray, n: int) -> None:  # pragma: no cover
    """out[n, o, p] = src[p, o] + bias[o] for image n of out (N, O, P): src (P', O') with P' >= P, bias
    (O',); V × V blocks by shuffles (:func:`_biased_block`), the remaining channels and positions value
    by value."""
    O, P = out.shape[1], out.shape[2]
    lanes = VECTOR_BYTES // out.itemsize
    image = out[n]
    flat = image.reshape(O * P)
    O_, P_ = O - O % lanes, P - P % lanes
    for o0 in range(0, O_, lanes):
        for p0 in range(0, P_, lanes):
            _biased_block(src, p0 * src.shape[1] + o0, flat, o0 * P + p0, P, bias, o0)
    for o in range(O_):
        for p in range(P_, P):
            image[o, p] = src[p, o] + bias[o]
    for o in range(O_, O):
        for p in range(P):
            image[o, p] = src[p, o] + bias[o]
