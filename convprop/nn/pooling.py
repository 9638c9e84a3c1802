"""Pooling layers, 1-, 2- and 3-D: MaxPool, AvgPool, AdaptiveAvgPool (math in ``functional.pool``).

One base class per kind holds the settings and calls the functional pooling of its dimension; the
1/2/3-D classes only say how many spatial axes they have (and which functions to call).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from ..errors import ArgumentError
from ..functional import pool as P
from ..functional.geometry import PadArg, SizeArg, is_per_side, ntuple, per_side_pads
from .module import Module
from .validate import check_divisor_override


def _listed(v: Any) -> Any:
    return [_listed(i) for i in v] if isinstance(v, (tuple, list)) else v


def _pool_padding(padding: Any, kernel_size: tuple[int, ...]) -> Any:
    """One int per axis, or one (before, after) pair per axis; each at most half the kernel (PyTorch's
    rule, so no window lies wholly in the padding)."""
    n = len(kernel_size)
    if is_per_side(padding):
        pads: Any = per_side_pads(padding, n)
        sides = pads
    else:
        pads = ntuple(padding, n, "padding", minimum=0)
        sides = tuple((p, p) for p in pads)
    if any(p > k // 2 for pair, k in zip(sides, kernel_size, strict=True) for p in pair):
        raise ArgumentError(f"padding (={pads}) must be at most half of kernel_size (={kernel_size})")
    return pads


class _MaxPoolNd(Module):
    """Max pooling, ``torch.nn.MaxPool{1,2,3}d``: y = max over each window; the gradient goes to the argmax.

    Shapes (n spatial axes): x (N, C, *S) or (C, *S); y (N, C, *Q)
    """

    registered = False
    ndim: ClassVar[int]
    _forward: ClassVar[Callable[..., tuple[np.ndarray, np.ndarray]]]
    _backward: ClassVar[Callable[..., np.ndarray]]

    def __init__(
        self,
        kernel_size: SizeArg,
        stride: SizeArg | None = None,
        padding: PadArg = 0,
        dilation: SizeArg = 1,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        n = self.ndim
        self.kernel_size = ntuple(kernel_size, n, "kernel_size")
        self.stride = ntuple(stride, n, "stride") if stride is not None else self.kernel_size
        self.padding = _pool_padding(padding, self.kernel_size)
        self.dilation = ntuple(dilation, n, "dilation")
        self.ceil_mode = bool(ceil_mode)

    def _options(self) -> dict[str, Any]:
        return dict(
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            ceil_mode=self.ceil_mode,
        )

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Context: ``(x, indices)``, the input and each window's argmax (where the gradient goes)."""
        y, indices = type(self)._forward(x, **self._options())
        return y, (x, indices)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return type(self)._forward(x, **self._options())[0]

    def backward_with_context(
        self, context: tuple[np.ndarray, np.ndarray], grad_output: np.ndarray, *, input_grad: bool = True
    ) -> np.ndarray | None:
        if not input_grad:
            return None
        x, indices = context
        return type(self)._backward(grad_output, x, **self._options(), indices=indices)

    def config(self) -> dict[str, Any]:
        return {k: _listed(v) for k, v in self._options().items()}


class MaxPool1d(_MaxPoolNd):
    """``torch.nn.MaxPool1d``: x (N, C, L) or (C, L). See ``_MaxPoolNd``."""

    ndim = 1
    _forward = staticmethod(P.max_pool1d_with_indices)
    _backward = staticmethod(P.max_pool1d_backward)


class MaxPool2d(_MaxPoolNd):
    """``torch.nn.MaxPool2d``: x (N, C, H, W) or (C, H, W). See ``_MaxPoolNd``."""

    ndim = 2
    _forward = staticmethod(P.max_pool2d_with_indices)
    _backward = staticmethod(P.max_pool2d_backward)


class MaxPool3d(_MaxPoolNd):
    """``torch.nn.MaxPool3d``: x (N, C, D, H, W) or (C, D, H, W). See ``_MaxPoolNd``."""

    ndim = 3
    _forward = staticmethod(P.max_pool3d_with_indices)
    _backward = staticmethod(P.max_pool3d_backward)


