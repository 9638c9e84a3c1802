"""The one N-d window geometry shared by convolution, transposed convolution and pooling.

Everything here is about *where* windows sit, never about what is computed in them. A
:class:`Window` holds, per spatial axis, the input size, the pads (before, after), the kernel,
stride and dilation, and the output size; window ``o`` reads the padded positions
``o·stride + t·dilation`` for taps ``t = 0 .. kernel-1``. Around it:

- argument resolution: ``int | one per axis | one (before, after) pair per axis | "same" | "valid"``;
- :func:`pad` in one of PyTorch's padding modes, and :func:`pad_backward`, its exact adjoint;
- :func:`windows`, a strided view of every window, and :func:`scatter_windows`, its adjoint
  (window gradients added back where they were read, overlaps summed), one slice-add per tap.

Pooling's ``ceil_mode`` is extra trailing padding (:func:`ceil_mode_pads`); a transposed convolution
is the adjoint of the convolution whose geometry it shares. Sizes are tuples with one entry per
spatial axis; a pad is ``((before, after), ...)`` with one pair per axis.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError

Sizes = tuple[int, ...]
Pair = tuple[int, int]
Pads = tuple[Pair, ...]
# what a caller may pass: a size is one int for every axis or one per axis; a padding is that, or one
# (before, after) pair per axis (convolution also takes "same" / "valid": ``PadArg | str``)
SizeArg = int | Sequence[int]
PadArg = int | Sequence[int] | Sequence[Sequence[int]]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_NUMPY_PAD_MODE: dict[str, Literal["reflect", "edge", "wrap"]] = {
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
}
AXIS_NAMES = {1: "L", 2: "HW", 3: "DHW"}


def plain_arguments(*values: object) -> bool:
    """Whether every value is an exact int, str, None or a (nested) tuple of them: arguments whose
    equality is their identity, so a geometry resolved for them may be remembered and looked up again
    (2.0 == 2 and True == 1 would otherwise find a remembered geometry and skip the type checks).
    Conv and pooling use it to key their per-shape caches (``functools.lru_cache(typed=True)``)."""
    # loops, not all() over generators (SIM110): this runs on every call, and loops cost ~10 µs less at batch 1
    for value in values:  # noqa: SIM110
        if not _plain(value):
            return False
    return True


def _plain(value: object) -> bool:
    kind = type(value)
    if kind is int or kind is str or value is None:
        return True
    if kind is not tuple:
        return False
    assert isinstance(value, tuple)
    for v in value:  # noqa: SIM110 (as above)
        if type(v) is not int and not _plain(v):
            return False
    return True


def _is_int(value: object) -> TypeGuard[numbers.Integral]:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def ntuple(value: object, n: int, name: str, minimum: int = 1) -> Sizes:
    """``value`` (an int, or a sequence of ``n`` ints) as a tuple of ``n`` ints, each ``>= minimum``."""
    if _is_int(value):
        items: Sizes = (int(value),) * n
    elif (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == n
        and all(_is_int(v) for v in value)
    ):
        items = tuple(int(v) for v in value)
    else:
        what = {1: "an int or a sequence of one int", 2: "an int or a pair of ints"}.get(n, f"an int or {n} ints")
        raise ArgumentTypeError(f"{name} must be {what}, got {value!r}")
    if min(items) < minimum:
        raise ArgumentError(f"{name} must be >= {minimum}, got {value!r}")
    return items


def pair(value: object, name: str, minimum: int = 1) -> Pair:
    """Turn ``value`` (an int or a pair of ints) into a pair of ints, each ``>= minimum``."""
    first, second = ntuple(value, 2, name, minimum)
    return first, second


def check_padding_mode(padding_mode: object) -> str:
    if padding_mode not in PADDING_MODES:
        raise ArgumentError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    return str(padding_mode)


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


def is_per_side(padding: object) -> TypeGuard[Sequence[Sequence[Any]]]:
    """Whether ``padding`` is given as ``(before, after)`` pairs: a sequence whose items are sequences."""
    return (
        isinstance(padding, Sequence)
        and not isinstance(padding, str)
        and len(padding) > 0
        and all(isinstance(p, Sequence) and not isinstance(p, str) for p in padding)
    )


def per_side_pads(padding: object, n: int, name: str = "padding") -> Pads:
    """``((before, after), ...)`` with exactly ``n`` pairs of ints >= 0, or an error quoting ``padding``."""
    if not is_per_side(padding) or len(padding) != n:
        raise ArgumentError(f"per-side {name} needs one (before, after) pair per spatial axis ({n}), got {padding!r}")
    pads = []
    for p in padding:
        if len(p) != 2 or not all(_is_int(v) for v in p):
            raise ArgumentTypeError(
                f"each per-side {name} entry must be a pair (before, after) of ints, got {padding!r}"
            )
        if min(p) < 0:
            raise ArgumentError(f"{name} must be >= 0, got {padding!r}")
        pads.append((int(p[0]), int(p[1])))
    return tuple(pads)


def resolve_padding(padding: object, in_size: Sizes, kernel: Sizes, stride: Sizes, dilation: Sizes) -> Pads:
    """Explicit ``((before, after), ...)`` pads, one pair per axis of ``in_size``.

    ``padding`` may be an int, one int per axis (symmetric), one ``(before, after)`` pair per axis,
    ``"valid"`` (no padding) or ``"same"`` (see :func:`same_pads`).
    """
    n = len(in_size)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * n
        if padding == "same":
            return tuple(same_pads(in_size[a], kernel[a], stride[a], dilation[a]) for a in range(n))
        raise ArgumentError(
            f"padding must be an int, {n} ints, {n} (before, after) pairs, 'same' or 'valid', got {padding!r}"
        )
    if is_per_side(padding):
        return per_side_pads(padding, n)
    return tuple((p, p) for p in ntuple(padding, n, "padding", minimum=0))


def output_size(in_size: int, pads: Pair, kernel: int, stride: int, dilation: int) -> int:
    """``floor((in + pad_before + pad_after - dilation*(kernel-1) - 1) / stride) + 1``."""
    return (in_size + pads[0] + pads[1] - dilated_size(kernel, dilation)) // stride + 1


def pool_output_size(in_size: int, pads: Pair, kernel: int, stride: int, dilation: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size along one axis (may be < 1; the caller reports that).

    ``floor`` (or ``ceil`` in ceil mode) of ``(in + before + after - dilation·(kernel-1) - 1) / stride``,
    plus 1. In ceil mode the last window must still start inside the input or the leading padding:
    if ``(out - 1)·stride >= in + before`` that window is dropped.
    """
    span = in_size + pads[0] + pads[1] - dilated_size(kernel, dilation)
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= in_size + pads[0]:
        out -= 1
    return out


