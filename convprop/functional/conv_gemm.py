"""im2col with a compiled unfold/col2im and one large matrix product per chunk: the fast general algorithm.

The arithmetic is ``conv_im2col``'s — ``Y = W̃ · X̃``, ``dX̃ = W̃ᵀ · δ`` folded back by col2im,
``dW̃ = δ · X̃ᵀ`` — with the same BLAS doing the products. What changes is the data layout and
the data movement around them, each choice measured with ``benchmarks/conv.py`` (fp32, 2 threads):

- The unfolded matrix of a chunk of n images is laid out *K-major*, (C, KH, KW, n, OH, OW) =
  (K, n·P), so each product is one large GEMM over the whole chunk instead of n small ones
  (64 products of (64, 288)·(288, 196) took 3.5× as long as one (64, 288)·(288, 12544)).
  The price is one transposed copy of the (much smaller) output or gradient chunk.
- For dW̃ the gradient is transposed to (n·P, O) and the product computed as X̃ · δᵀ, (K, n·P)·(n·P, O):
  the form OpenBLAS runs fastest for a long reduction.
- The unfold is one strided NumPy copy of the transposed window view (measured 2× faster than a
  compiled loop). col2im is a ``numba`` loop compiled once and cached on disk, single-threaded on
  purpose: numba's parallel loops left OpenMP threads spinning that fought OpenBLAS's own threads
  and made the whole pass 2× slower. It gathers each (channel, image) plane's KH·KW shifted
  contributions while the plane is in cache, instead of KH·KW NumPy read-modify-write passes over
  the whole batch.
- A layer can keep the whole batch's columns from the forward pass (``forward_saving``) and hand
  them to ``grad_weight_saved``: one unfold per training step instead of two.
- 1×1 kernels with stride 1 need no unfolding: ``conv_im2col``'s pure matrix product is used.

The batch is processed a chunk at a time (``conv_im2col.batch_chunks``), so the unfolded buffer
stays within ``conv_im2col.CHUNK_BYTES`` and within the bytes of input + output together (at least
one image): ``benchmarks/memory.py`` keeps forward + backward under 4× input + output + weight.
Letters as in ``conv_direct``; Kg = Cg·KH·KW, P = OH·OW.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import conv_im2col
from .conv_im2col import batch_chunks
from .geometry import Pair, windows


@njit(cache=True)
def _col2im(cols, n0, sh, sw, dh, dw, dx):  # pragma: no cover - compiled
    """dx[n0 + i, c, oh·sh + kh·dh, ow·sw + kw·dw] += cols[c, kh, kw, i, oh, ow]: the unfold's adjoint."""
    C, KH, KW, n, OH, OW = cols.shape
    for i in range(n):
        for c in range(C):
            for kh in range(KH):
                for kw in range(KW):
                    for oh in range(OH):
                        row = oh * sh + kh * dh
                        for ow in range(OW):
                            dx[n0 + i, c, row, ow * sw + kw * dw] += cols[c, kh, kw, i, oh, ow]


@njit(cache=True)
def _col2im_unit(cols, n0, dx):  # pragma: no cover - compiled
    """:func:`_col2im` for stride 1 and no dilation: the index ``ow + kw`` is contiguous, so the
    inner loop vectorises (about 2.3× faster). Same additions in the same order."""
    C, KH, KW, n, OH, OW = cols.shape
    for i in range(n):
        for c in range(C):
            plane = dx[n0 + i, c]
            for kh in range(KH):
                for kw in range(KW):
                    src = cols[c, kh, kw, i]
                    for oh in range(OH):
                        row, s = plane[oh + kh], src[oh]
                        for ow in range(OW):
                            row[ow + kw] += s[ow]


def _budget(N: int, C: int, in_size: Pair, O: int, out_size: Pair, itemsize: int) -> int:
    """Bytes the unfolded chunk may hold: ``CHUNK_BYTES``, but never more than input + output together."""
    in_out = N * (C * in_size[0] * in_size[1] + O * out_size[0] * out_size[1]) * itemsize
    return min(conv_im2col.CHUNK_BYTES, in_out)


