"""convprop.onnx.load on CNNs written in PyTorch and exported by ``torch.onnx.export``: the same outputs as
PyTorch, and after import the gradients of the input and of every weight equal PyTorch's — in float64.

torch 2.13's default exporter (``dynamo=True``) needs onnxscript and takes ~15 s per model on a CI core;
the TorchScript exporter (``dynamo=False``) writes the same operators in well under a second, and
``do_constant_folding=False`` keeps BatchNormalization apart from the Conv before it (folded, the
imported weights would not be PyTorch's parameters, whose gradients are compared here).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from reference import assert_close

pytest.importorskip("onnx")

import convprop.onnx as convprop_onnx
from convprop import nn

RTOL = 1e-9
T = torch.nn


class LeNet5(T.Module):
    """LeCun et al. 1998, with tanh and average pooling: 1×28×28 (padded to 32) → 10."""

    def __init__(self):
        super().__init__()
        self.c1, self.c3 = T.Conv2d(1, 6, 5, padding=2), T.Conv2d(6, 16, 5)
        self.f5, self.f6, self.out = T.Linear(400, 120), T.Linear(120, 84), T.Linear(84, 10)

    def forward(self, x):
        x = T.functional.avg_pool2d(torch.tanh(self.c1(x)), 2)
        x = T.functional.avg_pool2d(torch.tanh(self.c3(x)), 2)
        x = torch.flatten(x, 1)
        return self.out(torch.tanh(self.f6(torch.tanh(self.f5(x)))))


class Block(T.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1, self.bn1 = T.Conv2d(c_in, c_out, 3, stride, 1, bias=False), T.BatchNorm2d(c_out)
        self.conv2, self.bn2 = T.Conv2d(c_out, c_out, 3, 1, 1, bias=False), T.BatchNorm2d(c_out)
        self.shortcut = T.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = T.Sequential(T.Conv2d(c_in, c_out, 1, stride, bias=False), T.BatchNorm2d(c_out))

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + self.shortcut(x))


class ResNet(T.Module):
    def __init__(self):
        super().__init__()
        self.stem = T.Sequential(T.Conv2d(1, 4, 3, padding=1, bias=False), T.BatchNorm2d(4), T.ReLU())
        self.layers = T.Sequential(Block(4, 4, 1), Block(4, 8, 2))
        self.fc = T.Linear(8, 10)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(T.functional.adaptive_avg_pool2d(x, 1), 1))


class UNet(T.Module):
    """Two down, two up with ConvTranspose2d, and the skip concatenations."""

    def __init__(self):
        super().__init__()
        self.d1, self.d2 = T.Conv2d(1, 4, 3, padding=1), T.Conv2d(4, 8, 3, padding=1)
        self.mid = T.Conv2d(8, 8, 3, padding=1)
        self.u2, self.c2 = T.ConvTranspose2d(8, 8, 2, stride=2), T.Conv2d(16, 4, 3, padding=1)
        self.u1, self.c1 = T.ConvTranspose2d(4, 4, 2, stride=2), T.Conv2d(8, 2, 1)

    def forward(self, x):
        s1 = torch.relu(self.d1(x))
        s2 = torch.relu(self.d2(T.functional.max_pool2d(s1, 2)))
        m = torch.relu(self.mid(T.functional.max_pool2d(s2, 2)))
        y = torch.relu(self.c2(torch.cat([self.u2(m), s2], dim=1)))
        return self.c1(torch.cat([self.u1(y), s1], dim=1))


class ConvNet1d(T.Module):
    """A 1-D convnet for signals: conv → BN → ReLU → pool twice, global average, linear."""

    def __init__(self):
        super().__init__()
        self.features = T.Sequential(
            T.Conv1d(2, 6, 5, padding=2), T.BatchNorm1d(6), T.ReLU(), T.MaxPool1d(2),
            T.Conv1d(6, 8, 3, stride=2, dilation=2), T.LeakyReLU(0.1), T.AdaptiveAvgPool1d(1),
        )  # fmt: skip
        self.head = T.Linear(8, 3)

    def forward(self, x):
        return torch.log_softmax(self.head(torch.flatten(self.features(x), 1)), dim=1)


MODELS = {
    "LeNet-5": (LeNet5, (2, 1, 28, 28)),
    "ResNet": (ResNet, (2, 1, 12, 12)),
    "U-Net": (UNet, (2, 1, 8, 12)),
    "1-D convnet": (ConvNet1d, (2, 2, 40)),
}


def randomised(model: T.Module) -> T.Module:
    """Random batch-norm statistics and affine parameters (torch starts them at 0 and 1)."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, (T.BatchNorm1d, T.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen, dtype=torch.float64))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen, dtype=torch.float64) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=gen, dtype=torch.float64) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen, dtype=torch.float64))
    return model.eval()


