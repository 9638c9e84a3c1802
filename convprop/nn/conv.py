"""Convolution layers: Conv1d/2d/3d and ConvTranspose1d/2d/3d on one ``_ConvNd`` base (PyTorch's layout).

The layers hold the kernel and bias; the arithmetic is ``functional.conv`` / ``functional.conv_transpose``.
One base class validates and stores what every convolution shares (channels, groups, kernel, stride,
dilation, padding, the initialisation, ``config()``); the 1-, 2- and 3-D classes only say how many
spatial axes they have, and the transposed ones differ in their weight layout (C_in, C_out/groups, *K),
``output_padding`` and ``forward(x, output_size=None)``. Initialisation is PyTorch's for both (its
``fan_in`` is ``weight.shape[1]·prod(kernel)`` in either layout).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import DTypeLike

from ..errors import ArgumentError
from ..functional.conv import (
    ConvContext,
    check_algorithm,
    conv_backward_from_context,
    conv_param_grads_from_context,
    conv_with_context,
    forward_nd,
)
from ..functional.conv_transpose import (
    TransposeContext,
    conv_transpose_backward_from_context,
    conv_transpose_output_padding,
    conv_transpose_with_context,
    transposed_pads,
)
from ..functional.geometry import (
    AXIS_NAMES,
    PadArg,
    SizeArg,
    Window,
    check_padding_mode,
    is_per_side,
    ntuple,
    resolve_padding,
)
from ..init import RngLike, as_generator, torch_default
from .module import Module, Parameter
from .validate import check_dtype, check_positive_int


def _listed(value: Any) -> Any:
    """Tuples (also nested) as lists, so config() is JSON."""
    return [_listed(v) for v in value] if isinstance(value, (tuple, list)) else value


class _ConvNd(Module):
    """What every convolution layer shares (torch's ``_ConvNd``); subclasses set ``ndim`` and ``transposed``."""

    registered = False
    ndim: ClassVar[int]
    transposed: ClassVar[bool] = False
    padding: Any  # as given: a word, one int per axis, or one (before, after) pair per axis
    weight: Parameter
    bias: Parameter | None

    def _setup(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: SizeArg,
        stride: SizeArg,
        padding: PadArg | str,
        dilation: SizeArg,
        groups: int,
        bias: bool | str,
        padding_mode: str,
        algorithm: str,
    ) -> None:
        n = self.ndim
        in_channels = check_positive_int(in_channels, "in_channels")
        out_channels = check_positive_int(out_channels, "out_channels")
        groups = check_positive_int(groups, "groups")
        if in_channels % groups:
            raise ArgumentError(f"in_channels (={in_channels}) must be divisible by groups (={groups})")
        if out_channels % groups:
            raise ArgumentError(f"out_channels (={out_channels}) must be divisible by groups (={groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = ntuple(kernel_size, n, "kernel_size")
        self.stride, self.dilation = ntuple(stride, n, "stride"), ntuple(dilation, n, "dilation")
        self.padding_mode = check_padding_mode(padding_mode)
        self.algorithm = check_algorithm(algorithm)

    def _init_parameters(
        self, weight_shape: tuple[int, ...], bias_shape: tuple[int, ...] | None, rng: RngLike, dtype: DTypeLike
    ) -> None:
        """PyTorch's default initialisation (kaiming-uniform weight, uniform bias), from ``rng``."""
        w, b = torch_default(weight_shape, bias_shape, as_generator(rng), check_dtype(dtype))
        self.weight = Parameter(w)
        self.bias = Parameter(b) if b is not None else None

    def _base_config(self) -> dict[str, Any]:
        return dict(
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            kernel_size=list(self.kernel_size),
            stride=list(self.stride),
            padding=_listed(self.padding),
            dilation=list(self.dilation),
            groups=self.groups,
            padding_mode=self.padding_mode,
        )


class _Conv(_ConvNd):
    """``torch.nn.Conv{1,2,3}d``: ``y = conv(x, weight) + bias``, see ``functional.conv2d``.

    Shapes (n spatial axes):
        x: (N, C, *S) or (C, *S); weight: (O, C/groups, *K); y: (N, O, *Q)
        bias: (O,) when ``bias=True``; (O, *Q) when ``bias="untied"``

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, padding_mode:
            as torch (``padding`` also per side: one (before, after) pair per axis).
        bias: ``True`` (one bias per output channel, PyTorch's), ``False``, or ``"untied"``: one bias
            per output *position*, as in seed 000's layer; needs ``input_size``.
        input_size: the input's spatial size, required only with ``bias="untied"``.
        algorithm: the ``functional`` convolution algorithm (``"auto"`` by default).
        rng: ``np.random.Generator`` or int seed for the initial weights (PyTorch's distribution).
        dtype: float32 (default) or float64.
    """

    registered = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: SizeArg,
        stride: SizeArg = 1,
        padding: PadArg | str = 0,
        dilation: SizeArg = 1,
        groups: int = 1,
        bias: bool | str = True,
        padding_mode: str = "zeros",
        *,
        input_size: SizeArg | None = None,
        algorithm: str = "auto",
        rng: RngLike = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        self._setup(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                    algorithm)  # fmt: skip
        n = self.ndim
        if isinstance(bias, (bool, np.bool_)):
            bias = bool(bias)
        elif not (isinstance(bias, str) and bias == "untied"):
            raise ArgumentError(f"bias must be True, False or 'untied', got {bias!r}")
        self.bias_kind = bias
        pads = resolve_padding(padding, (1,) * n, self.kernel_size, self.stride, self.dilation)  # validates it
        if isinstance(padding, str):
            self.padding: Any = padding
        else:
            self.padding = pads if is_per_side(padding) else tuple(p for p, _ in pads)
        self.input_size = None if input_size is None else ntuple(input_size, n, "input_size")
        bias_shape: tuple[int, ...] | None = (self.out_channels,) if bias is True else None
        if bias == "untied":
            if self.input_size is None:
                raise ArgumentError(
                    f"bias='untied' (one bias per output position) needs input_size=({', '.join(AXIS_NAMES[n])})"
                )
            pads = resolve_padding(padding, self.input_size, self.kernel_size, self.stride, self.dilation)
            out = Window.fitted(self.input_size, self.kernel_size, self.stride, self.dilation, pads).out_size
            if min(out) < 1:
                raise ArgumentError(
                    f"input_size {self.input_size} is too small for kernel {self.kernel_size} with padding {padding!r}"
                )
            bias_shape = (self.out_channels, *out)
        self._init_parameters((self.out_channels, self.in_channels // self.groups, *self.kernel_size), bias_shape, rng,
                              dtype)  # fmt: skip

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
        if self.bias_kind == "untied" and self.bias is not None:
            if y.shape[-self.ndim - 1 :] != self.bias.data.shape:
                raise ArgumentError(
                    f"untied bias has shape {self.bias.data.shape} but the output is {y.shape[-self.ndim - 1 :]}; "
                    f"this layer was built for input_size={self.input_size}, got x of shape {np.shape(x)}"
                )
            y += self.bias.data  # one bias per output position, broadcast over the batch
        return y

    def _tied_bias(self) -> np.ndarray | None:
        return self.bias.data if self.bias is not None and self.bias_kind is True else None

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, ConvContext]:
        """Context: the functional ``ConvContext`` (the padded input and, when the algorithm reuses
        them, the unfolded columns)."""
        y, context = conv_with_context(x, self.weight.data, self._tied_bias(), **self._options(), ndim=self.ndim)
        return self._add_untied_bias(y, x), context

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The output only: no padded input or columns are kept."""
        y, _ = forward_nd(self.ndim, x, self.weight.data, self._tied_bias(), **self._options(), keep=False,
                          name=f"conv{self.ndim}d")  # fmt: skip
        return self._add_untied_bias(y, x)

    def backward_with_context(
        self, context: ConvContext, grad_output: np.ndarray, *, input_grad: bool = True
    ) -> np.ndarray | None:
        if not input_grad:
            dw, db = conv_param_grads_from_context(grad_output, context)
            self._accumulate(grad_output, dw, db)
            return None
        dx, dw, db = conv_backward_from_context(grad_output, context)
        self._accumulate(grad_output, dw, db)
        return dx

    def _accumulate(self, grad_output: np.ndarray, dw: np.ndarray, db: np.ndarray) -> None:
        self.weight.accumulate(dw)
        if self.bias is None:
            return
        if self.bias_kind is True:
            self.bias.accumulate(db)
        elif self.bias_kind == "untied":
            batched = np.ndim(grad_output) == self.ndim + 2
            self.bias.accumulate(grad_output.sum(axis=0) if batched else grad_output)  # (O, *Q)

    def config(self) -> dict[str, Any]:
        cfg = self._base_config()
        cfg["bias"] = self.bias_kind
        if self.input_size is not None:
            cfg["input_size"] = list(self.input_size)
        return cfg


class Conv1d(_Conv):
    """1-D convolution, ``torch.nn.Conv1d``: x (N, C, L), weight (O, C/groups, K). See ``_Conv``."""

    ndim = 1


class Conv2d(_Conv):
    """2-D convolution, ``torch.nn.Conv2d``: x (N, C, H, W), weight (O, C/groups, KH, KW). See ``_Conv``."""

    ndim = 2


class Conv3d(_Conv):
    """3-D convolution, ``torch.nn.Conv3d``: x (N, C, D, H, W), weight (O, C/groups, KD, KH, KW). See ``_Conv``."""

    ndim = 3


class _ConvTranspose(_ConvNd):
    """``torch.nn.ConvTranspose{1,2,3}d``: the adjoint of the convolution with the same weight (see
    ``functional.conv_transpose2d``), plus a per-channel bias.

    Shapes (n spatial axes):
        x: (N, C, *S) or (C, *S); weight: (C, O/groups, *K); bias: (O,); y: (N, O, *Q) with
        Q = (S - 1)·stride - pad_before - pad_after + dilation·(K - 1) + output_padding + 1

    Args:
        in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias,
            dilation, padding_mode (``"zeros"`` only, as torch): torch's names and order.
        algorithm, rng, dtype: as the convolutions.

    ``forward(x, output_size=None)`` (and ``layer(x, output_size=...)``): torch's option; the wanted
    spatial size (the trailing ``ndim`` entries of a longer sequence are used) chooses output_padding.
    """

    registered = False
    transposed = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: SizeArg,
        stride: SizeArg = 1,
        padding: PadArg = 0,
        output_padding: SizeArg = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: SizeArg = 1,
        padding_mode: str = "zeros",
        *,
        algorithm: str = "auto",
        rng: RngLike = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        self._setup(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                    algorithm)  # fmt: skip
        n = self.ndim
        if self.padding_mode != "zeros":
            raise ArgumentError(
                f'only "zeros" padding mode is supported for ConvTranspose{n}d, got {self.padding_mode!r}'
            )
        if not isinstance(bias, (bool, np.bool_)):
            raise ArgumentError(f"bias must be True or False, got {bias!r}")
        pads = transposed_pads(padding, n)
        self.padding = pads if is_per_side(padding) else tuple(p for p, _ in pads)
        self.output_padding = ntuple(output_padding, n, "output_padding", minimum=0)
        if any(op >= max(s, d) for op, s, d in zip(self.output_padding, self.stride, self.dilation, strict=True)):
            raise ArgumentError(
                f"output_padding (={self.output_padding}) must be smaller than either stride (={self.stride}) "
                f"or dilation (={self.dilation}) on every axis"
            )
        bias_shape = (self.out_channels,) if bias else None
        self._init_parameters((self.in_channels, self.out_channels // self.groups, *self.kernel_size), bias_shape, rng,
                              dtype)  # fmt: skip

    def _output_padding(self, x: np.ndarray, output_size: SizeArg | None) -> tuple[int, ...]:
        if output_size is None:
            return self.output_padding
        wanted = tuple(output_size)[-self.ndim :] if not isinstance(output_size, int) else output_size
        return conv_transpose_output_padding(np.shape(x)[-self.ndim :], wanted, self.kernel_size, self.stride,
                                             self.padding, self.dilation)  # fmt: skip

    def forward_with_context(
        self, x: np.ndarray, output_size: SizeArg | None = None
    ) -> tuple[np.ndarray, TransposeContext]:
        """Context: the functional ``TransposeContext`` (the input and the adjoint convolution's geometry)."""
        bias = self.bias.data if self.bias is not None else None
        return conv_transpose_with_context(
            x, self.weight.data, bias, self.stride, self.padding, self._output_padding(x, output_size), self.groups,
            self.dilation, self.algorithm, ndim=self.ndim,
        )  # fmt: skip

    def forward(self, x: np.ndarray, output_size: SizeArg | None = None) -> np.ndarray:
        return self.forward_with_context(x, output_size)[0]  # the context holds only references: nothing copied

    def __call__(self, x: np.ndarray, output_size: SizeArg | None = None) -> np.ndarray:
        return super().__call__(x) if output_size is None else super().__call__(x, output_size)

    def backward_with_context(
        self, context: TransposeContext, grad_output: np.ndarray, *, input_grad: bool = True
    ) -> np.ndarray | None:
        dx, dw, db = conv_transpose_backward_from_context(grad_output, context, input_grad=input_grad)
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def config(self) -> dict[str, Any]:
        cfg = self._base_config()
        cfg.update(output_padding=list(self.output_padding), bias=self.bias is not None)
        return cfg


class ConvTranspose1d(_ConvTranspose):
    """``torch.nn.ConvTranspose1d``: x (N, C, L), weight (C, O/groups, K). See ``_ConvTranspose``."""

    ndim = 1


class ConvTranspose2d(_ConvTranspose):
    """``torch.nn.ConvTranspose2d``: x (N, C, H, W), weight (C, O/groups, KH, KW). See ``_ConvTranspose``."""

    ndim = 2


class ConvTranspose3d(_ConvTranspose):
    """``torch.nn.ConvTranspose3d``: x (N, C, D, H, W), weight (C, O/groups, KD, KH, KW). See ``_ConvTranspose``."""

    ndim = 3
