"""Stride-1 3-D convolutions on the tiles: the volume's padded grid, forward and weight gradient.

``conv_tile`` only needs each tap's offset into a flat buffer. Number one image's padded volume
(Dp, Hp, Wp) slice by slice and row by row, rows Wq apart and slices Hq rows apart, and the output on the
same grid, q = (od·Hq + oh)·Wq + ow: tap (c, kd, kh, kw) of output q reads position q + off[t] with::

    off[t] = c·S + (kd·d_d·Hq + kh·d_h)·Wq + kw·d_w

so a 3-D stride-1 convolution is the 2-D grid's sum with one more term in the offsets. Wq is the padded
row less min(left, right) and Hq the padded slice less min(top, bottom) rows: the zeros after a row
are the next row's padding before it (a tap reads at most that far past its own row), which saves a
column a row and a row a slice of 3×3×3 'same' layers (the benchmark's 16³: a grid of 4,607 positions
against 5,148). The grid holds OD slices of Hq rows (the last only OH): rows oh >= OH of a slice and
columns ow >= OW are computed and never read, as in ``conv_rows``. The forward (``conv_rows.run``
hands 3-D geometries here) writes the valid positions to the output, no epilogue (the fused blocks are
2-D); the weight gradient copies δ channels-last for ``conv_lanes`` or (fewer channels than a
vector, or AVX2) lays it on the same grid, zero elsewhere, for ``conv_tile_grad`` (``conv_tiled``).
Strides stay with the unfolding algorithms (the phases of ``conv_rows`` are 2-D).

Measured on the conv benchmark's 3-D shape (8, 16, 16³ → 32, 3³), fp32, forward + all gradients,
against ``conv_gemm``'s pair: see docs/performance.md.
"""

from __future__ import annotations

import functools
import math
from functools import partial

import numpy as np
from numba import njit

from .conv_algorithm import ConvGeometry
from .conv_lanes import accumulate_lanes, add_columns, on_lanes, padded_offsets, transpose_into, untranspose_into
from .conv_lanes import summed as lane_sums
from .conv_lanes_forward import accumulate_forward, forward_operands
from .conv_tile import CHANNELS, accumulate, block
from .conv_tile_grad import accumulate_grad, summed
from .threads import parallel, ranges


