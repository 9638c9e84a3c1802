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
- The unfold is a compiled loop that writes the columns in order for 2-D stride-1 kernels (1.1–1.5×
  faster than NumPy there), and one strided NumPy copy of the transposed window view otherwise (where
  the compiled loops measured slower). col2im is a ``numba`` loop compiled once and cached on disk, single-threaded on
  purpose: numba's parallel loops left OpenMP threads spinning that fought OpenBLAS's own threads
  and made the whole pass 2× slower. It gathers each (channel, image) plane's KH·KW shifted
  contributions while the plane is in cache, instead of KH·KW NumPy read-modify-write passes over
  the whole batch.
- A layer can keep the whole batch's columns from the forward pass (``forward_saving``) and hand
  them to ``grad_weight_saved``: one unfold per training step instead of two.
- 1×1 kernels need no unfolding: ``conv_pointwise``'s plain matrix product (of the sampled positions
  with a stride).

The batch is processed a chunk at a time (``conv_memory.batch_chunks``), so the unfolded buffer
stays within ``conv_memory.CHUNK_BYTES`` and within the bytes of input + output together (at least
one image): ``benchmarks/memory.py`` keeps forward + backward under 4× input + output + weight.

Any number of spatial axes: the unfold is compiled for stride-1 2-D and 3-D kernels and is otherwise
the strided copy of the n-D window view; col2im is compiled for 1-D (as a 2-D fold with one row), 2-D
and 3-D (``geometry.scatter_windows``, one NumPy slice-add per tap, only beyond three axes). The 3-D
kernels took the 3-D benchmark shape (8, 16, 16³ → 32, 3³) from 67–76 to 51–63 ms a training step
(three interleaved runs, 2 December): the slice-adds had been a third of it.
Letters as in ``conv_direct``; Kg = Cg·K_1···K_n, P = Q_1···Q_n (2-D: KH, KW, OH, OW).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from numba import njit

from . import conv_memory, conv_pointwise
from .conv_algorithm import ConvGeometry
from .geometry import scatter_windows, windows


@njit(cache=True, nogil=True)
def _col2im_2d(
    cols: np.ndarray, n0: int, sh: int, sw: int, dh: int, dw: int, dx: np.ndarray
) -> None:  # pragma: no cover - compiled
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


@njit(cache=True, nogil=True)
def _col2im_unit(cols: np.ndarray, n0: int, dx: np.ndarray) -> None:  # pragma: no cover - compiled
    """:func:`_col2im_2d` for stride 1 and no dilation: the index ``ow + kw`` is contiguous, so the
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


@njit(cache=True, nogil=True)
def _col2im_3d(
    cols: np.ndarray, n0: int, stride: tuple[int, ...], dilation: tuple[int, ...], dx: np.ndarray
) -> None:  # pragma: no cover - compiled
    """The 3-D fold: dx[n0 + i, c, od·s + kd·d, oh·s + kh·d, ow·s + kw·d] += cols[c, kd, kh, kw, i, od, oh, ow]
    (per axis strides and dilations). Each (image, channel) volume gathers its taps in ``tap_slices``'
    order, so every element receives the same additions in the same order as ``scatter_windows``."""
    C, KD, KH, KW, n, OD, OH, OW = cols.shape
    (sd, sh, sw), (dd, dh, dw) = stride, dilation
    for i in range(n):
        for c in range(C):
            volume = dx[n0 + i, c]
            for kd in range(KD):
                for kh in range(KH):
                    for kw in range(KW):
                        src = cols[c, kd, kh, kw, i]
                        for od in range(OD):
                            for oh in range(OH):
                                row, s = volume[od * sd + kd * dd, oh * sh + kh * dh], src[od, oh]
                                if sw == 1:  # contiguous: the loop vectorises
                                    for ow in range(OW):
                                        row[ow + kw * dw] += s[ow]
                                else:
                                    for ow in range(OW):
                                        row[ow * sw + kw * dw] += s[ow]


@njit(cache=True, nogil=True)
def _unfold_unit_3d(x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """out[c, kd, kh, kw, i, od, oh, ow] = x[i, c, od + kd, oh + kh, ow + kw] (stride 1, no dilation)."""
    C, KD, KH, KW, n, OD, OH, OW = out.shape
    for c in range(C):
        for kd in range(KD):
            for kh in range(KH):
                for kw in range(KW):
                    for i in range(n):
                        for od in range(OD):
                            for oh in range(OH):
                                src = x[i, c, od + kd, oh + kh]
                                dst = out[c, kd, kh, kw, i, od, oh]
                                for ow in range(OW):
                                    dst[ow] = src[ow + kw]


def supports(geo: ConvGeometry) -> str | None:
    """Any number of spatial axes (col2im is compiled for 1-D and 2-D, NumPy slices in 3-D)."""
    return None


@njit(cache=True, nogil=True)
def _unfold_unit(x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """out[c, kh, kw, i, oh, ow] = x[i, c, oh + kh, ow + kw] (stride 1, no dilation), in out's order."""
    C, KH, KW, n, OH, OW = out.shape
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                for i in range(n):
                    for oh in range(OH):
                        src = x[i, c, oh + kh]
                        dst = out[c, kh, kw, i, oh]
                        for ow in range(OW):
                            dst[ow] = src[ow + kw]


