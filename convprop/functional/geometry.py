"""Window geometry shared by convolution and pooling.

Everything here is about *where* windows sit, never about what is computed in them:
turning ``int | pair`` arguments into pairs, ``"same"``/``"valid"`` into explicit pads,
padding an array with one of PyTorch's padding modes (and the exact adjoint of that padding,
which backward passes need), output sizes, and strided window views.

Conventions: a pad is ``((top, bottom), (left, right))``; sizes are ``(H, W)`` pairs.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

Pair = tuple[int, int]
Pads = tuple[Pair, Pair]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_NUMPY_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def pair(value, name: str, minimum: int = 1) -> Pair:
    """Turn ``value`` (an int or a pair of ints) into a pair of ints, each ``>= minimum``."""
    if _is_int(value):
        items = (int(value), int(value))
    elif (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(_is_int(v) for v in value)
    ):
        items = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(items) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return items


def check_padding_mode(padding_mode) -> str:
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    return padding_mode


def dilated_size(kernel: int, dilation: int) -> int:
    """Extent covered by a kernel of ``kernel`` taps spaced ``dilation`` apart."""
    return dilation * (kernel - 1) + 1


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> Pair:
    """Pads (before, after) that make the output size ``ceil(size / stride)``.

    With stride 1 this is exactly PyTorch's ``padding="same"``: the total pad is
    ``dilation * (kernel - 1)``, split with the odd pixel going after (bottom/right).
    With stride > 1 (which PyTorch refuses) it follows Keras/TensorFlow: the output has
    ``ceil(size / stride)`` positions and the extra pixel again goes after.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + dilated_size(kernel, dilation) - size, 0)
    return total // 2, total - total // 2


def resolve_padding(padding, in_size: Pair, kernel: Pair, stride: Pair, dilation: Pair) -> Pads:
    """Explicit ``((top, bottom), (left, right))`` pads for ``padding``.

    ``padding`` may be an int, a pair ``(pad_h, pad_w)`` (symmetric), ``"valid"`` (no padding)
    or ``"same"`` (see :func:`same_pads`).
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            return tuple(same_pads(in_size[a], kernel[a], stride[a], dilation[a]) for a in range(2))  # type: ignore[return-value]
        raise ValueError(f"padding must be an int, a pair of ints, 'same' or 'valid', got {padding!r}")
    ph, pw = pair(padding, "padding", minimum=0)
    return (ph, ph), (pw, pw)


def output_size(in_size: int, pads: Pair, kernel: int, stride: int, dilation: int) -> int:
    """``floor((in + pad_before + pad_after - dilation*(kernel-1) - 1) / stride) + 1``."""
    return (in_size + pads[0] + pads[1] - dilated_size(kernel, dilation)) // stride + 1


def check_pads_for_mode(pads: Pads, in_size: Pair, padding_mode: str) -> None:
    """PyTorch's limits: reflect needs pad < size, circular needs pad <= size."""
    if padding_mode == "reflect":
        bad = any(p >= in_size[a] for a in range(2) for p in pads[a] if p > 0)
        limit = "smaller than"
    elif padding_mode == "circular":
        bad = any(p > in_size[a] for a in range(2) for p in pads[a])
        limit = "at most"
    else:
        return
    if bad:
        raise ValueError(
            f"padding_mode={padding_mode!r} needs each pad {limit} the input size; "
            f"got pads (top, bottom), (left, right) = {pads} for input size {in_size}"
        )


def pad(x: np.ndarray, pads: Pads, padding_mode: str = "zeros") -> np.ndarray:
    """Pad the last two axes of ``x`` (N, C, H, W) by ``pads`` in ``padding_mode``."""
    if pads == ((0, 0), (0, 0)):
        return x
    widths = [(0, 0)] * (x.ndim - 2) + list(pads)
    if padding_mode == "zeros":
        return np.pad(x, widths, mode="constant")
    return np.pad(x, widths, mode=_NUMPY_PAD_MODE[padding_mode])