def layout(geo: ConvGeometry, dtype: np.dtype) -> tuple[np.ndarray, int, int]:
    """(offs, S, L'): each tap's offset into an image's buffer, one padded volume's length S in it
    (its tail covers the last tile's reads), the grid's length rounded up to whole tiles; rows Wq and
    slices Hq rows apart (:func:`_plane`)."""
    (KD, KH, KW), (dd, dh, dw) = geo.kernel, geo.dilation
    (Dp, Hp, _), (OD, OH, _) = geo.padded_size, geo.out_size
    _, Hq, Wq = _plane(geo)
    step = block(dtype)
    L = ((OD - 1) * Hq + OH) * Wq
    rounded = -(-L // step) * step
    # the last position read, rounded − 1 + ((KD−1)·dd·Hq + (KH−1)·dh)·Wq + (KW−1)·dw, is below S (OD − 1 +
    # (KD−1)·dd = Dp − 1 and OH + (KH−1)·dh = Hp): the last slice's Hp − Hq shared rows are the tail's zeros
    S = (Dp * Hq + Hp - Hq) * Wq + (rounded - L) + (KW - 1) * dw
    return _offsets(geo.in_channels, KD, KH, KW, S, Hq, Wq, dd, dh, dw), S, rounded


@functools.lru_cache(maxsize=256)
def _offsets(C: int, KD: int, KH: int, KW: int, S: int, Hq: int, Wq: int, dd: int, dh: int, dw: int) -> np.ndarray:
    """Tap t = (c, kd, kh, kw)'s offset into the buffer, in the weight's order (read-only)."""
    c, kd, kh, kw = np.meshgrid(np.arange(C), np.arange(KD), np.arange(KH), np.arange(KW), indexing="ij")
    offs = (c * S + (kd * (dd * Hq) + kh * dh) * Wq + kw * dw).reshape(-1).astype(np.int64)
    offs.flags.writeable = False
    return offs


def _plane(geo: ConvGeometry) -> tuple[tuple[int, int, int], int, int]:
    """((pd, ph, pw), Hq, Wq): the padding before each axis, a slice's rows and a row's length in the
    buffer (:func:`_pitch`)."""
    (pd, _), (ph, _), (pw, _) = geo.pads
    return (pd, ph, pw), _pitch(geo, 1), _pitch(geo, 2)


def _pitch(geo: ConvGeometry, axis: int) -> int:
    """How far apart the buffer holds consecutive rows (axis 2) or slices (axis 1, in rows): the padded
    size less min(before, after) — the zeros after one row are the padding before the next, as a tap
    of an output reads at most min(before, after) cells past its own row, into the next one's padding
    before — where min(before, after) <= (K − 1)·d, which keeps the output's OW (OH) within the pitch;
    else the padded size (output rows would overlap on the grid)."""
    before, after = geo.pads[axis]
    k, d, size = geo.kernel[axis], geo.dilation[axis], geo.padded_size[axis]
    return size - min(before, after) if min(before, after) <= (k - 1) * d else size


@njit(cache=True, nogil=True)
def _fill(
    x: np.ndarray, n: int, pads: tuple[int, int, int], Hq: int, Wq: int, S: int, buffer: np.ndarray, check: bool
) -> bool:  # pragma: no cover - compiled
    """Image n of x (N, C, D, H, W) into its padded volumes in buffer (the rest stays zero); with
    ``check``, whether it held an infinity or a NaN (else False)."""
    C, D, H, W = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    pd, ph, pw = pads
    bad = False
    for c in range(C):
        for d in range(D):
            for h in range(H):
                dst, src = buffer[c * S + ((d + pd) * Hq + h + ph) * Wq + pw :], x[n, c, d, h]
                if check:
                    for j in range(W):
                        v = src[j]
                        bad |= (v - v) != 0.0  # NaN for an infinity or a NaN
                        dst[j] = v
                else:
                    for j in range(W):
                        dst[j] = src[j]
    return bad


@njit(cache=True, nogil=True)
def _forward_images(
    x: np.ndarray,
    w: np.ndarray,
    offs: np.ndarray,
    pads: tuple[int, int, int],
    Hq: int,
    Wq: int,
    S: int,
    L: int,
    bias: np.ndarray,
    n0: int,
    n1: int,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """out[n] (O, OD, OH, OW) for images n0..n1, + bias[o] (bias (O,), or length 0 for none); w (O, T),
    offs (T,) as ``conv_tile.accumulate`` takes them."""
    O, OD, OH, OW = out.shape[1], out.shape[2], out.shape[3], out.shape[4]
    buffer = np.zeros(x.shape[1] * S, dtype=x.dtype)
    acc = np.empty(((O + CHANNELS - 1) // CHANNELS * CHANNELS, L), dtype=x.dtype)
    for n in range(n0, n1):
        _fill(x, n, pads, Hq, Wq, S, buffer, False)
        accumulate(buffer, w, offs, acc)
        for o in range(O):
            for od in range(OD):
                for oh in range(OH):
                    src, dst = acc[o, (od * Hq + oh) * Wq :], out[n, o, od, oh]
                    if bias.shape[0]:
                        b = bias[o]
                        for j in range(OW):
                            dst[j] = src[j] + b
                    else:
                        for j in range(OW):
                            dst[j] = src[j]


def forward(
    x: np.ndarray, weight: np.ndarray, geo: ConvGeometry, threads: int | None = None, bias: np.ndarray | None = None
) -> np.ndarray:
    """y (N, O, OD, OH, OW) from x (N, C, D, H, W) *before* padding, + bias (O,) if given (as each
    value is stored: the bits of ``y += b``); stride 1, zero padding."""
    x = np.ascontiguousarray(x)
    N, O = x.shape[0], weight.shape[0]
    w = np.ascontiguousarray(weight, dtype=x.dtype).reshape(O, -1)  # (O, T)
    offs, S, L = layout(geo, x.dtype)
    pads, Hq, Wq = _plane(geo)
    out = np.empty((N, O, *geo.out_size), dtype=x.dtype)
    b = np.zeros(0, dtype=x.dtype) if bias is None else np.ascontiguousarray(bias, dtype=x.dtype)
    kernel = partial(_forward_images, x, w, offs, pads, Hq, Wq, S, L, b)
    parallel([partial(kernel, n0, n1, out) for n0, n1 in ranges(N, threads)])
    return out


@njit(cache=True, nogil=True)
def _lane_forward_volumes(
    x: np.ndarray,
    w: np.ndarray,
    offs: np.ndarray,
    pos: np.ndarray,
    pads: tuple[int, int, int],
    Hq: int,
    Wq: int,
    S: int,
    bias: np.ndarray,
    n0: int,
    n1: int,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """out[n] (O, P) for images n0..n1 with the channels in the lanes (``conv_lanes``)."""
    buffer = np.zeros(x.shape[1] * S, dtype=x.dtype)
    sums = np.empty((pos.shape[0], w.shape[1]), dtype=x.dtype)
    for n in range(n0, n1):
        _fill(x, n, pads, Hq, Wq, S, buffer, False)
        accumulate_forward(buffer, w, pos, offs, out.shape[2], sums)
        untranspose_into(sums, bias, out, n)


def forward_lanes(
    x: np.ndarray, weight: np.ndarray, geo: ConvGeometry, threads: int | None = None, bias: np.ndarray | None = None
) -> np.ndarray:
    """:func:`forward` with the output channels in the lanes (``conv_lanes_forward.accumulate_forward``):
    the same sums in the same order (the same bits), only at the output's positions."""
    x = np.ascontiguousarray(x)
    N, O = x.shape[0], weight.shape[0]
    offs, S, _ = layout(geo, x.dtype)
    pads, Hq, Wq = _plane(geo)
    w, b, pos = forward_operands(weight, bias, _positions(geo, Hq, Wq), x.dtype)
    out = np.empty((N, O, math.prod(geo.out_size)), dtype=x.dtype)
    kernel = partial(_lane_forward_volumes, x, w, offs, pos, pads, Hq, Wq, S, b)
    parallel([partial(kernel, n0, n1, out) for n0, n1 in ranges(N, threads)])
    return out.reshape(N, O, *geo.out_size)


def _positions(geo: ConvGeometry, Hq: int, Wq: int) -> np.ndarray:
    """Each output's index on the grid, (od·Hq + oh)·Wq + ow, in the output's order."""
    OD, OH, OW = geo.out_size
    od, oh, ow = np.meshgrid(np.arange(OD), np.arange(OH), np.arange(OW), indexing="ij")
    return ((od * Hq + oh) * Wq + ow).reshape(-1).astype(np.int64)


@njit(cache=True, nogil=True)
def _grad_images(
    x: np.ndarray,
    dy: np.ndarray,
    offs: np.ndarray,
    pads: tuple[int, int, int],
    Hq: int,
    Wq: int,
    S: int,
    L: int,
    n0: int,
    n1: int,
    part: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """part += the weight gradient's partial sums over images n0..n1; whether an input was not finite."""  # fmt: skip
    O, OD, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3], dy.shape[4]
    buffer = np.zeros(x.shape[1] * S, dtype=x.dtype)
    grid = np.zeros((O, L), dtype=x.dtype)  # rows oh >= OH, columns ow >= OW, the tail: stay zero
    bad = False
    for n in range(n0, n1):
        bad |= _fill(x, n, pads, Hq, Wq, S, buffer, True)
        for o in range(O):
            for od in range(OD):
                for oh in range(OH):
                    dst, src = grid[o, (od * Hq + oh) * Wq :], dy[n, o, od, oh]
                    for j in range(OW):
                        dst[j] = src[j]
        accumulate_grad(buffer, grid, offs, part)
    return bad


@njit(cache=True, nogil=True)
def _lane_volumes(
    x: np.ndarray,
    dy: np.ndarray,
    offs: np.ndarray,
    pos: np.ndarray,
    pads: tuple[int, int, int],
    Hq: int,
    Wq: int,
    S: int,
    taps: int,
    n0: int,
    n1: int,
    part: np.ndarray,
    bias: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """part (T', O') += the weight gradient's sums over images n0..n1 with the channels in the lanes
    (``conv_lanes``): δ (N, O, P) copied channels-last, pos (P,) each output's index on the grid;
    bias (O',) += δ's sums."""
    buffer = np.zeros(x.shape[1] * S, dtype=x.dtype)
    d = np.zeros((dy.shape[2], part.shape[1]), dtype=x.dtype)  # channels past O stay zero
    for n in range(n0, n1):
        _fill(x, n, pads, Hq, Wq, S, buffer, False)
        transpose_into(dy, n, d, 0)
        accumulate_lanes(buffer, d, pos, offs, taps, part)
        add_columns(d, d.shape[0], bias)


def grad_params(
    grad_output: np.ndarray, x: np.ndarray, geo: ConvGeometry, threads: int | None = None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(dW (O, C, KD, KH, KW), db (O,)) from δ (N, O, OD, OH, OW) and x (N, C, D, H, W) *before*
    padding: with the channels in the lanes (``conv_lanes.on_lanes``) both, exact for any input;
    else on ``conv_tile_grad``'s tiles dW or, if an input is not finite, None (the caller then takes
    the unfolded gradient), and db None (the caller sums δ)."""
    N, O = grad_output.shape[:2]
    offs, S, L = layout(geo, x.dtype)
    pads, Hq, Wq = _plane(geo)
    shape = (O, geo.in_channels, *geo.kernel)
    if on_lanes(O, x.dtype):
        flat = np.ascontiguousarray(grad_output, dtype=x.dtype).reshape(N, O, math.prod(geo.out_size))
        pos = _positions(geo, Hq, Wq)
        lanes = partial(_lane_volumes, x, flat, padded_offsets(offs), pos, pads, Hq, Wq, S, offs.shape[0])
        dw, db = lane_sums(lanes, N, O, offs.shape[0], x.dtype, threads)
        return dw.reshape(shape), db
    dy = np.ascontiguousarray(grad_output)
    images = partial(_grad_images, x, dy, offs, pads, Hq, Wq, S, L)
    tiles = summed(images, N, O, offs.shape[0], x.dtype, threads)
    return (None if tiles is None else tiles.reshape(shape)), None


def grad_weight(
    grad_output: np.ndarray, x: np.ndarray, geo: ConvGeometry, threads: int | None = None
) -> np.ndarray | None:
    """dW of :func:`grad_params` (None where it is None)."""
    return grad_params(grad_output, x, geo, threads)[0]
