"""The convolution algorithm interface: what every algorithm module provides, and the geometry it is given.

An algorithm computes the three products of a convolution on an *already padded* input (``conv.py``
pads, adds the bias and folds the padding's adjoint back): the forward correlation, the input
gradient (a full correlation of δ with the 180°-rotated kernel, scattered through the windows) and
the weight gradient (a correlation of the input with δ). Each module — ``conv_direct`` (the
specification), ``conv_scipy``, ``conv_im2col``, ``conv_gemm``, ``conv_depthwise`` — satisfies
:class:`ConvAlgorithm`; ``supports(geometry)`` returns ``None`` when it can compute the geometry, or the
reason it cannot. ``conv.py`` chooses one (``"auto"``) or refuses an explicit choice that cannot.

The transposed convolution uses the same three functions with the roles exchanged (its forward is
``grad_input``, its input gradient ``forward``, its weight gradient ``grad_weight``), on the
:class:`ConvGeometry` of the convolution it is the adjoint of.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from .geometry import Pads, Sizes, Window


@dataclass(frozen=True)
class ConvGeometry:
    """Everything about a convolution's shape, resolved once and shared by forward and backward.

    ``window.in_size`` is the input before padding; ``window.out_size`` the output (for a transposed
    convolution, its *input*: explicit, because ``output_padding`` makes it more than a formula).
    """

    window: Window
    groups: int
    in_channels: int  # C
    out_channels: int  # O
    padding_mode: str = "zeros"

    @property
    def ndim(self) -> int:
        return self.window.ndim

    @property
    def in_size(self) -> Sizes:
        return self.window.in_size

    @property
    def kernel(self) -> Sizes:
        return self.window.kernel

    @property
    def stride(self) -> Sizes:
        return self.window.stride

    @property
    def dilation(self) -> Sizes:
        return self.window.dilation

    @property
    def pads(self) -> Pads:
        return self.window.pads

    @property
    def out_size(self) -> Sizes:
        return self.window.out_size

    @property
    def padded_size(self) -> Sizes:
        return self.window.padded_size

    @property
    def weight_shape(self) -> Sizes:
        """(O, C/groups, *kernel)."""
        return (self.out_channels, self.in_channels // self.groups, *self.kernel)


@runtime_checkable
class ConvAlgorithm(Protocol):
    """One convolution algorithm (a module). Arrays: x padded (N, C, *padded_size); weight
    (O, C/groups, *kernel); grad_output (N, O, *out_size)."""

    def supports(self, geometry: ConvGeometry) -> str | None:
        """``None`` if this algorithm computes ``geometry``, else why not (shown to the user)."""

    def forward(self, x: np.ndarray, weight: np.ndarray, geometry: ConvGeometry) -> np.ndarray:
        """y (N, O, *out_size) = the correlation of the padded x with the kernel (no bias)."""

    def grad_input(self, grad_output: np.ndarray, weight: np.ndarray, geometry: ConvGeometry) -> np.ndarray:
        """The gradient of the *padded* input, (N, C, *padded_size)."""

    def grad_weight(self, grad_output: np.ndarray, x: np.ndarray, geometry: ConvGeometry) -> np.ndarray:
        """The kernel's gradient, (O, C/groups, *kernel), from the padded x."""


@runtime_checkable
class SavesColumns(ConvAlgorithm, Protocol):
    """An algorithm that can keep its unfolded input from the forward pass for the weight gradient."""

    def forward_saving(
        self, x: np.ndarray, weight: np.ndarray, geometry: ConvGeometry, max_bytes: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`forward`, and the unfolded input when it fits in ``max_bytes`` (else ``None``)."""

    def grad_weight_saved(self, grad_output: np.ndarray, columns: np.ndarray, geometry: ConvGeometry) -> np.ndarray:
        """:meth:`grad_weight` from the columns :meth:`forward_saving` kept."""
