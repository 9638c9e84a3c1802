"""A tiny U-Net — two steps down (conv, max pool), two up (ConvTranspose2d) with skip ``Cat``s, built as an
``nn.Graph`` — against the same network in PyTorch, float64: output, input gradient and every parameter
gradient, relative 1e-9."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import assert_close

from convprop import nn

f64 = dict(dtype=np.float64)


def _up(c_in, c_out, kind, seed):
    """Upsampling by 2: a 2×2 stride-2 transposed convolution, or 3×3 with padding 1 and output_padding 1."""
    if kind == "2x2":
        return nn.ConvTranspose2d(c_in, c_out, 2, stride=2, rng=seed, **f64), torch.nn.ConvTranspose2d(
            c_in, c_out, 2, 2
        )
    return (
        nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, rng=seed, **f64),
        torch.nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1),
    )


def unets(kind: str):
    """(convprop Graph, torch module) with the same node names, so state_dict names agree."""
    T = torch.nn
    ours = {
        "enc1": nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1, bias=False, rng=1, **f64), nn.BatchNorm2d(4, **f64), nn.ReLU()
        ),
        "down1": nn.MaxPool2d(2),
        "enc2": nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, rng=2, **f64), nn.ReLU()),
        "down2": nn.MaxPool2d(2),
        "bottom": nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, rng=3, **f64), nn.ReLU()),
        "up2": _up(8, 8, kind, 4)[0],
        "cat2": nn.Cat(1),
        "dec2": nn.Sequential(nn.Conv2d(16, 8, 3, padding=1, rng=5, **f64), nn.ReLU()),
        "up1": _up(8, 4, kind, 6)[0],
        "cat1": nn.Cat(1),
        "dec1": nn.Sequential(nn.Conv2d(8, 4, 3, padding=1, rng=7, **f64), nn.ReLU(), nn.Conv2d(4, 2, 1, rng=8, **f64)),
    }
    wiring = {"enc1": ["x"], "down1": ["enc1"], "enc2": ["down1"], "down2": ["enc2"], "bottom": ["down2"],
              "up2": ["bottom"], "cat2": ["up2", "enc2"], "dec2": ["cat2"], "up1": ["dec2"], "cat1": ["up1", "enc1"],
              "dec1": ["cat1"]}  # fmt: skip
    graph = nn.Graph(["x"], [(name, module, wiring[name]) for name, module in ours.items()], ["dec1"])

    class TorchUNet(T.Module):
        def __init__(self):
            super().__init__()
            self.enc1 = T.Sequential(T.Conv2d(1, 4, 3, padding=1, bias=False), T.BatchNorm2d(4), T.ReLU())
            self.enc2 = T.Sequential(T.Conv2d(4, 8, 3, padding=1), T.ReLU())
            self.bottom = T.Sequential(T.Conv2d(8, 8, 3, padding=1), T.ReLU())
            self.up2 = _up(8, 8, kind, 0)[1]
            self.dec2 = T.Sequential(T.Conv2d(16, 8, 3, padding=1), T.ReLU())
            self.up1 = _up(8, 4, kind, 0)[1]
            self.dec1 = T.Sequential(T.Conv2d(8, 4, 3, padding=1), T.ReLU(), T.Conv2d(4, 2, 1))

        def forward(self, x):
            e1 = self.enc1(x)
            e2 = self.enc2(torch.nn.functional.max_pool2d(e1, 2))
            b = self.bottom(torch.nn.functional.max_pool2d(e2, 2))
            d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
            return self.dec1(torch.cat([self.up1(d2), e1], dim=1))

    theirs = TorchUNet().double()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in graph.state_dict().items()}, strict=True)
    return graph, theirs


@pytest.mark.parametrize("kind, size", [("2x2", 8), ("3x3-output-padding", 12)])
@pytest.mark.parametrize("training", [True, False])
def test_tiny_unet_matches_torch(kind, size, training):
    graph, theirs = unets(kind)
    graph.train(training)
    theirs.train(training)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, size, size))
    y, context = graph.forward_with_context(x)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    assert y.shape == tuple(yt.shape) == (2, 2, size, size)
    assert_close(y, yt.detach().numpy(), "output")
    g = rng.standard_normal(y.shape)
    dx = graph.backward_with_context(context, g)
    yt.backward(torch.tensor(g))
    assert_close(dx, xt.grad.numpy(), "input gradient")
    ours, reference = dict(graph.named_parameters()), dict(theirs.named_parameters())
    assert list(ours) == list(reference)
    for name, p in ours.items():
        assert_close(p.grad, reference[name].grad.numpy(), f"gradient of {name}")
    if training:  # the running statistics moved the same way
        for name, value in graph.state_dict().items():
            assert_close(value, theirs.state_dict()[name].numpy(), f"state {name}")
