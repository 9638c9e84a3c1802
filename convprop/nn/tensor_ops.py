"""Tensor-plumbing layers: Identity, Reshape, Transpose, Pad, MatMul, Gemm, Sub, Div, Constant, and the
global max pool (the global average pool is ``AdaptiveAvgPool{1,2,3}d(1)``, as in PyTorch). They are what
an imported ONNX graph routes data through between its convolutions; each is
a forward/backward pair of the layer protocol whose math lives in ``functional.tensor_ops``.

The context of a call holds exactly what its backward needs: the input shape (Reshape, Pad, Identity
needs nothing), the operands (MatMul, Gemm, Sub, Div), the input (the global max pool).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError
from ..functional import tensor_ops as T
from ..functional.validation import as_float_array
from .module import Module, Parameter
from .validate import check_dtype


def _int_list(values: Any, name: str) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ArgumentTypeError(f"{name} must be a sequence of ints, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ArgumentTypeError(f"{name} must be a sequence of ints, got {values!r}")
        out.append(int(v))
    return out


class Identity(Module):
    """``y = x``; ``dx = δ`` (ONNX Identity, ``torch.nn.Identity``)."""

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, None]:
        return x, None

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x

    def backward_with_context(self, context: None, grad_output: np.ndarray, *, input_grad: bool = True) -> Any:
        return grad_output if input_grad else None


class Reshape(Module):
    """ONNX Reshape with a fixed target ``shape``: ``-1`` takes what is left, ``0`` copies the input's
    size on that axis (unless ``allowzero``, when 0 means an empty axis). The backward reshapes δ back.

    Shapes: x any shape with the same number of entries as the target; y the target shape.
    """

    def __init__(self, shape: Sequence[int], allowzero: bool = False):
        super().__init__()
        self.shape = _int_list(shape, "shape")
        if self.shape.count(-1) > 1 or any(s < -1 for s in self.shape):
            raise ArgumentError(f"shape may hold one -1 and no other negative size, got {self.shape}")
        if allowzero and 0 in self.shape and -1 in self.shape:
            raise ArgumentError(f"with allowzero, shape cannot hold both 0 and -1, got {self.shape}")
        self.allowzero = bool(allowzero)

    def target(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output shape for an input of ``in_shape`` (0s copied, -1 inferred), or a clear error."""
        shape = list(self.shape)
        if not self.allowzero:
            for i, s in enumerate(shape):
                if s == 0:
                    if i >= len(in_shape):
                        raise ArgumentError(f"Reshape{tuple(self.shape)}: a 0 at axis {i} has no input axis to copy")
                    shape[i] = in_shape[i]
        total = int(np.prod(in_shape))
        if -1 in shape:
            known = int(np.prod([s for s in shape if s != -1]))
            if known == 0 or total % known:
                raise ArgumentError(f"cannot reshape {in_shape} ({total} entries) to {tuple(self.shape)}")
            shape[shape.index(-1)] = total // known
        if int(np.prod(shape)) != total:
            raise ArgumentError(f"cannot reshape {in_shape} ({total} entries) to {tuple(self.shape)}")
        return tuple(shape)

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
        x = np.asarray(x)
        return x.reshape(self.target(x.shape)), x.shape

    def backward_with_context(
        self, context: tuple[int, ...], grad_output: np.ndarray, *, input_grad: bool = True
    ) -> Any:
        return np.reshape(grad_output, context) if input_grad else None  # back to the input's shape

    def config(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "allowzero": self.allowzero}


