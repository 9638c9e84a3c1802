"""Winograd minimal filtering F(m×m, 3×3) (Lavin & Gray, 2015) for 3×3, stride-1, undilated convolutions.

An output tile of m×m values needs an α×α input tile, α = m + 2. With the transform matrices
Bᵀ (α×α), G (α×3) and Aᵀ (m×α) of the 1-D algorithm F(m, 3) (derived in ``docs/convolution.md``
from Toom–Cook interpolation at the points 0, ±1, ±2, ∞), one tile of one output channel is::

    Y = Aᵀ [ Σ_c (G g_{o,c} Gᵀ) ⊙ (Bᵀ d_c B) ] A

so the Σ_c becomes α² independent matrix products: with U[ξ, ν] = (G g Gᵀ)[ξ, ν] of shape (O, C)
and V[ξ, ν] = (Bᵀ d B)[ξ, ν] of shape (C, T) over all T tiles, M[ξ, ν] = U[ξ, ν] · V[ξ, ν] (BLAS),
then each tile of M goes back through Aᵀ · A. Multiplications per output value fall from 9·C to
α²/m²·C: 4·C for F(2×2, 3×3) (2.25× fewer), 2.25·C for F(4×4, 3×3) (4× fewer). The price is
accuracy: the transforms' entries grow with the tile (F(4, 3)'s G has 1/24, Bᵀ a 5), so float32
rounding grows too — ``tests/test_conv_winograd.py`` holds both to 1e-4 relative of ``direct``.

The input and output transforms are ``numba`` loops (one α×α tile at a time, the matrices as
data, so one kernel serves both tile sizes), single-threaded like ``conv_gemm``'s col2im; the
kernel transform is one einsum (it is tiny). The batch goes a chunk at a time so the transformed
input and the products stay within ``conv_memory.CHUNK_BYTES``.

The input gradient of a 3×3 stride-1 convolution is itself a 3×3 stride-1 convolution — the *full*
correlation of δ with the 180°-rotated kernel, channels exchanged (seed 002) — so ``grad_input``
runs the same tiles on δ with a border of 2 (read as zeros by the input transform, never copied).
The weight gradient (a correlation of x with δ, 3×3 *outputs*) is ``conv_gemm``'s: Winograd's
F(3×3, m×m) variant would need a tile per (image, tile) pair and wins only for large batches.

Letters: N batch, C input channels, O output channels, (H, W) padded input size, (OH, OW) =
(H − 2, W − 2), m the output tile, α = m + 2, (TH, TW) = (⌈OH/m⌉, ⌈OW/m⌉) tiles, T = n·TH·TW.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import conv_gemm, conv_memory
from .conv_algorithm import ConvGeometry

# F(2, 3): interpolation points 0, 1, -1, ∞.
F2_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
F2_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
F2_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)

# F(4, 3): interpolation points 0, 1, -1, 2, -2, ∞.
F4_BT = np.array(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
    dtype=np.float64,
)
F4_G = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    dtype=np.float64,
)
F4_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], dtype=np.float64)


@njit(cache=True)
def _input_transform(
    x: np.ndarray, BT: np.ndarray, m: int, border: int, TH: int, TW: int, V: np.ndarray
) -> None:  # pragma: no cover - compiled
    """V[ξ, ν, c, t] = (Bᵀ d B)[ξ, ν] for every α×α tile d of x, t = (i·TH + th)·TW + tw.

    Tile (th, tw) starts at row th·m − border, column tw·m − border of x (n, C, H, W); positions
    outside x read as zero (the border of ``grad_input``, the last tiles' overhang)."""
    n, C, H, W = x.shape
    a = BT.shape[0]
    d = np.empty((a, a), dtype=x.dtype)
    tmp = np.empty((a, a), dtype=x.dtype)
    for c in range(C):
        for i in range(n):
            for th in range(TH):
                r0 = th * m - border
                for tw in range(TW):
                    c0 = tw * m - border
                    for u in range(a):
                        r = r0 + u
                        for v in range(a):
                            col = c0 + v
                            if 0 <= r < H and 0 <= col < W:
                                d[u, v] = x[i, c, r, col]
                            else:
                                d[u, v] = 0.0
                    for p in range(a):  # tmp = Bᵀ d
                        for v in range(a):
                            s = 0.0
                            for u in range(a):
                                s += BT[p, u] * d[u, v]
                            tmp[p, v] = s
                    t = (i * TH + th) * TW + tw
                    for p in range(a):  # V = tmp B = tmp (Bᵀ)ᵀ
                        for q in range(a):
                            s = 0.0
                            for v in range(a):
                                s += tmp[p, v] * BT[q, v]
                            V[p, q, c, t] = s


@njit(cache=True)
def _output_transform(
    M: np.ndarray, AT: np.ndarray, TH: int, TW: int, y: np.ndarray
) -> None:  # pragma: no cover - compiled
    """y[i, o, th·m + r, tw·m + s] = (Aᵀ M[:, :, o, t] A)[r, s], cropped to y (n, O, OH, OW)."""
    n, O, OH, OW = y.shape
    m, a = AT.shape
    tmp = np.empty((m, a), dtype=y.dtype)
    for o in range(O):
        for i in range(n):
            for th in range(TH):
                for tw in range(TW):
                    t = (i * TH + th) * TW + tw
                    for r in range(m):  # tmp = Aᵀ M
                        for q in range(a):
                            s = 0.0
                            for p in range(a):
                                s += AT[r, p] * M[p, q, o, t]
                            tmp[r, q] = s
                    for r in range(m):  # out = tmp A
                        row = th * m + r
                        if row >= OH:
                            break
                        for s_ in range(m):
                            col = tw * m + s_
                            if col >= OW:
                                break
                            s = 0.0
                            for q in range(a):
                                s += tmp[r, q] * AT[s_, q]
                            y[i, o, row, col] = s


class Winograd:
    """The algorithm F(m×m, 3×3) as a :class:`~.conv_algorithm.ConvAlgorithm` (``m`` = 2 or 4)."""

    def __init__(self, m: int, BT: np.ndarray, G: np.ndarray, AT: np.ndarray):
        self.m, self.BT, self.G, self.AT = m, BT, G, AT

    def __repr__(self) -> str:
        return f"Winograd(F({self.m}x{self.m}, 3x3))"

    def supports(self, geo: ConvGeometry) -> str | None:
        """2-D, 3×3 kernel, stride 1, dilation 1, groups 1: what the tiles compute."""
        if geo.ndim != 2:
            return f"Winograd F({self.m}x{self.m}, 3x3) is 2-D only, this convolution has {geo.ndim} spatial axes"
        problems = []
        if tuple(geo.kernel) != (3, 3):
            problems.append(f"kernel {tuple(geo.kernel)} (needs 3x3)")
        if tuple(geo.stride) != (1, 1):
            problems.append(f"stride {tuple(geo.stride)} (needs 1)")
        if tuple(geo.dilation) != (1, 1):
            problems.append(f"dilation {tuple(geo.dilation)} (needs 1)")
        if geo.groups != 1:
            problems.append(f"groups={geo.groups} (needs 1)")
        if problems:
            return f"Winograd F({self.m}x{self.m}, 3x3) needs a dense 3x3 stride-1 convolution; got " + ", ".join(
                problems
            )
        return None

    def _kernel_transform(self, weight: np.ndarray) -> np.ndarray:
        """U[ξ, ν] = (G g Gᵀ)[ξ, ν] for every (o, c): (O, C, 3, 3) → (α², O, C)."""
        G = self.G.astype(weight.dtype)
        a = G.shape[0]
        U = np.einsum("xi,ocij,yj->xyoc", G, weight, G, optimize=True)  # (α, α, O, C)
        return np.ascontiguousarray(U).reshape(a * a, *weight.shape[:2])  # (α², O, C)

    def _correlate(self, x: np.ndarray, U: np.ndarray, border: int) -> np.ndarray:
        """The valid 3×3 correlation of x (N, C, H, W) framed by ``border`` zeros, with transformed
        kernels U (α², O, C) → (N, O, H + 2·border − 2, W + 2·border − 2)."""
        N, C, H, W = x.shape
        O = U.shape[1]
        m, a = self.m, self.m + 2
        OH, OW = H + 2 * border - 2, W + 2 * border - 2
        TH, TW = -(-OH // m), -(-OW // m)
        BT, AT = self.BT.astype(x.dtype), self.AT.astype(x.dtype)
        y = np.empty((N, O, OH, OW), dtype=x.dtype)
        per_image = a * a * (C + O) * TH * TW * x.itemsize  # V and M of one image
        for chunk in conv_memory.batch_chunks(N, per_image):
            n = chunk.stop - chunk.start
            V = np.empty((a, a, C, n * TH * TW), dtype=x.dtype)  # (α, α, C, T)
            _input_transform(x[chunk], BT, m, border, TH, TW, V)
            M = np.matmul(U, V.reshape(a * a, C, -1))  # (α², O, C)·(α², C, T) → (α², O, T)
            _output_transform(M.reshape(a, a, O, -1), AT, TH, TW, y[chunk])
        return y

    def forward(self, x: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
        """y[n, o] = Σ_c x[n, c] ⋆ w[o, c] (valid 3×3 correlation of the padded x), tile by tile."""
        return self._correlate(np.ascontiguousarray(x), self._kernel_transform(weight), border=0)

    def grad_input(self, grad_output: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
        """dx_padded[n, c] = Σ_o δ[n, o] ⋆_full rot180(w[o, c]): the full correlation (δ framed by 2
        zeros) with the rotated kernel, channels exchanged → (N, C, H, W)."""
        rotated = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (C, O, 3, 3)
        return self._correlate(np.ascontiguousarray(grad_output), self._kernel_transform(rotated), border=2)

    def grad_weight(self, grad_output: np.ndarray, x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
        """dw = x ⋆ δ, computed by ``conv_gemm`` (see the module docstring)."""
        return conv_gemm.grad_weight(grad_output, x, geo)


F2 = Winograd(2, F2_BT, F2_G, F2_AT)
F4 = Winograd(4, F4_BT, F4_G, F4_AT)
