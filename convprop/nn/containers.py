"""Containers beyond Sequential: ``Residual`` (y = body(x) + shortcut(x)) and ``Concat`` (branches side
by side, Inception-style). Each routes gradients between its children's own backward functions; the
derivations are in docs/graphs.md."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError
from .activation import ReLU
from .module import Module, Sequential


def _first_leaf(module: Module) -> Module:
    while isinstance(module, Sequential) and len(module):
        module = module[0]
    return module


def check_not_inplace_on_shared(module: Module, where: str) -> None:
    """Refuse an in-place ReLU that would overwrite a tensor something else still reads."""
    first = _first_leaf(module)
    if isinstance(first, ReLU) and first.inplace:
        raise ArgumentError(
            f"{where} starts with ReLU(inplace=True), which would overwrite an input that is also used "
            "elsewhere; use ReLU() there"
        )


def _check_module(value: Any, what: str) -> Module:
    if not isinstance(value, Module):
        raise ArgumentTypeError(f"{what} must be a convprop Module, got {type(value).__name__}")
    return value


class Residual(Module):
    """``y = body(x) + shortcut(x)``, the identity when ``shortcut`` is None (He et al.'s residual block).

    Backward (the fan-out of x is a sum, docs/graphs.md): with δ = dL/dy,
    ``dL/dx = body.backward(δ) + (shortcut.backward(δ) if shortcut else δ)``. Children are named
    ``body`` and ``shortcut``, as attributes of a PyTorch module would be.

    Shapes:
        x: any shape the body takes; body(x) and shortcut(x) (or x): one shape, that of y
    """

    def __init__(self, body: Module, shortcut: Module | None = None):
        super().__init__()
        self.body = _check_module(body, "Residual body")
        self.shortcut = None if shortcut is None else _check_module(shortcut, "Residual shortcut")
        check_not_inplace_on_shared(self.body, "the Residual body")
        if self.shortcut is not None:
            check_not_inplace_on_shared(self.shortcut, "the Residual shortcut")

    def _add(self, main: np.ndarray, skip: np.ndarray) -> np.ndarray:
        if np.shape(main) != np.shape(skip):
            raise ArgumentError(
                f"Residual: body output {np.shape(main)} and shortcut output {np.shape(skip)} must have one shape"
            )
        return main + skip  # a new array: neither branch's output is overwritten

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, tuple[Any, Any]]:
        """Context: ``(body context, shortcut context or None)``."""
        main, main_ctx = self.body.forward_with_context(x)
        skip, skip_ctx = self.shortcut.forward_with_context(x) if self.shortcut is not None else (x, None)
        return self._add(main, skip), (main_ctx, skip_ctx)

    def forward(self, x: np.ndarray) -> np.ndarray:
        main = self.body.forward(x)
        return self._add(main, self.shortcut.forward(x) if self.shortcut is not None else x)

    def backward_with_context(
        self, context: tuple[Any, Any], grad_output: np.ndarray, *, input_grad: bool = True
    ) -> np.ndarray | None:
        main_ctx, skip_ctx = context
        d_main = self.body.backward_with_context(main_ctx, grad_output, input_grad=input_grad)
        if self.shortcut is not None:
            d_skip = self.shortcut.backward_with_context(skip_ctx, grad_output, input_grad=input_grad)
        else:
            d_skip = grad_output
        if not input_grad:
            return None
        return d_main + d_skip  # ∂L/∂x sums over both paths x takes (multivariable chain rule)

    def config(self) -> dict[str, Any]:
        return {}


class Concat(Module):
    """Every branch sees x; their outputs are concatenated along ``dim`` (an Inception block).

    Backward: δ = dL/dy is split along ``dim`` into each branch's part δ_b, and
    ``dL/dx = Σ_b branch_b.backward(δ_b)``. Children are named "0", "1", ... as in ``Sequential``.

    Shapes:
        x: what every branch takes; branch outputs agree on every axis but ``dim``; y: their concatenation
    """

    def __init__(self, *branches: Module, dim: int = 1):
        super().__init__()
        if not branches:
            raise ArgumentError("Concat needs at least one branch")
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise ArgumentTypeError(f"Concat dim must be an int, got {dim!r}")
        self.dim = dim
        for i, branch in enumerate(branches):
            _check_module(branch, f"Concat branch {i}")
            if len(branches) > 1:
                check_not_inplace_on_shared(branch, f"Concat branch {i}")
            setattr(self, str(i), branch)

    def __iter__(self) -> Iterator[Module]:  # the branches
        return iter(self._modules.values())

    def __len__(self) -> int:
        return len(self._modules)

    def _concat(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
        return concatenate(outputs, self.dim, "Concat")

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, tuple[list[Any], list[int], int]]:
        """Context: ``(branch contexts, each branch's size along dim, the resolved axis)``."""
        pairs = [branch.forward_with_context(x) for branch in self]
        y, sizes = self._concat([p[0] for p in pairs])
        return y, ([p[1] for p in pairs], sizes, self.dim % y.ndim)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._concat([branch.forward(x) for branch in self])[0]

    def backward_with_context(
        self, context: tuple[list[Any], list[int], int], grad_output: np.ndarray, *, input_grad: bool = True
    ) -> np.ndarray | None:
        contexts, sizes, axis = context
        parts = split(grad_output, sizes, axis, "Concat")
        total = None
        for branch, ctx, part in zip(self, contexts, parts, strict=True):
            d = branch.backward_with_context(ctx, part, input_grad=input_grad)
            if input_grad:
                total = d if total is None else total + d
        return total

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim}


def concatenate(arrays: list[np.ndarray], dim: int, who: str) -> tuple[np.ndarray, list[int]]:
    """``np.concatenate`` with a clear error; also each array's size along ``dim``."""
    shapes = [np.shape(a) for a in arrays]
    ndim = len(shapes[0])
    if not -ndim <= dim < ndim:
        raise ArgumentError(f"{who}(dim={dim}) is out of range for inputs of {ndim} dimensions (shapes {shapes})")
    axis = dim % ndim
    rest = {s[:axis] + s[axis + 1 :] if len(s) == ndim else None for s in shapes}
    if len(rest) != 1 or None in rest:
        raise ArgumentError(f"{who}(dim={dim}): inputs must agree on every axis but {dim}, got shapes {shapes}")
    return np.concatenate(arrays, axis=axis), [s[axis] for s in shapes]


def split(grad_output: np.ndarray, sizes: list[int], axis: int, who: str) -> list[np.ndarray]:
    """The adjoint of :func:`concatenate`: δ cut back into each input's part along ``axis``."""
    grad_output = np.asarray(grad_output)
    if grad_output.ndim <= axis or grad_output.shape[axis] != sum(sizes):
        raise ArgumentError(
            f"{who}.backward: grad_output of shape {grad_output.shape} must have {sum(sizes)} entries along axis {axis}"
        )
    return np.split(grad_output, np.cumsum(sizes)[:-1], axis=axis)  # views, one per input
