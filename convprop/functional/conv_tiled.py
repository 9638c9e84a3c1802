"""The training pass on tiles: forward, input gradient and weight gradient of a convolution with no
unfolded matrix.

For stride 1 the input gradient is itself a stride-1 convolution (docs/convolution.md, §2: "rotate the
filter 180° and full-convolve")::

    dx[n, c, i, j] = Σ_o Σ_{kh, kw} δp[n, o, i + kh·d_h, j + kw·d_w] · w[o, c, KH−1−kh, KW−1−kw]

with δ zero-padded by d·(K−1) − p on each side (p the forward's padding on that side, so the result
has the input's own size: its padding is already cropped). With a stride, or a padding wider than
d·(K−1), each stride phase of the input's gradient is such a convolution with some of the taps
(``conv_phases``). The forward (through ``conv_rows``' stride phases) and these gradients run on
``conv_rows``' tiles (the weight rotated and its two channel axes exchanged for the gradient; for a
batch's 3×3 stride-1 layer of enough channels, Winograd's: ``conv_rows.uses_winograd``; with AVX-512,
where enough channels fill the lanes and the grid has enough junk columns, ``conv_lanes``' forward:
:func:`forward_on_lanes`), and the weight gradient on ``conv_lanes``' tiles (with AVX-512 and a
vector of output channels or more: dW and db in one pass, exact for any input) or ``conv_tile_grad``'s,
from the input as the layer got it (the context keeps no padded copy: each image is padded as it is
copied; small images stacked, :func:`stack`); where ``conv_tile_grad``'s input holds an infinity or a
NaN, the weight gradient is the unfolding algorithm's (``conv_gemm``, or ``conv_im2col`` for one
input channel), as is the input gradient of a layer with at most half as many input channels as a
tile has outputs (and of a 3-D layer padded wider than d·(K−1): the phases are 2-D).

1-D layers run as 2-D ones of height 1, 3-D ones (stride 1) on ``conv_volume``'s grid. All three passes
run on the calling thread (``THREADS``), a pass of ``SPLIT_MACS`` multiply-adds or more on both — and,
where BLAS is held to one thread (``threads.held``: inside a model's training pass, no BLAS thread
spinning), a pass of ``HELD_SPLIT_MACS`` or more. The figures below are from before that scope.
Measured on whole training epochs (lenet and resnet on mnist-5k, batch 32, fp32, AVX-512 Xeon,
2 December), as time ratios against ``conv_gemm``'s path: resnet 0.67–0.72, lenet 0.97–0.99; with two
threads for every tile pass 0.71–0.82 and 1.0–1.02 — the linear layers' BLAS threads spin after each
product and take the second core — and inside ``threads.blas_single_threaded`` (no spinning, products
on one thread) 0.66 and 0.95 of a slower baseline, slower in all. Where the geometry has no such form
— a mode other than zeros, a 1×1 kernel (but at stride 1 with AVX-512: :data:`POINTWISE_ON_TILES`),
a strided 3-D layer — or the algorithm is not ``auto``'s unfolding one, the layer keeps its
algorithm (:func:`for_training`).
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
from numba import njit

from . import conv_gemm, conv_im2col, conv_phases, conv_rows, conv_volume, threads
from .conv_algorithm import ConvAlgorithm, ConvGeometry
from .conv_lanes import accumulate_lanes, add_columns, on_lanes, padded_offsets, transpose_into, untranspose_into
from .conv_lanes import summed as lane_sums
from .conv_lanes_forward import accumulate_forward, forward_operands
from .conv_resolve import _resolve
from .conv_rows import as_2d
from .conv_rows_kernels import fill, is_own_buffer
from .conv_tile import CHANNELS, VECTOR_BYTES
from .conv_tile_grad import accumulate_grad, summed
from .geometry import crop, pad
from .threads import ranges

# The weight gradient stacks small images into one tall grid of at least this many positions (each
# tile's sums leave the registers once a stack): resnet's 32 → 32 layer on 7×7 maps (81 positions an
# image) took 0.49 ms stacked by 4 against 0.67 unfolded (one image at a time had been 1.9× slower
# than unfolded); 512 and 1024 positions measured alike or slower, 2048 1.5× slower (batch 32)
STACK_POSITIONS = 256
STACK_BYTES = 1 << 20  # ... and at most this much input and δ a stack (half the L2 of these cores)
THREADS = 1  # the tile passes of a small layer's training step on the calling thread (module docstring)
# ... and from this many multiply-adds a pass, on all of ``threads.THREADS``: the benchmark's 32 → 64 on
# 14×14 at batch 64 (230 M) and CIFAR's 64 → 128 (2.4 G) ran 1.2–1.3× slower on one thread than
# conv_gemm's two; lenet's and resnet's layers at batch 32 (14–29 M) gain from the one
SPLIT_MACS = 1 << 26
# ... and with BLAS held to one thread (threads.held), from this many: about 0.1 ms of one thread's
# work, several handoffs' cost (chosen, not tuned: lenet's and resnet's layers at batch 32 are 1.8–29 M,
# resnet's first layer, 1.8 M, alone below it)
HELD_SPLIT_MACS = 1 << 21


def pass_threads(macs: int) -> int | None:
    """The threads of one tile pass of ``macs`` multiply-adds: 1, or (None) all of convprop's."""
    if macs >= SPLIT_MACS or (threads.held() and macs >= HELD_SPLIT_MACS):
        return None
    return THREADS


