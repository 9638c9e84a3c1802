"""The input gradient of a strided (or widely padded) 2-D convolution on the tiles, every stride
phase of an image in one pass.

Phase (rh, rw) of the padded input's gradient, dxp[:, :, A·s_h + rh, B·s_w + rw], receives from the
taps with kh·d_h = qh·s_h + rh (and kw·d_w = qw·s_w + rw) only::

    dxp_phase[n, c, A, B] = Σ_o Σ_{those taps} w[o, c, kh, kw] · δ[n, o, A − qh, B − qw]

a stride-1 correlation of δ with those taps reversed: their q step by d / gcd(d, s), so a phase's
taps are a dilated kernel (docs/convolution.md, §6). Each image's δ is copied once into a buffer
padded for every phase (zero border), each phase's taps are offsets into it (``conv_tile``'s form:
tap (o, mh, mw) of phase p at o·S + (mh·d'_h + Top − top_p)·Wq + mw·d'_w + Left − left_p), the tiles
fill one accumulator grid per phase, and the grids are written interleaved into dx's rows and
columns that are not padding (phase rows A0..A1, columns B0..B1) while the image is in cache. A
phase no tap reaches has gradient zero. With stride 1 and a padding wider than d·(K − 1) there is one
phase: the rotated-kernel rule with the rows of the padding cropped.

Measured on the conv benchmark's strided layer (16, 64, 56² → 64, 3×3, stride 2), fp32, 2 threads:
the input gradient in 7.5 ms as four separate phase convolutions (δ copied four times, each phase
written through a strided view of dx), 6.4 ms here, 10.5 ms unfolded (``conv_gemm``).
Letters as in ``conv_direct``; (Hd, Wq) the padded δ's plane.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import partial

import numpy as np
from numba import njit

from .conv_algorithm import ConvGeometry
from .conv_rows_kernels import fill
from .conv_tile import CHANNELS, accumulate, block
from .threads import parallel, ranges


def taps_of_phase(K: int, d: int, s: int, r: int) -> list[tuple[int, int]]:
    """(k, q) for the taps k whose offset k·d lies in stride phase r: k·d = q·s + r (q ascending)."""
    return [(k, (k * d - r) // s) for k in range(K) if (k * d) % s == r]


@dataclass(frozen=True)
class Plan:
    """What every image of one geometry shares: the phases that receive a gradient, their taps'
    offsets into the padded δ and where their grids go in dx."""

    kernel_rows: tuple[tuple[int, ...], ...]  # per phase: the kernel rows kh, in descending q
    kernel_columns: tuple[tuple[int, ...], ...]
    offs: np.ndarray  # (P, Tmax) int64: tap (o, mh, mw)'s offset, per phase (row p: its T_p first)
    taps: np.ndarray  # (P,) T_p = O · th · tw
    place: np.ndarray  # (P, 4): rows R_p, columns C_p, the first row h0 and column w0 in dx
    pads: tuple[int, int]  # (Top, Left): δ's place in its buffer
    Wq: int  # the buffer's row length
    S: int  # one channel's length in the buffer
    L: int  # each phase's grid length, rounded up to whole tiles


@functools.lru_cache(maxsize=128)
def plan(geo: ConvGeometry, dtype: np.dtype) -> Plan:
    """The :class:`Plan` of ``geo`` (2-D, zero padding) for arrays of ``dtype``."""
    (KH, KW), (sh, sw), (dh, dw) = geo.kernel, geo.stride, geo.dilation
    (ph, _), (pw, _) = geo.pads
    (H, W), (OH, OW), O = geo.in_size, geo.out_size, geo.out_channels
    phases = []
    for rh in range(sh):
        taps_h = taps_of_phase(KH, dh, sh, rh)
        A0, A1 = max(0, -(-(ph - rh) // sh)), -(-(ph + H - rh) // sh)  # the phase's rows inside the input
        for rw in range(sw):
            taps_w = taps_of_phase(KW, dw, sw, rw)
            B0, B1 = max(0, -(-(pw - rw) // sw)), -(-(pw + W - rw) // sw)
            if taps_h and taps_w and A1 > A0 and B1 > B0:
                phases.append((taps_h, taps_w, A0, A1, B0, B1, A0 * sh + rh - ph, B0 * sw + rw - pw))
    if not phases:
        return Plan(
            (), (), np.zeros((0, 0), np.int64), np.zeros(0, np.int64), np.zeros((0, 4), np.int64), (0, 0), 1, 1, 0
        )
    # output row r of phase p reads δ rows r + A0 − q (q of its taps): δ sits Top rows down its buffer
    Top = max(0, max(t[-1][1] - A0 for t, _, A0, *_ in phases))
    Left = max(0, max(t[-1][1] - B0 for _, t, _, _, B0, *_ in phases))
    Hd = max([Top + OH] + [A1 - A0 + Top + A0 - t[0][1] for t, _, A0, A1, *_ in phases])
    Wq = max([Left + OW] + [B1 - B0 + Left + B0 - t[0][1] for _, t, _, _, B0, B1, *_ in phases])
    step = block(dtype)
    L = -(-max(A1 - A0 for _, _, A0, A1, *_ in phases) * Wq // step) * step
    reach = max((Top + A0 - th[0][1]) * Wq + Left + B0 - tw[0][1] for th, tw, A0, _, B0, *_ in phases)
    S = max(Hd * Wq, L + reach)
    T = [O * len(th) * len(tw) for th, tw, *_ in phases]
    offs = np.zeros((len(phases), max(T)), dtype=np.int64)
    place = np.zeros((len(phases), 4), dtype=np.int64)
    for p, (th, tw, A0, A1, B0, B1, h0, w0) in enumerate(phases):
        # tap (o, mh, mw) is the mh-th of the taps in descending q: δ row r + A0 − q, buffer row + Top
        rows = np.array([Top + A0 - q for _, q in reversed(th)])
        columns = np.array([Left + B0 - q for _, q in reversed(tw)])
        o = np.arange(O)[:, None, None]
        offs[p, : T[p]] = (o * S + rows[None, :, None] * Wq + columns[None, None, :]).reshape(-1)
        place[p] = (A1 - A0, B1 - B0, h0, w0)
    kernel_rows = tuple(tuple(k for k, _ in reversed(th)) for th, *_ in phases)
    kernel_columns = tuple(tuple(k for k, _ in reversed(tw)) for _, tw, *_ in phases)
    for a in (offs, place):
        a.flags.writeable = False
    return Plan(kernel_rows, kernel_columns, offs, np.array(T, np.int64), place, (Top, Left), Wq, S, L)


def phase_weights(weight: np.ndarray, p: Plan) -> np.ndarray:
    """(P, C, Tmax): phase p's taps of the weight (O, C, KH, KW) as rows of (c; o, mh, mw), zero past T_p."""
    C = weight.shape[1]
    w = np.zeros((len(p.kernel_rows), C, p.offs.shape[1]), dtype=weight.dtype)
    for k, (rows, columns) in enumerate(zip(p.kernel_rows, p.kernel_columns, strict=True)):
        sub = weight[:, :, list(rows)][:, :, :, list(columns)]  # (O, C, th, tw)
        w[k, :, : p.taps[k]] = sub.transpose(1, 0, 2, 3).reshape(C, -1)
    return w


