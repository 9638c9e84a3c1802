"""nn.Conv2d: holds the kernel and bias; the arithmetic is ``functional.conv2d``/``conv2d_backward``."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from ..functional.conv import (
    ConvContext,
    conv2d_backward_from_context,
    conv2d_param_grads_from_context,
    conv2d_with_context,
)
from ..functional.geometry import check_padding_mode, output_size, pair, resolve_padding
from ..init import as_generator, torch_default
from .module import Module, Parameter
from .validate import check_dtype, check_positive_int


class Conv2d(Module):
    """2-D convolution layer, ``torch.nn.Conv2d``'s arguments and default initialisation.

    ``y = conv2d(x, weight) + bias`` (see ``functional.conv2d`` for the formula and
    ``docs/convolution.md`` for the derivation of the gradients).

    Shapes:
        x: (N, C, H, W) or (C, H, W); weight: (O, C/groups, KH, KW); y: (N, O, OH, OW)
        bias: (O,) when ``bias=True``; (O, OH, OW) when ``bias="untied"``

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, padding_mode:
            as ``torch.nn.Conv2d``.
        bias: ``True`` (one bias per output channel, PyTorch's), ``False``, or ``"untied"``: one bias
            per output *position*, as in seed 000's layer; needs ``input_size``.
        input_size: (H, W) of the input, required only with ``bias="untied"``.
        algorithm: the ``functional.conv2d`` algorithm (``"auto"`` by default).
        rng: ``np.random.Generator`` or int seed for the initial weights (PyTorch's distribution).
        dtype: float32 (default) or float64.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool | str = True,
        padding_mode: str = "zeros",
        *,
        input_size=None,
        algorithm: str = "auto",
        rng=None,
        dtype=np.float32,
    ):
        super().__init__()
        in_channels = check_positive_int(in_channels, "in_channels")
        out_channels = check_positive_int(out_channels, "out_channels")
        groups = check_positive_int(groups, "groups")
        if in_channels % groups:
            raise ValueError(f"in_channels (={in_channels}) must be divisible by groups (={groups})")
        if out_channels % groups:
            raise ValueError(f"out_channels (={out_channels}) must be divisible by groups (={groups})")
        if isinstance(bias, (bool, np.bool_)):
            bias = bool(bias)
        elif not (isinstance(bias, str) and bias == "untied"):
            raise ValueError(f"bias must be True, False or 'untied', got {bias!r}")
        kernel_size = pair(kernel_size, "kernel_size")
        stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
        if algorithm != "auto" and algorithm not in F.ALGORITHMS:
            raise ValueError(f"algorithm must be 'auto' or one of {tuple(F.ALGORITHMS)}, got {algorithm!r}")
        dtype = check_dtype(dtype)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.dilation, self.groups = stride, dilation, groups
        self.padding, self.padding_mode, self.algorithm = padding, padding_mode, algorithm
        self.bias_kind = bias
        self.input_size = None
        resolve_padding(padding, (1, 1), kernel_size, stride, dilation)  # validates the padding argument
        if not isinstance(padding, str):
            padding = pair(padding, "padding", minimum=0)  # plain ints, so config() is JSON
        self.padding = padding
        check_padding_mode(padding_mode)
        bias_shape: tuple[int, ...] | None = (out_channels,) if bias is True else None
        if bias == "untied":
            if input_size is None:
                raise ValueError("bias='untied' (one bias per output position) needs input_size=(H, W)")
            self.input_size = pair(input_size, "input_size")
            pads = resolve_padding(padding, self.input_size, kernel_size, stride, dilation)
            out = tuple(
                output_size(self.input_size[a], pads[a], kernel_size[a], stride[a], dilation[a]) for a in range(2)
            )
            if min(out) < 1:
                raise ValueError(
                    f"input_size {self.input_size} is too small for kernel {kernel_size} with padding {padding!r}"
                )
            bias_shape = (out_channels, *out)
        elif input_size is not None:
            self.input_size = pair(input_size, "input_size")
        w, b = torch_default((out_channels, in_channels // groups, *kernel_size), bias_shape, as_generator(rng), dtype)
        self.weight = Parameter(w)
        self.bias = Parameter(b) if b is not None else None

    def _options(self) -> dict[str, Any]:
        return dict(
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            padding_mode=self.padding_mode,
            algorithm=self.algorithm,
        )

    def _add_untied_bias(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        if self.bias_kind == "untied":
            if y.shape[-3:] != self.bias.data.shape:
                raise ValueError(
                    f"untied bias has shape {self.bias.data.shape} but the output is {y.shape[-3:]}; "
                    f"this layer was built for input_size={self.input_size}, got x of shape {np.shape(x)}"
                )
            y += self.bias.data  # one bias per output position, broadcast over the batch
        return y

    def _tied_bias(self) -> np.ndarray | None:
        return self.bias.data if self.bias is not None and self.bias_kind is True else None

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, ConvContext]:
        """Context: the functional ``ConvContext`` (the padded input and, when the algorithm reuses
        them, the unfolded columns)."""
        y, context = conv2d_with_context(x, self.weight.data, self._tied_bias(), **self._options())
        return self._add_untied_bias(y, x), context

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The output only: no padded input or columns are kept."""
        y = F.conv2d(x, self.weight.data, self._tied_bias(), **self._options())
        return self._add_untied_bias(y, x)

    def backward_with_context(
        self, context: ConvContext, grad_output: np.ndarray, *, input_grad: bool = True
    ) -> np.ndarray | None:
        if not input_grad:
            dw, db = conv2d_param_grads_from_context(grad_output, context)
            self._accumulate(grad_output, dw, db)
            return None
        dx, dw, db = conv2d_backward_from_context(grad_output, context)
        self._accumulate(grad_output, dw, db)
        return dx

    def _accumulate(self, grad_output: np.ndarray, dw: np.ndarray, db: np.ndarray) -> None:
        self.weight.accumulate(dw)
        if self.bias_kind is True:
            self.bias.accumulate(db)
        elif self.bias_kind == "untied":
            self.bias.accumulate(grad_output.sum(axis=0) if grad_output.ndim == 4 else grad_output)  # (O, OH, OW)

    def config(self) -> dict[str, Any]:
        cfg = dict(
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            kernel_size=list(self.kernel_size),
            stride=list(self.stride),
            padding=self.padding if isinstance(self.padding, str) else list(self.padding),
            dilation=list(self.dilation),
            groups=self.groups,
            bias=self.bias_kind,
            padding_mode=self.padding_mode,
        )
        if self.input_size is not None:
            cfg["input_size"] = list(self.input_size)
        return cfg
