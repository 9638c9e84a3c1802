"""Winograd F(2×2, 3×3) on ``conv_tile``'s register tiles: ``conv_rows``' 3×3 stride-1 passes of a batch.

``conv_winograd`` derives the algorithm and runs it with NumPy's transforms and BLAS's products (as
an algorithm of its own, slower than the tiles). Here the same arithmetic runs one image at a time
inside ``conv_rows_kernels.images``, in cache, where the tiles' direct pass spends 9·C multiply-adds
an output and the products here 4·C (2.25× fewer):

1. the image into its zero-padded planes (``conv_rows_kernels.fill``, which also reports whether it
   holds an infinity or a NaN: then the caller runs the direct tiles, see below);
2. each 4×4 input tile d (tile (th, tw) of plane c starts at padded row 2·th, column 2·tw) through
   V = Bᵀ d B, written as V[k, c, t] with k = 4ξ + ν, t = th·TW + tw (:func:`transform_input`);
3. the 16 products M[k] = U[k] · V[k] of (O, C) by (C, T), each one ``conv_tile.accumulate`` call:
   a 1×1 "convolution" whose taps are the C input channels at offsets c·T' (T' = T rounded up to a
   vector; a row's tail holds the transform's junk lanes, finite, whose products are never read);
4. each tile of M back through Y = Aᵀ M A, Y[2i + j, o, t] (:func:`transform_output`), and
   ``conv_rows_kernels.store_tiles`` writes the output with the epilogue (bias, batch norm, shortcut,
   ReLU, 2×2 max-pool: over 2×2 tiles, pooled window t is tile t) with ``conv_rows_kernels.store``'s
   per-value helpers, so in its arithmetic and NaN rule.

Both transforms run a vector of tiles at a time, as intrinsics (LLVM IR, as ``conv_tile``'s tiles):
a map's row has fewer tiles than a vector (7 on lenet's 14² maps), and the plain loops, with 16 and
20 arrays, were not vectorised across rows (they took 4.7 and 12.8 µs an image of lenet's second
layer, the intrinsics 1.8 and 1.8).

U[k, o, c] = (G g_{o,c} Gᵀ)[ξ, ν] is worked out by the caller once a call (:func:`kernels`, in
float64 rounded once to the data's dtype), and passed to ``images`` in place of the (O, C·9) weight,
as (16·O, C): that shape — rows ≠ the output's channels — is what sends ``images`` here.

Non-finite values: the transforms subtract inputs, so an infinity in d makes NaN (∞ − ∞) of outputs
the direct sum leaves infinite (or finite, under a zero weight). An image holding an infinity or a
NaN, or a pooled window seeing a NaN, makes :func:`images` stop and return True; ``conv_rows`` then
runs the whole batch on the direct tiles, whose results (and NaN rule) are the reference.

Accuracy: Bᵀ and Aᵀ hold 0 and ±1, G halves: F(2×2, 3×3)'s float32 error against ``conv_direct``
stays near the direct sum's own (``tests/test_winograd_tiles.py``; 1e-4 relative is the bound the
issue set, ``conv_winograd``'s F(4×4, 3×3), with entries up to 8, is the one that comes near it).
Letters as in ``conv_rows``; TH × TW tiles cover the output (pooled: only the pooled rows' tiles).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .conv_tile import VECTOR_BYTES, intrinsic_arguments, load_vector, store_vector

TAPS = 16  # α² = (2 + 3 − 1)²: the products a tile needs


@njit(cache=True, nogil=True)
def kernels(weight: np.ndarray, zero: Any) -> np.ndarray:  # pragma: no cover - compiled
    """U (16·O, C), row k·O + o: (G g Gᵀ)[ξ, ν] of each 3×3 kernel g = weight[o, c] (O, C, 3, 3), k = 4ξ + ν,
    in float64, rounded once to ``zero``'s dtype. G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]."""
    O, C = weight.shape[0], weight.shape[1]
    u = np.empty((TAPS * O, C), dtype=np.asarray(zero).dtype)
    gg = np.empty((4, 3))
    for o in range(O):
        for c in range(C):
            g = weight[o, c]
            for j in range(3):  # G g: the kernel's rows combined
                a, b, d = np.float64(g[0, j]), np.float64(g[1, j]), np.float64(g[2, j])
                gg[0, j], gg[1, j], gg[2, j], gg[3, j] = a, 0.5 * (a + b + d), 0.5 * (a - b + d), d
            for xi in range(4):  # (G g) Gᵀ: each row's columns combined
                a, b, d = gg[xi, 0], gg[xi, 1], gg[xi, 2]
                k = 4 * xi
                u[k * O + o, c] = a
                u[(k + 1) * O + o, c] = 0.5 * (a + b + d)
                u[(k + 2) * O + o, c] = 0.5 * (a - b + d)
                u[(k + 3) * O + o, c] = d
    return u


