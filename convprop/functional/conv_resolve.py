"""Resolving a convolution's arguments: the checks, the geometry (remembered per shape) and the algorithm.

``conv.py`` calls :func:`_resolve` first (``conv_transpose.py`` uses the same checks and choice); it
validates x, the weight and every option, resolves ``int | per axis | per side | "same" | "valid"`` padding into one
:class:`~.geometry.Window`, and picks the algorithm (``"auto"``'s rules in :func:`_choose`, or the
refusal of an explicit algorithm that cannot do the shape). Split out of ``conv.py``, which re-exports
these names.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ArgumentError
from . import conv_depthwise, conv_direct, conv_direct_compiled, conv_gemm, conv_im2col, conv_scipy
from .conv_algorithm import ConvAlgorithm, ConvGeometry
from .conv_winograd import F2 as WINOGRAD_F2
from .conv_winograd import F4 as WINOGRAD_F4
from .geometry import (
    AXIS_NAMES,
    PadArg,
    SizeArg,
    Window,
    check_padding_mode,
    check_pads_for_mode,
    dilated_size,
    ntuple,
    plain_arguments,
    resolve_padding,
)
from .validation import as_float_array, check_positive_int

ALGORITHMS: dict[str, ConvAlgorithm] = {
    "direct": conv_direct,
    "scipy": conv_scipy,
    "im2col": conv_im2col,
    "gemm": conv_gemm,
    "depthwise": conv_depthwise,
    "direct_compiled": conv_direct_compiled,  # issue 15: compiled loops, 2-D dense (not chosen by auto: unmeasured)
    "winograd2": WINOGRAD_F2,  # issue 15: F(2x2, 3x3), 3x3 stride 1 dense (not chosen by auto: unmeasured)
    "winograd4": WINOGRAD_F4,  # issue 15: F(4x4, 3x3)
}
_KERNEL_LETTERS = {1: "kL", 2: "kH, kW", 3: "kD, kH, kW"}


def check_algorithm(algorithm: object) -> str:
    if algorithm != "auto" and algorithm not in ALGORITHMS:
        raise ArgumentError(f"algorithm must be 'auto' or one of {tuple(ALGORITHMS)}, got {algorithm!r}")
    return str(algorithm)


def spatial_shapes(x: np.ndarray, ndim: int, name: str) -> tuple[np.ndarray, bool]:
    """x as (N, C, *spatial) with ``ndim`` spatial axes, and whether it was unbatched (C, *spatial)."""
    letters = ", ".join(AXIS_NAMES[ndim]) if ndim in AXIS_NAMES else f"{ndim} spatial axes"
    if x.ndim not in (ndim + 1, ndim + 2):
        raise ArgumentError(
            f"{name}: x must be (N, C_in, {letters}) or unbatched (C_in, {letters}), got shape {x.shape}"
        )
    return (x[None], True) if x.ndim == ndim + 1 else (x, False)


def check_weight(weight: np.ndarray, ndim: int, name: str, layout: str) -> None:
    """weight of rank ndim + 2, no empty axis; ``layout`` names its first two axes."""
    if weight.ndim != ndim + 2:
        raise ArgumentError(
            f"{name}: weight must be ({layout}, {_KERNEL_LETTERS.get(ndim, '*kernel')}), got shape {weight.shape} "
            f"({ndim + 2} axes expected)"
        )
    if min(weight.shape) < 1:
        raise ArgumentError(f"{name}: weight must have no empty axes, got shape {weight.shape}")


def check_groups(groups: object, counts: dict[str, int]) -> int:
    """groups as a positive int dividing every channel count; ``counts`` maps a label (quoting the
    value) to the count, e.g. ``{"in_channels (=4)": 4}``."""
    groups = check_positive_int(groups, "groups")
    for label, count in counts.items():
        if count % groups:
            raise ArgumentError(f"{label} must be divisible by groups (={groups})")
    return groups


def _resolve(
    x: ArrayLike,
    weight: ArrayLike,
    ndim: int,
    stride: SizeArg,
    padding: PadArg | str,
    dilation: SizeArg,
    groups: int,
    padding_mode: str,
    algorithm: str,
    name: str,
) -> tuple[np.ndarray, np.ndarray, ConvGeometry, ConvAlgorithm, bool]:
    """Validate every argument; return (x batched, weight, geometry, algorithm, unbatched)."""
    x = as_float_array(x, "x")
    weight = as_float_array(weight, "weight")
    check_weight(weight, ndim, name, "C_out, C_in/groups")
    x, unbatched = spatial_shapes(x, ndim, name)
    args = (x.shape, weight.shape, ndim, stride, padding, dilation, groups, padding_mode, algorithm, name)
    plain = plain_arguments(stride, padding, dilation, groups, padding_mode, algorithm)  # (shapes always are)
    geo, algo = (_remembered_geometry if plain else _geometry)(*args)
    return x, weight, geo, algo, unbatched


def _geometry(
    x_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    ndim: int,
    stride: SizeArg,
    padding: PadArg | str,
    dilation: SizeArg,
    groups: int,
    padding_mode: str,
    algorithm: str,
    name: str,
) -> tuple[ConvGeometry, ConvAlgorithm]:
    """The checks of :func:`_resolve` that depend on shapes and options only, and their geometry and algorithm."""
    C, O = x_shape[1], weight_shape[0]
    groups = check_groups(groups, {f"in_channels (={C})": C, f"out_channels (=weight.shape[0]={O})": O})
    if weight_shape[1] * groups != C:
        raise ArgumentError(
            f"weight.shape[1] (={weight_shape[1]}) must be in_channels/groups (={C}/{groups}={C // groups}); "
            f"got x of shape {x_shape} and weight of shape {weight_shape}"
        )
    if min(x_shape[1:]) < 1:
        raise ArgumentError(f"x must have no empty axes (other than N), got shape {x_shape}")
    stride, dilation = ntuple(stride, ndim, "stride"), ntuple(dilation, ndim, "dilation")
    check_padding_mode(padding_mode)
    check_algorithm(algorithm)
    kernel, in_size = weight_shape[2:], x_shape[2:]
    pads = resolve_padding(padding, in_size, kernel, stride, dilation)
    check_pads_for_mode(pads, in_size, padding_mode)
    geo = ConvGeometry(Window.fitted(in_size, kernel, stride, dilation, pads), groups, C, O, padding_mode)
    for a in range(ndim):
        if geo.padded_size[a] < dilated_size(kernel[a], dilation[a]):
            raise ArgumentError(
                f"kernel (dilated size {dilated_size(kernel[a], dilation[a])} along {AXIS_NAMES[ndim][a]}) is larger "
                f"than the padded input ({geo.padded_size[a]} = {in_size[a]} + pads {pads[a]}); "
                f"got x {x_shape}, weight {weight_shape}, dilation {dilation}, padding {padding!r}"
            )
    return geo, _choose(algorithm, geo)


# A layer convolves the same shapes every call: resolving them again took ~50 µs a call, a sixth of lenet's
# whole batch-1 inference. Errors are raised again, never remembered; typed, so 1 and 1.0 stay apart.
_remembered_geometry = functools.lru_cache(maxsize=512, typed=True)(_geometry)


def _choose(algorithm: str, geo: ConvGeometry) -> ConvAlgorithm:
    """The algorithm to use; ``"auto"`` picks the fastest correct one for the shape.

    An explicit ``algorithm`` that cannot compute the geometry is an error saying why (never a silent
    substitute). Rules for ``"auto"`` (measured with ``benchmarks/conv.py``, fp32, 2 threads, ratios
    to PyTorch):

    1. depthwise — 1-D or 2-D, one input channel per group and more than one group →
       ``conv_depthwise``: compiled loops a plane at a time; im2col's products degenerate to
       (Og, KH·KW)·(KH·KW, P) and its time goes into unfolding (about 2× slower measured; the plane
       loops with the padding in cache and one backward pass run the benchmark's depthwise layer
       in 0.64–0.76 of PyTorch's time);
    2. a single input channel, dense (``C == 1``, ``groups == 1``) → ``conv_im2col``: with
       K = KH·KW tiny, NumPy's unfold is cheap and per-image products beat both the depthwise
       loops (8×) and ``conv_gemm``'s one large product, whose transposed copies dominate;
    3. everything else → ``conv_gemm``: one large product per chunk of images (compiled col2im in
       2-D); 1×…×1 stride-1 kernels as a plain matrix product with no unfolding.
    """
    if algorithm != "auto":
        chosen = ALGORITHMS[algorithm]
        reason = chosen.supports(geo)
        if reason is not None:
            raise ArgumentError(f"algorithm={algorithm!r} cannot compute this convolution: {reason}")
        return chosen
    if geo.groups > 1 and conv_depthwise.supports(geo) is None:
        return conv_depthwise
    if geo.groups == 1 and geo.in_channels == 1:
        return conv_im2col
    return conv_gemm
