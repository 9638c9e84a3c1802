"""A register-blocked tile of a stride-1 convolution on the padded grid: the inner kernel of ``conv_rows``.

Numbered on the padded grid (q = oh·Wp + ow, as in ``conv_flat``), every output of a stride-1
convolution is a sum over taps t = (c, kh, kw) of one weight times the input at a fixed offset::

    y[o, q] = Σ_t w[o, t] · xp[q + off[t]],    off[t] = c·S + kh·d_h·Wp + kw·d_w

with S the length of one padded plane in the image's buffer. A *tile* is OB output channels × PV·V
consecutive positions (V = the vector width in elements): its OB·PV accumulators are vector registers
for the whole sum over the taps, and each tap costs PV vector loads of the input (contiguous, at
q + off[t]), OB broadcast weights and OB·PV fused multiply-adds. Nothing is read or written to memory
but the inputs and, once per tile, the result: the arithmetic runs near the cores' multiply-add peak
(measured on an AVX-512 Xeon, one core, fp32: 140–170 GFLOP/s for 3×3 layers of 8–64 channels, against
40 for the earlier pass over one kernel row at a time, which loaded and stored its accumulator row
for every row of taps).

``numba`` cannot be asked for such a loop (its vectoriser works on the innermost loop and keeps an
accumulator array in memory: loads and stores every tap), so the tile is written as LLVM IR with
``numba.extending.intrinsic``: the accumulators are stack slots that LLVM promotes to registers, the
multiply-adds ``llvm.fma`` on vectors (one rounding each, as a fused multiply-add). The tile shape
follows the vector registers the CPU has (:data:`SHAPE`): 16 lanes × 3 × 8 channels with AVX-512's 32
registers, 8 lanes × 2 × 4 channels with AVX2's 16 (3 × 4 from :data:`WIDE_TAPS` taps); a grid's
last positions take tiles of two vectors and one (the grid is rounded up to one vector, not to a
whole tile). Any shape computes the same sums in the same order (tap by tap), so every shape is
tested against ``conv_direct``, whatever machine runs the tests.

The caller provides the layout: the image's padded planes in one buffer with a tail of zeros (the
tiles read up to the grid's length rounded up to a whole vector past each tap's offset, into grid
columns that are never read back), the weights as (O, T) (the weight array reshaped: no copy), and
``acc`` of (O rounded up to OB) rows of a length rounded up to a whole number of vectors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


def _vector_bytes() -> int:
    """The widest vector register of this CPU: 64 (AVX-512), 32 (AVX/AVX2), else 16. (numba compiles
    for the host; with ``NUMBA_CPU_NAME`` naming a narrower target the tiles stay correct, LLVM splitting
    each vector, but may not fit that target's registers.)"""
    try:
        from llvmlite import binding

        features = binding.get_host_cpu_features()
    except (ImportError, RuntimeError):  # pragma: no cover - a platform llvmlite cannot query
        return 16
    if features.get("avx512f", False):
        return 64
    if features.get("avx2", False) or features.get("avx", False):
        return 32
    return 16  # pragma: no cover - SSE / NEON


VECTOR_BYTES = _vector_bytes()
# (PV vectors of positions, OB output channels) per tile: OB·PV accumulators, PV inputs and one
# broadcast weight must fit in the registers (32 with AVX-512, 16 with AVX2 and SSE).
# AVX-512: 3 × 8 (24 accumulators, 3 inputs, 1 weight) ran 1.07–1.15× the raw rate of 2 × 8 on
# lenet's, CIFAR's, mnist-2's and resnet's layers (fewer loads per multiply-add); AVX2 keeps 2 × 4
SHAPE = (3, 8) if VECTOR_BYTES == 64 else (2, 4)


def vector_type(dtype: Any, vector_bytes: int) -> tuple[ir.VectorType, int, int]:
    """(LLVM vector type, lanes, itemsize) of one ``vector_bytes`` register of float32 or float64."""
    itemsize = np.dtype(str(dtype)).itemsize
    lanes = vector_bytes // itemsize
    return ir.VectorType(ir.FloatType() if itemsize == 4 else ir.DoubleType(), lanes), lanes, itemsize


def intrinsic_arguments(context: Any, builder: Any, signature: Any, args: Any, arrays: tuple[int, ...]) -> Any:
    """An intrinsic's arguments as its code needs them: (data pointers of the ``arrays`` arguments, the
    integer arguments as int64, the vector type of the first array's dtype, its lanes, its itemsize)."""
    data = {k: context.make_array(signature.args[k])(context, builder, args[k]).data for k in arrays}
    ints = {
        k: context.cast(builder, args[k], signature.args[k], types.int64)
        for k in range(len(args))
        if isinstance(signature.args[k], types.Integer)
    }
    vec, lanes, itemsize = vector_type(signature.args[arrays[0]].dtype, VECTOR_BYTES)
    return data, ints, vec, lanes, itemsize


def vector_at(builder: Any, vec: Any, base: Any, at: Any) -> Any:
    """A pointer to the vector at element ``at`` of ``base``."""
    return builder.bitcast(builder.gep(base, [at]), vec.as_pointer())


def load_vector(builder: Any, vec: Any, itemsize: int, base: Any, at: Any) -> Any:
    return builder.load(vector_at(builder, vec, base, at), align=itemsize)


def store_vector(builder: Any, vec: Any, itemsize: int, value: Any, base: Any, at: Any) -> None:
    builder.store(value, vector_at(builder, vec, base, at), align=itemsize)


def vector_fma(builder: Any, vec: ir.VectorType) -> Any:
    """``llvm.fma`` on ``vec``: a·b + c lane by lane, one rounding."""
    suffix = f"v{vec.count}{'f32' if isinstance(vec.element, ir.FloatType) else 'f64'}"
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3), f"llvm.fma.{suffix}")