def ceil_mode_pads(pads: Pair, in_size: int, kernel: int, stride: int, dilation: int, out: int) -> Pair:
    """``pads`` plus the trailing padding a ceil-mode last window hangs over (0 when it fits)."""
    reach = (out - 1) * stride + dilated_size(kernel, dilation)
    return pads[0], max(pads[1], reach - in_size - pads[0])


@dataclass(frozen=True)
class Window:
    """Where every window sits, per spatial axis: window ``o`` reads padded positions
    ``o·stride + t·dilation``, ``0 <= t < kernel``, for ``0 <= o < out_size``."""

    in_size: Sizes  # before padding
    kernel: Sizes
    stride: Sizes
    dilation: Sizes
    pads: Pads  # ((before, after), ...)
    out_size: Sizes

    @classmethod
    def fitted(cls, in_size: Sizes, kernel: Sizes, stride: Sizes, dilation: Sizes, pads: Pads) -> Window:
        """The geometry with as many windows as fit: :func:`output_size` on each axis."""
        out = tuple(output_size(*args) for args in zip(in_size, pads, kernel, stride, dilation, strict=True))
        return cls(tuple(in_size), tuple(kernel), tuple(stride), tuple(dilation), tuple(pads), out)

    @property
    def ndim(self) -> int:
        return len(self.in_size)

    @property
    def padded_size(self) -> Sizes:
        return tuple(size + before + after for size, (before, after) in zip(self.in_size, self.pads, strict=True))

    def taps(self) -> list[tuple[Sizes, tuple[slice, ...]]]:
        """For each kernel tap, the strided slices of the padded input it touches (see :func:`tap_slices`)."""
        return tap_slices(self.kernel, self.stride, self.dilation, self.out_size)


def check_pads_for_mode(pads: Pads, in_size: Sizes, padding_mode: str) -> None:
    """PyTorch's limits: reflect needs pad < size, circular needs pad <= size."""
    if padding_mode == "reflect":
        bad = any(p >= size for size, pp in zip(in_size, pads, strict=True) for p in pp if p > 0)
        limit = "smaller than"
    elif padding_mode == "circular":
        bad = any(p > size for size, pp in zip(in_size, pads, strict=True) for p in pp)
        limit = "at most"
    else:
        return
    if bad:
        raise ArgumentError(
            f"padding_mode={padding_mode!r} needs each pad {limit} the input size; "
            f"got pads (before, after) per axis = {pads} for input size {in_size}"
        )


SMALL_PAD_BYTES = 1 << 16  # up to here pad() zero-fills the whole array (a chunk, an image at batch 1)


def pad(x: np.ndarray, pads: Pads, padding_mode: str = "zeros", value: float = 0.0) -> np.ndarray:
    """Pad the last ``len(pads)`` axes of ``x`` by ``pads`` in ``padding_mode`` (zeros: with ``value``)."""
    if all(p == (0, 0) for p in pads):
        return x
    if padding_mode == "zeros":  # as np.pad, whose general machinery costs ~40 µs a call more
        k = x.ndim - len(pads)  # leading axes, not padded
        size = x.shape[k:]
        shape = (*x.shape[:k], *(n + b + a for n, (b, a) in zip(size, pads, strict=True)))
        if x.nbytes <= SMALL_PAD_BYTES:  # filled, then the copy: two calls instead of 1 + 2 per axis
            out = np.zeros(shape, dtype=x.dtype) if value == 0 else np.full(shape, value, dtype=x.dtype)
            crop(out, size, pads)[...] = x
            return out
        out = np.empty(shape, dtype=x.dtype)  # large: write the borders only, not the whole array twice
        crop(out, size, pads)[...] = x
        for axis, (n, (before, _)) in enumerate(zip(size, pads, strict=True), start=k):
            lead = (slice(None),) * axis
            out[(*lead, slice(0, before))] = value  # each slab spans every other axis: corners included
            out[(*lead, slice(before + n, None))] = value
        return out
    widths = [(0, 0)] * (x.ndim - len(pads)) + list(pads)
    return np.pad(x, widths, mode=_NUMPY_PAD_MODE[padding_mode])


