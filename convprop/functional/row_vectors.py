"""Vector helpers of ``conv_rows_kernels``' per-image loops, in LLVM IR as ``conv_tile``'s tiles are written.

Around the tiles' sums, each image of a pass is copied into its padded planes and its accumulator
stored through the epilogue; numba left those loops scalar, and on an AVX-512 Zen 5 (where the sums
run at the multiply-add peak) they had grown to a quarter to two thirds of lenet's and resnet's layer
times.

- :func:`pooled_row`, the 2×2 max-pool epilogue (bias, ReLU, 2×2 max, ``conv_rows_kernels._pooled``):
  a window's four values sit at stride 2 along two grid rows. Two vectors of each grid row, their even
  and odd lanes split by shuffles, the bias added, the four compared and ReLU'd with the scalar code's
  selects in its order (the same bits, NaN rule included), masked stores; where a pooled row is at
  most half a vector, two pooled rows a vector. lenet's first layer's store 2.05 → 0.99 µs an image
  (more than its 1.19 of multiply-adds before), the second's 1.76 → 0.62.
- :func:`finished_row`, the unpooled epilogue (bias, batch norm, shortcut, ReLU in
  ``conv_rows_kernels._finished``'s order, each a select on its flag): resnet's stores with batch norm
  and shortcut 1.25 → 0.77 and 1.10 → 0.82 µs an image.
- :func:`copy_row`, a row into the padded planes at stride 1 (``fill``): lenet's and resnet's rows (7–28
  values) are shorter than the loop LLVM vectorises for AVX-512 (4 × 16 lanes), so every value had gone
  through its scalar remainder; a mask reads and writes none of the neighbours (the padding between
  rows stays 0, nothing past an array's end is touched).
- :func:`split_row`, a row into its two column phases at stride 2, split by parity with the pooled
  row's shuffles: the strided layers' fill 3.68 → 1.10 µs an image of 8 × 28², 2.83 → 1.40 of 16 × 14².

(AMD EPYC Zen 5, one thread, repeated in compiled loops; docs/performance.md, "Back on a Zen 5".)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .conv_tile import VECTOR_BYTES, intrinsic_arguments, load_vector, splat, vector_at

# Whether the loops above take these vector paths: with AVX-512, whose masked loads and stores are
# native (mask registers), where every figure above was measured. With AVX2 a masked store is
# vmaskmovps, which AMD's cores run as microcode, a value at a time; unmeasured there, so those
# machines keep the scalar loops they were measured with (the same bits either way).
MASKED = VECTOR_BYTES == 64


@intrinsic
def _pooled_row_intrinsic(typingctx, acc, a0, step, Wp, b, out, d0, n0, d1, n1):  # type: ignore[no-untyped-def]
    """One vector of pooled outputs: lane l's window max(0, acc[r + 2l] + b, acc[r + 2l + 1] + b,
    acc[r + Wp + 2l] + b, acc[r + Wp + 2l + 1] + b), its grid row r read as two vectors, at a0 and
    a0 + ``step``: lanes l < half from the first, the others from the second (``step`` = lanes: one
    pooled row, two vectors of it; ``step`` = 2·Wp: two pooled rows, half a vector each). Stores lanes
    l < n0 at out[d0 + l] and lanes half ≤ l < half + n1 at out[d1 + l − half] (masked); returns
    whether a stored lane's window saw a NaN."""
    sig = types.boolean(acc, a0, step, Wp, b, out, d0, n0, d1, n1)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        data, ints, vec, lanes, itemsize = intrinsic_arguments(context, builder, signature, args, (0, 5))
        src, dst = data[0], data[5]
        a0, step, Wp, d0, n0, d1, n1 = (ints[k] for k in (1, 2, 3, 6, 7, 8, 9))
        _, store = _masked(builder, vec, lanes, itemsize)
        i32 = ir.IntType(32)
        even = ir.Constant(ir.VectorType(i32, lanes), list(range(0, 2 * lanes, 2)))
        odd = ir.Constant(ir.VectorType(i32, lanes), list(range(1, 2 * lanes, 2)))
        bias = splat(builder, args[4], vec)
        taps = []  # t0 … t3: (top, 2l), (top, 2l + 1), (bottom, 2l), (bottom, 2l + 1), each + b
        for row in (a0, builder.add(a0, Wp)):
            first = load_vector(builder, vec, itemsize, src, row)
            second = load_vector(builder, vec, itemsize, src, builder.add(row, step))
            for pick in (even, odd):
                taps.append(builder.fadd(builder.shuffle_vector(first, second, pick), bias))
        best = taps[0]
        for t in taps[1:]:  # best = best if best > t else t: a NaN best gives way, a NaN t is kept
            best = builder.select(builder.fcmp_ordered(">", best, t), best, t)
        zero = ir.Constant(vec, [0.0] * lanes)
        best = builder.select(builder.fcmp_ordered(">", best, zero), best, zero)
        half = ir.Constant(ir.IntType(64), lanes // 2)
        low = _first_lanes(builder, lanes, n0)
        high = builder.and_(builder.not_(_first_lanes(builder, lanes, half)),
                            _first_lanes(builder, lanes, builder.add(n1, half)))  # fmt: skip
        align = ir.Constant(i32, itemsize)
        builder.call(store, [best, vector_at(builder, vec, dst, d0), align, low])
        builder.call(store, [best, vector_at(builder, vec, dst, builder.sub(d1, half)), align, high])
        nan = builder.fcmp_unordered("uno", taps[0], taps[0])
        for t in taps[1:]:
            nan = builder.or_(nan, builder.fcmp_unordered("uno", t, t))
        nan = builder.and_(nan, builder.or_(low, high))
        bits = builder.bitcast(nan, ir.IntType(lanes))
        return builder.icmp_unsigned("!=", bits, ir.Constant(ir.IntType(lanes), 0))

    return sig, codegen


@intrinsic
def _copy_row_intrinsic(typingctx, src, s0, dst, d0, m):  # type: ignore[no-untyped-def]
    """dst[d0 + l] = src[s0 + l] for the lanes l < m of one vector (m ≤ lanes), by masked load and store."""
    sig = types.void(src, s0, dst, d0, m)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        data, ints, vec, lanes, itemsize = intrinsic_arguments(context, builder, signature, args, (0, 2))
        load, store = _masked(builder, vec, lanes, itemsize)
        mask, align = _first_lanes(builder, lanes, ints[4]), ir.Constant(ir.IntType(32), itemsize)
        value = builder.call(
            load, [vector_at(builder, vec, data[0], ints[1]), align, mask, ir.Constant(vec, ir.Undefined)]
        )
        builder.call(store, [value, vector_at(builder, vec, data[2], ints[3]), align, mask])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _split_row_intrinsic(typingctx, src, s0, m, dst, da, na, db, nb):  # type: ignore[no-untyped-def]
    """Two vectors of a row, src[s0 + i] for i < m (m ≤ 2·lanes, masked loads), split by column
    parity: the even ones to dst[da + l] for l < na, the odd ones to dst[db + l] for l < nb (masked
    stores; na, nb ≤ lanes, 0 for a phase nobody reads)."""
    sig = types.void(src, s0, m, dst, da, na, db, nb)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        data, ints, vec, lanes, itemsize = intrinsic_arguments(context, builder, signature, args, (0, 3))
        i32, i64 = ir.IntType(32), ir.IntType(64)
        load, store = _masked(builder, vec, lanes, itemsize)
        align, undef = ir.Constant(i32, itemsize), ir.Constant(vec, ir.Undefined)
        halves = []
        for half in range(2):
            at = builder.add(ints[1], ir.Constant(i64, half * lanes))
            mask = _first_lanes(builder, lanes, builder.sub(ints[2], ir.Constant(i64, half * lanes)))
            halves.append(builder.call(load, [vector_at(builder, vec, data[0], at), align, mask, undef]))
        for parity, (to, count) in enumerate(((ints[4], ints[5]), (ints[6], ints[7]))):
            pick = ir.Constant(ir.VectorType(i32, lanes), list(range(parity, 2 * lanes, 2)))
            value = builder.shuffle_vector(halves[0], halves[1], pick)
            builder.call(
                store, [value, vector_at(builder, vec, data[3], to), align, _first_lanes(builder, lanes, count)]
            )
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _finished_row_intrinsic(  # type: ignore[no-untyped-def]
    typingctx, acc, a0, skip, out, d0, m, b, mu, k, sh, normalise, residual, relu
):
    """out[d0 + l] for the lanes l < m of one vector (masked): v = acc[a0 + l] + b, then
    (v − mu)·k + sh if ``normalise``, + skip[d0 + l] if ``residual``, ReLU (NaN kept) if ``relu`` —
    ``conv_rows_kernels._finished``'s operations in its order, one rounding each."""
    sig = types.void(acc, a0, skip, out, d0, m, b, mu, k, sh, normalise, residual, relu)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        data, ints, vec, lanes, itemsize = intrinsic_arguments(context, builder, signature, args, (0, 2, 3))
        load, store = _masked(builder, vec, lanes, itemsize)
        align, undef = ir.Constant(ir.IntType(32), itemsize), ir.Constant(vec, ir.Undefined)
        a0, d0, mask = ints[1], ints[4], _first_lanes(builder, lanes, ints[5])
        b, mu, scale, shift = (splat(builder, args[j], vec) for j in (6, 7, 8, 9))
        v = builder.fadd(builder.call(load, [vector_at(builder, vec, data[0], a0), align, mask, undef]), b)
        v = builder.select(args[10], builder.fadd(builder.fmul(builder.fsub(v, mu), scale), shift), v)
        zero = ir.Constant(vec, [0.0] * lanes)
        reads = builder.and_(mask, splat(builder, args[11], mask.type))  # (no shortcut, no read)
        added = builder.fadd(v, builder.call(load, [vector_at(builder, vec, data[2], d0), align, reads, zero]))
        v = builder.select(args[11], added, v)
        kept = builder.or_(builder.fcmp_ordered(">", v, zero), builder.fcmp_unordered("uno", v, v))
        v = builder.select(args[12], builder.select(kept, v, zero), v)
        builder.call(store, [v, vector_at(builder, vec, data[3], d0), align, mask])
        return context.get_dummy_value()

    return sig, codegen


def _masked(builder: Any, vec: Any, lanes: int, itemsize: int) -> tuple[Any, Any]:
    """``llvm.masked.load`` and ``llvm.masked.store`` of ``vec``."""
    i32, pointer = ir.IntType(32), vec.as_pointer()
    masks = ir.VectorType(ir.IntType(1), lanes)
    suffix = f"v{lanes}{'f32' if itemsize == 4 else 'f64'}.p0"
    load = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vec, [pointer, i32, masks, vec]), f"llvm.masked.load.{suffix}"
    )
    store = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [vec, pointer, i32, masks]), f"llvm.masked.store.{suffix}"
    )
    return load, store