class Transpose(Module):
    """``y = x.transpose(perm)`` (reversed axes when ``perm`` is None); ``dx = δ.transpose(perm⁻¹)``."""

    def __init__(self, perm: Sequence[int] | None = None):
        super().__init__()
        self.perm = None if perm is None else _int_list(perm, "perm")
        if self.perm is not None and sorted(self.perm) != list(range(len(self.perm))):
            raise ArgumentError(f"perm must be a permutation of 0..{len(self.perm) - 1}, got {self.perm}")

    def _perm(self, ndim: int) -> list[int]:
        if self.perm is None:
            return list(range(ndim))[::-1]
        if len(self.perm) != ndim:
            raise ArgumentError(f"Transpose(perm={self.perm}) needs an input of {len(self.perm)} axes, got {ndim}")
        return self.perm

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, list[int]]:
        x = np.asarray(x)
        perm = self._perm(x.ndim)
        return np.ascontiguousarray(x.transpose(perm)), perm

    def backward_with_context(self, context: list[int], grad_output: np.ndarray, *, input_grad: bool = True) -> Any:
        if not input_grad:
            return None
        return np.ascontiguousarray(np.transpose(grad_output, np.argsort(context)))  # the inverse permutation

    def config(self) -> dict[str, Any]:
        return {"perm": self.perm}


