"""Stride-1 2-D convolutions computed directly on the padded grid, one kernel row per pass.

With stride 1 and no dilation, output (oh, ow) of channel o is, numbered on the padded grid
(q = oh·Wp + ow, as in ``conv_flat``)::

    y[o, q] = Σ_c Σ_kh Σ_kw w[o, c, kh, kw] · xp[c, q + kh·Wp + kw]

so for each (o, c, kh) the contribution of one kernel row is a pass over the image's grid that reads
the padded plane c at three (KW) fixed offsets: ``acc[q] += w0·r[q] + w1·r[q+1] + w2·r[q+2]`` with
``r`` the plane from row kh on. No unfolded matrix is written; the accumulator row (OH·Wp values) and
the image stay in the first-level cache, and the compiler vectorises the pass over q. Grid columns
ow >= OW are computed and not read (as in ``conv_flat``); the pass runs over L rounded up to a
multiple of ``BLOCK`` (the positions past L are such columns too), so the vector loop has no scalar
remainder, and reads into a tail of zeros after each plane of the image's buffer. Multiply-adds are
fused (``fastmath`` "contract" only). Both measured 2 December on an AVX-512 Xeon, against the
unrounded, unfused passes: 0.83–0.89 of the time (lenet's layers, batch 1 and 64).

Why a pass per kernel *row*: with all KH·KW taps in one pass the compiler needs KH·KW runtime alias
checks between the accumulator and the shifted reads, more than it will emit, and leaves the loop
scalar (7 GFLOP/s against 50–65 for the row pass, one core). One row is one offset plus KW constants.

Measured forward alone (fp32, batch 1,000, 2 threads, 2 December): 72–85 GFLOP/s for resnet's and
lenet's small layers (1–16 input channels, 14×14 and 28×28 maps), 1.3–3.7× faster than the grid's
unfold + sgemm; 7×7 maps (rows of 9) run at half that and stay with the product. ``conv.uses_rows``
holds the rule. The images are split between ``threads.THREADS`` Python threads running
compiled loops that release the GIL, as in ``conv_direct_compiled``.

Tried and not kept (2 December): four output channels per pass instead of two — 0.88–0.93 of the
pair's time on 28×28 maps, 1.01–1.03 on 14×14 (batch 64 and 1,000), too little for a third kernel;
stride 2, through the input split into its four stride phases (each
a stride-1 problem with 1–2 taps per kernel row): 0.91–1.0 of the product's time at best and 1.3–4.7×
slower on 14×14 inputs — the phases' rows are half as long and carry a third of the taps. And the
training pass: the forward here and the input gradient as the adjoint convolution (δ padded by K − 1 − p,
the kernel rotated 180° with its channel axes exchanged) ran a lone layer's forward + backward in
0.51–0.98 of ``conv_gemm``'s time, but whole training steps at batch 32 were 12–18% *slower* for lenet
and 0–6% faster for resnet (the weight gradient must then unfold the input again, and the kernel's
threads start right after BLAS's, whose threads are still spinning), so training keeps ``conv_gemm``.

Forward only: for passes that keep nothing (eval, or training under ``no_grad``) and the fused
inference block (``functional.fused``), which applies bias, an eval-mode batch norm, ReLU and a 2×2
max-pool to each image's accumulator while it is in cache. Zero padding is written into a per-thread
buffer whose border is zeroed once, so the padded batch is never written.

Letters as in ``conv_direct``; Hp, Wp the padded height and width, L = OH·Wp.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from numba import njit

from .conv_algorithm import ConvGeometry
from .threads import parallel, ranges

PAIRS = True
KERNEL_WIDTHS = (3, 5)  # the widths with a written-out pass; others go through the product
# Multiply-adds may be fused (one rounding instead of two; nothing else is assumed about NaN or inf).
CONTRACT = {"contract"}
# Each pass runs over the accumulator row rounded up to a whole number of this many positions, so
# the vectorised loop has no scalar remainder (the extra positions are grid columns never read).
BLOCK = 16

# The epilogue applied per image (``functional.fused``): what ``out`` receives.
PLAIN, RELU, NORM, NORM_RELU, RELU_POOL = 0, 1, 2, 3, 4


def applies(geo: ConvGeometry) -> bool:
    """Dense 2-D, stride 1, no dilation, zero padding, kernel width 3 or 5."""
    return (
        geo.ndim == 2
        and geo.groups == 1
        and geo.stride == (1, 1)
        and geo.dilation == (1, 1)
        and geo.kernel[1] in KERNEL_WIDTHS
        and (geo.padding_mode == "zeros" or all(p == (0, 0) for p in geo.pads))
    )


@njit(cache=True, nogil=True, fastmath=CONTRACT)
def _pass3(r: np.ndarray, w: np.ndarray, acc: np.ndarray, end: int) -> None:  # pragma: no cover - compiled
    """acc[q] += w[0]·r[q] + w[1]·r[q + 1] + w[2]·r[q + 2] for q < end."""
    w0, w1, w2 = w[0], w[1], w[2]
    for q in range(end):
        acc[q] += w0 * r[q] + w1 * r[q + 1] + w2 * r[q + 2]


@njit(cache=True, nogil=True, fastmath=CONTRACT)
def _pass5(r: np.ndarray, w: np.ndarray, acc: np.ndarray, end: int) -> None:  # pragma: no cover - compiled
    """acc[q] += Σ_{k<5} w[k]·r[q + k] for q < end."""
    w0, w1, w2, w3, w4 = w[0], w[1], w[2], w[3], w[4]
    for q in range(end):
        acc[q] += w0 * r[q] + w1 * r[q + 1] + w2 * r[q + 2] + w3 * r[q + 3] + w4 * r[q + 4]


@njit(cache=True, nogil=True, fastmath=CONTRACT)
def _pass3_pair(
    r: np.ndarray, u: np.ndarray, v: np.ndarray, a: np.ndarray, b: np.ndarray, end: int
) -> None:  # pragma: no cover - compiled
    """:func:`_pass3` for two output channels at once (weights u and v into a and b): each read of
    the input row serves six multiply-adds instead of three."""
    u0, u1, u2, v0, v1, v2 = u[0], u[1], u[2], v[0], v[1], v[2]
    for q in range(end):
        r0, r1, r2 = r[q], r[q + 1], r[q + 2]
        a[q] += u0 * r0 + u1 * r1 + u2 * r2
        b[q] += v0 * r0 + v1 * r1 + v2 * r2


@njit(cache=True, nogil=True, fastmath=CONTRACT)
def _accumulate(planes: np.ndarray, w: np.ndarray, Wp: int, acc: np.ndarray) -> None:  # pragma: no cover
    """acc (O, L') = the image's output on the grid, L' = L rounded up to a multiple of ``BLOCK``:
    planes (C, Hp·Wp + tail) padded, each plane followed by at least L' − L + KW − 1 zeros."""
    O, C, KH, KW = w.shape
    end = acc.shape[1]
    o0 = 0
    if KW == 3 and PAIRS:
        for o0 in range(0, O - 1, 2):
            a, b = acc[o0], acc[o0 + 1]
            a[:] = 0.0
            b[:] = 0.0
            for c in range(C):
                plane = planes[c]
                for kh in range(KH):
                    _pass3_pair(plane[kh * Wp :], w[o0, c, kh], w[o0 + 1, c, kh], a, b, end)
        o0 = O - O % 2
    for o in range(o0, O):
        a = acc[o]
        a[:] = 0.0
        for c in range(C):
            plane = planes[c]
            for kh in range(KH):
                r = plane[kh * Wp :]
                if KW == 3:
                    _pass3(r, w[o, c, kh], a, end)
                else:
                    _pass5(r, w[o, c, kh], a, end)


@njit(cache=True, nogil=True)
def _store(
    acc: np.ndarray,
    Wp: int,
    pool: bool,
    normalise: bool,
    relu: bool,
    epilogue: np.ndarray,
    out: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """out (O, OH, OW), or (O, OH/2, OW/2) if ``pool``, from the grid acc (O, L); ``epilogue`` (4, O)
    holds the bias, mean, scale and shift.

    The arithmetic of the unfused layers in their order: y + bias, then ((y − mean)·scale + shift) for
    an eval-mode batch norm (``norm_compiled.normalise``), ReLU with ``np.maximum(·, 0)``'s rule (NaN
    kept), a 2×2 max of the ReLU'd taps (``pool``: ReLU and no batch norm). Returns whether the pool
    saw a NaN (the caller then reruns)."""
    O = out.shape[0]
    saw_nan = False
    for o in range(O):
        b, mu, k, sh = epilogue[0, o], epilogue[1, o], epilogue[2, o], epilogue[3, o]
        a = acc[o]
        if pool:
            PH, PW = out.shape[1], out.shape[2]
            for p in range(PH):
                top, bottom = a[2 * p * Wp :], a[(2 * p + 1) * Wp :]
                for j in range(PW):
                    t0, t1 = top[2 * j] + b, top[2 * j + 1] + b
                    t2, t3 = bottom[2 * j] + b, bottom[2 * j + 1] + b
                    saw_nan |= (t0 != t0) | (t1 != t1) | (t2 != t2) | (t3 != t3)
                    best = t0 if t0 > t1 else t1
                    best = best if best > t2 else t2
                    best = best if best > t3 else t3
                    out[o, p, j] = best if best > 0.0 else 0.0
            continue
        OH, OW = out.shape[1], out.shape[2]
        for r in range(OH):
            src, dst = a[r * Wp :], out[o, r]
            for c in range(OW):
                v = src[c] + b
                if normalise:
                    v = (v - mu) * k + sh
                if relu:
                    v = v if (v > 0.0 or v != v) else 0.0
                dst[c] = v
    return saw_nan


@njit(cache=True, nogil=True)
def _images(
    x: np.ndarray,
    w: np.ndarray,
    ph: int,
    pw: int,
    Hp: int,
    Wp: int,
    OH: int,
    pool: bool,
    normalise: bool,
    relu: bool,
    epilogue: np.ndarray,
    n0: int,
    n1: int,
    out: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """Images n0..n1 of x (N, C, H, W), zero-padded by (ph, pw) into a buffer, into out[n0:n1]."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    O, KW = w.shape[0], w.shape[3]
    L = OH * Wp
    rounded = (L + BLOCK - 1) // BLOCK * BLOCK
    # the border and each plane's tail stay zero: only the interior is written (also without padding,
    # since the rounded passes read up to rounded − L + KW − 1 values past the plane)
    buffer = np.zeros((C, Hp * Wp + rounded - L + KW), dtype=x.dtype)
    acc = np.empty((O, rounded), dtype=x.dtype)
    saw_nan = False
    for n in range(n0, n1):
        for c in range(C):
            for h in range(H):
                dst, src = buffer[c, (h + ph) * Wp + pw :], x[n, c, h]
                for j in range(W):
                    dst[j] = src[j]
        _accumulate(buffer, w, Wp, acc)
        saw_nan |= _store(acc, Wp, pool, normalise, relu, epilogue, out[n])
    return saw_nan


def run(
    x: np.ndarray,
    weight: np.ndarray,
    geo: ConvGeometry,
    mode: int = PLAIN,
    bias: np.ndarray | None = None,
    norm: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, bool]:
    """(out, saw_nan): the convolution of x (N, C, H, W) *before* padding, with the epilogue ``mode``.

    ``norm`` is (running mean, scale, shift) for NORM and NORM_RELU; ``bias`` (O,) or None. out is
    (N, O, OH, OW), or (N, O, OH // 2, OW // 2) for RELU_POOL; saw_nan only for RELU_POOL (then ``out``
    is not valid and the caller reruns the layers unfused)."""
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(weight)
    N, O = x.shape[0], w.shape[0]
    (ph, _), (pw, _) = geo.pads
    Hp, Wp = geo.padded_size
    OH, OW = geo.out_size
    epilogue = np.zeros((4, O), dtype=x.dtype)  # bias, mean, scale, shift: zeros where unused
    if bias is not None:
        epilogue[0] = bias
    if norm is not None:
        epilogue[1:] = norm
    shape = (N, O, OH // 2, OW // 2) if mode == RELU_POOL else (N, O, OH, OW)
    out = np.empty(shape, dtype=x.dtype)
    flags: list[bool] = []  # per range of images: whether its pool saw a NaN
    pool, normalise, relu = mode == RELU_POOL, mode in (NORM, NORM_RELU), mode in (RELU, NORM_RELU, RELU_POOL)
    kernel = partial(_images, x, w, ph, pw, Hp, Wp, OH, pool, normalise, relu, epilogue)

    def images(n0: int, n1: int) -> None:
        flags.append(kernel(n0, n1, out))

    parallel([partial(images, n0, n1) for n0, n1 in ranges(N)])
    return out, any(flags)


def forward(x: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """y (N, O, OH, OW) from x (N, C, H, W) before padding, no bias."""
    return run(x, weight, geo)[0]
