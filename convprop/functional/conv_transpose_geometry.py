"""The transposed convolution's geometry: its padding argument, its output size and the
``output_padding`` that reaches a requested size (split out of ``conv_transpose``, which re-exports
them)."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ArgumentError
from .geometry import PadArg, Pads, SizeArg, Sizes, dilated_size, is_per_side, ntuple, per_side_pads


def transposed_pads(padding: object, ndim: int) -> Pads:
    """int, one int per axis, or one (before, after) pair per axis (no "same"/"valid", as torch)."""
    if isinstance(padding, str):
        raise ArgumentError(f"padding must be an int, {ndim} ints or {ndim} (before, after) pairs, got {padding!r}")
    if is_per_side(padding):
        return per_side_pads(padding, ndim)
    return tuple((p, p) for p in ntuple(padding, ndim, "padding", minimum=0))


def transposed_size(
    in_size: Sizes, kernel: Sizes, stride: Sizes, pads: Pads, dilation: Sizes, output_padding: Sizes
) -> Sizes:
    """(L - 1)·s - pad_before - pad_after + d·(K - 1) + output_padding + 1, per axis."""
    return tuple(
        (n - 1) * s - pb - pa + dilated_size(k, d) + op
        for n, k, s, (pb, pa), d, op in zip(in_size, kernel, stride, pads, dilation, output_padding, strict=True)
    )


def conv_transpose_output_padding(
    in_size: Sequence[int],
    output_size: SizeArg,
    kernel_size: SizeArg,
    stride: SizeArg = 1,
    padding: PadArg = 0,
    dilation: SizeArg = 1,
) -> Sizes:
    """The ``output_padding`` that makes a transposed convolution's output ``output_size`` (torch's
    ``output_size=`` option); an error quoting the reachable range when no output_padding can.

    ``in_size``: the input's spatial size; ``output_size``: the wanted spatial size (same length).
    """
    in_size = tuple(int(v) for v in in_size)
    ndim = len(in_size)
    output_size = ntuple(output_size, ndim, "output_size")
    kernel, stride = ntuple(kernel_size, ndim, "kernel_size"), ntuple(stride, ndim, "stride")
    dilation, pads = ntuple(dilation, ndim, "dilation"), transposed_pads(padding, ndim)
    smallest = transposed_size(in_size, kernel, stride, pads, dilation, (0,) * ndim)
    largest = tuple(lo + max(s, d) - 1 for lo, s, d in zip(smallest, stride, dilation, strict=True))
    if any(not lo <= want <= hi for lo, want, hi in zip(smallest, output_size, largest, strict=True)):
        raise ArgumentError(
            f"requested an output size of {output_size}, but valid sizes range from {smallest} to {largest} "
            f"(for an input of spatial size {in_size})"
        )
    return tuple(want - lo for want, lo in zip(output_size, smallest, strict=True))