def splat(builder: Any, value: Any, vector: Any) -> Any:
    """``value`` in every lane of a ``vector`` type (a broadcast)."""
    i32, undef = ir.IntType(32), ir.Constant(vector, ir.Undefined)
    one = builder.insert_element(undef, value, ir.Constant(i32, 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(i32, vector.count), [0] * vector.count))


def array_shape(context: Any, builder: Any, signature: Any, args: Any, k: int) -> Any:
    """The shape of an intrinsic's array argument k, as int64 values."""
    return cgutils.unpack_tuple(builder, context.make_array(signature.args[k])(context, builder, args[k]).shape)


def make_tile(vector_bytes: int, vectors: int, channels: int) -> Any:
    """``tile(x, q, w, offs, acc, o0)``, an intrinsic for njit code: for o < channels and
    j < vectors·V (V = vector_bytes / itemsize), ``acc[o0 + o, q + j] = Σ_t w[o0 + o, t] · x[q + offs[t] + j]``.

    x: 1-D (the image's buffer), w: (O, T') C-contiguous with T' >= T (the weight, reshaped; columns
    past T are not read: ``conv_phases`` keeps every phase's taps in one array), offs: (T,) int64,
    acc: 2-D C-contiguous with at least o0 + channels rows; x, w and acc of one dtype (float32 or
    float64, which sets V), q and o0 integers. Channels o0 + o >= O read the weights of channel O − 1
    (their rows of acc exist and are never read). No other bounds are checked: the caller sizes the
    buffers (module docstring)."""

    def tile(typingctx: Any, x: Any, q: Any, w: Any, offs: Any, acc: Any, o0: Any) -> Any:  # pragma: no cover
        sig = types.void(x, q, w, offs, acc, o0)
        vec, lanes, itemsize = vector_type(x.dtype, vector_bytes)
        i64 = ir.IntType(64)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            xs_, ws_, offs_, acc_ = (
                context.make_array(signature.args[k])(context, builder, args[k]) for k in (0, 2, 3, 4)
            )
            q_, o0_ = (context.cast(builder, args[k], signature.args[k], types.int64) for k in (1, 5))
            taps = cgutils.unpack_tuple(builder, offs_.shape)[0]
            rows_w, width = cgutils.unpack_tuple(builder, ws_.shape)
            last = builder.sub(rows_w, ir.Constant(i64, 1))  # O − 1
            row = cgutils.unpack_tuple(builder, acc_.shape)[1]
            weight_rows = []  # the start of each channel's weights, clamped to the last channel
            for o in range(channels):
                channel = builder.add(o0_, ir.Constant(i64, o))
                channel = builder.select(builder.icmp_signed(">", channel, last), last, channel)
                weight_rows.append(builder.gep(ws_.data, [builder.mul(channel, width)]))
            zero = ir.Constant(vec, [0.0] * lanes)
            slots = [[cgutils.alloca_once_value(builder, zero) for _ in range(vectors)] for _ in range(channels)]
            fma = vector_fma(builder, vec)
            start = builder.gep(xs_.data, [q_])
            with cgutils.for_range(builder, taps) as loop:
                t = loop.index
                at = builder.gep(start, [builder.load(builder.gep(offs_.data, [t]))])
                inputs = [
                    builder.load(builder.bitcast(builder.gep(at, [ir.Constant(i64, p * lanes)]), vec.as_pointer()),
                                 align=itemsize)
                    for p in range(vectors)
                ]  # fmt: skip
                for o in range(channels):
                    scalar = builder.load(builder.gep(weight_rows[o], [t]))
                    weight = splat(builder, scalar, vec)
                    for p in range(vectors):
                        builder.store(builder.call(fma, [inputs[p], weight, builder.load(slots[o][p])]), slots[o][p])
            for o in range(channels):
                first = builder.add(builder.mul(builder.add(o0_, ir.Constant(i64, o)), row), q_)
                for p in range(vectors):
                    at = builder.gep(acc_.data, [builder.add(first, ir.Constant(i64, p * lanes))])
                    builder.store(builder.load(slots[o][p]), builder.bitcast(at, vec.as_pointer()), align=itemsize)
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(tile)


