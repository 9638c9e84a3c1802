"""The inference path's fused block: convolution + bias + ReLU (+ max-pool), nothing kept.

A training forward keeps what backward needs (the padded input, columns, each pool window's arg-max).
Inference needs none of it, and the unfused eval path still pays for some: ``max_pool2d`` computes an
int64 arg-max array as large as its output (twice the output's bytes in float32). Here:

- for the zero-padded convolutions ``conv.uses_rows`` names, bias, ReLU (an eval-mode batch norm
  between them too, :func:`conv2d_norm_relu`) and a 2×2 max-pool are applied to each image's
  accumulator on ``conv_rows``' tiles while it is in cache; for the dense stride-1 ones with another
  padding mode ``conv.uses_grid`` names, to each cache-sized chunk of ``conv_flat``'s grid as it is
  computed; for one input channel, to im2col's per-image products a chunk at a time. Neither the
  padded input nor the convolution's full output is written;
- otherwise the bias is added in place into the convolution's output, and ReLU and a max-pool with
  windows that tile the map (kernel = stride, no padding or dilation) are one compiled pass:
  ``max(0, max_window y) = max_window max(0, y)`` because ReLU is monotone, so the pool reads the
  convolution's output once and writes only the pooled map; other pools run after an in-place ReLU
  through ``max_pool2d``.

Results equal the unfused eval path's bit for bit: ReLU and max commute exactly in floating point,
and NaN propagates as in ``max_pool2d`` (a NaN tap wins its window). (Folding an eval-mode batch norm
into the kernel, w' = s·w with s = γ/√(σ² + ε), was tried and dropped: it changes float32 results in
the last bits — 5e-6 relative — so a model's eval output would no longer equal its training-mode or
exported-and-reimported output exactly. The batch norm in :func:`conv2d_norm_relu` is the layer's own
arithmetic instead, in the layer's order.)

Shapes: x (N, C, H, W) or (C, H, W); weight (O, C/groups, KH, KW); bias (O,) or None;
returns (N, O, OH, OW), pooled (N, O, PH, PW) when a pool is given.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numba import njit

from ..errors import ArgumentError
from . import conv_flat, conv_im2col, conv_rows, norm_compiled, threads
from .conv import add_bias, eval_forward, resolve_forward, uses_grid, uses_rows
from .conv_single import REMEMBERED, call_key, remember
from .geometry import pad
from .pool import max_pool2d
from .validation import check_same_dtype


@njit(cache=True)
def _relu_max_pool(y: np.ndarray, kh: int, kw: int, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """out[n, c, i, j] = max(0, max of y[n, c, i·kh : (i+1)·kh, j·kw : (j+1)·kw]); a NaN wins."""
    N, C, PH, PW = out.shape
    for n in range(N):
        for c in range(C):
            plane = y[n, c]
            for i in range(PH):
                for j in range(PW):
                    best = -np.inf
                    for a in range(i * kh, i * kh + kh):
                        row = plane[a]
                        for b in range(j * kw, j * kw + kw):
                            value = row[b]
                            if value > best or value != value:
                                best = value
                                if value != value:
                                    break
                        if best != best:
                            break
                    out[n, c, i, j] = best if (best > 0.0 or best != best) else 0.0


@njit(cache=True)
def _relu_max_pool_2x2(y: np.ndarray, out: np.ndarray) -> bool:  # pragma: no cover - compiled
    """:func:`_relu_max_pool` for 2×2 windows, written out so the compiler unrolls it (measured 2.2 ms →
    0.2 ms for lenet's first layer at batch 64). NaN is not handled: it returns whether it saw one, and
    the caller reruns the general kernel, as ``pool_compiled.max_pool_2x2`` does."""
    N, C, PH, PW = out.shape
    saw_nan = False
    for n in range(N):
        for c in range(C):
            plane = y[n, c]
            for i in range(PH):
                top, bottom = plane[2 * i], plane[2 * i + 1]
                for j in range(PW):
                    a, b, d, e = top[2 * j], top[2 * j + 1], bottom[2 * j], bottom[2 * j + 1]
                    saw_nan |= (a != a) | (b != b) | (d != d) | (e != e)
                    best = a if a > b else b
                    best = best if best > d else d
                    best = best if best > e else e
                    out[n, c, i, j] = best if best > 0.0 else 0.0
    return saw_nan


@njit(cache=True)
def _bias_relu_max_pool_2x2_grid(
    y: np.ndarray, bias: np.ndarray, n0: int, out: np.ndarray
) -> bool:  # pragma: no cover - compiled
    """out[n0 + i] = :func:`_relu_max_pool_2x2` of (y + bias) for a chunk on ``conv_flat``'s grid.

    y (O, n, OH, Wp), only columns < 2·PW read; out (N, O, PH, PW). The same additions and comparisons
    as adding the bias in place and pooling, so the same bits. Returns whether it saw a NaN (the
    caller then reruns the chunk through the general kernel). (It could also pool an (N, C) batch
    through that batch's (C, N) view with a zero bias, but the strided view compiled 2–3× slower than
    :func:`_relu_max_pool_2x2`'s contiguous loop — 0.47 against 0.14 ms at batch 64 — so both stay.)"""
    O, n = y.shape[0], y.shape[1]
    PH, PW = out.shape[2], out.shape[3]
    saw_nan = False
    for i in range(n):
        for o in range(O):
            b = bias[o]
            plane = y[o, i]
            for p in range(PH):
                top, bottom = plane[2 * p], plane[2 * p + 1]
                for q in range(PW):
                    a, c, d, e = top[2 * q] + b, top[2 * q + 1] + b, bottom[2 * q] + b, bottom[2 * q + 1] + b
                    saw_nan |= (a != a) | (c != c) | (d != d) | (e != e)
                    best = a if a > c else c
                    best = best if best > d else d
                    best = best if best > e else e
                    out[n0 + i, o, p, q] = best if best > 0.0 else 0.0
    return saw_nan


@njit(cache=True)
def _bias_relu_grid(y: np.ndarray, bias: np.ndarray, n0: int, out: np.ndarray) -> None:  # pragma: no cover
    """out[n0 + i, o] = ReLU(y[o, i, :, :OW] + bias[o]) with ``np.maximum(·, 0)``'s rule (NaN
    kept, −0.0 → +0.0): y (O, n, OH, Wp) on ``conv_flat``'s grid, out (N, O, OH, OW)."""
    O, n = y.shape[0], y.shape[1]
    OH, OW = out.shape[2], out.shape[3]
    for i in range(n):
        for o in range(O):
            b = bias[o]
            for r in range(OH):
                src, dst = y[o, i, r], out[n0 + i, o, r]
                for c in range(OW):
                    v = src[c] + b
                    dst[c] = v if (v > 0.0 or v != v) else 0.0


@njit(cache=True)
def _bias_norm_relu_grid(
    y: np.ndarray,
    bias: np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
    shift: np.ndarray,
    relu: bool,
    n0: int,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """out[n0 + i, o] = ReLU(((y[o, i, :, :OW] + bias[o]) − mean[o])·scale[o] + shift[o]): the convolution's
    bias, an eval-mode batch norm (``norm_compiled.normalise``'s arithmetic) and ``np.maximum(·, 0)``
    (if ``relu``), from a chunk of ``conv_flat``'s grid (O, n, OH, Wp) into out (N, O, OH, OW)."""
    O, n = y.shape[0], y.shape[1]
    OH, OW = out.shape[2], out.shape[3]
    for i in range(n):
        for o in range(O):
            b, mu, k, sh = bias[o], mean[o], scale[o], shift[o]
            for r in range(OH):
                src, dst = y[o, i, r], out[n0 + i, o, r]
                for c in range(OW):
                    v = ((src[c] + b) - mu) * k + sh
                    dst[c] = v if (not relu or v > 0.0 or v != v) else 0.0


class SkipShapeError(ArgumentError):
    """A residual shortcut (``skip``) whose shape is not the convolution's output's."""

    def __init__(self, expected: tuple[int, ...], got: tuple[int, ...]) -> None:
        super().__init__(f"skip must have the convolution's output shape {expected}, got {got}")
        self.expected = expected


def _flat(value: Any) -> list[Any]:
    """The numbers of an int or of (nested) sequences of ints, in order."""
    if isinstance(value, (int, np.integer)):
        return [value]
    return [v for item in value for v in _flat(item)]


def pool_tiles(pool: dict[str, Any], size: tuple[int, ...]) -> bool:
    """Whether the pool's windows tile the map: kernel = stride, no padding, no dilation, nothing left
    for ceil mode to add. (Plain Python, remembered per options and size: this runs on every fused call,
    and NumPy's ravel and any on these few numbers had cost ~30 µs of lenet's batch-1 inference.)"""
    options = (pool["kernel_size"], pool["stride"], pool["padding"], pool["dilation"], pool["ceil_mode"], size)
    try:
        return _tiles(*options)
    except TypeError:  # a list among them: not hashable, not remembered
        return _tiles.__wrapped__(*options)


@functools.lru_cache(maxsize=256, typed=True)
def _tiles(kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: Any, size: tuple[int, ...]) -> bool:
    kernel, step = tuple(kernel_size), tuple(stride)
    no_padding = not any(_flat(padding))
    undilated = all(d == 1 for d in _flat(dilation))
    exact = not ceil_mode or all(s % k == 0 for s, k in zip(size, kernel, strict=True))
    return len(kernel) == 2 and kernel == step and no_padding and undilated and exact


def conv2d_relu_pool(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    conv: dict[str, Any],
    *,
    relu: bool,
    pool: dict[str, Any] | None = None,
) -> np.ndarray:
    """conv2d(x, weight, bias, **conv), then ReLU if ``relu``, then ``max_pool2d(**pool)`` if given.

    ``conv`` holds ``conv2d``'s keyword arguments (stride, padding, dilation, groups, padding_mode,
    algorithm); ``pool`` ``max_pool2d``'s (kernel_size, stride, padding, dilation, ceil_mode).
    """
    key = call_key(x, weight, bias, conv, relu=relu, pool=pool)
    planned = REMEMBERED.get(key) if key is not None else None
    if planned is not None:  # as a call before it: the tiles' pass from its plan
        result, pool_saw_nan = conv_rows.run_planned(planned, x, weight, bias)
        if not pool_saw_nan:  # (else the calls below, to the general kernels)
            return result
    x, weight, bias, geo, algo, unbatched = resolve_forward(2, x, weight, bias, **conv, name="conv2d")
    two_by_two = pool is not None and tuple(pool["kernel_size"]) == (2, 2) and pool_tiles(pool, geo.out_size)
    rows = uses_rows(conv["algorithm"], algo, geo, x.shape[0])
    if not rows and threads.splits(x.shape[0]):  # the row pass splits the images itself
        return threads.split_batch(lambda part: conv2d_relu_pool(part, weight, bias, conv, relu=relu, pool=pool), x)
    out = None
    if relu and (pool is None or two_by_two) and rows:
        if planned is None:  # (else the planned pass has just seen a NaN: not again)
            mode = conv_rows.RELU if pool is None else conv_rows.RELU_POOL
            out, saw_nan = conv_rows.run(x, weight, geo, mode, bias)
            remember(key, geo, x.dtype, mode, x.shape[0])
            out = None if saw_nan else out  # a NaN in a pooled window: the general kernels, below
    elif relu and (pool is None or two_by_two) and uses_grid(conv["algorithm"], algo, geo):
        out = _on_grid(x, weight, bias, geo, pooled=pool is not None)
    elif relu and two_by_two and algo is conv_im2col:
        out = _im2col_in_chunks(x, weight, bias, geo)
    if out is not None:
        return out[0] if unbatched else out
    y = eval_forward(x, weight, geo, algo, conv["algorithm"])  # (N, O, OH, OW), as forward_nd(keep=False)
    add_bias(y, bias)  # in place
    return relu_max_pool2d(y[0] if unbatched else y, relu=relu, pool=pool)


def conv2d_norm_relu(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    conv: dict[str, Any],
    norm: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    relu: bool = True,
    skip: np.ndarray | None = None,
) -> np.ndarray:
    """conv2d(x, weight, bias, **conv), then an eval-mode batch norm, then + ``skip`` (if given), then
    ReLU (if ``relu``).

    ``norm`` is (running mean, scale, shift) from ``norm.normalisation_affine``, so the batch norm is
    the layer's own arithmetic: the result equals conv → ``BatchNorm2d.forward`` (eval) → ReLU bit for
    bit. ``skip``, of the output's shape and dtype, is a residual block's shortcut (``nn.Residual``
    followed by a ReLU): y + skip as the block adds them. On ``conv_rows``' tiles all of it is one pass
    over each image's accumulator; on ``conv_flat``'s grid the convolution, batch norm and ReLU run as
    one pass over each chunk (no transposed copy of the output, no separate normalisation and ReLU
    passes); otherwise the convolution, then the batch norm's compiled pass, then ReLU in place.
    """
    key = call_key(x, weight, bias, conv, relu=relu, norm=norm, skip=skip)
    planned = REMEMBERED.get(key) if key is not None else None
    if planned is not None:  # as a call before it (no pooling: never a rerun)
        return conv_rows.run_planned(planned, x, weight, bias, norm, skip=skip)[0]
    x, weight, bias, geo, algo, unbatched = resolve_forward(2, x, weight, bias, **conv, name="conv2d")
    mean, scale, shift = norm
    check_same_dtype(x=x, running_mean=mean, scale=scale, shift=shift)
    rows = uses_rows(conv["algorithm"], algo, geo, x.shape[0])
    if skip is not None:
        skip = np.asarray(skip)
        skip = skip[None] if unbatched and skip.ndim == 3 else skip
        expected = (x.shape[0], weight.shape[0], *geo.out_size)
        if skip.shape != expected:
            raise SkipShapeError(expected, skip.shape)
        check_same_dtype(x=x, skip=skip)
        if not rows:  # the convolution and batch norm, then the sum and ReLU in place on this call's array
            y = conv2d_norm_relu(x, weight, bias, conv, norm, relu=False)
            y += skip
            if relu:
                np.maximum(y, 0, out=y)
            return y[0] if unbatched else y
    if not rows and threads.splits(x.shape[0]):  # the row pass splits the images itself
        return threads.split_batch(lambda part: conv2d_norm_relu(part, weight, bias, conv, norm, relu=relu), x)
    if rows:
        mode = conv_rows.NORM_RELU if relu else conv_rows.NORM
        out = conv_rows.run(x, weight, geo, mode, bias, norm, skip=skip)[0]
        remember(key, geo, x.dtype, mode, x.shape[0])
        return out[0] if unbatched else out
    if uses_grid(conv["algorithm"], algo, geo):
        N, O = x.shape[0], weight.shape[0]
        b = bias if bias is not None else np.zeros(O, dtype=x.dtype)
        out = np.empty((N, O, *geo.out_size), dtype=x.dtype)
        for chunk, grid in conv_flat.grid_chunks(x, weight, geo):
            _bias_norm_relu_grid(grid, b, mean, scale, shift, relu, chunk.start, out)
        return out[0] if unbatched else out
    y = eval_forward(x, weight, geo, algo, conv["algorithm"])  # (N, O, OH, OW), as forward_nd(keep=False)
    add_bias(y, bias)
    normalised = np.empty_like(y)
    norm_compiled.normalise(y.reshape(*y.shape[:2], -1), mean, scale, shift, normalised.reshape(*y.shape[:2], -1))
    if relu:
        np.maximum(normalised, 0, out=normalised)
    return normalised[0] if unbatched else normalised


def _im2col_in_chunks(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, geo: Any) -> np.ndarray:
    """im2col's forward + bias, then ReLU + 2×2 max-pool, a cache-sized chunk of images at a time.

    ``conv_im2col`` multiplies image by image, so a chunk's output is the same as the whole batch's,
    bit for bit; pooling each chunk while it is in cache spares a pass over the full output (lenet's first
    layer at batch 1,000: 50 MB written and read back). ``x`` before padding: each chunk is padded alone.
    """
    N, O, (OH, OW) = x.shape[0], weight.shape[0], geo.out_size
    out = np.empty((N, O, OH // 2, OW // 2), dtype=x.dtype)
    per_image = (O * OH * OW + weight[0].size * OH * OW) * x.itemsize  # output + columns
    step = max(1, conv_flat.CHUNK_BYTES // per_image)
    for n0 in range(0, N, step):
        chunk = slice(n0, min(N, n0 + step))
        y = conv_im2col.forward(pad(x[chunk], geo.pads, geo.padding_mode), weight, geo)  # (n, O, OH, OW), new
        add_bias(y, bias)
        if _relu_max_pool_2x2(y, out[chunk]):  # a NaN: the general kernel
            _relu_max_pool(y, 2, 2, out[chunk])
    return out


def _on_grid(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, geo: Any, *, pooled: bool) -> np.ndarray:
    """Bias + ReLU (+ 2×2 max-pool) applied to each chunk of ``conv_flat``'s grid as it is computed.

    The unfused path writes the whole (N, O, OH, OW) output, adds the bias to it, then pools it; here
    each chunk's (O, n, OH, Wp) grid, still in cache, is read once into the (pooled) result: the same
    values (``conv_flat.forward`` computes the same chunks), without the full output or its transpose.
    """
    N, O, (OH, OW) = x.shape[0], weight.shape[0], geo.out_size
    b = bias if bias is not None else np.zeros(O, dtype=x.dtype)
    out = np.empty((N, O, OH // 2, OW // 2) if pooled else (N, O, OH, OW), dtype=x.dtype)
    for chunk, grid in conv_flat.grid_chunks(x, weight, geo):
        if not pooled:
            _bias_relu_grid(grid, b, chunk.start, out)
        elif _bias_relu_max_pool_2x2_grid(grid, b, chunk.start, out):  # a NaN: the general kernel
            y = grid[..., :OW].transpose(1, 0, 2, 3) + b.reshape(O, 1, 1)  # (n, O, OH, OW), a new array
            _relu_max_pool(y, 2, 2, out[chunk])
    return out


def relu_max_pool2d(y: np.ndarray, *, relu: bool, pool: dict[str, Any] | None = None) -> np.ndarray:
    """ReLU (in place: ``y`` must belong to the caller) if ``relu``, then ``max_pool2d(**pool)`` if given.

    Shapes: y (N, C, H, W) or (C, H, W); returns like y, pooled when a pool is given.
    """
    if pool is None:
        if relu:
            np.maximum(y, 0, out=y)
        return y
    unbatched = y.ndim == 3
    y4 = y[None] if unbatched else y  # (N, C, H, W)
    if relu and pool_tiles(pool, y4.shape[2:]):
        kh, kw = pool["kernel_size"]
        out = np.empty((*y4.shape[:2], y4.shape[2] // kh, y4.shape[3] // kw), dtype=y.dtype)  # (N, C, PH, PW)
        if (kh, kw) != (2, 2) or _relu_max_pool_2x2(y4, out):  # (True: it met a NaN)
            _relu_max_pool(y4, kh, kw, out)
        return out[0] if unbatched else out
    if relu:
        np.maximum(y, 0, out=y)
    return max_pool2d(y, **pool)
