"""Classification metrics from labels and predictions (plain NumPy, no state)."""

from __future__ import annotations

import numpy as np

from .errors import ArgumentError, ArgumentTypeError


def _labels(values: np.ndarray, name: str, num_classes: int) -> np.ndarray:
    if values.dtype.kind not in "iu":
        raise ArgumentTypeError(f"{name} must hold integer class indices, got dtype {values.dtype}")
    outside = (values < 0) | (values >= num_classes)
    if outside.any():
        k = int(np.argmax(outside))
        raise ArgumentError(f"{name}[{k}] is {int(values[k])}; class indices must be in [0, {num_classes})")
    return values


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class.

    Shapes:
        true, predicted: (N,) integer class indices in [0, K); returns (K, K) int64
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ArgumentError(f"num_classes must be a positive integer, got {num_classes!r}")
    true, predicted = np.asarray(true), np.asarray(predicted)
    if true.shape != predicted.shape or true.ndim != 1:
        raise ArgumentError(
            f"true and predicted must be 1-D of one length, got shapes {true.shape} and {predicted.shape}"
        )
    true, predicted = _labels(true, "true", num_classes), _labels(predicted, "predicted", num_classes)
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)  # N ≤ 10⁵ increments: fine here
    return matrix


def precision_recall(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class precision (of the predictions of k, how many are k) and recall (of the k's, how many
    were found); 0 where a class was never predicted / never present.

    Shapes:
        matrix: (K, K) counts, rows = true class; returns two (K,) arrays
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ArgumentError(f"matrix must be a square (K, K) confusion matrix, got shape {matrix.shape}")
    hits = np.diag(matrix)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    return precision, recall
