"""The weight gradient of a stride-1 convolution on the padded grid, a register-blocked tile at a time.

With δ laid on the grid of the forward (δg[o, q], q = oh·Wp + ow, zero at the grid columns ow >= OW
and past OH·Wp), the weight gradient is a sum over the images and the positions::

    dW[o, t] = Σ_n Σ_q δg[n, o, q] · xp[n, q + off[t]],    off[t] as in ``conv_tile``

A tile is OB output channels × TB taps, each accumulator a vector of partial sums over V positions:
per step of V positions it loads OB rows of δ and TB shifted rows of the input, and makes OB·TB fused
multiply-adds (4 × 4 with AVX-512's 32 registers, 2 × 4 with 16). The partial sums of a tile stay in
registers over a whole image; they are added to a (O', T', V) array between images and summed over
the lanes once at the end. No unfolded matrix is written (``conv_gemm``'s weight gradient unfolds
the whole input, K times its size, then multiplies).

A zero in δg times an infinite input at a grid column would make a NaN that the true sum does not
have, so the images are checked while they are copied: a batch with a non-finite input is reported
and the caller takes the unfolding algorithm's gradient instead (``conv_tiled``).
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

from .conv_tile import VECTOR_BYTES, vector_fma, vector_type
from .threads import parallel, ranges

# (OB output channels, TB taps) per tile: OB·TB accumulators plus OB + TB loaded vectors.
GRAD_SHAPE = (4, 4) if VECTOR_BYTES == 64 else (2, 4)


def make_grad_tile(vector_bytes: int, channels: int, taps: int) -> Any:
    """``grad_tile(x, g, offs, o0, t0, part)``, an intrinsic for njit code: for o < channels, t < taps,
    ``part[o0 + o, t0 + t, :] += Σ_{k} g[o0 + o, k·V : (k+1)·V] · x[k·V + offs[t0 + t] : ...]`` over the
    whole row of g (its length a multiple of V = vector_bytes / itemsize).

    x: 1-D (the image's buffer), g: (O, L) C-contiguous, offs: (T,) int64, part: (O', T', V)
    C-contiguous with O' and T' rounded up to whole tiles. Channels past O read δ of channel O − 1,
    taps past T the offset of tap T − 1 (their partial sums exist and are never read)."""

    def grad_tile(typingctx: Any, x: Any, g: Any, offs: Any, o0: Any, t0: Any, part: Any) -> Any:  # pragma: no cover
        sig = types.void(x, g, offs, o0, t0, part)
        vec, lanes, itemsize = vector_type(x.dtype, vector_bytes)
        i64 = ir.IntType(64)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            xs_, gs_, offs_ = (context.make_array(signature.args[k])(context, builder, args[k]) for k in (0, 1, 2))
            part_ = context.make_array(signature.args[5])(context, builder, args[5])
            o0_, t0_ = (context.cast(builder, args[k], signature.args[k], types.int64) for k in (3, 4))
            one = ir.Constant(i64, 1)
            O, L = cgutils.unpack_tuple(builder, gs_.shape)
            T = cgutils.unpack_tuple(builder, offs_.shape)[0]
            Tp = cgutils.unpack_tuple(builder, part_.shape)[1]

            def clamp(first: Any, k: int, count: Any) -> Any:
                index = builder.add(first, ir.Constant(i64, k))
                last = builder.sub(count, one)
                return builder.select(builder.icmp_signed(">", index, last), last, index)

            rows = [builder.gep(gs_.data, [builder.mul(clamp(o0_, o, O), L)]) for o in range(channels)]
            shifts = [builder.gep(xs_.data, [builder.load(builder.gep(offs_.data, [clamp(t0_, t, T)]))])
                      for t in range(taps)]  # fmt: skip

            def cell(o: int, t: int) -> Any:  # &part[o0 + o, t0 + t, 0] as a vector pointer
                channel = builder.add(o0_, ir.Constant(i64, o))
                row = builder.add(builder.mul(channel, Tp), builder.add(t0_, ir.Constant(i64, t)))
                at = builder.gep(part_.data, [builder.mul(row, ir.Constant(i64, lanes))])
                return builder.bitcast(at, vec.as_pointer())

            cells = [[cell(o, t) for t in range(taps)] for o in range(channels)]
            slots = [[cgutils.alloca_once_value(builder, builder.load(c, align=itemsize)) for c in r] for r in cells]
            fma = vector_fma(builder, vec)
            steps = builder.sdiv(L, ir.Constant(i64, lanes))
            with cgutils.for_range(builder, steps) as loop:
                q = builder.mul(loop.index, ir.Constant(i64, lanes))

                def load(base: Any) -> Any:
                    return builder.load(builder.bitcast(builder.gep(base, [q]), vec.as_pointer()), align=itemsize)

                deltas = [load(row) for row in rows]
                inputs = [load(shift) for shift in shifts]
                for o in range(channels):
                    for t in range(taps):
                        slot = slots[o][t]
                        builder.store(builder.call(fma, [deltas[o], inputs[t], builder.load(slot)]), slot)
            for o in range(channels):
                for t in range(taps):
                    builder.store(builder.load(slots[o][t]), cells[o][t], align=itemsize)
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(grad_tile)


GRAD_CHANNELS, GRAD_TAPS = GRAD_SHAPE
grad_tile = make_grad_tile(VECTOR_BYTES, GRAD_CHANNELS, GRAD_TAPS)


@njit(cache=True, nogil=True)
def accumulate_grad(x: np.ndarray, g: np.ndarray, offs: np.ndarray, part: np.ndarray) -> None:  # pragma: no cover
    """part (O', T', V) += every tile's partial sums for one image: x its buffer, g (O, L) its δ grid."""
    for o0 in range(0, g.shape[0], GRAD_CHANNELS):
        for t0 in range(0, offs.shape[0], GRAD_TAPS):
            grad_tile(x, g, offs, o0, t0, part)


def part_shape(out_channels: int, taps: int, dtype: Any) -> tuple[int, int, int]:
    """(O', T', V): the partial sums' array for ``out_channels`` × ``taps``, rounded up to whole tiles."""
    return (
        -(-out_channels // GRAD_CHANNELS) * GRAD_CHANNELS,
        -(-taps // GRAD_TAPS) * GRAD_TAPS,
        VECTOR_BYTES // np.dtype(dtype).itemsize,
    )


def summed(
    images: Callable[[int, int, np.ndarray], bool], N: int, O: int, T: int, dtype: Any, threads: int | None
) -> np.ndarray | None:
    """dW (O, T): ``images(n0, n1, part)`` adds the partial sums of images n0..n1 into ``part``
    (O', T', V) and says whether one was not finite; the batch split between ``threads`` threads, one
    partial-sum array each, added over the parts and the lanes. None if any image was not finite."""
    parts = ranges(N, threads)
    partial_sums = np.zeros((len(parts), *part_shape(O, T, dtype)), dtype=dtype)  # (parts, O', T', V)
    flags: list[bool] = []

    def run(k: int, n0: int, n1: int) -> None:
        flags.append(images(n0, n1, partial_sums[k]))

    parallel([partial(run, k, n0, n1) for k, (n0, n1) in enumerate(parts)])
    if any(flags):
        return None
    return np.ascontiguousarray(partial_sums.sum(axis=(0, 3))[:O, :T])
