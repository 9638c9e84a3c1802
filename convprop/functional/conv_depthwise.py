"""Depthwise convolution (one input channel per group, ``Cg == 1``) as compiled loops, a plane at a time.

With one input channel per group there is no sum over channels, so im2col's matrix products
degenerate to (Og, KH·KW)·(KH·KW, P) — tiny, and dominated by the unfold. Here the index formulas
of ``conv_direct`` are written out as ``numba`` loops instead:

    y[n, o, i, j]   = Σ_{kh, kw} w[o, 0, kh, kw] · xp[n, c(o), i·s_h + kh·d_h, j·s_w + kw·d_w]
    dxp[n, c, i·s_h + kh·d_h, j·s_w + kw·d_w] += Σ_{o in group(c)} w[o, 0, kh, kw] · δ[n, o, i, j]
    dw[o, 0, kh, kw] = Σ_{n, i, j} δ[n, o, i, j] · xp[n, c(o), i·s_h + kh·d_h, j·s_w + kw·d_w]

with c(o) = o // Og the input channel that output channel o reads (Og = O / groups output channels
per group, the "depth multiplier"), xp the zero-padded input and dxp its gradient.

The work is memory-bound (about two multiply-adds per byte at 3×3), so everything is arranged to
read each array once: per image and input channel, the plane is copied into a zero-bordered buffer
the size of the padded plane (the padding is never materialised for the whole batch, and the
layer keeps the input as it came: :func:`forward_unpadded`); the one backward pass
(:func:`backward_unpadded`) reads δ and the input plane once and produces, while they are in cache,
the input gradient's plane, the weight gradient's sums and the bias gradient's. With stride 1 every
loop runs along the padded grid (q = i·Wp + j, as ``conv_flat``): one long vectorised loop per tap,
``acc[q] += w_t · xp[q + off_t]``, the columns j >= OW computed and dropped (forward) or zero
(δ laid on the grid, for the gradients). A zero at such a column times an infinite input (weight
gradient) or weight (input gradient) would invent a NaN, so a plane or weight that is not finite
takes row-by-row loops over the valid columns instead. Strides run row by row.

Sums may be reordered (``fastmath`` with "reassoc" only: NaN and inf still behave); the weight and
bias gradients add each plane's sum in float64. The images are split between ``threads.THREADS``
threads (the loops release the GIL), one set of partial sums each. 1-D convolutions run as 2-D ones
of height 1; 3-D ones are refused (``supports`` says why; ``auto`` never picks these kernels for them).
Letters as in ``conv_direct``; Hp, Wp the padded height and width.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from numba import njit

from .conv_algorithm import ConvGeometry
from .conv_rows import as_2d
from .threads import parallel, ranges

# Only let sums be reordered (so they vectorise): no assumptions about NaN or inf, unlike fastmath=True.
REASSOCIATE = {"reassoc", "contract"}


def supports(geo: ConvGeometry) -> str | None:
    """1-D or 2-D, one input channel per group (``weight.shape[1] == 1``): what these kernels compute."""
    if geo.ndim not in (1, 2):
        return f"the depthwise kernels are compiled for 1-D and 2-D convolutions, this one has {geo.ndim} spatial axes"
    if geo.in_channels != geo.groups:
        return (
            f"the depthwise kernels need one input channel per group (groups == in_channels), "
            f"got in_channels={geo.in_channels}, groups={geo.groups}"
        )
    return None


@njit(cache=True, nogil=True)
def _plane(src: np.ndarray, ph: int, pw: int, Wp: int, dst: np.ndarray, check: bool) -> bool:  # pragma: no cover
    """dst[(r + ph)·Wp + pw + j] = src[r, j] (the border cells are never written); with ``check``,
    whether src held an infinity or a NaN."""
    H, W = src.shape
    bad = False
    for r in range(H):
        row, base = src[r], (r + ph) * Wp + pw
        to = dst[base : base + W]  # (views, not flat indices: numba checks a computed index for
        if check:  # wraparound, and that loop does not vectorise, 4-5× slower measured)
            for j in range(W):
                v = row[j]
                bad |= (v - v) != 0.0  # NaN for an infinity or a NaN
                to[j] = v
        else:
            for j in range(W):
                to[j] = row[j]
    return bad


@njit(cache=True, nogil=True, fastmath=REASSOCIATE)
def _forward(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray,
    ph: int,
    pw: int,
    Hp: int,
    Wp: int,
    sh: int,
    sw: int,
    dh: int,
    dw: int,
    n0: int,
    n1: int,
    y: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """y[n0:n1] (N, O, OH, OW) = the convolution of x (N, C, H, W) zero-padded by (ph, pw) at the
    top and left to (Hp, Wp), plus bias (O,)."""
    C = x.shape[1]
    O, OH, OW = y.shape[1], y.shape[2], y.shape[3]
    KH, KW = w.shape[2], w.shape[3]
    Og = O // C
    unit = sh == 1 and sw == 1
    plane = np.zeros(Hp * Wp + (KW - 1) * dw, dtype=x.dtype)  # the tail: the last grid row's reads
    L = OH * Wp if unit else OW
    acc = np.empty(L, dtype=x.dtype)
    for n in range(n0, n1):
        for c in range(C):
            _plane(x[n, c], ph, pw, Wp, plane, False)
            for o in range(c * Og, (c + 1) * Og):
                b = bias[o]
                out = y[n, o]
                if unit:  # the grid: one loop of OH·Wp positions per tap (three per loop when KW = 3)
                    acc[:] = 0.0
                    for kh in range(KH):
                        if KW == 3:
                            w0, w1, w2 = w[o, 0, kh, 0], w[o, 0, kh, 1], w[o, 0, kh, 2]
                            off = kh * dh * Wp
                            s0, s1, s2 = plane[off : off + L], plane[off + dw : off + dw + L], plane[off + 2 * dw :]
                            for q in range(L):
                                acc[q] += w0 * s0[q] + w1 * s1[q] + w2 * s2[q]
                            continue
                        for kw in range(KW):
                            wt, off = w[o, 0, kh, kw], kh * dh * Wp + kw * dw
                            src = plane[off : off + L]
                            for q in range(L):
                                acc[q] += wt * src[q]
                    for i in range(OH):
                        row, to = acc[i * Wp : i * Wp + OW], out[i]
                        for j in range(OW):
                            to[j] = row[j] + b
                    continue
                for i in range(OH):
                    acc[:] = 0.0
                    for kh in range(KH):
                        for kw in range(KW):
                            wt, base = w[o, 0, kh, kw], (i * sh + kh * dh) * Wp + kw * dw
                            src = plane[base : base + sw * (OW - 1) + 1 : sw]
                            for j in range(OW):
                                acc[j] += wt * src[j]
                    to = out[i]
                    for j in range(OW):
                        to[j] = acc[j] + b


@njit(cache=True, nogil=True, fastmath=REASSOCIATE)
def _backward(
    x: np.ndarray,
    dy: np.ndarray,
    w: np.ndarray,
    ph: int,
    pw: int,
    Hp: int,
    Wp: int,
    sh: int,
    sw: int,
    dh: int,
    dw: int,
    finite_weight: bool,
    want_input: bool,
    want_params: bool,
    padded_input: bool,
    n0: int,
    n1: int,
    dx: np.ndarray,
    gw: np.ndarray,
    gb: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """For images n0..n1 of δ (N, O, OH, OW) and x (N, C, H, W) zero-padded by (ph, pw) to (Hp, Wp):
    with ``want_input``, dx[n0:n1] — (N, C, H, W), or the padded (N, C, Hp, Wp) if ``padded_input``;
    with ``want_params``, gw (O, KH·KW) += the weight gradient's sums and gb (O,) += the bias
    gradient's, both float64 (this range's own arrays)."""
    O, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
    KH, KW = w.shape[2], w.shape[3]
    C = dx.shape[1] if want_input else x.shape[1]
    Og = O // C
    grid_form = sh == 1 and sw == 1
    P, L = Hp * Wp, OH * Wp
    M = (KH - 1) * dh * Wp + (KW - 1) * dw  # the largest tap offset
    plane = np.zeros(P + (KW - 1) * dw, dtype=dy.dtype)  # x's plane, zero border (and tail)
    dplane = np.zeros(P, dtype=dy.dtype)  # dx's padded plane
    # δ on the grid behind M zeros: spread[M + q] = δ[i, j] at q = i·Wp + j; columns j >= OW and the
    # rest stay zero, so dxp[p] = Σ_t w_t · spread[M + p − off_t] is a gather along the padded plane
    spread = np.zeros(M + P, dtype=dy.dtype)
    grid = spread[M : M + L]
    for n in range(n0, n1):
        for c in range(C):
            bad = _plane(x[n, c], ph, pw, Wp, plane, True) if want_params else False
            if want_input:
                dplane[:] = 0.0
            for o in range(c * Og, (c + 1) * Og):
                d = dy[n, o]
                if grid_form:
                    for i in range(OH):
                        row, to = d[i], grid[i * Wp : i * Wp + OW]
                        for j in range(OW):
                            to[j] = row[j]
                if want_params:  # (along the grid where there is one: one long loop, not OH short ones)
                    total = dy.dtype.type(0)
                    if grid_form:
                        for q in range(L):
                            total += grid[q]
                    else:
                        for i in range(OH):
                            row = d[i]
                            for j in range(OW):
                                total += row[j]
                    gb[o] += total
                if want_params and grid_form and not bad:  # dot products along the grid, a kernel row at a time
                    for kh in range(KH):
                        off = kh * dh * Wp
                        for kw in range(0, KW - 2, 3):
                            a = off + kw * dw
                            s0, s1, s2 = plane[a : a + L], plane[a + dw : a + dw + L], plane[a + 2 * dw :]
                            t0 = t1 = t2 = dy.dtype.type(0)
                            for q in range(L):
                                g = grid[q]
                                t0 += g * s0[q]
                                t1 += g * s1[q]
                                t2 += g * s2[q]
                            gw[o, kh * KW + kw] += t0
                            gw[o, kh * KW + kw + 1] += t1
                            gw[o, kh * KW + kw + 2] += t2
                        for kw in range(KW - KW % 3, KW):
                            a, total = off + kw * dw, dy.dtype.type(0)
                            src = plane[a : a + L]
                            for q in range(L):
                                total += grid[q] * src[q]
                            gw[o, kh * KW + kw] += total
                elif want_params:  # row by row over the valid columns (a stride, or an input not finite)
                    for kh in range(KH):
                        for kw in range(KW):
                            total = dy.dtype.type(0)
                            for i in range(OH):
                                row, base = d[i], (i * sh + kh * dh) * Wp + kw * dw
                                src = plane[base : base + sw * (OW - 1) + 1 : sw]
                                for j in range(OW):
                                    total += row[j] * src[j]
                            gw[o, kh * KW + kw] += total
                if want_input and grid_form and finite_weight:  # the gather, a kernel row at a time
                    for kh in range(KH):
                        off = M - kh * dh * Wp
                        for kw in range(0, KW - 2, 3):
                            a = off - kw * dw
                            w0, w1, w2 = w[o, 0, kh, kw], w[o, 0, kh, kw + 1], w[o, 0, kh, kw + 2]
                            s0, s1, s2 = spread[a:], spread[a - dw :], spread[a - 2 * dw :]  # (P values read)
                            for p in range(P):
                                dplane[p] += w0 * s0[p] + w1 * s1[p] + w2 * s2[p]
                        for kw in range(KW - KW % 3, KW):
                            wt, a = w[o, 0, kh, kw], off - kw * dw
                            src = spread[a : a + P]
                            for p in range(P):
                                dplane[p] += wt * src[p]
                elif want_input:  # row by row (a stride, or a weight not finite)
                    for i in range(OH):
                        row = d[i]
                        for kh in range(KH):
                            for kw in range(KW):
                                wt, base = w[o, 0, kh, kw], (i * sh + kh * dh) * Wp + kw * dw
                                to = dplane[base : base + sw * (OW - 1) + 1 : sw]
                                for j in range(OW):
                                    to[j] += wt * row[j]
            if want_input:
                H, W = dx.shape[2], dx.shape[3]
                top, left = (0, 0) if padded_input else (ph, pw)
                for r in range(H):
                    out, base = dx[n, c, r], (r + top) * Wp + left
                    src = dplane[base : base + W]
                    for j in range(W):
                        out[j] = src[j]


def _geometry2d(geo: ConvGeometry) -> tuple[int, int, int, int, int, int, int, int]:
    """(ph, pw, Hp, Wp, sh, sw, dh, dw) of a 2-D geometry: the top and left padding, the padded plane,
    stride and dilation."""
    (ph, _), (pw, _) = geo.pads
    (Hp, Wp), (sh, sw), (dh, dw) = geo.padded_size, geo.stride, geo.dilation
    return ph, pw, Hp, Wp, sh, sw, dh, dw


def forward_unpadded(
    x: np.ndarray, weight: np.ndarray, geo: ConvGeometry, bias: np.ndarray | None = None
) -> np.ndarray:
    """y (N, O, *out_size) + bias from x (N, C, *in_size) *before* zero padding, the images split
    between threads."""
    return _run_forward(x, weight, geo, bias, False)


def _run_forward(
    x: np.ndarray, weight: np.ndarray, geo: ConvGeometry, bias: np.ndarray | None, padded_input: bool
) -> np.ndarray:
    """y (N, O, *out_size) + bias from x before zero padding, or (``padded_input``) padded already."""
    if geo.ndim == 1:  # as a 2-D convolution of height 1
        return _run_forward(x[:, :, None], weight[:, :, None], as_2d(geo), bias, padded_input)[:, :, 0]
    x = np.ascontiguousarray(x)
    O = weight.shape[0]
    y = np.empty((x.shape[0], O, *geo.out_size), dtype=x.dtype)
    b = np.zeros(O, dtype=x.dtype) if bias is None else np.ascontiguousarray(bias, dtype=x.dtype)
    ph, pw, Hp, Wp, sh, sw, dh, dw = _geometry2d(geo)
    if padded_input:
        ph = pw = 0
    kernel = partial(_forward, x, np.ascontiguousarray(weight), b, ph, pw, Hp, Wp, sh, sw, dh, dw)
    parallel([partial(kernel, n0, n1, y) for n0, n1 in ranges(x.shape[0])])
    return y


def backward_unpadded(
    grad_output: np.ndarray, x: np.ndarray, weight: np.ndarray, geo: ConvGeometry, want_input: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(dx (N, C, *in_size) or None, dw (O, 1, *kernel), db (O,)) from δ and x *before* zero padding,
    in one pass over both (module docstring)."""
    if geo.ndim == 1:  # as a 2-D convolution of height 1
        dy, x2, w2 = grad_output[:, :, None], x[:, :, None], weight[:, :, None]
        dx, dw, db = backward_unpadded(dy, x2, w2, as_2d(geo), want_input)
        return (None if dx is None else dx[:, :, 0]), dw[:, :, 0], db
    dx, gw, gb = _run_backward(grad_output, x, weight, geo, want_input, True, False)
    O = weight.shape[0]
    return dx, gw.astype(grad_output.dtype).reshape(O, 1, *geo.kernel), gb.astype(grad_output.dtype)