def _source_index(size: int, before: int, after: int, padding_mode: str) -> np.ndarray:
    """For each padded position, the input position it copies (-1 for a zero pad)."""
    if padding_mode == "zeros":
        return np.concatenate([np.full(before, -1), np.arange(size), np.full(after, -1)])
    return np.pad(np.arange(size), (before, after), mode=_NUMPY_PAD_MODE[padding_mode])


def crop(padded: np.ndarray, in_size: Sizes, pads: Pads) -> np.ndarray:
    """The input region (a view) of an array padded by ``pads`` on its last ``len(pads)`` axes."""
    lead = (slice(None),) * (padded.ndim - len(pads))
    return padded[(*lead, *(slice(b, b + size) for size, (b, _) in zip(in_size, pads, strict=True)))]


def pad_backward(grad_padded: np.ndarray, in_size: Sizes, pads: Pads, padding_mode: str = "zeros") -> np.ndarray:
    """Adjoint of :func:`pad`: fold the gradient of the padded array back onto the input.

    Padding copies input pixels into the border, so each input pixel's gradient is its own
    interior gradient plus the gradient of every border pixel that copied it (axis by axis:
    padding is separable, so is its adjoint). Zero padding copies nothing: its adjoint crops.
    """
    if all(p == (0, 0) for p in pads):
        return grad_padded
    if padding_mode == "zeros":
        return crop(grad_padded, in_size, pads).copy()
    g = grad_padded
    first = g.ndim - len(pads)
    for a, (size, (before, after)) in enumerate(zip(in_size, pads, strict=True)):
        lead = (slice(None),) * (first + a)
        out = g[(*lead, slice(before, before + size))].copy()  # interior along this axis
        source = _source_index(size, before, after, padding_mode)
        for i in [*range(before), *range(before + size, before + size + after)]:
            out[(*lead, source[i])] += g[(*lead, i)]
        g = out
    return g


def windows(x: np.ndarray, kernel: Sizes, stride: Sizes, dilation: Sizes, out_size: Sizes) -> np.ndarray:
    """Read-only strided view of every window: (..., *S) → (..., *K, *O) over the last n = len(kernel) axes.

    ``view[..., t_1, .., t_n, o_1, .., o_n] = x[..., o_1·s_1 + t_1·d_1, .., o_n·s_n + t_n·d_n]``.
    No data is copied.
    """
    n = len(kernel)
    lead_shape, lead_strides = x.shape[:-n], x.strides[:-n]
    spatial = x.strides[-n:]
    return np.lib.stride_tricks.as_strided(
        x,
        shape=(*lead_shape, *kernel, *out_size),
        strides=(*lead_strides, *(s * d for s, d in zip(spatial, dilation, strict=True)),
                 *(s * st for s, st in zip(spatial, stride, strict=True))),
        writeable=False,
    )  # fmt: skip


def tap_slices(kernel: Sizes, stride: Sizes, dilation: Sizes, out_size: Sizes) -> list[tuple[Sizes, tuple[slice, ...]]]:
    """For each kernel tap ``t``, the strided slices of the padded input it touches.

    ``x_padded[..., *slices]`` is the (..., *O) plane ``windows(x_padded, ...)[..., *t, :, ..]``,
    but as a basic slice it can also be *written*: the adjoint of ``windows`` (scattering window
    gradients back, overlapping windows summed) is one strided slice-add per tap, no per-pixel loop.
    """
    taps = []
    for tap in itertools.product(*(range(k) for k in kernel)):
        slices = tuple(
            slice(t * d, t * d + s * (o - 1) + 1, s) for t, s, d, o in zip(tap, stride, dilation, out_size, strict=True)
        )
        taps.append((tap, slices))
    return taps


def scatter_windows(columns: np.ndarray, out: np.ndarray, stride: Sizes, dilation: Sizes) -> None:
    """Adjoint of :func:`windows`: add ``columns`` (..., *K, *O) into ``out`` (..., *S), overlaps summed."""
    n = len(stride)
    kernel, out_size = columns.shape[-2 * n : -n], columns.shape[-n:]
    every = (slice(None),) * n
    for tap, slices in tap_slices(kernel, stride, dilation, out_size):
        target: tuple[Any, ...] = (Ellipsis, *slices)
        source: tuple[Any, ...] = (Ellipsis, *tap, *every)
        out[target] += columns[source]  # (..., *O) plane of this tap
