"""A finite-difference check (``convprop.gradcheck_module``) of every layer type, in float64: the input
gradient and every parameter gradient, over a table of layers and options; and proof that it can fail."""

from __future__ import annotations

import numpy as np
import pytest
from test_nn_layers import distinct_values

import convprop
from convprop import nn


class Reseeded(nn.Module):
    """Dropout whose generator is reseeded before every forward, so finite differences see one mask."""

    registered = False

    def __init__(self, p: float, seed: int):
        super().__init__()
        self.inner, self.seed = nn.Dropout(p), seed

    def forward_with_context(self, x):
        self.inner.rng = np.random.default_rng(self.seed)
        return self.inner.forward_with_context(x)

    def backward_with_context(self, context, grad_output, *, input_grad=True):
        return self.inner.backward_with_context(context, grad_output, input_grad=input_grad)


def away_from_zero(shape, rng):
    """|x| >= 0.1 so the kinks of ReLU/LeakyReLU are never inside the finite-difference step."""
    x = rng.standard_normal(shape)
    return np.where(x >= 0, x + 0.1, x - 0.1)


GRADCHECK = [
    pytest.param(lambda: nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64), (2, 2, 4, 5), None, id="conv"),
    pytest.param(
        lambda: nn.Conv2d(2, 2, (2, 3), stride=2, padding="same", dilation=1, padding_mode="reflect", dtype=np.float64),
        (1, 2, 5, 6),
        None,
        id="conv-same-stride-reflect",
    ),
    pytest.param(
        lambda: nn.Conv2d(
            4, 4, 3, groups=4, dilation=2, padding=2, padding_mode="circular", bias=False, dtype=np.float64
        ),
        (1, 4, 5, 5),
        None,
        id="conv-depthwise-circular",
    ),
    pytest.param(
        lambda: nn.Conv2d(2, 2, 3, padding=1, padding_mode="replicate", algorithm="direct", dtype=np.float64),
        (1, 2, 4, 4),
        None,
        id="conv-direct-replicate",
    ),
    pytest.param(lambda: nn.Linear(5, 3, dtype=np.float64), (4, 5), None, id="linear"),
    pytest.param(lambda: nn.Linear(5, 3, bias=False, dtype=np.float64), (2, 3, 5), None, id="linear-no-bias"),
    pytest.param(lambda: nn.Flatten(), (2, 3, 2, 2), None, id="flatten"),
    pytest.param(
        lambda: nn.MaxPool2d(3, 2, 1, dilation=1, ceil_mode=True), (2, 2, 6, 7), distinct_values, id="maxpool"
    ),
    pytest.param(lambda: nn.MaxPool2d(2, 1, 1, dilation=2), (1, 2, 5, 5), distinct_values, id="maxpool-dilated"),
    pytest.param(
        lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), (2, 2, 6, 7), None, id="avgpool"
    ),
    pytest.param(lambda: nn.AvgPool2d(2, divisor_override=3), (1, 2, 4, 4), None, id="avgpool-divisor"),
    pytest.param(lambda: nn.AdaptiveAvgPool2d((3, 2)), (2, 2, 5, 7), None, id="adaptive"),
    pytest.param(lambda: nn.ReLU(), (3, 7), away_from_zero, id="relu"),
    pytest.param(lambda: nn.LeakyReLU(0.2), (3, 7), away_from_zero, id="leaky-relu"),
    pytest.param(lambda: nn.Sigmoid(), (3, 7), None, id="sigmoid"),
    pytest.param(lambda: nn.Tanh(), (3, 7), None, id="tanh"),
    pytest.param(lambda: nn.GELU(), (3, 7), None, id="gelu"),
    pytest.param(lambda: nn.GELU("tanh"), (3, 7), None, id="gelu-tanh"),
    pytest.param(lambda: nn.Softmax(1), (3, 5), None, id="softmax"),
    pytest.param(lambda: nn.Softmax(-1), (2, 2, 4), None, id="softmax-last"),
    pytest.param(lambda: nn.LogSoftmax(0), (4, 3), None, id="log-softmax"),
    pytest.param(lambda: nn.BatchNorm2d(3, dtype=np.float64), (3, 3, 2, 2), None, id="batchnorm-train"),
    pytest.param(
        lambda: nn.BatchNorm2d(3, affine=False, dtype=np.float64), (3, 3, 2, 2), None, id="batchnorm-train-no-affine"
    ),
    pytest.param(lambda: nn.BatchNorm2d(3, dtype=np.float64).eval(), (2, 3, 2, 2), None, id="batchnorm-eval"),
    pytest.param(lambda: nn.Dropout(0.0), (3, 4), None, id="dropout-p0"),
    pytest.param(lambda: nn.Dropout(0.5).eval(), (3, 4), None, id="dropout-eval"),
    pytest.param(lambda: Reseeded(0.4, seed=3), (3, 4, 2), None, id="dropout-train-reseeded"),
    pytest.param(
        lambda: nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64),
            nn.BatchNorm2d(3, dtype=np.float64),
            nn.Tanh(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(12, 3, dtype=np.float64),
            nn.LogSoftmax(1),
        ),
        (2, 2, 4, 4),
        None,
        id="sequential",
    ),
]


@pytest.mark.parametrize("make, x_shape, draw", GRADCHECK)
def test_gradcheck_every_layer(make, x_shape, draw):
    layer = make().astype(np.float64)
    rng = np.random.default_rng(10)
    x = draw(x_shape, rng) if draw is not None else rng.standard_normal(x_shape)
    result = convprop.gradcheck_module(layer, x)
    assert result.ok
    assert result.names == ["input", *(n for n, _ in layer.named_parameters())]


def test_gradcheck_catches_a_wrong_backward():
    """The check above can fail: a layer whose backward is off by a factor is reported."""

    class Wrong(nn.Module):
        registered = False

        def forward_with_context(self, x):
            return 2 * x, None

        def backward_with_context(self, context, grad_output, *, input_grad=True):
            return 2.001 * grad_output

    with pytest.raises(convprop.GradcheckError, match="input"):
        convprop.gradcheck_module(Wrong(), np.ones((2, 2)))
