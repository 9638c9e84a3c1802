"""2-D convolutions computed directly on the padded grid, a register-blocked tile at a time.

With stride 1, output (oh, ow) of channel o is, numbered on the padded grid (q = oh·Wp + ow, as in
``conv_flat``), a sum over the taps t = (c, kh, kw) at fixed offsets into the image's padded planes::

    y[o, q] = Σ_t w[o, c, kh, kw] · xp[c, q + kh·d_h·Wp + kw·d_w]

``conv_tile`` computes it for a tile of output channels × consecutive positions with the accumulators
in vector registers; this module lays out each image for it and applies the epilogue. Per image: the
planes are copied into a buffer whose border (the zero padding) and the tail after each plane stay
zero; the tiles fill an accumulator of (O rounded up to the tile's channels) rows of OH·Wp positions
rounded up to whole tiles; ``conv_rows_kernels.store`` writes the valid (oh, ow < OW) values to the output. Grid
columns ow >= OW and the positions past OH·Wp are computed and never read (as in ``conv_flat``).
No unfolded matrix is written, and the image, its accumulator and the weights stay in cache.

A stride s becomes stride 1 over the input's *stride phases*: phase (rh, rw) holds the padded input's
rows rh, rh + s_h, ... and columns rw, rw + s_w, ... (a plane of ⌈Hp/s_h⌉ × ⌈Wp/s_w⌉), and tap
(c, kh, kw) reads row oh + ⌊kh·d_h/s_h⌋ of phase kh·d_h mod s_h (columns alike). So the grid is a
phase plane's (q = oh·Wq + ow), each tap an offset into one phase, and only the phases some tap reads
are copied (one of four for a 1×1 kernel with stride 2). The earlier row-by-row pass had tried this
and lost (its passes over a phase's short rows carried a third of the taps each); the tiles take
every tap in one loop, and run resnet's and the benchmark's stride-2 layers in 0.17–0.76 of the
product's time (1×1 kernels aside: those stay a product).

Forward only, for passes that keep nothing (eval, or training under ``no_grad``), the fused inference
block (``functional.fused``), which applies bias, an eval-mode batch norm, ReLU and a 2×2 max-pool to
each image's accumulator while it is in cache (``conv_eval.uses_rows`` says where), and the training
pass of ``conv_tiled`` (stride 1). A batch's 3×3 stride-1 layers of enough channels run Winograd
F(2×2, 3×3) on the same tiles instead (``winograd_tiles``, :func:`uses_winograd`). The images are split
between ``threads.THREADS`` Python threads running compiled loops that release the GIL (training: the
calling thread only). The name is the
first form's: one pass over the grid per kernel row and output channel pair, with the accumulator row
in memory (40 GFLOP/s a core on an AVX-512 Xeon, where the tiles run at 140–170).

Letters as in ``conv_direct``; Hp, Wp the padded height and width, L = OH·Wq.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from . import conv_tile, conv_volume, winograd_tiles
from .compiled_jobs import publish_rows
from .conv_algorithm import ConvGeometry
from .conv_rows_kernels import images
from .conv_tile import block
from .geometry import Window
from .threads import ranges, split_compiled

# The epilogue applied per image (``functional.fused``): what ``out`` receives.
PLAIN, RELU, NORM, NORM_RELU, RELU_POOL = 0, 1, 2, 3, 4


def applies(geo: ConvGeometry) -> bool:
    """Dense, zero padding: 1-D or 2-D with any kernel size, stride and dilation; 3-D with stride 1
    (``conv_volume``)."""
    zero_padded = geo.padding_mode == "zeros" or all(p == (0, 0) for p in geo.pads)
    planar = geo.ndim in (1, 2) or (geo.ndim == 3 and geo.stride == (1, 1, 1))
    return planar and geo.groups == 1 and zero_padded


@functools.lru_cache(maxsize=256)
def as_2d(geo: ConvGeometry) -> ConvGeometry:
    """A 1-D geometry as the 2-D one of height 1 (arrays gain an axis of length 1 before the last);
    a 2-D one as it is."""
    if geo.ndim == 2:
        return geo
    w = geo.window
    window = Window(
        (1, *w.in_size), (1, *w.kernel), (1, *w.stride), (1, *w.dilation), ((0, 0), *w.pads), (1, *w.out_size)
    )
    return ConvGeometry(window, geo.groups, geo.in_channels, geo.out_channels, geo.padding_mode)


@functools.lru_cache(maxsize=256)
def _layout(geo: ConvGeometry, dtype: np.dtype, stack: int = 1) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """(offs, phases, Wq, S, L'): each tap's offset into the buffer, the stride phases the taps read
    (P, 2), a phase plane's width Wq and length S (its tail covers the last tile's reads), the grid's
    length rounded up to whole tiles. With ``stack`` B > 1, B images one under the other (image k's
    Hq rows of each phase plane after image k − 1's, ``conv_tiled.stack``): the grid
    ((B − 1)·Hq + OH)·Wq positions long."""
    (KH, KW), (dh, dw), (sh, sw) = geo.kernel, geo.dilation, geo.stride
    (Hp, Wp), (OH, _) = geo.padded_size, geo.out_size
    Hq, Wq = -(-Hp // sh), -(-Wp // sw)  # a phase plane: every sh-th row, every sw-th column
    step = block(dtype)
    L = ((stack - 1) * Hq + OH) * Wq
    rounded = -(-L // step) * step
    # reads reach (Hq − OH)·Wq + ⌊(KW−1)·dw/sw⌋ + rounded − 1 past the last image's plane
    S = stack * Hq * Wq + (rounded - L) + (KW - 1) * dw // sw
    offs, phases = _offsets(geo.in_channels, KH, KW, S, Wq, dh, dw, sh, sw)
    return offs, phases, Wq, S, rounded


@functools.lru_cache(maxsize=256)
def _offsets(
    C: int, KH: int, KW: int, S: int, Wq: int, dh: int, dw: int, sh: int, sw: int
) -> tuple[np.ndarray, np.ndarray]:
    """(offs, phases): tap t = (c, kh, kw)'s offset into the buffer, in the weight's (C, KH, KW) order,
    and the stride phases (rh, rw) the taps read, in buffer order (both read-only).

    Tap (c, kh, kw) reads padded row oh·sh + kh·dh, which is row oh + ⌊kh·dh/sh⌋ of phase kh·dh mod sh
    (columns alike): a stride-s convolution is a stride-1 one over the phase planes."""
    used = sorted({((kh * dh) % sh, (kw * dw) % sw) for kh in range(KH) for kw in range(KW)})
    index = {phase: k for k, phase in enumerate(used)}
    offs = np.empty(C * KH * KW, dtype=np.int64)
    t = 0
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                k = index[((kh * dh) % sh, (kw * dw) % sw)]
                offs[t] = (k * C + c) * S + (kh * dh // sh) * Wq + kw * dw // sw
                t += 1
    phases = np.array(used, dtype=np.int64).reshape(-1, 2)
    offs.flags.writeable = phases.flags.writeable = False
    return offs, phases


def run(
    x: np.ndarray,
    weight: np.ndarray,
    geo: ConvGeometry,
    mode: int = PLAIN,
    bias: np.ndarray | None = None,
    norm: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    threads: int | None = None,
    skip: np.ndarray | None = None,
) -> tuple[np.ndarray, bool]:
    """(out, saw_nan): the convolution of x (N, C, H, W) *before* padding (or (N, C, L) for a 1-D
    geometry: no pooling then; (N, C, D, H, W) for a 3-D one: no epilogue but the bias), with the epilogue ``mode``,
    the images split between ``threads`` threads (default ``threads.THREADS``).

    ``norm`` is (running mean, scale, shift) for NORM and NORM_RELU; ``bias`` (O,) or None. out is
    (N, O, OH, OW), or (N, O, OH // 2, OW // 2) for RELU_POOL; saw_nan only for RELU_POOL (then ``out``
    is not valid and the caller reruns the layers unfused). ``skip`` (N, O, OH, OW), 2-D and no pooling
    only: a residual block's shortcut, added after the batch norm and before ReLU."""
    if geo.ndim == 3:  # the volume's grid: no epilogue but the bias
        if mode != PLAIN or norm is not None or skip is not None:
            raise ValueError("conv_rows.run: a 3-D convolution takes no epilogue but a bias")
        return conv_volume.forward(x, weight, geo, threads, bias), False
    if geo.ndim == 1:  # as a 2-D convolution of height 1
        skip = None if skip is None else skip[:, :, None]
        out, saw_nan = run(x[:, :, None], weight[:, :, None], as_2d(geo), mode, bias, norm, threads, skip)
        return out[:, :, 0], saw_nan
    x = np.ascontiguousarray(x)
    shape = (x.shape[0], weight.shape[0], *geo.out_size)
    if skip is not None and (mode == RELU_POOL or skip.shape != shape or skip.dtype != x.dtype):
        raise ValueError(f"conv_rows.run: a shortcut of {skip.shape} {skip.dtype} for an output of {shape} {x.dtype}")
    return run_planned(plan(geo, x.dtype, mode, uses_winograd(geo, x.shape[0])), x, weight, bias, norm, threads, skip)


class Plan(NamedTuple):
    """What :func:`run` works out from the geometry, dtype and epilogue alone (``functional.fused``
    keeps it per layer and shape for single images, whose time is mostly such Python)."""

    offs: np.ndarray
    phases: np.ndarray
    pads: tuple[int, int]  # (top, left)
    stride: tuple[int, ...]
    Wq: int
    S: int
    L: int
    out_size: tuple[int, int]  # (OH, OW), pooled if ``pool``
    pool: bool
    normalise: bool
    relu: bool
    direct: Plan | None = None  # a Winograd plan's direct one (for inputs it must not take); else None


# Winograd F(2×2, 3×3) on the tiles (``winograd_tiles``) for a batch's 3×3 stride-1 layers. Per 2×2 tile
# of outputs it saves 20·C·O of the direct tiles' 36·C·O multiply-adds and pays transforms of C input
# planes and O output planes, so whether it wins goes with C·O / (C + O) (half the channels' harmonic
# mean): at least WINOGRAD_BALANCE[lanes], on maps of at least WINOGRAD_SIZE[lanes] a side.
# Measured against the direct tiles, fp32, C → O on maps of a side (ratios of the times):
# - 8 lanes (AVX2; AMD EPYC Zen 3, 4 December; one thread, 32 images): lenet's 16 → 32 on 14² with ReLU
#   and pool (balance 10.7) 0.82–0.85, 64 → 64 on 14² 0.65, 32 → 32 on 7² 0.85 (its 16 tiles a
#   product's row, no padding); 16 → 16 on 14² (8) 0.96–1.04, 8 → 8 on 28² (4) 1.21, one input channel
#   1.4–2.7 (the transforms cost as much as the products they save).
# - 16 lanes (AVX-512; AMD EPYC Zen 5, 4 December; two threads, 64 images): the direct tiles run at
#   the cores' multiply-add peak here (lenet's second layer: 236 GFLOP/s a thread) and Winograd's short
#   products (C taps) at half of it, so it needs twice the balance: on 14², 64 → 64 (32) 0.88, 64 → 128
#   (43) 0.82, 128 → 128 0.77, but 32 → 64 (21) 0.96, 64 → 32 1.00, 32 → 32 (16) 1.32, lenet's 16 → 32
#   1.15–1.17; on 28², 64 → 64 0.71, 32 → 64 0.89, 32 → 32 0.86–1.07; on 7² (a product's row of 16
#   tiles is one vector) 32 → 32 1.42–1.58, 64 → 64 1.07–1.13, 128 → 128 0.93–1.08.
WINOGRAD_BALANCE = {8: 10.0, 16: 24.0}
WINOGRAD_SIZE = {8: 7, 16: 14}


def _lanes() -> int:
    """float32 lanes of this CPU's vectors (``conv_tile.VECTOR_BYTES``): 16, 8 or (SSE, NEON) 4."""
    return conv_tile.VECTOR_BYTES // 4


def uses_winograd(geo: ConvGeometry, batch: int) -> bool:
    """Whether a pass of ``batch`` images takes Winograd's tiles: a 2-D 3×3 stride-1 undilated dense
    convolution of at least two images, whose channels' balance C·O / (C + O) and smaller map side reach
    :data:`WINOGRAD_BALANCE` and :data:`WINOGRAD_SIZE` for this CPU's vector width (narrower vectors than
    AVX2's take AVX2's: unmeasured)."""
    lanes = min(max(_lanes(), 8), 16)
    C, O = geo.in_channels, geo.out_channels
    balance, size = WINOGRAD_BALANCE[lanes], WINOGRAD_SIZE[lanes]
    return (
        batch >= 2 and geo.ndim == 2 and geo.kernel == (3, 3) and geo.stride == (1, 1) and geo.dilation == (1, 1)
        and geo.groups == 1 and balance <= C * O / (C + O) and min(geo.out_size) >= size
    )  # fmt: skip


@functools.lru_cache(maxsize=256)
def plan(geo: ConvGeometry, dtype: np.dtype, mode: int, winograd: bool = False) -> Plan:
    """The :class:`Plan` of a 2-D ``geo`` in ``dtype`` with the epilogue ``mode``; with ``winograd``
    (:func:`uses_winograd`), Winograd's layout, the direct plan kept for the inputs it declines."""
    (ph, _), (pw, _) = geo.pads
    OH, OW = geo.out_size
    pool = mode == RELU_POOL
    out_size = (OH // 2, OW // 2) if pool else (OH, OW)
    normalise, relu = mode in (NORM, NORM_RELU), mode in (RELU, NORM_RELU, RELU_POOL)
    if winograd:
        Wq, S, Tp = _winograd_layout(geo, dtype, pool)
        offs, phases = np.zeros(0, dtype=np.int64), np.zeros((0, 2), dtype=np.int64)  # (not read: its own)
        offs.flags.writeable = phases.flags.writeable = False
        return Plan(offs, phases, (ph, pw), geo.stride, Wq, S, Tp, out_size, pool, normalise, relu,
                    plan(geo, dtype, mode))  # fmt: skip
    offs, phases, Wq, S, L = _layout(geo, dtype)
    return Plan(offs, phases, (ph, pw), geo.stride, Wq, S, L, out_size, pool, normalise, relu)


def _winograd_layout(geo: ConvGeometry, dtype: np.dtype, pool: bool) -> tuple[int, int, int]:
    """(Wq, S, Tp) of ``winograd_tiles``: the padded planes' width and length (every tile's 4×4 rows
    and the input's rows and columns inside), a product's row per image (TH·TW tiles rounded up to a
    whole number of vectors)."""
    (ph, _), (pw, _) = geo.pads
    (H, W), (OH, OW) = geo.in_size, geo.out_size
    TH, TW = (OH // 2, OW // 2) if pool else (-(-OH // 2), -(-OW // 2))
    Wq = max(2 * TW + 2, pw + W)
    S = max(2 * TH + 2, ph + H) * Wq
    step = block(dtype)
    return Wq, S, -(-(TH * TW) // step) * step


def run_planned(
    p: Plan,
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    norm: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    threads: int | None = None,
    skip: np.ndarray | None = None,
) -> tuple[np.ndarray, bool]:
    """:func:`run` of a 2-D convolution from its plan: x (N, C, H, W) C-contiguous, as the plan's;
    ``skip``, if given, of the output's shape and dtype. A Winograd plan whose pass declines the
    images (an infinity or a NaN among them, or a NaN in a pooled window) runs its direct plan."""
    O = weight.shape[0]
    if p.direct is not None:
        u = winograd_tiles.kernels(np.ascontiguousarray(weight), np.zeros((), dtype=x.dtype)[()])
        out, declined = _run_images(p, x, u, O, bias, norm, threads, skip)
        if not declined:
            return out, False
        p = p.direct
    return _run_images(p, x, np.ascontiguousarray(weight).reshape(O, -1), O, bias, norm, threads, skip)


def _run_images(
    p: Plan,
    x: np.ndarray,
    w: np.ndarray,
    O: int,
    bias: np.ndarray | None,
    norm: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    threads: int | None,
    skip: np.ndarray | None,
) -> tuple[np.ndarray, bool]:
    """``conv_rows_kernels.images`` on every thread's range of x with the plan's layout: w (O, T), T =
    C·KH·KW, or Winograd's (16·O, C)."""
    N = x.shape[0]
    epilogue = np.zeros((4, O), dtype=x.dtype)  # bias, mean, scale, shift: zeros where unused
    if bias is not None:
        epilogue[0] = bias
    if norm is not None:
        epilogue[1], epilogue[2], epilogue[3] = norm
    out = np.empty((N, O, *p.out_size), dtype=x.dtype)
    residual = skip is not None
    skip = np.ascontiguousarray(skip) if skip is not None else np.zeros((1, 1, 1, 1), dtype=x.dtype)
    (ph, pw), (sh, sw) = p.pads, p.stride
    args = (
        x,
        w,
        p.offs,
        p.phases,
        ph,
        pw,
        sh,
        sw,
        p.Wq,
        p.S,
        p.L,
        p.pool,
        p.normalise,
        p.relu,
        epilogue,
        residual,
        skip,
    )
    parts = ranges(N, threads)
    if len(parts) == 1:  # (no handoff: a few µs of a single image's pass)
        return out, bool(images(*args, 0, N, out))
    # per range of images, whether its pool saw a NaN; the other ranges as compiled jobs (no GIL handoff)
    return out, any(split_compiled(images, publish_rows, args, parts, out))


def forward(x: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """y (N, O, OH, OW) from x (N, C, H, W) before padding, no bias."""
    return run(x, weight, geo)[0]
