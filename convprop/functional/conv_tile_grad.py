"""The weight gradient of a stride-1 convolution on the padded grid, a register-blocked tile at a time.

With δ laid on the grid of the forward (δg[o, q], q = oh·Wp + ow, zero at the grid columns ow >= OW
and past OH·Wp), the weight gradient is a sum over the images and the positions::

    dW[o, t] = Σ_n Σ_q δg[n, o, q] · xp[n, q + off[t]],    off[t] as in ``conv_tile``

A tile is OB output channels × TB taps, each accumulator a vector of partial sums over V positions:
per step of V positions it loads OB rows of δ and TB shifted rows of the input, and makes OB·TB fused
multiply-adds (4 × 4 with AVX-512's 32 registers, 2 × 4 with 16). The partial sums of a tile stay in
registers over a whole image (or a stack of small ones, ``conv_tiled.stack``); at its end they are
summed over the lanes (a tree of shuffles) and added to an array of O'·T' sums, tile by tile — 16
times smaller than the partial sums themselves, which had left the cache at every image where O·T
was large (the strided benchmark layer's 64 × 576: 2.4 MB; its weight gradient 8.0 → 7.1 ms on two
threads; CIFAR's 64 → 128 on one, 44–50 → 40 ms). No unfolded matrix is written (``conv_gemm``'s
weight gradient unfolds the whole input, K times its size, then multiplies).

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
    ``part[o0/channels, t0/taps, o·taps + t] += Σ_k g[o0 + o, k] · x[k + offs[t0 + t]]`` over the whole
    row of g (its length a multiple of V = vector_bytes / itemsize).

    x: 1-D (the image's buffer), g: (O, L) C-contiguous, offs: (T,) int64, part: C-contiguous
    :func:`part_shape` (o0 and t0 multiples of the tile's channels and taps). Channels past O read δ
    of channel O − 1, taps past T the offset of tap T − 1 (their sums exist and are never read).
    Each accumulator is a vector of V partial sums for the whole row; at the end the tile's
    channels·taps vectors are reduced lane-wise, V at a time, into vectors of V sums (a tree of
    shuffles and adds) and added to ``part`` — V times fewer values than the partial sums, so the
    array stays in cache between images."""
    cells = channels * taps

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
            tile_columns, width = cgutils.unpack_tuple(builder, part_.shape)[1:]

            def clamp(first: Any, k: int, count: Any) -> Any:
                index = builder.add(first, ir.Constant(i64, k))
                last = builder.sub(count, one)
                return builder.select(builder.icmp_signed(">", index, last), last, index)

            rows = [builder.gep(gs_.data, [builder.mul(clamp(o0_, o, O), L)]) for o in range(channels)]
            shifts = [builder.gep(xs_.data, [builder.load(builder.gep(offs_.data, [clamp(t0_, t, T)]))])
                      for t in range(taps)]  # fmt: skip
            zero = ir.Constant(vec, [ir.Constant(vec.element, 0.0)] * lanes)
            slots = [[cgutils.alloca_once_value(builder, zero) for _ in range(taps)] for _ in range(channels)]
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
            sums = [builder.load(slots[k // taps][k % taps]) for k in range(cells)]
            tile = builder.add(
                builder.mul(builder.sdiv(o0_, ir.Constant(i64, channels)), tile_columns),
                builder.sdiv(t0_, ir.Constant(i64, taps)),
            )
            base = builder.gep(part_.data, [builder.mul(tile, width)])
            for j, reduced in enumerate(_lane_sums(builder, sums, lanes, zero)):
                at = builder.bitcast(builder.gep(base, [ir.Constant(i64, j * lanes)]), vec.as_pointer())
                builder.store(builder.fadd(builder.load(at, align=itemsize), reduced), at, align=itemsize)
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(grad_tile)


def _lane_sums(builder: Any, vectors: list[Any], lanes: int, zero: Any) -> list[Any]:  # pragma: no cover
    """Vectors of lane sums, V (``lanes``) at a time: vector j's lane i is the sum of the lanes of
    ``vectors[j·V + i]`` (the last group padded with zeros). Each step pairs vectors a and b whose
    lanes hold k sources g lanes each and adds the first half of every source's lanes to its second
    half (two shuffles, one add): 2k sources of g/2 lanes, a's then b's — log2(V) steps to one lane each."""
    out = []
    for first in range(0, len(vectors), lanes):
        level = vectors[first : first + lanes]
        level += [zero] * (lanes - len(level))
        group = lanes  # lanes per source
        while group > 1:
            half, sources = group // 2, lanes // group
            low = [s * group + j for s in range(sources) for j in range(half)]
            low += [lanes + i for i in low]
            high = [i + half for i in low]
            mask_low = ir.Constant(ir.VectorType(ir.IntType(32), lanes), low)
            mask_high = ir.Constant(ir.VectorType(ir.IntType(32), lanes), high)
            level = [
                builder.fadd(builder.shuffle_vector(a, b, mask_low), builder.shuffle_vector(a, b, mask_high))
                for a, b in zip(level[::2], level[1::2], strict=True)
            ]
            group = half
        out.extend(level)
    return out


GRAD_CHANNELS, GRAD_TAPS = GRAD_SHAPE
grad_tile = make_grad_tile(VECTOR_BYTES, GRAD_CHANNELS, GRAD_TAPS)


@njit(cache=True, nogil=True)
def accumulate_grad(x: np.ndarray, g: np.ndarray, offs: np.ndarray, part: np.ndarray) -> None:  # pragma: no cover
    """part (:func:`part_shape`) += every tile's sums for one image: x its buffer, g (O, L) its δ grid."""
    for o0 in range(0, g.shape[0], GRAD_CHANNELS):
        for t0 in range(0, offs.shape[0], GRAD_TAPS):
            grad_tile(x, g, offs, o0, t0, part)


def part_shape(
    out_channels: int,
    taps: int,
    dtype: Any,
    vector_bytes: int = VECTOR_BYTES,
    tile: tuple[int, int] = GRAD_SHAPE,
) -> tuple[int, int, int]:
    """The sums' array for ``out_channels`` × ``taps``: (tile rows, tile columns, a tile's channels ×
    taps rounded up to whole vectors)."""
    lanes = vector_bytes // np.dtype(dtype).itemsize
    channels, tile_taps = tile
    return -(-out_channels // channels), -(-taps // tile_taps), -(-(channels * tile_taps) // lanes) * lanes


def unpack(part: np.ndarray, tile: tuple[int, int] = GRAD_SHAPE) -> np.ndarray:
    """(O', T') from the sums' array (:func:`part_shape`): cell (o, t) of tile (i, j) at (i·OB + o, j·TB + t)."""
    rows, columns, _ = part.shape
    channels, taps = tile
    cells = part[:, :, : channels * taps].reshape(rows, columns, channels, taps)
    return cells.transpose(0, 2, 1, 3).reshape(rows * channels, columns * taps)


def summed(
    images: Callable[[int, int, np.ndarray], bool], N: int, O: int, T: int, dtype: Any, threads: int | None
) -> np.ndarray | None:
    """dW (O, T): ``images(n0, n1, part)`` adds the sums of images n0..n1 into ``part``
    (:func:`part_shape`) and says whether one was not finite; the batch split between ``threads``
    threads, one array each, added over the parts. None if any image was not finite."""
    parts = ranges(N, threads)
    partial_sums = np.zeros((len(parts), *part_shape(O, T, dtype)), dtype=dtype)  # one array per range
    flags: list[bool] = []

    def run(k: int, n0: int, n1: int) -> None:
        flags.append(images(n0, n1, partial_sums[k]))

    parallel([partial(run, k, n0, n1) for k, (n0, n1) in enumerate(parts)])
    if any(flags):
        return None
    return np.ascontiguousarray(unpack(partial_sums.sum(axis=0))[:O, :T])