def unfold(x: np.ndarray, geo: ConvGeometry, out: np.ndarray | None = None) -> np.ndarray:
    """K-major columns of x: (n, C, *S) → (C, *K, n, *Q).

    2-D and 3-D, stride 1, no dilation: a compiled loop writing the columns in order (resnet's and
    lenet's layers, 7×7 to 28×28 maps: 1.1–1.7× faster than NumPy's copy of the transposed window view,
    measured 2 December; a version handling strides and dilation in the same loop was 1.3–2.5× *slower*
    than NumPy, and so was an earlier compiled loop that walked the input's order; so was one reading a
    stride-2 input split into its four phases, 2×, and 1-D through the 2-D loop gained nothing).
    Otherwise that copy.
    """
    d = geo.ndim
    view = windows(x, geo.kernel, geo.stride, geo.dilation, geo.out_size)  # (n, C, *K, *Q) view
    view = view.transpose(1, *range(2, 2 + d), 0, *range(2 + d, 2 + 2 * d))  # (C, *K, n, *Q) view
    if out is None:
        out = np.empty(view.shape, dtype=x.dtype)
    unit = geo.stride == geo.dilation == (1,) * d and x.flags.c_contiguous
    if unit and d == 2:
        _unfold_unit(x, out)
    elif unit and d == 3:
        _unfold_unit_3d(x, out)
    else:
        np.copyto(out, view)
    return out


def _per_image(C: int, geo: ConvGeometry) -> int:
    """Values one image's columns hold: C·K_1···K_n·Q_1···Q_n."""
    return C * math.prod(geo.kernel) * math.prod(geo.out_size)


def _chunks(N: int, C: int, O: int, geo: ConvGeometry, itemsize: int) -> Iterator[slice]:
    budget = conv_memory.unfold_budget(N, C, geo.padded_size, O, geo.out_size, itemsize)
    return conv_memory.batch_chunks(N, _per_image(C, geo) * itemsize, budget)