def unfold(
    x: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, out_size: Pair, out: np.ndarray | None = None
) -> np.ndarray:
    """K-major columns of x: (n, C, H, W) → (C, KH, KW, n, OH, OW), one strided NumPy copy.

    (NumPy's copy of the transposed window view measured 2× faster than a compiled loop here.)
    """
    view = windows(x, kernel, stride, dilation, out_size).transpose(1, 2, 3, 0, 4, 5)  # (C, KH, KW, n, OH, OW) view
    if out is None:
        out = np.empty(view.shape, dtype=x.dtype)
    np.copyto(out, view)
    return out


def _unfold_chunks(x: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, out_size: Pair, O: int):
    """Yield (chunk, cols): cols the (C, KH, KW, n, OH, OW) unfolding of x[chunk], in one reused buffer."""
    N, C = x.shape[:2]
    per_image = C * kernel[0] * kernel[1] * out_size[0] * out_size[1] * x.itemsize
    buffer = None
    for chunk in batch_chunks(N, per_image, _budget(N, C, x.shape[2:], O, out_size, x.itemsize)):
        n = chunk.stop - chunk.start
        if buffer is None:
            buffer = np.empty(C * kernel[0] * kernel[1] * n * out_size[0] * out_size[1], dtype=x.dtype)
        cols = buffer[: per_image // x.itemsize * n].reshape(C, *kernel, n, *out_size)  # (C, KH, KW, n, OH, OW)
        yield chunk, unfold(x[chunk], kernel, stride, dilation, out_size, out=cols)


def _forward_cols(cols: np.ndarray, w: np.ndarray, groups: int, y: np.ndarray, chunk: slice) -> None:
    """y[chunk] = W̃ · X̃ per group, from a chunk's columns (G·Kg, n·P) → y (N, G, Og, P)."""
    Og, P = w.shape[1], y.shape[-1]
    cols = cols.reshape(groups, w.shape[2], -1)  # (G, Kg, n·P)
    for g in range(groups):
        yg = w[g] @ cols[g]  # (Og, n·P)
        y[chunk, g] = yg.reshape(Og, -1, P).transpose(1, 0, 2)  # (Og, n, P) → (n, Og, P)


def _grad_weight_cols(dy: np.ndarray, cols: np.ndarray, dwT: np.ndarray, groups: int) -> None:
    """dwT += X̃ · δᵀ per group for one chunk: cols (G·Kg, n·P), dy (n, O, P) → dwT (G, Kg, Og)."""
    Kg, Og = dwT.shape[1:]
    cols = cols.reshape(groups, Kg, -1)  # (G, Kg, n·P)
    dyT = dy.transpose(0, 2, 1).reshape(-1, groups, Og)  # (n, P, O) copy → (n·P, G, Og)
    for g in range(groups):
        dwT[g] += cols[g] @ dyT[:, g]  # (Kg, n·P)·(n·P, Og) → (Kg, Og)


def forward(x: np.ndarray, weight: np.ndarray, stride: Pair, dilation: Pair, groups: int, out_size: Pair) -> np.ndarray:
    """Y = W̃ · X̃ per group, one (Og, Kg)·(Kg, n·P) product per chunk."""
    O, Cg, KH, KW = weight.shape
    if conv_im2col.is_pointwise((KH, KW), stride):
        return conv_im2col.forward(x, weight, stride, dilation, groups, out_size)
    N = x.shape[0]
    w = weight.reshape(groups, O // groups, Cg * KH * KW)  # (G, Og, Kg)
    y = np.empty((N, groups, O // groups, out_size[0] * out_size[1]), dtype=x.dtype)  # (N, G, Og, P)
    for chunk, cols in _unfold_chunks(x, (KH, KW), stride, dilation, out_size, O):
        _forward_cols(cols, w, groups, y, chunk)
    return y.reshape(N, O, *out_size)  # (N, O, OH, OW)


def forward_saving(
    x: np.ndarray, weight: np.ndarray, stride: Pair, dilation: Pair, groups: int, out_size: Pair, max_bytes: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`forward`, also returning the whole batch's columns for :func:`grad_weight_saved` when
    they fit in ``max_bytes`` (a layer keeps them between forward and backward: one unfold, not two)."""
    O, Cg, KH, KW = weight.shape
    N = x.shape[0]
    if (
        conv_im2col.is_pointwise((KH, KW), stride)
        or N * Cg * groups * KH * KW * out_size[0] * out_size[1] * x.itemsize > max_bytes
    ):
        return forward(x, weight, stride, dilation, groups, out_size), None
    cols = unfold(x, (KH, KW), stride, dilation, out_size)  # (C, KH, KW, N, OH, OW)
    y = np.empty((N, groups, O // groups, out_size[0] * out_size[1]), dtype=x.dtype)  # (N, G, Og, P)
    _forward_cols(cols, weight.reshape(groups, O // groups, Cg * KH * KW), groups, y, slice(0, N))  # w as (G, Og, Kg)
    return y.reshape(N, O, *out_size), cols  # (N, O, OH, OW)


def grad_input(
    grad_output: np.ndarray, weight: np.ndarray, in_size: Pair, stride: Pair, dilation: Pair, groups: int
) -> np.ndarray:
    """dX̃ = W̃ᵀ · δ per group, one (Kg, Og)·(Og, n·P) product per chunk, then col2im."""
    N, O, OH, OW = grad_output.shape
    _, Cg, KH, KW = weight.shape
    if conv_im2col.is_pointwise((KH, KW), stride) and in_size == (OH, OW):
        return conv_im2col.grad_input(grad_output, weight, in_size, stride, dilation, groups)
    Og, Kg, P = O // groups, Cg * KH * KW, OH * OW
    C = Cg * groups
    w = weight.reshape(groups, Og, Kg)  # (G, Og, Kg)
    dy = grad_output.reshape(N, groups, Og, P)  # (N, G, Og, P)
    dx = np.zeros((N, C, *in_size), dtype=grad_output.dtype)
    buffer = None
    for chunk in batch_chunks(
        N, C * KH * KW * P * grad_output.itemsize, _budget(N, C, in_size, O, (OH, OW), grad_output.itemsize)
    ):
        n = chunk.stop - chunk.start
        if buffer is None:
            buffer = np.empty(groups * Kg * n * P, dtype=grad_output.dtype)
        dcols = buffer[: groups * Kg * n * P].reshape(groups, Kg, n * P)  # (G, Kg, n·P)
        for g in range(groups):
            dyg = dy[chunk, g].transpose(1, 0, 2).reshape(Og, n * P)  # (n, Og, P) → (Og, n·P) copy
            np.matmul(w[g].T, dyg, out=dcols[g])  # (Kg, n·P)
        dcols6 = dcols.reshape(C, KH, KW, n, OH, OW)  # (G·Kg, n·P) → 6-D
        if stride == dilation == (1, 1):
            _col2im_unit(dcols6, chunk.start, dx)
        else:
            _col2im(dcols6, chunk.start, *stride, *dilation, dx)
    return dx


def grad_weight(
    grad_output: np.ndarray, x: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, groups: int
) -> np.ndarray:
    """dW̃ᵀ = Σ_chunks X̃ · δᵀ per group, one (Kg, n·P)·(n·P, Og) product per chunk."""
    N, O, OH, OW = grad_output.shape
    if conv_im2col.is_pointwise(kernel, stride) and x.shape[2:] == (OH, OW):
        return conv_im2col.grad_weight(grad_output, x, kernel, stride, dilation, groups)
    Cg = x.shape[1] // groups
    dwT = np.zeros((groups, Cg * kernel[0] * kernel[1], O // groups), dtype=grad_output.dtype)  # (G, Kg, Og)
    dy = grad_output.reshape(N, O, OH * OW)  # (N, O, P)
    for chunk, cols in _unfold_chunks(x, kernel, stride, dilation, (OH, OW), O):
        _grad_weight_cols(dy[chunk], cols, dwT, groups)
    return dwT.transpose(0, 2, 1).reshape(O, Cg, *kernel)  # (G, Og, Kg) → (O, Cg, KH, KW)


def grad_weight_saved(grad_output: np.ndarray, cols: np.ndarray, kernel: Pair, groups: int) -> np.ndarray:
    """:func:`grad_weight` from the columns :func:`forward_saving` kept (no second unfold)."""
    N, O, OH, OW = grad_output.shape
    Kg = cols.shape[0] * kernel[0] * kernel[1] // groups
    dwT = np.zeros((groups, Kg, O // groups), dtype=grad_output.dtype)  # (G, Kg, Og)
    _grad_weight_cols(grad_output.reshape(N, O, OH * OW), cols, dwT, groups)  # δ as (N, O, P)
    return dwT.transpose(0, 2, 1).reshape(O, Kg // (kernel[0] * kernel[1]), *kernel)  # (O, Cg, KH, KW)