def _run_backward(
    grad_output: np.ndarray,
    x: np.ndarray | None,
    weight: np.ndarray,
    geo: ConvGeometry,
    want_input: bool,
    want_params: bool,
    padded_input: bool,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(dx or None, float64 gw (O, KH·KW), float64 gb (O,)) of a 2-D geometry, the images split between
    threads (each range its own sums, added here). ``x`` is padded to ``geo.padded_size`` already if
    ``padded_input`` (then dx is the padded input's gradient), else before padding."""
    dy = np.ascontiguousarray(grad_output)
    w = np.ascontiguousarray(weight)
    N, O = dy.shape[:2]
    C = geo.in_channels
    ph, pw, Hp, Wp, sh, sw, dh, dw = _geometry2d(geo)
    if padded_input:
        ph = pw = 0
    size = (Hp, Wp) if padded_input else geo.in_size
    xs = np.ascontiguousarray(x) if want_params and x is not None else np.zeros((N, C, 0, 0), dtype=dy.dtype)
    dx = np.empty((N, C, *size), dtype=dy.dtype) if want_input else np.zeros((N, C, 0, 0), dtype=dy.dtype)
    parts = ranges(N)
    gw = np.zeros((len(parts), O, w.shape[2] * w.shape[3]), dtype=np.float64)
    gb = np.zeros((len(parts), O), dtype=np.float64)
    finite = bool(np.isfinite(w).all())
    kernel = partial(
        _backward, xs, dy, w, ph, pw, Hp, Wp, sh, sw, dh, dw, finite, want_input, want_params, padded_input
    )
    parallel([partial(kernel, n0, n1, dx, gw[k], gb[k]) for k, (n0, n1) in enumerate(parts)])
    return (dx if want_input else None), gw.sum(axis=0), gb.sum(axis=0)


# --- the ConvAlgorithm protocol: arrays padded already (conv_transpose, and padding modes other than zeros)


def forward(x: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """y (N, O, *out_size) from the padded x (no bias)."""
    return _run_forward(x, weight, geo, None, True)


def grad_input(grad_output: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """The gradient of the padded input (N, C, *padded_size)."""
    if geo.ndim == 1:
        return grad_input(grad_output[:, :, None], weight[:, :, None], as_2d(geo))[:, :, 0]
    dx = _run_backward(grad_output, None, weight, geo, True, False, True)[0]
    assert dx is not None
    return dx


def grad_weight(grad_output: np.ndarray, x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """dw (O, 1, *kernel) from δ and the padded x."""
    if geo.ndim == 1:
        return grad_weight(grad_output[:, :, None], x[:, :, None], as_2d(geo))[:, :, 0]
    shape = (grad_output.shape[1], 1, *geo.kernel)  # (the weight's values are not read)
    gw = _run_backward(grad_output, x, np.zeros(shape, x.dtype), geo, False, True, True)[1]
    return gw.astype(grad_output.dtype).reshape(shape)