class Pad(Module):
    """Pads the *last* ``len(pads)`` axes by ``pads[i] = (before, after)`` (negative: crop), in ``mode``
    ``"constant"`` (with ``value``), ``"reflect"``, ``"edge"`` or ``"wrap"`` — ONNX Pad's modes (PyTorch's
    ``zeros``/``reflect``/``replicate``/``circular``). See ``functional.tensor_ops.pad_nd``.

    Shapes: x (..., D1, ..., Dk); y (..., D1 + b1 + a1, ..., Dk + bk + ak).
    """

    def __init__(self, pads: Sequence[Sequence[int]], mode: str = "constant", value: float = 0.0):
        super().__init__()
        self.pads = [tuple(_int_list(p, "pads")) for p in pads]
        if any(len(p) != 2 for p in self.pads):
            raise ArgumentError(f"pads must be (before, after) pairs, got {pads!r}")
        if mode not in T.PAD_MODES:
            raise ArgumentError(f"mode must be one of {T.PAD_MODES}, got {mode!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ArgumentTypeError(f"value must be a number, got {value!r}")
        self.mode, self.value = mode, float(value)

    def _widths(self, ndim: int) -> list[tuple[int, int]]:
        if ndim < len(self.pads):
            raise ArgumentError(f"Pad of {len(self.pads)} axes needs an input of at least that many, got {ndim}")
        return [(0, 0)] * (ndim - len(self.pads)) + self.pads  # type: ignore[operator]

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
        x = as_float_array(x, "x")
        return T.pad_nd(x, self._widths(x.ndim), self.mode, self.value), x.shape

    def backward_with_context(
        self, context: tuple[int, ...], grad_output: np.ndarray, *, input_grad: bool = True
    ) -> Any:
        if not input_grad:
            return None
        return T.pad_nd_backward(grad_output, context, self._widths(len(context)), self.mode)

    def config(self) -> dict[str, Any]:
        return {"pads": [list(p) for p in self.pads], "mode": self.mode, "value": self.value}


class MatMul(Module):
    """``y = a @ b`` of two inputs (``numpy.matmul``, ONNX MatMul); backward ``(δ bᵀ, aᵀ δ)``."""

    def forward_with_context(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, Any]:
        return T.matmul(a, b), (a, b)

    def forward(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return T.matmul(a, b)

    def backward_with_context(self, context: Any, grad_output: np.ndarray, *, input_grad: bool = True) -> Any:
        return T.matmul_backward(grad_output, *context) if input_grad else None


class Gemm(Module):
    """ONNX Gemm of two or three inputs: ``y = alpha · A' B' + beta · C`` (``A' = Aᵀ`` if ``trans_a``...).

    A Gemm whose B and C are weights imports as ``Linear``; this layer is the general case, with every
    operand an input (weights arrive through ``Constant`` nodes). Shapes: see ``functional.tensor_ops.gemm``.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, trans_a: bool = False, trans_b: bool = False):
        super().__init__()
        self.alpha, self.beta = float(alpha), float(beta)
        self.trans_a, self.trans_b = bool(trans_a), bool(trans_b)

    def _options(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta, "trans_a": self.trans_a, "trans_b": self.trans_b}

    def forward_with_context(self, a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
        return T.gemm(a, b, c, **self._options()), (a, b, c)

    def forward(self, a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
        return T.gemm(a, b, c, **self._options())

    def backward_with_context(self, context: Any, grad_output: np.ndarray, *, input_grad: bool = True) -> Any:
        if not input_grad:
            return None
        a, b, c = context
        da, db, dc = T.gemm_backward(grad_output, a, b, c, **self._options())
        return (da, db) if c is None else (da, db, dc)

    def config(self) -> dict[str, Any]:
        return self._options()


class _Binary(Module):
    """Element-wise ``a op b`` of two inputs with NumPy broadcasting; gradients summed back to each shape."""

    registered = False
    op = "add"

    def forward_with_context(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, Any]:
        return T.binary(self.op, a, b), (a, b)

    def forward(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return T.binary(self.op, a, b)

    def backward_with_context(self, context: Any, grad_output: np.ndarray, *, input_grad: bool = True) -> Any:
        return T.binary_backward(self.op, grad_output, *context) if input_grad else None


class Sub(_Binary):
    """``y = a − b`` (``torch.sub``, ONNX Sub); ``(da, db) = (δ, −δ)`` summed over broadcast axes."""

    op = "sub"


class Div(_Binary):
    """``y = a / b`` (``torch.div``, ONNX Div); ``(da, db) = (δ / b, −δ a / b²)`` summed over broadcast axes."""

    op = "div"


class Constant(Module):
    """A node whose output is its one parameter ``value``: an imported weight that feeds an operator as
    an input (e.g. a MatMul's matrix). Trainable: backward adds δ into ``value.grad``.

    It may be given inputs, which it ignores: they only place it in a graph (an ``nn.Graph`` node reads
    at least one value). The output does not depend on them, so their gradients are zero — returned as
    broadcast views of one zero, which allocate nothing.

    Args:
        value: the array; or ``shape`` alone (zeros, to be filled by ``load_state_dict``).
    """

    def __init__(
        self, value: np.ndarray | None = None, *, shape: Sequence[int] | None = None, dtype: Any = np.float32
    ) -> None:
        super().__init__()
        if (value is None) == (shape is None):
            raise ArgumentError("Constant needs exactly one of value and shape")
        if value is None:
            data = np.zeros(_int_list(shape, "shape"), check_dtype(dtype))
        else:
            data = as_float_array(value, "value")
        self.value = Parameter(np.array(data, copy=True))

    def forward_with_context(self, *ignored: np.ndarray) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        """Context: the shapes of the ignored inputs (for their zero gradients)."""
        return self.value.data, [np.shape(x) for x in ignored]

    def forward(self, *ignored: np.ndarray) -> np.ndarray:
        return self.value.data

    def backward_with_context(
        self, context: list[tuple[int, ...]], grad_output: np.ndarray, *, input_grad: bool = True
    ) -> Any:
        if np.shape(grad_output) != self.value.data.shape:
            raise ArgumentError(f"Constant of shape {self.value.data.shape} got a gradient of {np.shape(grad_output)}")
        self.value.accumulate(grad_output)
        if not input_grad:
            return None
        zero = np.zeros((), self.value.data.dtype)
        grads = tuple(np.broadcast_to(zero, shape) for shape in context)  # d value / d input = 0
        return grads[0] if len(grads) == 1 else grads

    def config(self) -> dict[str, Any]:
        return {"shape": list(self.value.data.shape)}


class GlobalMaxPool(Module):
    """Max over every spatial axis, kept as size 1 (ONNX GlobalMaxPool); 1-, 2- and 3-D alike.

    Shapes: x (N, C, D1, ..., Dk); y (N, C, 1, ..., 1).
    """

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return T.global_max_pool(x), x

    def forward(self, x: np.ndarray) -> np.ndarray:
        return T.global_max_pool(x)

    def backward_with_context(self, context: np.ndarray, grad_output: np.ndarray, *, input_grad: bool = True) -> Any:
        return T.global_max_pool_backward(grad_output, context) if input_grad else None
