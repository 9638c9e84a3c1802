"""A linear layer's forward product on the register tiles (``functional/linear_tiles.py``) against a
float64 reference, in float64 and float32: every chunk width (a whole tile of images, a part of one,
a short last chunk), any feature and output count (tiles of 8 channels: 1, 7, 9, 33 outputs), split
between threads or not (the same bits), non-finite values where BLAS puts them."""

from __future__ import annotations

import numpy as np
import pytest

from convprop import nn
from convprop.functional import linear, linear_tiles, threads


def _reference(x, w):
    return x.astype(np.float64) @ w.astype(np.float64).T


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "B, F, O",
    [(16, 3, 1), (17, 100, 7), (47, 64, 9), (48, 33, 8), (49, 1568, 33), (130, 257, 16), (1000, 31, 10)],
)
def test_the_tiles_product_equals_the_reference(B, F, O, dtype):
    rng = np.random.default_rng(B * 1000 + F + O)
    x, w = rng.standard_normal((B, F)).astype(dtype), rng.standard_normal((O, F)).astype(dtype)
    got = linear_tiles.forward(x, w)
    assert got.shape == (B, O) and got.dtype == dtype
    expected = _reference(x, w)
    scale = np.abs(expected).max()
    tolerance = 1e-12 if dtype == np.float64 else 1e-5  # (relative to the largest output)
    assert np.abs(got - expected).max() <= tolerance * scale


def test_split_between_threads_or_not_the_same_bits(monkeypatch):
    """Each output is one tile's sum over the features in order, whichever chunk holds its image."""
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((200, 1568)).astype(np.float32), rng.standard_normal((256, 1568)).astype(np.float32)
    parts = []
    real = threads.ranges
    monkeypatch.setattr(threads, "ranges", lambda N, count=None: parts.append(real(N, count)) or parts[-1])
    split = linear_tiles.forward(x, w)  # 80 M multiply-adds: on both threads
    monkeypatch.setattr(threads, "ranges", lambda N, count=None: parts.append([(0, N)]) or parts[-1])
    alone = linear_tiles.forward(x, w)
    assert len(parts[0]) == threads.THREADS and parts[1] == [(0, 200)]
    np.testing.assert_array_equal(alone, split)
    one_by_one = np.stack([linear_tiles.forward(np.repeat(x[n : n + 1], 16, axis=0), w)[0] for n in range(0, 200, 37)])
    np.testing.assert_array_equal(one_by_one, alone[::37])


def test_non_finite_values_propagate_as_in_blas():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((40, 50)).astype(np.float32), rng.standard_normal((12, 50)).astype(np.float32)
    x[3, 7], x[20, 0], w[5, 9] = np.inf, np.nan, -np.inf
    with np.errstate(invalid="ignore"):
        got, expected = linear_tiles.forward(x, w), x @ w.T
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-5, atol=1e-5)


def test_linear_uses_the_tiles_for_a_batch_and_blas_for_a_few_rows(monkeypatch):
    """Inside a model's scope (BLAS held to one thread); outside it, BLAS with its own threads."""
    calls = []
    real = linear_tiles.forward
    monkeypatch.setattr(linear_tiles, "forward", lambda x, w: calls.append(x.shape) or real(x, w))
    monkeypatch.setattr(threads, "held", lambda: True)
    rng = np.random.default_rng(3)
    w, b = rng.standard_normal((64, 128)).astype(np.float32), rng.standard_normal(64).astype(np.float32)
    x = rng.standard_normal((4, 8, 128)).astype(np.float32)  # leading axes: 32 rows
    y = linear(x, w, b)
    assert calls == [(32, 128)] and y.shape == (4, 8, 64)
    np.testing.assert_allclose(y, x @ w.T + b, rtol=1e-5, atol=1e-5)
    linear(x[0], w, b)  # 8 rows: BLAS
    linear(x[:, :, :2], w[:, :2], b)  # 32 × 2 × 64 multiply-adds: BLAS
    assert calls == [(32, 128)]
    assert not linear_tiles.applies(x.reshape(32, 128).astype(np.float16), w.astype(np.float16))
    monkeypatch.setattr(threads, "held", lambda: False)
    linear(x, w, b)  # outside a model's scope: BLAS
    assert calls == [(32, 128)]


def test_a_transposed_input_and_a_layer_in_a_models_scope(monkeypatch):
    calls = []
    real = linear_tiles.forward
    monkeypatch.setattr(linear_tiles, "forward", lambda x, w: calls.append(x.shape) or real(x, w))
    monkeypatch.setattr(threads, "held", lambda: True)  # (BLAS held: as inside a model's pass)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 64)).astype(np.float32).T  # (64, 300), not contiguous
    w = rng.standard_normal((20, 300)).astype(np.float32)
    assert linear_tiles.applies(x, w)
    np.testing.assert_allclose(linear_tiles.forward(x, w), _reference(x, w), rtol=1e-5, atol=1e-4)
    layer = nn.Linear(300, 20, rng=0)
    layer.weight.data[...] = w
    np.testing.assert_allclose(layer.forward(np.ascontiguousarray(x)), _reference(x, w) + layer.bias.data, atol=1e-4)
    assert calls == [(64, 300), (64, 300)]  # the product alone, then through the layer
