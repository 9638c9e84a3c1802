"""Pooling layers: MaxPool2d, AvgPool2d, AdaptiveAvgPool2d (math in ``functional.pool``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..functional import pool as P
from ..functional.geometry import pair
from .module import Module


def _listed(v):
    return list(v) if isinstance(v, tuple) else v


def _check_half_kernel(padding, kernel_size) -> None:
    """PyTorch's rule: padding at most half the kernel, so no window lies wholly in the padding."""
    if any(p > k // 2 for p, k in zip(padding, kernel_size, strict=True)):
        raise ValueError(f"padding (={padding}) must be at most half of kernel_size (={kernel_size})")


class MaxPool2d(Module):
    """Max pooling, ``torch.nn.MaxPool2d``: y = max over each window; the gradient goes to the argmax.

    Shapes:
        x: (N, C, H, W) or (C, H, W); y: (N, C, OH, OW)
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride") if stride is not None else self.kernel_size
        self.padding, self.dilation = pair(padding, "padding", minimum=0), pair(dilation, "dilation")
        self.ceil_mode = bool(ceil_mode)
        _check_half_kernel(self.padding, self.kernel_size)

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
        y, indices = P.max_pool2d_with_indices(x, **self._options())
        return y, (x, indices)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return P.max_pool2d(x, **self._options())

    def backward_with_context(
        self, context: tuple[np.ndarray, np.ndarray], grad_output: np.ndarray, *, input_grad: bool = True
    ) -> np.ndarray | None:
        if not input_grad:
            return None
        x, indices = context
        return P.max_pool2d_backward(grad_output, x, **self._options(), indices=indices)

    def config(self) -> dict[str, Any]:
        return {k: _listed(v) for k, v in self._options().items()}


class AvgPool2d(Module):
    """Average pooling, ``torch.nn.AvgPool2d``: y = mean over each window; each input gets δ/divisor."""

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride") if stride is not None else self.kernel_size
        self.padding = pair(padding, "padding", minimum=0)
        self.ceil_mode, self.count_include_pad = bool(ceil_mode), bool(count_include_pad)
        self.divisor_override = divisor_override
        _check_half_kernel(self.padding, self.kernel_size)
        if divisor_override is not None and (
            isinstance(divisor_override, bool) or not isinstance(divisor_override, int) or divisor_override < 1
        ):
            raise ValueError(f"divisor_override must be None or a positive int, got {divisor_override!r}")

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
        return P.avg_pool2d(x, **self._options())

    def backward_with_context(
        self, context: np.ndarray, grad_output: np.ndarray, *, input_grad: bool = True
    ) -> np.ndarray | None:
        if not input_grad:
            return None
        return P.avg_pool2d_backward(grad_output, context, **self._options())

    def config(self) -> dict[str, Any]:
        return {k: _listed(v) for k, v in self._options().items()}


class AdaptiveAvgPool2d(Module):
    """Adaptive average pooling to a fixed ``output_size`` (``(1, 1)``: global average pooling)."""

    def __init__(self, output_size):
        super().__init__()
        if isinstance(output_size, (tuple, list)) and len(output_size) == 2 and None in output_size:
            # None keeps that axis' input size, as in PyTorch
            self.output_size = tuple(None if v is None else pair(v, "output_size")[0] for v in output_size)
        else:
            self.output_size = pair(output_size, "output_size")

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Context: the input x (its shape fixes the bins)."""
        return self.forward(x), x

    def forward(self, x: np.ndarray) -> np.ndarray:
        return P.adaptive_avg_pool2d(x, self.output_size)

    def backward_with_context(
        self, context: np.ndarray, grad_output: np.ndarray, *, input_grad: bool = True
    ) -> np.ndarray | None:
        if not input_grad:
            return None
        return P.adaptive_avg_pool2d_backward(grad_output, context, self.output_size)

    def config(self) -> dict[str, Any]:
        return dict(output_size=list(self.output_size))