class Tiled:
    """A ``ConvAlgorithm`` for the training pass: forward, input gradient and weight gradient on
    tiles, with ``unfolding`` (the algorithm ``auto`` chose) where a tile would not pay or not be
    exact (module docstring). Its arrays are as the protocol's."""

    def __init__(self, unfolding: ConvAlgorithm) -> None:
        self.unfolding = unfolding

    def supports(self, geometry: ConvGeometry) -> str | None:
        if applies(geometry):
            return None
        return (
            "tiles train zero-padded 1-D and 2-D convolutions (3-D with stride 1) with kernels larger than 1"
            " (or, with AVX-512, 1 and stride 1)"
        )

    def forward(self, x: np.ndarray, weight: np.ndarray, geometry: ConvGeometry) -> np.ndarray:
        """y from the *padded* x (the protocol's form; a layer calls :func:`forward_unpadded`)."""
        return forward_unpadded(crop(x, geometry.in_size, geometry.pads), weight, geometry)

    def grad_input_unpadded(
        self, grad_output: np.ndarray, weight: np.ndarray, geometry: ConvGeometry, bias: np.ndarray | None = None
    ) -> np.ndarray:
        """dx (N, C, *in_size), + ``bias`` (C,) if given (a transposed convolution's forward: added as
        each value is stored, the bits of ``dx += b``). Stride 1: δ padded by d·(K−1) − p per side,
        convolved with the rotated kernel; a stride (or a padding wider than d·(K−1)): each stride
        phase of the padded input's gradient its own stride-1 convolution of δ (``conv_phases``).
        With at most half as many input channels as a tile has output channels (a first layer's one),
        most of each tile would be padding: the unfolding algorithm's gradient then, cropped."""
        if geometry.ndim == 1:  # as a 2-D convolution of height 1
            dx = self.grad_input_unpadded(grad_output[:, :, None], weight[:, :, None], as_2d(geometry), bias)
            return dx[:, :, 0]
        # (measured: 6 input channels of a tile's 8 took 0.76 of the fallback's time, 4 of 8 1.04)
        adjoint = adjoint_on_tiles(geometry)
        if 2 * weight.shape[1] <= CHANNELS or (not adjoint and geometry.ndim == 3):
            with threads.blas_released():  # a product: on BLAS's own threads, as an unfolding layer's
                dxp = self.unfolding.grad_input(grad_output, weight, geometry)
            dx = crop(dxp, geometry.in_size, geometry.pads).copy()
            if bias is not None:
                dx += bias.reshape(-1, *(1,) * geometry.ndim)  # (C, 1, ..., 1)
            return dx
        if not adjoint:  # every stride phase its own stride-1 correlation of δ, an image at a time
            return conv_phases.grad_input(
                grad_output, weight, geometry, pass_threads(macs(geometry, grad_output.shape[0])), bias
            )
        flipped = (slice(None), slice(None)) + (slice(None, None, -1),) * geometry.ndim
        rotated = np.ascontiguousarray(weight[flipped].swapaxes(0, 1))  # (C, O, *K), every tap reversed
        sides = zip(geometry.kernel, geometry.dilation, geometry.pads, strict=True)
        pads = tuple((d * (k - 1) - before, d * (k - 1) - after) for k, d, (before, after) in sides)
        dy, rotated, adjoint_geo, _, _ = _resolve(
            grad_output, rotated, geometry.ndim, 1, pads, geometry.dilation, 1, "zeros", "auto", f"conv{geometry.ndim}d"
        )
        return plain(dy, rotated, adjoint_geo, bias, pass_threads(macs(adjoint_geo, dy.shape[0])))

    def grad_input(self, grad_output: np.ndarray, weight: np.ndarray, geometry: ConvGeometry) -> np.ndarray:
        """The gradient of the padded input (the protocol's form): zero border, interior from tiles."""
        dx = np.zeros((grad_output.shape[0], weight.shape[1], *geometry.padded_size), dtype=grad_output.dtype)
        crop(dx, geometry.in_size, geometry.pads)[...] = self.grad_input_unpadded(grad_output, weight, geometry)
        return dx

    def grad_weight_unpadded(self, grad_output: np.ndarray, x: np.ndarray, geometry: ConvGeometry) -> np.ndarray:
        """dW from δ and x *before* padding (each image padded as it is copied): :meth:`grad_params_unpadded`'s."""
        return self.grad_params_unpadded(grad_output, x, geometry, bias=False)[0]

    def grad_params_unpadded(
        self, grad_output: np.ndarray, x: np.ndarray, geometry: ConvGeometry, bias: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(dW, db, or None without ``bias``) from δ and x *before* padding: with the output channels
        in the lanes (``conv_lanes.on_lanes``) dW and db in one pass; else dW on
        ``conv_tile_grad``'s tiles, the unfolding algorithm's where the input holds an infinity or a
        NaN (module docstring of ``conv_tile_grad``), and db summed from δ."""
        if geometry.ndim == 1:  # as a 2-D convolution of height 1
            dw2, db2 = self.grad_params_unpadded(grad_output[:, :, None], x[:, :, None], as_2d(geometry), bias)
            return dw2[:, :, 0], db2
        dw: np.ndarray | None = None
        db: np.ndarray | None = None
        if geometry.ndim == 3:
            dw, db = conv_volume.grad_params(grad_output, x, geometry, pass_threads(macs(geometry, x.shape[0])))
        elif on_lanes(grad_output.shape[1], x.dtype):
            dw, db = grad_params_lanes(grad_output, np.ascontiguousarray(x), geometry, padded=False)
        else:
            dw = grad_weight_tiles(grad_output, np.ascontiguousarray(x), geometry, padded=False)
        if dw is None:
            with threads.blas_released():  # (as the input gradient's product)
                dw = self.unfolding.grad_weight(grad_output, pad(x, geometry.pads, "zeros"), geometry)
        if bias and db is None:
            db = grad_output.sum(axis=(0, *range(2, grad_output.ndim)))
        return dw, db

    def grad_weight(self, grad_output: np.ndarray, x: np.ndarray, geometry: ConvGeometry) -> np.ndarray:
        """dW from δ and the *padded* x (the protocol's form)."""
        return self.grad_weight_unpadded(grad_output, crop(x, geometry.in_size, geometry.pads), geometry)

    def backward_unpadded(
        self,
        grad_output: np.ndarray,
        x: np.ndarray,
        weight: np.ndarray,
        geometry: ConvGeometry,
        want_input: bool = True,
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """(dx or None, dw, db) from δ and x before padding: what a layer's backward calls (its context
        keeps x as it came, no padded copy). (Running dW on the pool beside dx, each on one thread, was
        measured: lenet's and resnet's epochs alike within the noise.)"""
        dw, db = self.grad_params_unpadded(grad_output, x, geometry)
        assert db is not None
        return (self.grad_input_unpadded(grad_output, weight, geometry) if want_input else None), dw, db


@njit(cache=True, nogil=True)
def _grad_images(
    x: np.ndarray,
    dy: np.ndarray,
    offs: np.ndarray,
    phases: np.ndarray,
    ph: int,
    pw: int,
    sh: int,
    sw: int,
    Hq: int,
    Wq: int,
    S: int,
    L: int,
    B: int,
    n0: int,
    n1: int,
    part: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """part += the weight gradient's sums over images n0..n1, B images stacked at a time (the input
    in its stride phases, ``conv_rows_kernels.fill``, image k's Hq rows after image k − 1's; δ on the stack's
    grid, zero between the images); whether an input was not finite."""
    O, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
    buffer = np.zeros(phases.shape[0] * x.shape[1] * S, dtype=x.dtype)  # border and tails stay zero
    grid = np.zeros((O, L), dtype=x.dtype)  # columns ow >= OW and rows oh >= OH of each image stay zero
    bad = False
    for m0 in range(n0, n1, B):
        if m0 + B > n1 and m0 > n0:  # a short last stack: no image of the one before may remain
            buffer[:] = 0.0
            grid[:] = 0.0
        for n in range(m0, min(m0 + B, n1)):
            k = n - m0
            bad |= fill(x, n, phases, ph, pw, sh, sw, Wq, S, buffer[k * Hq * Wq :], True)
            for o in range(O):
                for r in range(OH):
                    dst, src = grid[o, (k * Hq + r) * Wq :], dy[n, o, r]
                    for j in range(OW):
                        dst[j] = src[j]
        accumulate_grad(buffer, grid, offs, part)
    return bad


@njit(cache=True, nogil=True)
def _lane_images(
    x: np.ndarray,
    dy: np.ndarray,
    offs: np.ndarray,
    pos: np.ndarray,
    phases: np.ndarray,
    ph: int,
    pw: int,
    sh: int,
    sw: int,
    Hq: int,
    Wq: int,
    S: int,
    B: int,
    taps: int,
    n0: int,
    n1: int,
    part: np.ndarray,
    bias: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """part (T', O') += the weight gradient's sums over images n0..n1 with the channels in the lanes
    (``conv_lanes``), B images stacked at a time: the input in its stride phases (image k's Hq
    rows after image k − 1's), δ (N, O, P) copied channels-last (image k's P positions after image
    k − 1's), pos (B·P,) each position's index on the stack's grid; bias (O',) += δ's sums."""
    P = dy.shape[2]
    own = B == 1 and is_own_buffer(x, phases, ph, pw, sh, sw, Wq, S)  # (the image itself: no copy)
    buffer = np.zeros(0 if own else phases.shape[0] * x.shape[1] * S, dtype=x.dtype)  # border, tails: 0
    d = np.zeros((B * P, part.shape[1]), dtype=x.dtype)  # channels past O stay zero
    for m0 in range(n0, n1, B):
        m1 = min(m0 + B, n1)
        for n in range(m0, m1):
            if not own:
                fill(x, n, phases, ph, pw, sh, sw, Wq, S, buffer[(n - m0) * Hq * Wq :], False)
            transpose_into(dy, n, d, (n - m0) * P)
        used = (m1 - m0) * P  # (a short last stack's other images are not read)
        if own:
            accumulate_lanes(x[m0].reshape(x.shape[1] * S), d[:used], pos[:used], offs, taps, part)
        else:
            accumulate_lanes(buffer, d[:used], pos[:used], offs, taps, part)
        add_columns(d, used, bias)


@njit(cache=True, nogil=True)
def _lane_forward_images(
    x: np.ndarray,
    w: np.ndarray,
    offs: np.ndarray,
    pos: np.ndarray,
    phases: np.ndarray,
    ph: int,
    pw: int,
    sh: int,
    sw: int,
    Wq: int,
    S: int,
    bias: np.ndarray,
    n0: int,
    n1: int,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """out[n] (O, P) for images n0..n1 with the channels in the lanes (``conv_lanes``): each image
    into its stride phases, every tile's sums channels-last, then back with the bias added."""
    P = out.shape[2]
    buffer = np.zeros(phases.shape[0] * x.shape[1] * S, dtype=x.dtype)  # border and tail stay zero
    sums = np.empty((pos.shape[0], w.shape[1]), dtype=x.dtype)
    for n in range(n0, n1):
        fill(x, n, phases, ph, pw, sh, sw, Wq, S, buffer, False)
        accumulate_forward(buffer, w, pos, offs, P, sums)
        untranspose_into(sums, bias, out, n)


def forward_lanes(
    x: np.ndarray, weight: np.ndarray, geo: ConvGeometry, bias: np.ndarray | None, threads_: int | None
) -> np.ndarray:
    """y (N, O, OH, OW) of a 2-D convolution (any stride, through the phases) from x before padding,
    + bias, with the output channels in the lanes (``conv_lanes_forward.accumulate_forward``): the same
    sums in the same order as ``conv_rows``' direct tiles (the same bits), only at the output's
    positions (no grid columns past OW)."""
    x = np.ascontiguousarray(x)
    N, O = x.shape[0], weight.shape[0]
    offs, phases, Wq, S, _ = conv_rows._layout(geo, x.dtype)
    OH, OW = geo.out_size
    oh, ow = np.meshgrid(np.arange(OH), np.arange(OW), indexing="ij")
    w, b, pos = forward_operands(weight, bias, (oh * Wq + ow).reshape(-1).astype(np.int64), x.dtype)
    (ph, _), (pw, _) = geo.pads
    sh, sw = geo.stride
    out = np.empty((N, O, OH * OW), dtype=x.dtype)
    kernel = partial(_lane_forward_images, x, w, offs, pos, phases, ph, pw, sh, sw, Wq, S, b)
    threads.parallel([partial(kernel, n0, n1, out) for n0, n1 in ranges(N, threads_)])
    return out.reshape(N, O, OH, OW)


# The forward's tiles with the channels in the lanes (``forward_lanes``) against ``conv_rows``' direct
# tiles (AVX-512 Zen 5, fp32, alternating): 0.94–0.95 of their time on mnist-2's 32 → 64 and its
# input gradient's 64 → 32 on 14² (a grid 1.14 times the output), 0.89–0.95 on resnet's 32 → 32 on 7²
# (1.31) and 0.93–0.98 on its strided 16 → 32 (1.31); 1.01–1.02 on lenet's 16 → 32 (1.14) and the
# strided benchmark layer (1.04), 1.08 on the 1-D layer (no junk); one vector of channels (resnet's
# 16 → 16, its tile load-bound) 1.28. So: at least two vectors of channels, a grid at least
# LANE_FORWARD_GRID times the output's positions.
LANE_FORWARD_GRID = 1.1


def forward_on_lanes(geo: ConvGeometry, dtype: np.dtype, N: int) -> bool:
    """Whether a training pass's plain convolution takes :func:`forward_lanes` (or the volume's)."""
    O = geo.out_channels
    if not on_lanes(O, dtype) or 2 * (VECTOR_BYTES // np.dtype(dtype).itemsize) > O:
        return False
    if geo.ndim == 3:
        grid = conv_volume.layout(geo, dtype)[2]
    elif geo.ndim == 2 and not conv_rows.uses_winograd(geo, N):
        grid = conv_rows._layout(geo, dtype)[4]
    else:
        return False
    return grid >= LANE_FORWARD_GRID * math.prod(geo.out_size)


def plain(
    x: np.ndarray, weight: np.ndarray, geo: ConvGeometry, bias: np.ndarray | None = None, threads_: int | None = None
) -> np.ndarray:
    """A training pass's convolution without an epilogue but the bias: :func:`forward_lanes` (or the
    volume's) where :func:`forward_on_lanes` — two vectors of output channels or more, a direct grid at
    least ``LANE_FORWARD_GRID`` times the output, not Winograd's tiles — else ``conv_rows.run``. (1-D
    as 2-D of height 1.)"""
    if geo.ndim == 1:
        return plain(x[:, :, None], weight[:, :, None], as_2d(geo), bias, threads_)[:, :, 0]
    if forward_on_lanes(geo, x.dtype, x.shape[0]):
        if geo.ndim == 3:
            return conv_volume.forward_lanes(x, weight, geo, threads_, bias)
        return forward_lanes(x, weight, geo, bias, threads_)
    return conv_rows.run(x, weight, geo, conv_rows.PLAIN, bias, threads=threads_)[0]


def grad_params_lanes(
    grad_output: np.ndarray, x: np.ndarray, geo: ConvGeometry, padded: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(dW (O, C, KH, KW), db (O,)) of a 2-D convolution, x as :func:`grad_weight_tiles` takes it, the
    channels in the lanes (``conv_lanes``): exact for any input, infinities and NaNs included;
    db summed from δ's channels-last copy (no pass of its own over δ)."""
    N, O = grad_output.shape[:2]
    count = pass_threads(macs(geo, N))
    B = stack(geo, -(-N // len(ranges(N, count))), x.itemsize)
    offs, phases, Wq, S, _ = conv_rows._layout(geo, x.dtype, B)
    (Hq, OH, OW) = -(-geo.padded_size[0] // geo.stride[0]), *geo.out_size
    k, oh, ow = np.meshgrid(np.arange(B), np.arange(OH), np.arange(OW), indexing="ij")
    pos = ((k * Hq + oh) * Wq + ow).reshape(-1).astype(np.int64)
    (ph, _), (pw, _) = ((0, 0), (0, 0)) if padded else geo.pads
    sh, sw = geo.stride
    dy = np.ascontiguousarray(grad_output, dtype=x.dtype).reshape(N, O, OH * OW)  # (δ copied in x's dtype)
    taps = offs.shape[0]
    images = partial(_lane_images, x, dy, padded_offsets(offs), pos, phases, ph, pw, sh, sw, Hq, Wq, S, B, taps)
    dw, db = lane_sums(images, N, O, taps, x.dtype, count)
    return dw.reshape(O, geo.in_channels, *geo.kernel), db


def stack(geo: ConvGeometry, N: int, itemsize: int) -> int:
    """Images stacked per weight-gradient pass: enough for ``STACK_POSITIONS`` grid positions (each
    tile's sums leave the registers once a stack), no more than ``STACK_BYTES`` of input and δ."""
    (Hp, Wp), (sh, sw) = geo.padded_size, geo.stride
    plane = -(-Hp // sh) * -(-Wp // sw)
    per_image = plane * (sh * sw * geo.in_channels + geo.out_channels) * itemsize
    return max(1, min(N, -(-STACK_POSITIONS // plane), STACK_BYTES // per_image))


def grad_weight_tiles(
    grad_output: np.ndarray, x: np.ndarray, geo: ConvGeometry, padded: bool = True
) -> np.ndarray | None:
    """dW (O, C, KH, KW) of a 2-D convolution (any stride, through the stride phases) from δ
    (N, O, OH, OW) and x, C-contiguous: padded (N, C, Hp, Wp), copied into the phases as it is, border
    included; or (``padded`` False) before padding, each image padded as it is copied. Small images
    are stacked (:func:`stack`); the images are split between threads; None if an input is not finite."""
    N, O = grad_output.shape[:2]
    count = pass_threads(macs(geo, N))
    B = stack(geo, -(-N // len(ranges(N, count))), x.itemsize)  # (at most one range's images)
    offs, phases, Wq, S, L = conv_rows._layout(geo, x.dtype, B)
    Hq = -(-geo.padded_size[0] // geo.stride[0])  # (a phase plane's rows: image k's start at k·Hq)
    (ph, _), (pw, _) = ((0, 0), (0, 0)) if padded else geo.pads
    sh, sw = geo.stride
    dy = np.ascontiguousarray(grad_output)
    images = partial(_grad_images, x, dy, offs, phases, ph, pw, sh, sw, Hq, Wq, S, L, B)
    dw = summed(images, N, O, offs.shape[0], x.dtype, count)
    return None if dw is None else dw.reshape(O, geo.in_channels, *geo.kernel)


def macs(geo: ConvGeometry, N: int) -> int:
    """Multiply-adds of the convolution ``geo`` over N images: N · O · C·KH·KW · OH·OW."""
    return N * geo.out_channels * geo.in_channels * math.prod(geo.kernel) * math.prod(geo.out_size)


def forward_unpadded(
    x: np.ndarray, weight: np.ndarray, geo: ConvGeometry, bias: np.ndarray | None = None
) -> np.ndarray:
    """y (N, O, *out_size) of the training pass from x (N, C, H, W) before padding, + bias (O,) if
    given, in the pass's epilogue: y + b as each value is stored, the bits ``y += b`` gives, without
    a pass of its own over y (mnist-1's forward at batch 64: 0.45 against 1.22 ms)."""
    return plain(x, weight, geo, bias, pass_threads(macs(geo, x.shape[0])))


TILED = {conv_gemm: Tiled(conv_gemm), conv_im2col: Tiled(conv_im2col)}


def adjoint_on_tiles(geo: ConvGeometry) -> bool:
    """Whether the input gradient is a stride-1 convolution of δ padded by d·(K−1) − p >= 0 a side."""
    sides = zip(geo.kernel, geo.dilation, geo.pads, strict=True)
    return geo.stride == (1,) * geo.ndim and all(p <= d * (k - 1) for k, d, side in sides for p in side)


def applies(geo: ConvGeometry) -> bool:
    """Where ``conv_rows`` runs (zero padding; 1-D and 2-D with any stride, 3-D with stride 1) and the
    kernel is larger than 1, or (:data:`POINTWISE_ON_TILES`) is 1 with stride 1: the three passes on
    tiles. (A 3-D padding wider than d·(K−1) takes the unfolded input gradient: the stride phases
    are 2-D.)"""
    ones = (1,) * geo.ndim
    if geo.kernel == ones and not (POINTWISE_ON_TILES and geo.stride == ones):
        return False
    return conv_rows.applies(geo)


# A 1×1 kernel's training pass (a product each) on the tiles with AVX-512, against OpenBLAS's products
# on its AVX2 kernels (this machine class's image sets OPENBLAS_CORETYPE=Haswell), forward and backward,
# AMD EPYC Zen 5, fp32, 2 threads: the benchmark's 256 → 64 on 28² 0.47, 64 → 256 0.62, 32 → 64 on
# 14² 0.45, 64 → 128 on 7² 0.39 of the unfolding pair's time; with stride 2 (resnet's projections,
# 16 → 32 and 8 → 16) 1.07–1.13, so those keep their products, as does every AVX2 machine (unmeasured).
POINTWISE_ON_TILES = VECTOR_BYTES == 64


def for_training(algorithm: str, algo: ConvAlgorithm, geo: ConvGeometry) -> Tiled | None:
    """The tiled training algorithm for this layer under ``"auto"``, or None (the layer keeps ``algo``)."""
    if algorithm != "auto" or not applies(geo):
        return None
    return TILED.get(algo)  # type: ignore[call-overload]