def _unfold_chunks(x: np.ndarray, geo: ConvGeometry, O: int) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (chunk, cols): cols the (C, *K, n, *Q) unfolding of x[chunk], in one reused buffer."""
    N, C = x.shape[:2]
    per_image = _per_image(C, geo)
    buffer = None
    for chunk in _chunks(N, C, O, geo, x.itemsize):
        n = chunk.stop - chunk.start
        if buffer is None:
            buffer = np.empty(per_image * n, dtype=x.dtype)
        cols = buffer[: per_image * n].reshape(C, *geo.kernel, n, *geo.out_size)  # (C, *K, n, *Q)
        yield chunk, unfold(x[chunk], geo, out=cols)


def _forward_cols(cols: np.ndarray, w: np.ndarray, groups: int, y: np.ndarray, chunk: slice) -> None:
    """y[chunk] = W̃ · X̃ per group, from a chunk's columns (G·Kg, n·P) → y (N, G, Og, P)."""
    Og, P = w.shape[1], y.shape[-1]
    cols = cols.reshape(groups, w.shape[2], cols.size // (groups * w.shape[2]))  # (G, Kg, n·P); n may be 0
    for g in range(groups):
        yg = w[g] @ cols[g]  # (Og, n·P)
        y[chunk, g] = yg.reshape(Og, -1, P).transpose(1, 0, 2)  # (Og, n, P) → (n, Og, P)


def _grad_weight_cols(dy: np.ndarray, cols: np.ndarray, dwT: np.ndarray, groups: int) -> None:
    """dwT += X̃ · δᵀ per group for one chunk: cols (G·Kg, n·P), dy (n, O, P) → dwT (G, Kg, Og)."""
    Kg, Og = dwT.shape[1:]
    cols = cols.reshape(groups, Kg, cols.size // (groups * Kg))  # (G, Kg, n·P); n may be 0
    dyT = dy.transpose(0, 2, 1).reshape(-1, groups, Og)  # (n, P, O) copy → (n·P, G, Og)
    for g in range(groups):
        dwT[g] += cols[g] @ dyT[:, g]  # (Kg, n·P)·(n·P, Og) → (Kg, Og)


def forward(x: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Y = W̃ · X̃ per group, one (Og, Kg)·(Kg, n·P) product per chunk."""
    if conv_pointwise.applies(geo):
        return conv_pointwise.forward(x, weight, geo)
    N, G, O = x.shape[0], geo.groups, weight.shape[0]
    w = weight.reshape(G, O // G, -1)  # (G, Og, Kg)
    y = np.empty((N, G, O // G, math.prod(geo.out_size)), dtype=x.dtype)  # (N, G, Og, P)
    for chunk, cols in _unfold_chunks(x, geo, O):
        _forward_cols(cols, w, G, y, chunk)
    return y.reshape(N, O, *geo.out_size)  # (N, O, *Q)


def forward_saving(
    x: np.ndarray, weight: np.ndarray, geo: ConvGeometry, max_bytes: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`forward`, also returning the whole batch's columns for :func:`grad_weight_saved` when
    they fit in ``max_bytes`` (a layer keeps them between forward and backward: one unfold, not two)."""
    N, C = x.shape[:2]
    G, O = geo.groups, weight.shape[0]
    if conv_pointwise.applies(geo) or N * _per_image(C, geo) * x.itemsize > max_bytes:
        return forward(x, weight, geo), None
    cols = unfold(x, geo)  # (C, *K, N, *Q)
    y = np.empty((N, G, O // G, math.prod(geo.out_size)), dtype=x.dtype)  # (N, G, Og, P)
    _forward_cols(cols, weight.reshape(G, O // G, -1), G, y, slice(0, N))  # w as (G, Og, Kg)
    return y.reshape(N, O, *geo.out_size), cols  # (N, O, *Q)


def _col2im(dcols: np.ndarray, n0: int, geo: ConvGeometry, dx: np.ndarray) -> None:
    """dx[n0 + i] += the fold of dcols (C, *K, n, *Q): compiled in 1-D and 2-D, NumPy slice-adds in 3-D."""
    if geo.ndim == 1:  # a 2-D fold with one row: (C, 1, K, n, 1, Q) into (N, C, 1, L), views
        C, K, n, Q = dcols.shape
        dcols, dx = dcols.reshape(C, 1, K, n, 1, Q), dx.reshape(dx.shape[0], dx.shape[1], 1, dx.shape[2])
        (s,), (d,) = geo.stride, geo.dilation
        if s == d == 1:
            _col2im_unit(dcols, n0, dx)
        else:
            _col2im_2d(dcols, n0, 1, s, 1, d, dx)
    elif geo.ndim == 2 and geo.stride == geo.dilation == (1, 1):
        _col2im_unit(dcols, n0, dx)
    elif geo.ndim == 2:
        (sh, sw), (dh, dw) = geo.stride, geo.dilation
        _col2im_2d(dcols, n0, sh, sw, dh, dw, dx)
    elif geo.ndim == 3:
        _col2im_3d(dcols, n0, geo.stride, geo.dilation, dx)
    else:  # more axes than the public functions offer: one NumPy slice-add per tap
        d = geo.ndim
        n = dcols.shape[1 + d]
        columns = dcols.transpose(1 + d, 0, *range(1, 1 + d), *range(2 + d, 2 + 2 * d))  # (n, C, *K, *Q) view
        scatter_windows(columns, dx[n0 : n0 + n], geo.stride, geo.dilation)


def grad_input(grad_output: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """dX̃ = W̃ᵀ · δ per group, one (Kg, Og)·(Og, n·P) product per chunk, then col2im."""
    if conv_pointwise.applies(geo):
        return conv_pointwise.grad_input(grad_output, weight, geo)
    N, O = grad_output.shape[:2]
    G, Cg = geo.groups, weight.shape[1]
    Og, Kg, P = O // G, math.prod(weight.shape[1:]), math.prod(geo.out_size)
    C = Cg * G
    w = weight.reshape(G, Og, Kg)  # (G, Og, Kg)
    dy = grad_output.reshape(N, G, Og, P)  # (N, G, Og, P)
    dx = np.zeros((N, C, *geo.padded_size), dtype=grad_output.dtype)
    buffer = None
    for chunk in _chunks(N, C, O, geo, grad_output.itemsize):
        n = chunk.stop - chunk.start
        if buffer is None:
            buffer = np.empty(G * Kg * n * P, dtype=grad_output.dtype)
        dcols = buffer[: G * Kg * n * P].reshape(G, Kg, n * P)  # (G, Kg, n·P)
        for g in range(G):
            dyg = dy[chunk, g].transpose(1, 0, 2).reshape(Og, n * P)  # (n, Og, P) → (Og, n·P) copy
            np.matmul(w[g].T, dyg, out=dcols[g])  # (Kg, n·P)
        _col2im(dcols.reshape(C, *geo.kernel, n, *geo.out_size), chunk.start, geo, dx)  # (G·Kg, n·P) → (C, *K, n, *Q)
    return dx


def grad_weight(grad_output: np.ndarray, x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """dW̃ᵀ = Σ_chunks X̃ · δᵀ per group, one (Kg, n·P)·(n·P, Og) product per chunk."""
    if conv_pointwise.applies(geo):
        return conv_pointwise.grad_weight(grad_output, x, geo)
    N, O = grad_output.shape[:2]
    G = geo.groups
    Cg = x.shape[1] // G
    dwT = np.zeros((G, Cg * math.prod(geo.kernel), O // G), dtype=grad_output.dtype)  # (G, Kg, Og)
    dy = grad_output.reshape(N, O, math.prod(geo.out_size))  # (N, O, P); explicit: N may be 0
    for chunk, cols in _unfold_chunks(x, geo, O):
        _grad_weight_cols(dy[chunk], cols, dwT, G)
    return dwT.transpose(0, 2, 1).reshape(O, Cg, *geo.kernel)  # (G, Og, Kg) → (O, Cg, *K)


def grad_weight_saved(grad_output: np.ndarray, columns: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """:func:`grad_weight` from the columns :func:`forward_saving` kept (no second unfold)."""
    N, O = grad_output.shape[:2]
    G = geo.groups
    Kg = columns.shape[0] * math.prod(geo.kernel) // G
    dwT = np.zeros((G, Kg, O // G), dtype=grad_output.dtype)  # (G, Kg, Og)
    _grad_weight_cols(grad_output.reshape(N, O, math.prod(geo.out_size)), columns, dwT, G)  # δ as (N, O, P)
    return dwT.transpose(0, 2, 1).reshape(O, Kg // math.prod(geo.kernel), *geo.kernel)  # (O, Cg, *K)
