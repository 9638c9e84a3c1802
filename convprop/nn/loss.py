"""Loss modules with PyTorch's names, over ``convprop.functional.loss``.

``loss = criterion(logits, target)`` returns the loss; ``criterion.backward()`` returns d loss / d
logits (the first argument). The functional losses compute the gradient together with the value, so
the context of a call *is* that gradient; ``backward_with_context(ctx, grad_output)`` scales it by
``grad_output`` (1 by default; per element with ``reduction="none"``). Like every module, the call
keeps its context only in training mode outside ``convprop.no_grad()``; the explicit pair is per call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..functional import loss as L
from .module import Module


class _Loss(Module):
    registered = False

    def _fn(self, input: np.ndarray, target: np.ndarray, **options: Any) -> tuple[np.ndarray, np.ndarray]:
        return L.mse_loss(input, target, **options)

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = L._check_reduction(reduction)

    def _kwargs(self) -> dict[str, Any]:
        return {"reduction": self.reduction}

    def forward_with_context(self, input: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Context: d loss / d input, computed with the value."""
        return self._fn(input, target, **self._kwargs())

    def backward_with_context(
        self, context: np.ndarray, grad_output: Any = None, *, input_grad: bool = True
    ) -> np.ndarray | None:
        """d loss / d input, times ``grad_output`` when given (a new array each time)."""
        if not input_grad:
            return None
        if grad_output is None:
            return context.copy()
        grad_output = np.asarray(grad_output, dtype=context.dtype)
        return context * (grad_output if self.reduction == "none" else grad_output.reshape(()))

    def backward(self, grad_output: Any = None, *, input_grad: bool = True) -> Any:
        """The gradient of the last kept call with respect to its first argument."""
        return super().backward(grad_output, input_grad=input_grad)

    def config(self) -> dict[str, Any]:
        return self._kwargs()


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy from logits and class indices, ``torch.nn.CrossEntropyLoss``.

    Shapes:
        logits: (N, K); target: (N,) integer classes; loss: () or (N,) with reduction="none"
    """

    def _fn(self, input: np.ndarray, target: np.ndarray, **options: Any) -> tuple[np.ndarray, np.ndarray]:
        return L.cross_entropy(input, target, **options)

    def __init__(self, reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__(reduction)
        L.cross_entropy(np.zeros((1, 2)), np.zeros(1, dtype=np.int64), label_smoothing=label_smoothing)  # validates
        self.label_smoothing = float(label_smoothing)

    def _kwargs(self) -> dict[str, Any]:
        return {"reduction": self.reduction, "label_smoothing": self.label_smoothing}


class MSELoss(_Loss):
    """Mean squared error, ``torch.nn.MSELoss``. Shapes: input and target alike."""

    def _fn(self, input: np.ndarray, target: np.ndarray, **options: Any) -> tuple[np.ndarray, np.ndarray]:
        return L.mse_loss(input, target, **options)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy on logits (a stable sigmoid inside), ``torch.nn.BCEWithLogitsLoss``."""

    def _fn(self, input: np.ndarray, target: np.ndarray, **options: Any) -> tuple[np.ndarray, np.ndarray]:
        return L.binary_cross_entropy_with_logits(input, target, **options)


class BCELoss(_Loss):
    """Binary cross-entropy on probabilities in [0, 1], ``torch.nn.BCELoss``."""

    def _fn(self, input: np.ndarray, target: np.ndarray, **options: Any) -> tuple[np.ndarray, np.ndarray]:
        return L.binary_cross_entropy(input, target, **options)