class _AvgPoolNd(Module):
    """Average pooling, ``torch.nn.AvgPool{1,2,3}d``: y = mean over each window; each input gets δ/divisor."""

    registered = False
    ndim: ClassVar[int]
    _forward: ClassVar[Callable[..., np.ndarray]]
    _backward: ClassVar[Callable[..., np.ndarray]]

    def __init__(
        self,
        kernel_size: SizeArg,
        stride: SizeArg | None = None,
        padding: PadArg = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__()
        n = self.ndim
        self.kernel_size = ntuple(kernel_size, n, "kernel_size")
        self.stride = ntuple(stride, n, "stride") if stride is not None else self.kernel_size
        self.padding = _pool_padding(padding, self.kernel_size)
        self.ceil_mode, self.count_include_pad = bool(ceil_mode), bool(count_include_pad)
        self.divisor_override = check_divisor_override(divisor_override)

    def _options(self) -> dict[str, Any]:
        return dict(
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            ceil_mode=self.ceil_mode,
            count_include_pad=self.count_include_pad,
            divisor_override=self.divisor_override,
        )

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Context: the input x (its shape and dtype place each δ/divisor)."""
        return self.forward(x), x

    def forward(self, x: np.ndarray) -> np.ndarray:
        return type(self)._forward(x, **self._options())

    def backward_with_context(
        self, context: np.ndarray, grad_output: np.ndarray, *, input_grad: bool = True
    ) -> np.ndarray | None:
        if not input_grad:
            return None
        return type(self)._backward(grad_output, context, **self._options())

    def config(self) -> dict[str, Any]:
        return {k: _listed(v) for k, v in self._options().items()}


class AvgPool1d(_AvgPoolNd):
    """``torch.nn.AvgPool1d`` (plus ``divisor_override``, as the 2-D one). See ``_AvgPoolNd``."""

    ndim = 1
    _forward = staticmethod(P.avg_pool1d)
    _backward = staticmethod(P.avg_pool1d_backward)


class AvgPool2d(_AvgPoolNd):
    """``torch.nn.AvgPool2d``. See ``_AvgPoolNd``."""

    ndim = 2
    _forward = staticmethod(P.avg_pool2d)
    _backward = staticmethod(P.avg_pool2d_backward)


class AvgPool3d(_AvgPoolNd):
    """``torch.nn.AvgPool3d``. See ``_AvgPoolNd``."""

    ndim = 3
    _forward = staticmethod(P.avg_pool3d)
    _backward = staticmethod(P.avg_pool3d_backward)


class _AdaptiveAvgPoolNd(Module):
    """Adaptive average pooling to a fixed ``output_size`` (all ones: global average pooling); an entry
    of ``None`` keeps that axis' input size, as in PyTorch."""

    registered = False
    ndim: ClassVar[int]
    _forward: ClassVar[Callable[..., np.ndarray]]
    _backward: ClassVar[Callable[..., np.ndarray]]

    def __init__(self, output_size: int | Sequence[int | None]) -> None:
        super().__init__()
        n = self.ndim
        if isinstance(output_size, (tuple, list)) and len(output_size) == n and None in output_size:
            self.output_size = tuple(None if v is None else ntuple(v, 1, "output_size")[0] for v in output_size)
        else:
            self.output_size = ntuple(output_size, n, "output_size")

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Context: the input x (its shape fixes the bins)."""
        return self.forward(x), x

    def forward(self, x: np.ndarray) -> np.ndarray:
        return type(self)._forward(x, self.output_size)

    def backward_with_context(
        self, context: np.ndarray, grad_output: np.ndarray, *, input_grad: bool = True
    ) -> np.ndarray | None:
        if not input_grad:
            return None
        return type(self)._backward(grad_output, context, self.output_size)

    def config(self) -> dict[str, Any]:
        return dict(output_size=list(self.output_size))


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    """``torch.nn.AdaptiveAvgPool1d``: x (N, C, L) → (N, C, output_size)."""

    ndim = 1
    _forward = staticmethod(P.adaptive_avg_pool1d)
    _backward = staticmethod(P.adaptive_avg_pool1d_backward)


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    """``torch.nn.AdaptiveAvgPool2d``: ``(1, 1)`` is global average pooling."""

    ndim = 2
    _forward = staticmethod(P.adaptive_avg_pool2d)
    _backward = staticmethod(P.adaptive_avg_pool2d_backward)


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    """``torch.nn.AdaptiveAvgPool3d``: x (N, C, D, H, W) → (N, C, *output_size)."""

    ndim = 3
    _forward = staticmethod(P.adaptive_avg_pool3d)
    _backward = staticmethod(P.adaptive_avg_pool3d_backward)
