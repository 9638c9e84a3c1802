"""The forward's tile with the output channels in the vector lanes (``conv_lanes`` has the weight
gradient's, the transposes and the rules).

A tile is OV vectors of V output channels × PP output positions: per tap t it loads OV vectors of the
weights (channels last, (T, O')), broadcasts the PP inputs x[q(p) + off[t]] and makes OV·PP fused
multiply-adds, tap by tap with one rounding each — ``conv_tile``'s order, so the sums have the direct
tiles' bits — and stores its sums channels-last (P', O'); ``conv_lanes.untranspose_into`` brings them
back to (O, P) with the bias added. Which passes take it: ``conv_tiled.forward_on_lanes``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .conv_lanes import channels_padded
from .conv_tile import VECTOR_BYTES, array_shape, intrinsic_arguments, load_vector, splat, store_vector, vector_fma

# (vectors of output channels, positions) of the forward's tiles, widest first: OV·PP accumulators,
# OV weight vectors and one broadcast in the vector registers, PP position indices and a tap's base
# pointer in the integer ones
FORWARD_TILES = ((4, 6), (2, 8), (1, 8)) if VECTOR_BYTES == 64 else ((2, 4), (2, 4), (1, 8))
EXTRA_POSITIONS = max(positions for _, positions in FORWARD_TILES) - 1  # a last tile's positions past P


def make_forward_tile(vectors: int, positions: int) -> Any:
    """``forward_tile(x, w, pos, offs, p0, o0, out)``, an intrinsic for njit code: for v < vectors,
    j < positions, ``out[p0 + j, o0 + v·V + l] = Σ_t w[t, o0 + v·V + l] · x[pos[p0 + j] + offs[t]]``
    (l < V), summed tap by tap with one rounding each (``conv_tile``'s order: the same bits).

    x: 1-D (the buffer), w: (T, O') C-contiguous (the weights with the channels last, O' a multiple of
    V), pos: (P',) int64, offs: (T,) int64, out: (P', O') C-contiguous; p0 + positions <= P', o0 +
    vectors·V <= O'. No bounds are checked: the caller sizes the arrays."""

    def forward_tile(  # pragma: no cover
        typingctx: Any, x: Any, w: Any, pos: Any, offs: Any, p0: Any, o0: Any, out: Any
    ) -> Any:
        sig = types.void(x, w, pos, offs, p0, o0, out)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            data, ints, vec, lanes, itemsize = intrinsic_arguments(context, builder, signature, args, (0, 1, 2, 3, 6))
            xs, ws, ps, os_, outs = (data[k] for k in (0, 1, 2, 3, 6))
            p0_, o0_ = ints[4], ints[5]
            i64 = ir.IntType(64)
            T = array_shape(context, builder, signature, args, 3)[0]
            width = array_shape(context, builder, signature, args, 1)[1]
            qs = [builder.load(builder.gep(ps, [builder.add(p0_, ir.Constant(i64, j))])) for j in range(positions)]
            zero = ir.Constant(vec, [0.0] * lanes)
            slots = [[cgutils.alloca_once_value(builder, zero) for _ in range(positions)] for _ in range(vectors)]
            fma = vector_fma(builder, vec)
            with cgutils.for_range(builder, T) as loop:
                t = loop.index
                base = builder.gep(xs, [builder.load(builder.gep(os_, [t]))])
                row = builder.add(builder.mul(t, width), o0_)
                weights = [
                    load_vector(builder, vec, itemsize, ws, builder.add(row, ir.Constant(i64, v * lanes)))
                    for v in range(vectors)
                ]
                for j in range(positions):
                    scalar = builder.load(builder.gep(base, [qs[j]]))
                    value = splat(builder, scalar, vec)
                    for v in range(vectors):
                        slot = slots[v][j]
                        builder.store(builder.call(fma, [value, weights[v], builder.load(slot)]), slot)
            for j in range(positions):
                first = builder.add(builder.mul(builder.add(p0_, ir.Constant(i64, j)), width), o0_)
                for v in range(vectors):
                    at = builder.add(first, ir.Constant(i64, v * lanes))
                    store_vector(builder, vec, itemsize, builder.load(slots[v][j]), outs, at)
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(forward_tile)


forward_wide, forward_pair, forward_one = (make_forward_tile(v, p) for v, p in FORWARD_TILES)
F_WIDE, F_PAIR = FORWARD_TILES[0][0], FORWARD_TILES[1][0]


@njit(cache=True, nogil=True)
def accumulate_forward(
    x: np.ndarray, w: np.ndarray, pos: np.ndarray, offs: np.ndarray, P: int, out: np.ndarray
) -> None:  # pragma: no cover
    """out (P', O') = every tile's sums for positions p < P (pos (P',), P' >= P + :data:`EXTRA_POSITIONS`;
    rows past P are junk): x the buffer, w (T, O'), offs (T,)."""
    lanes = VECTOR_BYTES // x.itemsize
    count = w.shape[1] // lanes
    v = 0
    while count - v >= F_WIDE:
        for p0 in range(0, P, FORWARD_TILES[0][1]):
            forward_wide(x, w, pos, offs, p0, v * lanes, out)
        v += F_WIDE
    while count - v >= F_PAIR:
        for p0 in range(0, P, FORWARD_TILES[1][1]):
            forward_pair(x, w, pos, offs, p0, v * lanes, out)
        v += F_PAIR
    while count - v >= 1:
        for p0 in range(0, P, FORWARD_TILES[2][1]):
            forward_one(x, w, pos, offs, p0, v * lanes, out)
        v += 1


def forward_operands(
    weight: np.ndarray, bias: np.ndarray | None, pos: np.ndarray, dtype: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(w (T, O'), bias (O',), pos (P + :data:`EXTRA_POSITIONS`,)) for :func:`accumulate_forward` and
    :func:`untranspose_into`: the weights with the channels last and zeros past O, the bias or zeros
    (the direct tiles add zeros too: the same bits), the positions with the last one repeated."""
    O = weight.shape[0]
    O_ = channels_padded(O, dtype)
    w = np.zeros((math.prod(weight.shape[1:]), O_), dtype=dtype)
    w[:, :O] = weight.reshape(O, -1).T
    b = np.zeros(O_, dtype=dtype)
    if bias is not None:
        b[:O] = bias
    return w, b, np.concatenate([pos, np.full(EXTRA_POSITIONS, pos[-1], dtype=np.int64)])
