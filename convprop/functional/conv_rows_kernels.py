"""The compiled loops of ``conv_rows``: an image into its padded stride phases (:func:`fill`), the
tiles' accumulator into the output with the fused epilogue (:func:`store`; :func:`store_tiles` from
Winograd's tiles, with the same per-value arithmetic), and both around
``conv_tile.accumulate`` for a range of images (:func:`images`). The layout they work on, and why,
is ``conv_rows``' docstring; letters as there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from . import winograd_tiles
from .conv_tile import CHANNELS, VECTOR_BYTES, accumulate
from .row_vectors import MASKED, copy_row, finished_row, flat_or_empty, pool_tail, pooled_row, split_row
from .winograd_tiles import TAPS, transform_input, transform_output


@njit(cache=True, nogil=True)
def store(
    acc: np.ndarray,
    Wp: int,
    pool: bool,
    normalise: bool,
    relu: bool,
    epilogue: np.ndarray,
    residual: bool,
    skip: np.ndarray,
    out: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """out (O, OH, OW), or (O, OH/2, OW/2) if ``pool``, from the grid acc (O, L); ``epilogue`` (4, O)
    holds the bias, mean, scale and shift; ``skip`` (O, OH, OW) a residual block's shortcut, added if
    ``residual``.

    The arithmetic of the unfused layers in their order: y + bias, then ((y − mean)·scale + shift) for
    an eval-mode batch norm (``norm_compiled.normalise``), + skip (``nn.Residual``), ReLU with
    ``np.maximum(·, 0)``'s rule (NaN kept), a 2×2 max of the ReLU'd taps (``pool``: ReLU and no batch
    norm nor residual; a vector of pooled outputs at a time, ``row_vectors.pooled_row`` — two pooled
    rows a vector where a row is at most half of one — acc holding ``row_vectors.pool_tail`` rows past
    its last for those reads; with AVX-512 only, ``row_vectors.MASKED``). Returns whether the pool saw a
    NaN (the caller then reruns)."""
    O = out.shape[0]
    saw_nan = False
    lanes = VECTOR_BYTES // acc.itemsize
    grid = acc.reshape(acc.size)
    flat = flat_or_empty(out)  # (empty: out is a strided view)
    shortcut = flat_or_empty(skip) if residual else flat  # (read only with ``residual``)
    for o in range(O):
        b, mu, k, sh = epilogue[0, o], epilogue[1, o], epilogue[2, o], epilogue[3, o]
        a = acc[o]
        if pool:
            PH, PW = out.shape[1], out.shape[2]
            if MASKED and flat.size > 0:  # a vector of pooled outputs at a time (masked stores)
                row, p = o * acc.shape[1], 0
                while p < PH:
                    first = (o * PH + p) * PW
                    start = row + 2 * p * Wp
                    if lanes >= 2 * PW and p + 1 < PH:  # two pooled rows, half a vector each
                        saw_nan |= pooled_row(grid, start, 2 * Wp, Wp, b, flat, first, PW, first + PW, PW)
                        p += 2
                        continue
                    for j in range(0, PW, lanes):
                        saw_nan |= pooled_row(
                            grid, start + 2 * j, lanes, Wp, b, flat, first + j, min(lanes, PW - j), 0, 0
                        )
                    p += 1
                continue
            for p in range(PH):
                top, bottom = a[2 * p * Wp :], a[(2 * p + 1) * Wp :]
                for j in range(PW):
                    out[o, p, j], nan = _pooled(top[2 * j], top[2 * j + 1], bottom[2 * j], bottom[2 * j + 1], b)
                    saw_nan |= nan
            continue
        OH, OW = out.shape[1], out.shape[2]
        if MASKED and flat.size > 0 and (not residual or shortcut.size > 0):  # a vector of a row at a time
            for r in range(OH):
                first, start = (o * OH + r) * OW, o * acc.shape[1] + r * Wp
                for c in range(0, OW, lanes):
                    finished_row(grid, start + c, shortcut, flat, first + c, min(lanes, OW - c), b, mu, k, sh,
                                 normalise, residual, relu)  # fmt: skip
            continue
        for r in range(OH):
            src, dst = a[r * Wp :], out[o, r]
            for c in range(OW):
                dst[c] = _finished(src[c] + b, mu, k, sh, normalise, residual, skip, o, r, c, relu)
    return saw_nan


@njit(inline="always")
def _pooled(y0: float, y1: float, y2: float, y3: float, b: float) -> tuple[float, bool]:  # pragma: no cover
    """A 2×2 window's pooled value (+ bias, the max, ReLU) and whether it saw a NaN (:func:`store`)."""
    t0, t1, t2, t3 = y0 + b, y1 + b, y2 + b, y3 + b
    best = t0 if t0 > t1 else t1
    best = best if best > t2 else t2
    best = best if best > t3 else t3
    return (best if best > 0.0 else 0.0), (t0 != t0) | (t1 != t1) | (t2 != t2) | (t3 != t3)


