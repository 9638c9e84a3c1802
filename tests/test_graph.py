"""Residual, Concat and Graph against PyTorch in float64 (outputs, every parameter and input gradient,
relative 1e-9), plus a finite-difference check of each; the whole resnet likewise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import assert_close
from torch_twins import twin

import convprop
from convprop import models, nn

f64 = dict(dtype=np.float64)


def conv(c_in, c_out, k, stride=1, seed=0, bias=False):
    return nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=bias, rng=seed, **f64)


def residual_block_with_projection():
    body = nn.Sequential(conv(3, 4, 3, 2, 1), nn.BatchNorm2d(4, **f64), nn.ReLU(), conv(4, 4, 3, 1, 2),
                         nn.BatchNorm2d(4, **f64))  # fmt: skip
    shortcut = nn.Sequential(conv(3, 4, 1, 2, 3), nn.BatchNorm2d(4, **f64))
    return nn.Sequential(nn.Residual(body, shortcut), nn.ReLU())


def inception_block():
    return nn.Concat(
        conv(3, 2, 1, seed=1, bias=True),
        nn.Sequential(conv(3, 2, 1, seed=2), nn.ReLU(), conv(2, 3, 3, seed=3, bias=True)),
        nn.Sequential(nn.MaxPool2d(3, 1, 1), conv(3, 2, 1, seed=4, bias=True)),
        dim=1,
    )


def small_resnet():
    return models.resnet(1, (12, 12), 5, rng=0, width=(4, 6, 8), blocks=(1, 2, 1)).astype(np.float64)


def randomise_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data[...] = rng.uniform(0.5, 1.5, m.num_features)
            m.bias.data[...] = rng.normal(size=m.num_features)
            m.running_mean[...] = rng.normal(size=m.num_features)
            m.running_var[...] = rng.uniform(0.5, 2, m.num_features)
    return model


CONTAINERS = [
    pytest.param(residual_block_with_projection, (2, 3, 7, 6), id="residual-projection"),
    pytest.param(lambda: nn.Residual(nn.Sequential(conv(3, 3, 3, seed=5), nn.Tanh())), (2, 3, 5, 5), id="residual-id"),
    pytest.param(inception_block, (2, 3, 6, 5), id="inception-concat"),
    pytest.param(small_resnet, (3, 1, 12, 12), id="resnet"),
]


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("make, x_shape", CONTAINERS)
def test_containers_match_torch(make, x_shape, train):
    ours = randomise_bn(make())
    theirs = twin(ours)
    ours.train(train)
    theirs.train(train)
    x = np.random.default_rng(1).standard_normal(x_shape)
    y, context = ours.forward_with_context(x)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    g = np.random.default_rng(2).standard_normal(y.shape)
    dx = ours.backward_with_context(context, g)
    yt.backward(torch.tensor(g))
    assert_close(y, yt.detach().numpy(), "output")
    assert_close(dx, xt.grad.numpy(), "input gradient")
    named = dict(theirs.named_parameters())
    assert [n for n, _ in ours.named_parameters()] == list(named), "PyTorch's state_dict names"
    for name, p in ours.named_parameters():
        assert_close(p.grad, named[name].grad.numpy(), f"gradient of {name}")
    for name, value in ours.state_dict().items():
        assert_close(value, theirs.state_dict()[name].numpy(), f"state {name}")


@pytest.mark.parametrize("make, x_shape", CONTAINERS)
def test_containers_gradcheck(make, x_shape):
    model = randomise_bn(make()).eval()  # eval: batch statistics would make BatchNorm's finite differences noisy
    x = np.random.default_rng(3).standard_normal(x_shape)
    assert convprop.gradcheck_module(model, x, seed=0).ok


# ---------------------------------------------------------------------------------------------- graphs


def graph_sharing_one_layer():
    """y = lin(tanh(lin(x))) + x: one Linear instance in two nodes (shared weights)."""
    lin = nn.Linear(4, 4, rng=0, **f64)
    return nn.Graph(
        ["x"],
        [("a", lin, ["x"]), ("t", nn.Tanh(), ["a"]), ("b", lin, ["t"]), ("y", nn.Add(), ["b", "x"])],
        ["y"],
    )


class TorchSharing(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 4).double()

    def forward(self, x):
        return self.a(torch.tanh(self.a(x))) + x


def graph_two_in_two_out():
    """u = conv(x1) · sigmoid-free gate (x2 mean-pooled), v = cat(u, x1); outputs (flatten-linear of v, u)."""
    return nn.Graph(
        ["x1", "x2"],
        [
            ("c", conv(2, 2, 3, seed=1, bias=True), ["x1"]),
            ("g", nn.AdaptiveAvgPool2d(1), ["x2"]),
            ("u", nn.Mul(), ["c", "g"]),
            ("v", nn.Cat(dim=1), ["u", "x1"]),
            ("f", nn.Flatten(), ["v"]),
            ("head", nn.Linear(4 * 25, 3, rng=2, **f64), ["f"]),
        ],
        ["head", "u"],
    )


class TorchTwoInTwoOut(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c = torch.nn.Conv2d(2, 2, 3, padding=1).double()
        self.head = torch.nn.Linear(100, 3).double()

    def forward(self, x1, x2):
        u = self.c(x1) * x2.mean(dim=(2, 3), keepdim=True)
        return self.head(torch.cat([u, x1], 1).flatten(1)), u


GRAPHS = [
    pytest.param(graph_sharing_one_layer, TorchSharing, [(3, 4)], id="one-layer-twice"),
    pytest.param(graph_two_in_two_out, TorchTwoInTwoOut, [(2, 2, 5, 5), (2, 2, 4, 4)], id="two-in-two-out"),
]


@pytest.mark.parametrize("make, make_torch, shapes", GRAPHS)
def test_graphs_match_torch(make, make_torch, shapes):
    ours, theirs = make(), make_torch()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()}, strict=True)
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal(s) for s in shapes]
    ys, context = ours.forward_with_context(*xs)
    ys = ys if isinstance(ys, tuple) else (ys,)
    xts = [torch.tensor(x, requires_grad=True) for x in xs]
    yts = theirs(*xts)
    yts = yts if isinstance(yts, tuple) else (yts,)
    gs = [rng.standard_normal(y.shape) for y in ys]
    dxs = ours.backward_with_context(context, tuple(gs) if len(gs) > 1 else gs[0])
    dxs = dxs if isinstance(dxs, tuple) else (dxs,)
    torch.autograd.backward(yts, [torch.tensor(g) for g in gs])
    for i, (y, yt) in enumerate(zip(ys, yts, strict=True)):
        assert_close(y, yt.detach().numpy(), f"output {i}")
    for i, (dx, xt) in enumerate(zip(dxs, xts, strict=True)):
        assert_close(dx, xt.grad.numpy(), f"gradient of input {i}")
    named = dict(theirs.named_parameters())
    assert [n for n, _ in ours.named_parameters()] == list(named)
    assert len(ours.parameters()) == len(list(theirs.parameters()))
    for name, p in ours.named_parameters():
        assert_close(p.grad, named[name].grad.numpy(), f"gradient of {name}")


@pytest.mark.parametrize("make, make_torch, shapes", GRAPHS)
def test_graphs_gradcheck(make, make_torch, shapes):
    graph = make()
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal(s) for s in shapes]
    params = graph.parameters()
    names = [f"x{i}" for i in range(len(xs))] + [f"param{i}" for i in range(len(params))]

    def forward(*arrays):
        ys = graph.forward(*arrays[: len(xs)])
        return np.concatenate([np.ravel(y) for y in (ys if isinstance(ys, tuple) else (ys,))])

    def backward(grad_output, *arrays):
        graph.zero_grad()
        ys, context = graph.forward_with_context(*arrays[: len(xs)])
        ys = ys if isinstance(ys, tuple) else (ys,)
        parts = np.split(grad_output, np.cumsum([y.size for y in ys])[:-1])
        gs = tuple(p.reshape(y.shape) for p, y in zip(parts, ys, strict=True))
        dxs = graph.backward_with_context(context, gs if len(gs) > 1 else gs[0])
        dxs = dxs if isinstance(dxs, tuple) else (dxs,)
        return [*dxs, *(p.grad for p in params)]

    result = convprop.gradcheck(forward, backward, [*xs, *(p.data for p in params)], names=names, seed=0)
    assert result.ok


def test_a_shared_module_is_one_parameter_set_that_sums_its_uses():
    graph = graph_sharing_one_layer()
    assert len(graph.parameters()) == 2 and list(graph.state_dict()) == ["a.weight", "a.bias"]
    assert graph.owner == {"a": "a", "t": "t", "b": "a", "y": "y"}


def test_an_unused_input_gets_a_zero_gradient_and_a_dead_node_none():
    graph = nn.Graph(["x", "unused"], [("dead", nn.Linear(2, 2, rng=0, **f64), ["x"]), ("y", nn.Tanh(), ["x"])], ["y"])
    _, context = graph.forward_with_context(np.ones((1, 2)), np.ones((3,)))
    _, du = graph.backward_with_context(context, np.ones((1, 2)))
    np.testing.assert_array_equal(du, np.zeros(3))
    assert graph.parameters()[0].grad is None


def test_residual_backward_is_the_sum_of_both_paths():
    body = nn.Linear(3, 3, rng=0, **f64)
    block = nn.Residual(body)
    x, g = np.ones((2, 3)), np.arange(6.0).reshape(2, 3)
    _, context = block.forward_with_context(x)
    np.testing.assert_allclose(block.backward_with_context(context, g), g @ body.weight.data + g, rtol=1e-15)
