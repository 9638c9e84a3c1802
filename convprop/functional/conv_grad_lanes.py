"""The weight gradient of a convolution with the output channels in the vector lanes.

Over the valid output positions p of an image (no grid columns past the output's width), with q(p)
the position's index on the padded grid of ``conv_rows`` (its stride phases) or ``conv_volume`` and
off[t] each tap's offset into the image's buffer, as the forward's tiles read them::

    dW[o, t] = Σ_n Σ_p δ[n, o, p] · buffer_n[q(p) + off[t]]

A tile is OV vectors of V output channels × CT taps: per position it loads δ's OV vectors (δ copied
with the channels last, δT[p, o], zero past O), broadcasts CT input values and makes OV·CT fused
multiply-adds into OV·CT accumulators that stay in registers over the whole image (or a stack of
small ones); at the end they are added to the sums array (T', O'), one vector each. Unlike
``conv_tile_grad`` (V positions a vector, lanes summed at each image's end), no multiply-add lands on
a grid column or row outside the output and no lanes are reduced; every product is one the
definition has, so an input's infinity or NaN gives what the sums give (no finiteness check, no
fallback). Tiles (AVX-512's 32 registers: 4 × 6, 2 × 12, 1 × 12; AVX2's 16: 2 × 6, 1 × 12) are chosen
by how many vectors of output channels remain; a tile's taps past T (T' = T +
:data:`EXTRA_TAPS`) read tap T − 1's offset: sums that are never read.

Measured on an AMD EPYC Zen 5 (2 threads, fp32, batch 64, against ``conv_tile_grad``'s pass):
see docs/performance.md.
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

from .conv_tile import VECTOR_BYTES, intrinsic_arguments, load_vector, store_vector, vector_fma
from .threads import parallel, ranges

# (vectors of output channels, taps) of the tiles, widest first: OV·CT accumulators, OV δ vectors and
# one broadcast in the registers (32 with AVX-512, 16 with AVX2)
# (AVX-512, lenet's, resnet's and the conv benchmark's layers: 4 × 6, 2 × 6, 1 × 8 ran 0.6–0.9 of the
# time of 2 × 12 and 1 × 12, whose twelve input pointers no longer fit the integer registers; 1 × 4
# and 4 × 4 were slower. AVX2's tiles are the same rule scaled to 16 registers, not measured.)
TILES = ((4, 6), (2, 6), (1, 8)) if VECTOR_BYTES == 64 else ((2, 4), (2, 4), (1, 8))
# Whether the weight gradients take these tiles (:func:`on_lanes`): with AVX-512, where they were
# measured; AVX2 machines keep ``conv_tile_grad``'s, measured there.
LANES = VECTOR_BYTES == 64
EXTRA_TAPS = max(taps for _, taps in TILES) - 1  # a last tile's taps past T


def _shape(context: Any, builder: Any, signature: Any, args: Any, k: int) -> Any:  # pragma: no cover
    """The shape of an intrinsic's array argument k, as int64 values."""
    return cgutils.unpack_tuple(builder, context.make_array(signature.args[k])(context, builder, args[k]).shape)


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
            i64, i32 = ir.IntType(64), ir.IntType(32)
            P = _shape(context, builder, signature, args, 2)[0]
            width = _shape(context, builder, signature, args, 1)[1]
            bases = [
                builder.gep(xs, [builder.load(builder.gep(os_, [builder.add(t0_, ir.Constant(i64, j))]))])
                for j in range(taps)
            ]
            zero = ir.Constant(vec, [0.0] * lanes)
            slots = [[cgutils.alloca_once_value(builder, zero) for _ in range(taps)] for _ in range(vectors)]
            fma = vector_fma(builder, vec)
            spread = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)
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
                    lane0 = builder.insert_element(ir.Constant(vec, None), scalar, ir.Constant(i32, 0))
                    value = builder.shuffle_vector(lane0, ir.Constant(vec, None), spread)
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


@intrinsic
def _transpose_block_intrinsic(typingctx, src, s0, dst, d0, width):  # type: ignore[no-untyped-def]  # pragma: no cover
    """A V × V block transposed: dst[d0 + j·width + i] = src[s0 + i·P + j] for i, j < V, with P the
    length of src's rows (src (O, P) C-contiguous, dst 1-D). log2(V) rounds of two-source shuffles,
    each exchanging the off-diagonal sub-blocks of every 2b × 2b block (b = V/2, V/4, …, 1)."""
    sig = types.void(src, s0, dst, d0, width)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        data, ints, vec, lanes, itemsize = intrinsic_arguments(context, builder, signature, args, (0, 2))
        s0_, d0_, width_ = ints[1], ints[3], ints[4]
        i64, i32 = ir.IntType(64), ir.IntType(32)
        P = _shape(context, builder, signature, args, 0)[1]
        rows = [load_vector(builder, vec, itemsize, data[0], builder.add(s0_, builder.mul(P, ir.Constant(i64, i))))
                for i in range(lanes)]  # fmt: skip
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
        for j in range(lanes):
            at = builder.add(d0_, builder.mul(width_, ir.Constant(i64, j)))
            store_vector(builder, vec, itemsize, rows[j], data[2], at)
        return context.get_dummy_value()

    return sig, codegen


_transpose_block: Any = _transpose_block_intrinsic  # (called in compiled code)


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