@njit(inline="always")
def _finished(
    v: float,
    mu: float,
    k: float,
    sh: float,
    normalise: bool,
    residual: bool,
    skip: np.ndarray,
    o: int,
    r: int,
    c: int,
    relu: bool,
) -> float:  # pragma: no cover - compiled
    """Output (o, r, c), its bias added, through the batch norm, the shortcut skip[o, r, c] and ReLU
    (:func:`store`), in the data's dtype."""
    if normalise:
        v = (v - mu) * k + sh
    if residual:
        v = v + skip[o, r, c]
    if relu:
        v = v if (v > 0.0 or v != v) else 0.0
    return v


@njit(cache=True, nogil=True)
def store_tiles(
    Y: np.ndarray,
    TW: int,
    pool: bool,
    normalise: bool,
    relu: bool,
    epilogue: np.ndarray,
    residual: bool,
    skip: np.ndarray,
    out: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """:func:`store` from Winograd's tile outputs Y (4, O', T'), Y[2i + j, o, th·TW + tw] the output at
    (2·th + i, 2·tw + j) (``winograd_tiles.transform_output``): pooled, window t is tile t."""
    O = out.shape[0]
    saw_nan = False
    for o in range(O):
        b, mu, k, sh = epilogue[0, o], epilogue[1, o], epilogue[2, o], epilogue[3, o]
        if pool:
            y0, y1, y2, y3 = Y[0, o], Y[1, o], Y[2, o], Y[3, o]
            for p in range(out.shape[1]):
                dst, first = out[o, p], p * TW
                for j in range(out.shape[2]):
                    t = first + j
                    dst[j], nan = _pooled(y0[t], y1[t], y2[t], y3[t], b)
                    saw_nan |= nan
            continue
        for r in range(out.shape[1]):
            i = r % 2  # row r is row i of the tiles th = r // 2: its columns 2tw + j from Y[2i + j]
            even, odd, first = Y[2 * i, o], Y[2 * i + 1, o], (r // 2) * TW
            dst = out[o, r]
            for c in range(out.shape[2]):
                y = even[first + c // 2] if c % 2 == 0 else odd[first + c // 2]
                dst[c] = _finished(y + b, mu, k, sh, normalise, residual, skip, o, r, c, relu)
    return saw_nan


@njit(inline="always")
def is_own_buffer(
    x: np.ndarray, phases: np.ndarray, ph: int, pw: int, sh: int, sw: int, Wq: int, S: int
) -> bool:  # pragma: no cover - compiled
    """Whether an image of x (N, C, H, W), C-contiguous, is already its buffer as :func:`fill` would lay
    it out: one phase at stride 1, no padding, planes of exactly H·W values (no tail: a 1×1 kernel, or
    a KH × 1 column of taps, on a grid of whole vectors) — then the tiles read x itself."""
    one = phases.shape[0] == 1 and sh == 1 and sw == 1 and ph == 0 and pw == 0
    return one and Wq == x.shape[3] and x.shape[2] * x.shape[3] == S


@njit(cache=True, nogil=True)
def fill(
    x: np.ndarray,
    n: int,
    phases: np.ndarray,
    ph: int,
    pw: int,
    sh: int,
    sw: int,
    Wq: int,
    S: int,
    buffer: np.ndarray,
    check: bool,
) -> bool:  # pragma: no cover - compiled
    """Image n of x (N, C, H, W), zero-padded by (ph, pw), into its stride phases in buffer: plane
    (k·C + c) holds xp[c, r·sh + rh, j·sw + rw] at r·Wq + j for phase k = (rh, rw), S values a plane
    (the padding's cells are never written: they stay as the caller zeroed them). With ``check``,
    returns whether the image held an infinity or a NaN (else False).

    Each input row is read once, contiguously, and written into every phase its columns go to. (The
    earlier loop, phase by phase over strided views of the rows with the check inside, did not
    vectorise: for the strided benchmark layer's 16 images of 64 × 56² it took 9.6–20.9 ms checked
    and 4.1 unchecked on an AMD EPYC, this one 3.6 and 2.0, then with the divisions out of the row
    loop 1.5, then with unsigned flat indices (below) 1.47 checked and 1.49 unchecked; mnist-2's
    64 images 0.33 → 0.30 ms checked, 0.22 → 0.17 unchecked.)"""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    image = x[n].reshape(C * H * W)  # (x is C-contiguous)
    if MASKED and sh == 1 and sw == 1:
        return _fill_plain(image, C, H, W, ph, pw, Wq, S, buffer, check)
    index = np.full((sh, sw), -1, dtype=np.int64)  # the phase of (rh, rw), −1 where no tap reads it
    for k in range(phases.shape[0]):
        index[phases[k, 0], phases[k, 1]] = k
    # per column phase rw, the columns j that hold input (not padding): w = j·sw + rw − pw in [0, W);
    # worked out once (a division by a stride known only at run time costs tens of cycles: per row,
    # it had cost more than copying a 14-wide row)
    first, count = np.empty(sw, dtype=np.int64), np.empty(sw, dtype=np.int64)
    for rw in range(sw):
        first[rw] = max(0, (pw - rw + sw - 1) // sw)
        count[rw] = (W - 1 + pw - rw) // sw + 1 - first[rw]
    # Flat indices, unsigned: numba checks a signed index for wraparound (which kept such loops
    # scalar), not an unsigned one, and no view is made per row (views had cost more than a short
    # row's copy). Every index here is >= 0 by construction. (All of an index's terms are uint64:
    # numba makes a float of uint64 + int64.)
    step = np.uint64(sw)
    lanes = VECTOR_BYTES // buffer.itemsize
    bad = False
    for c in range(C):
        r, rh = ph // sh, ph % sh  # input row h is row r of the phases of rh
        for h in range(H):
            row = np.uint64((c * H + h) * W)
            if check:
                bad |= _non_finite(image, row, np.uint64(W))
            if MASKED and sw == 2:  # both column phases from two vectors of the row (``row_vectors.split_row``)
                a = pw % 2  # the phase of the even input columns (w + pw even), the odd ones' is 1 − a
                ka, kb = index[rh, a], index[rh, 1 - a]
                na, nb = (W + 1) // 2 if ka >= 0 else 0, W // 2 if kb >= 0 else 0
                da, db = (ka * C + c) * S + r * Wq + pw // 2, (kb * C + c) * S + r * Wq + (pw + 1) // 2
                for w0 in range(0, W, 2 * lanes):
                    h0 = w0 // 2
                    split_row(image, int(row) + w0, min(2 * lanes, W - w0), buffer, da + h0,
                              min(lanes, na - h0), db + h0, min(lanes, nb - h0))  # fmt: skip
            else:
                for rw in range(sw):
                    k = index[rh, rw]
                    j0, m = first[rw], count[rw]
                    if k < 0 or m <= 0:
                        continue
                    dst = np.uint64((k * C + c) * S + r * Wq + j0)
                    src = row + np.uint64(j0 * sw + rw - pw)
                    if sw == 1:
                        for j in range(np.uint64(m)):
                            buffer[dst + j] = image[src + j]
                    else:
                        for j in range(np.uint64(m)):
                            buffer[dst + j] = image[src + j * step]
            rh += 1
            if rh == sh:
                r, rh = r + 1, 0
    return bad


@njit(inline="always")
def _non_finite(image: np.ndarray, start: Any, count: Any) -> bool:  # pragma: no cover - compiled
    """Whether image[start : start + count] holds an infinity or a NaN (v − v is NaN for both); the
    indices int or uint64 (fill's, which keep its loops free of wraparound checks)."""
    bad = False
    for j in range(count):
        v = image[start + j]
        bad |= (v - v) != 0.0
    return bad


@njit(cache=True, nogil=True)
def _fill_plain(
    image: np.ndarray, C: int, H: int, W: int, ph: int, pw: int, Wq: int, S: int, buffer: np.ndarray, check: bool
) -> bool:  # pragma: no cover - compiled
    """:func:`fill` of one stride-1 image (flat, (C·H·W,)): each row a vector at a time, masked
    (``row_vectors.copy_row``). No per-call arrays: lenet's second layer's images of 16 × 14² took
    1.1–1.8 µs an image through the strided phases' loop (its three small arrays an image, its rows
    through the scalar remainder of a 64-value vector loop), 0.6–0.7 here (AMD EPYC Zen 5)."""
    lanes = VECTOR_BYTES // buffer.itemsize
    bad = False
    for c in range(C):
        for h in range(H):
            src, dst = (c * H + h) * W, c * S + (h + ph) * Wq + pw
            if check:
                bad |= _non_finite(image, src, W)
            for j in range(0, W, lanes):
                copy_row(image, src + j, buffer, dst + j, min(lanes, W - j))
    return bad


@njit(cache=True, nogil=True)
def images(
    x: np.ndarray,
    w: np.ndarray,
    offs: np.ndarray,
    phases: np.ndarray,
    ph: int,
    pw: int,
    sh: int,
    sw: int,
    Wq: int,
    S: int,
    L: int,
    pool: bool,
    normalise: bool,
    relu: bool,
    epilogue: np.ndarray,
    residual: bool,
    skip: np.ndarray,
    n0: int,
    n1: int,
    out: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """Images n0..n1 of x (N, C, H, W), zero-padded by (ph, pw) and split into the stride phases
    ``phases`` (P, 2) as :func:`fill` lays them out, into out[n0:n1]. w (O, T) and offs (T,) as ``conv_tile.accumulate``
    takes them; L the grid's length rounded up to whole tiles. Stride 1: one phase, the padded planes.
    With ``residual``, ``skip`` (out's shape) is a residual block's shortcut to add (:func:`store`);
    else one unread value.

    A w of (16·O, C) — not O rows — is a 3×3 kernel's Winograd transform (``winograd_tiles.kernels``):
    then :func:`winograd` runs, with its True meaning "run these images on the direct tiles"."""
    if w.shape[0] != out.shape[1]:
        return winograd(x, w, ph, pw, Wq, S, L, pool, normalise, relu, epilogue, residual, skip, n0, n1, out)
    own = is_own_buffer(x, phases, ph, pw, sh, sw, Wq, S)
    buffer = np.zeros(0 if own else phases.shape[0] * x.shape[1] * S, dtype=x.dtype)  # border, tails: 0
    rows = (w.shape[0] + CHANNELS - 1) // CHANNELS * CHANNELS  # whole tiles
    acc = np.empty((rows + pool_tail(L, x.itemsize), L), dtype=x.dtype)
    acc[rows:] = 0.0  # (the pooled vectors' reads past the last row)
    saw_nan = False
    for n in range(n0, n1):
        if own:  # the image is its own buffer (no copy)
            accumulate(x[n].reshape(x.shape[1] * S), w, offs, acc)
        else:
            fill(x, n, phases, ph, pw, sh, sw, Wq, S, buffer, False)
            accumulate(buffer, w, offs, acc)
        saw_nan |= store(acc, Wq, pool, normalise, relu, epilogue, residual, skip[n if residual else 0], out[n])
    return saw_nan


@njit(cache=True, nogil=True)
def winograd(
    x: np.ndarray,
    u: np.ndarray,
    ph: int,
    pw: int,
    Wq: int,
    S: int,
    Tp: int,
    pool: bool,
    normalise: bool,
    relu: bool,
    epilogue: np.ndarray,
    residual: bool,
    skip: np.ndarray,
    n0: int,
    n1: int,
    out: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """Images n0..n1 of x by Winograd F(2×2, 3×3) (``winograd_tiles``' docstring): u (16·O, C) the
    transformed kernels, the padded planes S values long, Wq wide, each product's row Tp long. True
    (out not complete) if an image held an infinity or a NaN, or a pooled window saw a NaN: the caller
    then runs the direct tiles."""
    C, O = x.shape[1], out.shape[1]
    TH, TW = (out.shape[2], out.shape[3]) if pool else ((out.shape[2] + 1) // 2, (out.shape[3] + 1) // 2)
    rows = (O + CHANNELS - 1) // CHANNELS * CHANNELS
    taps = np.arange(C) * Tp  # a product's taps: the input channels' rows of V
    K = winograd_tiles.block_of(C, Tp, x.itemsize)  # (V's blocks: C rows and room for the last one's spill)
    phases = np.zeros((1, 2), dtype=np.int64)
    # the padding stays 0, and a tail the last tiles' junk lanes read
    buffer = np.zeros(C * S + winograd_tiles.tail_of(x.itemsize), dtype=x.dtype)
    V = np.zeros(TAPS * K, dtype=x.dtype)
    M = np.empty((TAPS, rows, Tp), dtype=x.dtype)
    Y = np.empty((4, rows, Tp), dtype=x.dtype)
    for n in range(n0, n1):
        if fill(x, n, phases, ph, pw, 1, 1, Wq, S, buffer, True):
            return True
        transform_input(buffer, C, Wq, S, TH, TW, Tp, K, V)
        for k in range(TAPS):
            accumulate(V[k * K :], u[k * O : (k + 1) * O], taps, M[k])
        transform_output(M, O, TH * TW, Y)
        if store_tiles(Y, TW, pool, normalise, relu, epilogue, residual, skip[n if residual else 0], out[n]):
            return True
    return False