@njit(cache=True, nogil=True)
def _images(
    dy: np.ndarray,
    w: np.ndarray,
    offs: np.ndarray,
    taps: np.ndarray,
    place: np.ndarray,
    top: int,
    left: int,
    Wq: int,
    S: int,
    L: int,
    sh: int,
    sw: int,
    bias: np.ndarray,
    n0: int,
    n1: int,
    dx: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """dx[n0:n1] (N, C, H, W) from δ (N, O, OH, OW): each image's δ into its padded buffer once, every
    phase's tiles into its grid, the grids into dx's rows and columns (dx as it was where no phase
    writes), + bias[c] as each value is stored (bias (C,), or length 0 for none)."""
    C = dx.shape[1]
    P = w.shape[0]
    phases = np.zeros((1, 2), dtype=np.int64)  # fill's stride phases: stride 1, one
    buffer = np.zeros(dy.shape[1] * S, dtype=dy.dtype)  # border and tails stay zero
    acc = np.empty((P, (C + CHANNELS - 1) // CHANNELS * CHANNELS, L), dtype=dy.dtype)
    for n in range(n0, n1):
        fill(dy, n, phases, top, left, 1, 1, Wq, S, buffer, False)
        for p in range(P):
            accumulate(buffer, w[p], offs[p, : taps[p]], acc[p])
        for p in range(P):
            R, Cn, h0, w0 = place[p, 0], place[p, 1], place[p, 2], place[p, 3]
            for c in range(C):
                grid = acc[p, c]
                for r in range(R):
                    src = grid[r * Wq : r * Wq + Cn]
                    dst = dx[n, c, h0 + r * sh, w0 : w0 + sw * (Cn - 1) + 1 : sw]
                    if bias.shape[0]:
                        b = bias[c]  # (in the data's dtype: a float literal beside it would widen the sum)
                        for j in range(Cn):
                            dst[j] = src[j] + b
                    else:
                        for j in range(Cn):
                            dst[j] = src[j]


def grad_input(
    grad_output: np.ndarray, weight: np.ndarray, geo: ConvGeometry, threads: int | None, bias: np.ndarray | None = None
) -> np.ndarray:
    """dx (N, C, H, W) of a 2-D zero-padded convolution with any stride and padding (module
    docstring), the images split between ``threads`` threads (None: all of convprop's); + bias (C,)
    if given (a transposed convolution's), as each value is stored where the phases cover dx — the
    bits of ``dx += b`` — and after them where some phase is reached by no tap."""
    dy = np.ascontiguousarray(grad_output)
    N, C = dy.shape[0], weight.shape[1]
    p = plan(geo, dy.dtype)
    dx = np.zeros((N, C, *geo.in_size), dtype=dy.dtype)  # (a phase no tap reaches stays zero)
    covered = sum(int(R) * int(Cn) for R, Cn, _, _ in p.place) == geo.in_size[0] * geo.in_size[1]
    stored = bias if bias is not None and covered else None
    if len(p.kernel_rows):
        w = phase_weights(np.asarray(weight, dtype=dy.dtype), p)
        (sh, sw), (top, left) = geo.stride, p.pads
        b = np.zeros(0, dtype=dy.dtype) if stored is None else np.ascontiguousarray(stored, dtype=dy.dtype)
        kernel = partial(_images, dy, w, p.offs, p.taps, p.place, top, left, p.Wq, p.S, p.L, sh, sw, b)
        parallel([partial(kernel, n0, n1, dx) for n0, n1 in ranges(N, threads)])
    if bias is not None and stored is None:
        dx += bias.reshape(-1, 1, 1)  # (C, 1, 1)
    return dx
