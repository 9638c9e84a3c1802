"""The per-call context protocol: forward_with_context / backward_with_context, the kept context of
``layer(x)`` in training mode only, ``convprop.no_grad``, and ``input_grad=False``."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import convprop
from convprop import nn
from convprop.errors import ArgumentError, ContextError

f64 = dict(dtype=np.float64)

LAYERS = [
    pytest.param(lambda: nn.Conv2d(2, 3, 3, padding=1, rng=0, **f64), (2, 2, 5, 5), id="Conv2d"),
    pytest.param(lambda: nn.Linear(4, 3, rng=0, **f64), (5, 4), id="Linear"),
    pytest.param(lambda: nn.BatchNorm2d(2, **f64), (3, 2, 2, 2), id="BatchNorm2d"),
    pytest.param(lambda: nn.MaxPool2d(2), (1, 2, 4, 4), id="MaxPool2d"),
    pytest.param(lambda: nn.AvgPool2d(2), (1, 2, 4, 4), id="AvgPool2d"),
    pytest.param(lambda: nn.AdaptiveAvgPool2d(1), (1, 2, 4, 4), id="AdaptiveAvgPool2d"),
    pytest.param(nn.Tanh, (3, 4), id="Tanh"),
    pytest.param(nn.Flatten, (2, 3, 2), id="Flatten"),
    pytest.param(
        lambda: nn.Sequential(nn.Linear(4, 4, rng=1, **f64), nn.ReLU(), nn.Linear(4, 2, rng=2, **f64)),
        (3, 4),
        id="Sequential",
    ),
]


@pytest.mark.parametrize("make, x_shape", LAYERS)
def test_the_pair_equals_the_call_and_writes_nothing_to_the_layer(make, x_shape):
    layer = make()
    x = np.random.default_rng(0).standard_normal(x_shape)
    before = dict(vars(layer))
    y, context = layer.forward_with_context(x)
    assert vars(layer).keys() == before.keys()
    assert all(value is before[name] for name, value in vars(layer).items()), "no attribute is rebound"
    assert layer._last_context is None
    g = np.random.default_rng(1).standard_normal(y.shape)
    dx = layer.backward_with_context(context, g)
    grads = [p.grad.copy() for p in layer.parameters()]
    layer.zero_grad()
    np.testing.assert_allclose(layer.forward(x), y, rtol=1e-12, atol=1e-14)  # (conv: the saving kernel may round apart)
    layer(x)
    np.testing.assert_array_equal(layer.backward(g), dx)
    for p, expected in zip(layer.parameters(), grads, strict=True):
        np.testing.assert_allclose(p.grad, expected, rtol=1e-12)


@pytest.mark.parametrize("make, x_shape", LAYERS)
def test_eval_mode_and_no_grad_keep_nothing_and_backward_is_then_an_error(make, x_shape):
    layer = make()
    x = np.ones(x_shape)
    y = layer(x)
    layer.eval()
    layer(x)  # drops the training-mode context: a later backward cannot use a stale one
    assert layer._last_context is None
    with pytest.raises(ContextError, match=r"backward called before forward: no context is kept.*no_grad"):
        layer.backward(np.ones(y.shape))
    layer.train()
    with convprop.no_grad():
        assert not convprop.is_grad_enabled()
        layer(x)
    assert convprop.is_grad_enabled()
    assert layer._last_context is None
    with pytest.raises(ContextError):
        layer.backward(np.ones(y.shape))
    _, context = layer.eval().forward_with_context(x)  # the explicit pair works in any mode
    assert layer.backward_with_context(context, np.ones(y.shape)).shape == x_shape


def test_a_second_backward_after_one_forward_reuses_the_context_and_adds_again():
    layer = nn.Linear(3, 2, rng=0, **f64)
    x, g = np.ones((4, 3)), np.ones((4, 2))
    layer(x)
    dx1 = layer.backward(g)
    once = layer.weight.grad.copy()
    dx2 = layer.backward(g)
    np.testing.assert_array_equal(dx1, dx2)
    np.testing.assert_allclose(layer.weight.grad, 2 * once, rtol=1e-15)


def test_input_grad_false_returns_none_and_the_same_parameter_gradients():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0, **f64), nn.ReLU(), nn.Flatten(), nn.Linear(18, 2, rng=1, **f64))
    x, g = np.random.default_rng(0).standard_normal((2, 1, 5, 5)), np.ones((2, 2))
    _, context = model.forward_with_context(x)
    model.backward_with_context(context, g)
    full = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    assert model.backward_with_context(context, g, input_grad=False) is None
    for p, expected in zip(model.parameters(), full, strict=True):
        np.testing.assert_allclose(p.grad, expected, rtol=1e-12)


def test_no_grad_is_per_thread_and_nests():
    seen = []
    with convprop.no_grad():
        with convprop.no_grad():
            pass
        assert not convprop.is_grad_enabled()
        worker = threading.Thread(target=lambda: seen.append(convprop.is_grad_enabled()))
        worker.start()
        worker.join()
    assert seen == [True] and convprop.is_grad_enabled()


def test_sequential_context_of_the_wrong_length_is_refused():
    model = nn.Sequential(nn.ReLU(), nn.ReLU())
    with pytest.raises(ArgumentError, match="Sequential of 2 layers got a context of 1 entries"):
        model.backward_with_context([None], np.ones(3))


@pytest.mark.parametrize(
    "start, end, shape, message",
    [
        (
            3,
            -1,
            (2, 3, 4),
            r"start_dim=3 is out of range for an input of 3 dimensions \(expected a value in \[-3, 2\]\)",
        ),
        (-4, -1, (2, 3, 4), r"start_dim=-4 is out of range"),
        (1, 5, (2, 3), r"end_dim=5 is out of range for an input of 2 dimensions"),
        (2, 1, (2, 3, 4), r"is empty for input of shape \(2, 3, 4\)"),
    ],
)
def test_flatten_out_of_range_dims_are_refused_as_pytorch_does(start, end, shape, message):
    with pytest.raises(ArgumentError, match=message):
        nn.Flatten(start, end)(np.zeros(shape))


@pytest.mark.parametrize("start, end, shape, expected", [(2, -1, (2, 3, 4), (2, 3, 4)), (-3, -1, (2, 3, 4), (24,))])
def test_flatten_in_range_dims_match_pytorch(start, end, shape, expected):
    assert nn.Flatten(start, end)(np.zeros(shape)).shape == expected