def torch_to_onnx(model: T.Module, shape) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(
            model, (torch.zeros(shape, dtype=torch.float64),), buffer, dynamo=False, do_constant_folding=False
        )
    return buffer.getvalue()


@pytest.fixture(scope="module", params=list(MODELS))
def pair(request):
    torch.manual_seed(0)
    cls, shape = MODELS[request.param]
    model = randomised(cls().double())
    return model, convprop_onnx.load(torch_to_onnx(model, shape)), shape


def test_outputs_equal_pytorch(pair):
    model, imported, shape = pair
    x = np.random.default_rng(1).standard_normal(shape)
    with torch.no_grad():
        expected = model(torch.tensor(x)).numpy()
    assert_close(imported.forward(x), expected, "output")
    assert_close(imported(x), expected, "output through __call__")


def test_gradients_equal_pytorch(pair):
    """Backward through the imported graph: the input's gradient and every weight's equal PyTorch's."""
    model, imported, shape = pair
    x = np.random.default_rng(2).standard_normal(shape)
    xt = torch.tensor(x, requires_grad=True)
    model.zero_grad()
    y = model(xt)
    dy = np.random.default_rng(3).standard_normal(tuple(y.shape))
    y.backward(torch.tensor(dy))
    imported.zero_grad()
    _, context = imported.forward_with_context(x)
    dx = imported.backward_with_context(context, dy)
    assert_close(dx, xt.grad.numpy(), "input gradient")
    ours = imported.parameters()
    for name, p in model.named_parameters():
        matches = [q for q in ours if q.shape == tuple(p.shape) and np.array_equal(q.data, p.detach().numpy())]
        assert len(matches) == 1, f"{name}: {len(matches)} imported parameters hold its values"
        assert_close(matches[0].grad, p.grad.numpy(), f"gradient of {name}")
    assert len(ours) == len(list(model.parameters())), "every imported weight is a parameter PyTorch also has"


def test_fine_tuning_reaches_every_weight(pair):
    """One step of SGD changes every imported parameter: backward reaches them all. (In eval mode, the
    usual way to fine-tune a network with batch norm: in training mode a bias right before a batch norm
    has zero gradient, the batch mean removes it.)"""
    from convprop.optim import SGD

    _, imported, shape = pair
    before = [p.data.copy() for p in imported.parameters()]
    x = np.random.default_rng(4).standard_normal(shape)
    y, context = imported.forward_with_context(x)
    imported.zero_grad()
    imported.backward_with_context(context, np.random.default_rng(5).standard_normal(y.shape), input_grad=False)
    SGD(imported.parameters(), lr=0.1).step()
    unchanged = [
        i for i, (p, b) in enumerate(zip(imported.parameters(), before, strict=True)) if np.array_equal(p.data, b)
    ]
    assert not unchanged, f"parameters {unchanged} did not move"


def test_imported_graph_is_inspectable(pair):
    imported = pair[1]
    assert isinstance(imported, nn.Graph)
    text = repr(imported)
    assert "Conv" in text and "<-" in text
    assert imported.state_dict()  # named weights, as a checkpoint would save them


def test_an_imported_graph_saves_as_a_checkpoint(pair, tmp_path):
    """Fine-tuned, it can be kept as a convprop checkpoint: rebuilt from the file, the same outputs."""
    import convprop

    _, imported, shape = pair
    convprop.save(imported, tmp_path / "imported.safetensors")
    rebuilt = convprop.load(tmp_path / "imported.safetensors")
    x = np.random.default_rng(6).standard_normal(shape)
    np.testing.assert_array_equal(rebuilt.forward(x), imported.forward(x))