@intrinsic
def _input_tiles_intrinsic(typingctx, buffer, r0, Wq, V, v0, CT):  # type: ignore[no-untyped-def]
    """One vector of tiles (V lanes: tiles tw0 … tw0 + V − 1 of a row) through Bᵀ d B: tile l's 4×4 d
    at buffer[r0 + i·Wq + 2l + j]; (Bᵀ d B)[ξ, ν] stored at V[v0 + (4ξ + ν)·CT + l]."""
    sig = types.void(buffer, r0, Wq, V, v0, CT)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        data, ints, vec, lanes, itemsize = intrinsic_arguments(context, builder, signature, args, (0, 3))
        i32, i64 = ir.IntType(32), ir.IntType(64)
        even = ir.Constant(ir.VectorType(i32, lanes), list(range(0, 2 * lanes, 2)))
        odd = ir.Constant(ir.VectorType(i32, lanes), list(range(1, 2 * lanes, 2)))
        d = []  # d[i][j]: column j of row i of every tile, one vector
        for i in range(4):
            row = builder.add(ints[1], builder.mul(ints[2], ir.Constant(i64, i)))
            left, right = (
                [load_vector(builder, vec, itemsize, data[0], builder.add(row, ir.Constant(i64, k))) for k in first]
                for first in ((0, lanes), (2, lanes + 2))
            )
            d.append([builder.shuffle_vector(*left, even), builder.shuffle_vector(*left, odd),
                      builder.shuffle_vector(*right, even), builder.shuffle_vector(*right, odd)])  # fmt: skip

        def combine(r: list[Any]) -> list[Any]:  # Bᵀ's rows: r0 − r2, r1 + r2, r2 − r1, r1 − r3
            sub, add = builder.fsub, builder.fadd
            return [sub(r[0], r[2]), add(r[1], r[2]), sub(r[2], r[1]), sub(r[1], r[3])]

        rows = [combine([d[i][j] for i in range(4)]) for j in range(4)]  # rows[j][ξ] = (Bᵀ d)[ξ, j]
        for xi in range(4):
            for nu, value in enumerate(combine([rows[j][xi] for j in range(4)])):
                at = builder.add(ints[4], builder.mul(ints[5], ir.Constant(i64, 4 * xi + nu)))
                store_vector(builder, vec, itemsize, value, data[3], at)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _output_tiles_intrinsic(typingctx, M, m0, K, Y, y0, YK):  # type: ignore[no-untyped-def]
    """One vector of tiles through Aᵀ m A: m[ξ, ν] at M[m0 + (4ξ + ν)·K + l], (Aᵀ m A)[i, j] stored at
    Y[y0 + (2i + j)·YK + l]."""
    sig = types.void(M, m0, K, Y, y0, YK)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        data, ints, vec, _, itemsize = intrinsic_arguments(context, builder, signature, args, (0, 3))
        i64 = ir.IntType(64)
        rows = (builder.add(ints[1], builder.mul(ints[2], ir.Constant(i64, k))) for k in range(TAPS))
        m = [load_vector(builder, vec, itemsize, data[0], row) for row in rows]

        def combine(r: list[Any]) -> list[Any]:  # Aᵀ's rows: r0 + r1 + r2, r1 − r2 − r3
            return [builder.fadd(builder.fadd(r[0], r[1]), r[2]), builder.fsub(builder.fsub(r[1], r[2]), r[3])]

        columns = [combine([m[4 * xi + nu] for xi in range(4)]) for nu in range(4)]  # columns[ν][i]
        for i in range(2):
            for j, value in enumerate(combine([columns[nu][i] for nu in range(4)])):
                at = builder.add(ints[4], builder.mul(ints[5], ir.Constant(i64, 2 * i + j)))
                store_vector(builder, vec, itemsize, value, data[3], at)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def transform_input(
    buffer: np.ndarray, C: int, Wq: int, S: int, TH: int, TW: int, L: int, K: int, V: np.ndarray
) -> None:  # pragma: no cover - compiled
    """V[k·K + c·L + th·TW + tw] = (Bᵀ d B)[ξ, ν] for the 4×4 tile d at padded row 2·th, column 2·tw of
    plane c (buffer's planes: S values each, rows Wq apart), k = 4ξ + ν, a vector of tiles at a time.
    A row's last vector writes its junk lanes past the row, into the next rows' tiles or the next
    plane's (written after it), so K = C·L + one vector (:func:`block_of`) leaves room for the last
    plane's. buffer must hold :func:`tail_of` values past the planes (the junk lanes' reads).
    Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]."""
    lanes = VECTOR_BYTES // buffer.itemsize
    for c in range(C):
        for th in range(TH):
            r0, v0 = c * S + 2 * th * Wq, c * L + th * TW
            for tw in range(0, TW, lanes):
                _input_tiles(buffer, r0 + 2 * tw, Wq, V, v0 + tw, K)


@njit(cache=True, nogil=True)
def block_of(C: int, L: int, itemsize: int) -> int:  # pragma: no cover - compiled
    """The stride K of :func:`transform_input`'s V between its 16 blocks of C rows of L."""
    return C * L + VECTOR_BYTES // itemsize


@njit(cache=True, nogil=True)
def transform_output(M: np.ndarray, O: int, T: int, Y: np.ndarray) -> None:  # pragma: no cover - compiled
    """Y[2i + j, o, t] = (Aᵀ m A)[i, j] for the tile m[ξ, ν] = M[4ξ + ν, o, t] of M (16, O', T'), t < T
    (rounded up to a vector), Y (4, O', T'). Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]. Flat over the
    tiles: a row of a map has too few tiles for a vector."""
    lanes = VECTOR_BYTES // M.itemsize
    Tp = M.shape[2]
    m, y = M.reshape(M.size), Y.reshape(Y.size)
    K, YK = M.shape[1] * Tp, Y.shape[1] * Tp
    for o in range(O):
        for t in range(0, T, lanes):
            _output_tiles(m, o * Tp + t, K, y, o * Tp + t, YK)


_input_tiles: Callable[..., None] = _input_tiles_intrinsic  # (called in compiled code)
_output_tiles: Callable[..., None] = _output_tiles_intrinsic


@njit(cache=True, nogil=True)
def tail_of(itemsize: int) -> int:  # pragma: no cover - compiled
    """Values past the last plane that :func:`transform_input` may read (its junk lanes: two vectors
    and the tile's two columns past them)."""
    return 2 * (VECTOR_BYTES // itemsize) + 2