def _first_lanes(builder: Any, lanes: int, count: Any) -> Any:
    """The <lanes x i1> mask of the lanes l < count (an int64)."""
    wide = ir.VectorType(ir.IntType(64), lanes)
    return builder.icmp_signed("<", ir.Constant(wide, list(range(lanes))), splat(builder, count, wide))


pooled_row: Any = _pooled_row_intrinsic  # (called in compiled code)
copy_row: Any = _copy_row_intrinsic
split_row: Any = _split_row_intrinsic
finished_row: Any = _finished_row_intrinsic


def flat_or_empty(a: np.ndarray) -> np.ndarray:
    """A C-contiguous array as one axis (a view), any other an empty one of its dtype (so its callers'
    vector paths, which need a flat array, find no room and take their scalar ones); in compiled code,
    decided by the array's type."""
    return a.reshape(a.size) if a.flags.c_contiguous else np.empty(0, dtype=a.dtype)


@overload(flat_or_empty)
def _flat_or_empty(a):  # type: ignore[no-untyped-def]
    if isinstance(a, types.Array) and a.layout == "C":
        return lambda a: a.reshape(a.size)
    return lambda a: np.empty(0, dtype=a.dtype)


@njit(cache=True, nogil=True)
def pool_tail(L: int, itemsize: int) -> int:  # pragma: no cover - compiled
    """Rows of L the accumulator needs past its last one for :func:`pooled_row`'s reads: a window's
    bottom row starts at most L − Wp into its channel's row and reads two vectors from there (or, for
    a pair of pooled rows, one vector from the last grid row)."""
    return (2 * (VECTOR_BYTES // itemsize) + L - 1) // L
