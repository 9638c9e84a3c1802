"""The step-by-step numbers of the first convolution (the page's /learn) against the library's
``functional.conv2d_backward`` and against torch: forward window · kernel = value, the full correlation
with the 180°-rotated kernel = dE/dx, the valid correlation of x with dE/dy = dE/dK."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import assert_close
from torch_twins import twin

from convprop import explain, functional, nn
from convprop.data import Normalization
from convprop.errors import ArgumentError, ArgumentTypeError
from convprop.explain_conv import conv_steps

f64 = dict(dtype=np.float64)


def model(padding=1, bias=True, stride=1):
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, stride, padding, bias=bias, rng=0, **f64), nn.ReLU(), nn.Flatten(),
        nn.Linear(3 * (8 if stride == 1 and padding == 1 else 6 if stride == 1 else 4) ** 2, 4, rng=1, **f64),
    )  # fmt: skip


IMAGE = np.random.default_rng(0).uniform(size=(1, 8, 8))


@pytest.mark.parametrize(
    ("padding", "bias", "pick"),
    [
        (1, True, dict(channel=0, row=0, col=0)),  # a corner: the window reaches into the zero padding
        (1, True, dict(channel=2, row=4, col=5, input_row=7, input_col=1)),
        (0, False, dict(channel=1, row=5, col=2, input_row=0, input_col=7)),  # valid: OH = 6 < H = 8
    ],
)
def test_every_number_is_the_library_s_and_the_rule_agrees(padding, bias, pick):
    m = model(padding, bias)
    steps = conv_steps(m, IMAGE, 3, **pick)
    conv = m[0]
    x = IMAGE[None]
    y = functional.conv2d(x, conv.weight.data, None if conv.bias is None else conv.bias.data, padding=padding)
    dy = explain.layer_gradients(m, x, 3)["0"]  # (1, O, OH, OW)
    dx, dw, _ = functional.conv2d_backward(dy, x, conv.weight.data, padding=padding)
    o, i, j, r, s = steps.channel, steps.row, steps.col, steps.input_row, steps.input_col
    assert (o, i, j) == (pick["channel"], pick["row"], pick["col"])
    assert steps.value == pytest.approx(y[0, o, i, j], rel=1e-12)
    assert steps.window_sum == pytest.approx(steps.value, rel=1e-12)  # the forward window · kernel + bias
    assert_close(steps.grad_output, dy[0, o], "dE/dy")
    assert_close(steps.rotated, np.rot90(conv.weight.data[o, 0], 2), "kernel rotated by 180°")
    assert_close(steps.grad_input, dx[0, 0], "dE/dx from conv2d_backward")
    assert steps.grad_input_value == pytest.approx(dx[0, 0, r, s], rel=1e-12)
    assert steps.contributions.sum() == pytest.approx(steps.grad_input_value, rel=1e-9, abs=1e-15)  # the rule
    assert float(np.sum(steps.grad_window * steps.rotated)) == pytest.approx(steps.contributions[o], abs=1e-15)
    assert_close(steps.grad_kernel, dw[o, 0], "dE/dK from conv2d_backward")
    assert_close(steps.grad_kernel_rule, steps.grad_kernel, "dE/dK as the valid correlation of x with dE/dy")


def test_the_numbers_match_torch_for_a_normalised_image():
    m = model()
    norm = Normalization((0.1307,), (0.3081,))
    steps = conv_steps(m, IMAGE, 2, channel=1, row=3, col=6, normalization=norm)
    t = twin(m)
    xt = torch.tensor((IMAGE[None] - 0.1307) / 0.3081, requires_grad=True)
    hidden = t[0](xt)
    hidden.retain_grad()
    t[1:](hidden)[0, 2].backward()
    assert steps.value == pytest.approx(float(hidden.detach()[0, 1, 3, 6]), rel=1e-12)
    assert_close(steps.grad_output, hidden.grad[0, 1].numpy(), "dE/dy")
    assert_close(steps.grad_input, xt.grad[0, 0].numpy(), "dE/dx of the normalised input")
    assert_close(steps.grad_kernel, t[0].weight.grad[1, 0].numpy(), "dE/dK")
    assert_close(steps.x_padded[1:-1, 1:-1], xt.detach()[0, 0].numpy(), "the input the layer sees")


@pytest.mark.parametrize(
    ("make", "kwargs", "error", "message"),
    [
        (model, dict(channel=3), ArgumentError, r"channel 3 is out of range 0\.\.2"),
        (model, dict(row=8), ArgumentError, r"row 8 is out of range 0\.\.7"),
        (model, dict(col=-1), ArgumentError, r"col -1 is out of range"),
        (model, dict(input_row=9), ArgumentError, r"input_row 9 is out of range 0\.\.7"),
        (model, dict(row=1.5), ArgumentTypeError, r"row must be an int, got 1\.5"),
        (model, dict(target=4), ArgumentError, r"target 4 is out of range"),
        (lambda: model(stride=2), {}, ArgumentError, r"stride 1.*has stride \(2, 2\)"),
        (lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), {}, ArgumentError, r"Sequential has no convolution"),
    ],
)
def test_bad_picks_are_refused_with_the_values(make, kwargs, error, message):
    with pytest.raises(error, match=message):
        conv_steps(make(), IMAGE, **kwargs)