def _source_index(size: int, before: int, after: int, padding_mode: str) -> np.ndarray:
    """For each padded position, the input position it copies (-1 for a zero pad)."""
    if padding_mode == "zeros":
        return np.concatenate([np.full(before, -1), np.arange(size), np.full(after, -1)])
    return np.pad(np.arange(size), (before, after), mode=_NUMPY_PAD_MODE[padding_mode])


def pad_backward(grad_padded: np.ndarray, in_size: Pair, pads: Pads, padding_mode: str = "zeros") -> np.ndarray:
    """Adjoint of :func:`pad`: fold the gradient of the padded array back onto the input.

    Padding copies input pixels into the border, so each input pixel's gradient is its own
    interior gradient plus the gradient of every border pixel that copied it.
    """
    (top, bottom), (left, right) = pads
    H, W = in_size
    if pads == ((0, 0), (0, 0)):
        return grad_padded
    if padding_mode == "zeros":  # zero padding copies nothing: its adjoint just crops
        return grad_padded[..., top : top + H, left : left + W].copy()  # (N, C, H, W)
    g = grad_padded[..., top : top + H, :].copy()  # (N, C, H, Wp)
    rows = _source_index(H, top, bottom, padding_mode)
    for i in [*range(top), *range(top + H, top + H + bottom)]:
        g[..., rows[i], :] += grad_padded[..., i, :]
    out = g[..., left : left + W].copy()  # (N, C, H, W)
    cols = _source_index(W, left, right, padding_mode)
    for j in [*range(left), *range(left + W, left + W + right)]:
        out[..., cols[j]] += g[..., j]
    return out


def windows(x: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, out_size: Pair) -> np.ndarray:
    """Read-only strided view of every window: (N, C, H, W) → (N, C, KH, KW, OH, OW).

    ``view[n, c, kh, kw, oh, ow] = x[n, c, oh*stride_h + kh*dilation_h, ow*stride_w + kw*dilation_w]``.
    No data is copied.
    """
    N, C = x.shape[:2]
    sN, sC, sH, sW = x.strides
    return np.lib.stride_tricks.as_strided(
        x,
        shape=(N, C, kernel[0], kernel[1], out_size[0], out_size[1]),
        strides=(sN, sC, sH * dilation[0], sW * dilation[1], sH * stride[0], sW * stride[1]),
        writeable=False,
    )


def pool_output_size(in_size: int, pad: int, kernel: int, stride: int, dilation: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size along one axis (may be < 1; the caller reports that).

    ``floor`` (or ``ceil`` in ceil mode) of ``(in + 2·pad - dilation·(kernel-1) - 1) / stride``, plus 1.
    In ceil mode the last window must still start inside the input or the left padding:
    if ``(out - 1)·stride >= in + pad`` that window is dropped.
    """
    span = in_size + 2 * pad - dilated_size(kernel, dilation)
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= in_size + pad:
        out -= 1
    return out


def tap_slices(kernel: Pair, stride: Pair, dilation: Pair, out_size: Pair) -> list[tuple[Pair, tuple[slice, slice]]]:
    """For each kernel tap ``(kh, kw)``, the strided slices of the padded input it touches.

    ``xp[..., rows, cols]`` is the (..., OH, OW) plane ``windows(xp, ...)[..., kh, kw, :, :]``,
    but as a basic slice it can also be *written*: the adjoint of ``windows`` (scattering window
    gradients back, overlapping windows summed) is one strided slice-add per tap, no per-pixel loop.
    """
    taps = []
    for kh in range(kernel[0]):
        h0 = kh * dilation[0]
        for kw in range(kernel[1]):
            w0 = kw * dilation[1]
            rows = slice(h0, h0 + stride[0] * (out_size[0] - 1) + 1, stride[0])
            cols = slice(w0, w0 + stride[1] * (out_size[1] - 1) + 1, stride[1])
            taps.append(((kh, kw), (rows, cols)))
    return taps
