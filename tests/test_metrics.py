"""convprop.metrics: counts and per-class precision/recall, and errors that quote the bad label."""

from __future__ import annotations

import numpy as np
import pytest

from convprop.errors import ArgumentError, ArgumentTypeError
from convprop.metrics import confusion_matrix, precision_recall


def test_confusion_matrix_and_precision_recall():
    matrix = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [0, 1, 0]])
    precision, recall = precision_recall(matrix)
    np.testing.assert_allclose(precision, [1.0, 1 / 3, 0.0])  # class 2 never predicted: 0
    np.testing.assert_allclose(recall, [0.5, 1.0, 0.0])


@pytest.mark.parametrize(
    ("true", "predicted", "k", "error", "message"),
    [
        ([0, 3], [0, 1], 3, ArgumentError, r"true\[1\] is 3; class indices must be in \[0, 3\)"),
        ([0, 1], [-1, 1], 3, ArgumentError, r"predicted\[0\] is -1; class indices must be in \[0, 3\)"),
        ([0.0, 1.0], [0, 1], 3, ArgumentTypeError, "true must hold integer class indices, got dtype float64"),
        ([0, 1], [0], 3, ArgumentError, r"1-D of one length, got shapes \(2,\) and \(1,\)"),
        ([0], [0], 0, ArgumentError, "num_classes must be a positive integer, got 0"),
        ([0], [0], True, ArgumentError, "num_classes must be a positive integer, got True"),
    ],
)
def test_bad_labels_are_refused_by_name(true, predicted, k, error, message):
    with pytest.raises(error, match=message):
        confusion_matrix(np.array(true), np.array(predicted), k)


def test_precision_recall_needs_a_square_matrix():
    with pytest.raises(ArgumentError, match=r"square \(K, K\) confusion matrix, got shape \(2, 3\)"):
        precision_recall(np.zeros((2, 3)))