VECTORS, CHANNELS = SHAPE
# With many taps the weights no longer stay in L1 (mnist-2's 64 × 288 of them: 74 kB), and a tile that
# reuses each broadcast weight over three vectors instead of two loads a third fewer: with AVX2, 3 × 4
# (12 accumulators, 3 inputs, 1 weight: the 16 registers) ran the accumulate in 0.79–0.97 of 2 × 4's
# time from 288 taps up (mnist-2, CIFAR's 576, 1,024), 0.97–1.0 at 144–216 and 1.0–1.05 at 72
# (AMD EPYC Zen 3, alternating, one thread, 3 December). AVX-512's tile is three vectors wide already.
WIDE_TAPS = 256
WIDE_VECTORS = max(VECTORS, 3)
tile = make_tile(VECTOR_BYTES, VECTORS, CHANNELS)
tile_wide = make_tile(VECTOR_BYTES, WIDE_VECTORS, CHANNELS)
tile_2 = make_tile(VECTOR_BYTES, 2, CHANNELS)  # the rest of a grid row: two vectors, then one
tile_1 = make_tile(VECTOR_BYTES, 1, CHANNELS)


@njit(cache=True, nogil=True)
def accumulate(x: np.ndarray, w: np.ndarray, offs: np.ndarray, acc: np.ndarray) -> None:  # pragma: no cover
    """Every tile of acc (O', L'): w (O, T), O' = O rounded up to CHANNELS, L' a multiple of :func:`block`
    (one vector): whole tiles (:data:`WIDE_VECTORS` wide from :data:`WIDE_TAPS` taps), then what
    remains in tiles of two vectors and one. Every tile sums tap by tap: the same bits whatever the width."""
    lanes = VECTOR_BYTES // acc.itemsize
    wide = offs.shape[0] >= WIDE_TAPS
    step, L = (WIDE_VECTORS if wide else VECTORS) * lanes, acc.shape[1]
    for o0 in range(0, w.shape[0], CHANNELS):
        q = 0
        if wide:
            while q + step <= L:
                tile_wide(x, q, w, offs, acc, o0)
                q += step
        else:
            while q + step <= L:
                tile(x, q, w, offs, acc, o0)
                q += step
        while q + 2 * lanes <= L:
            tile_2(x, q, w, offs, acc, o0)
            q += 2 * lanes
        while q < L:
            tile_1(x, q, w, offs, acc, o0)
            q += lanes


def block(dtype: Any) -> int:
    """The grid's length is rounded up to a multiple of this: one vector of ``dtype``."""
    return VECTOR_BYTES // np.dtype(dtype).itemsize
