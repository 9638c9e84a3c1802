"""nn layers against torch.nn: one helper, a table of layers and options, float64 throughout.

``check_layer`` builds nothing itself: it takes a convprop layer and the equivalent ``torch.nn`` layer,
moves both to float64, copies the weights convprop → torch through ``state_dict``, runs forward and
backward on the same random input and output gradient, and compares the output, the input gradient,
every parameter gradient (matched by name) and every buffer. The tables below only list layers.

This file holds the helper and the tables of Linear, Flatten, the activations, BatchNorm2d and Dropout;
Conv2d's table is in test_nn_conv.py and the pooling layers' in test_nn_pool.py (both import the helper
from here, as test_nn_nd.py and test_nn_module.py do).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import assert_close, rel_error

from convprop import nn

TOL = 1e-9
F64 = dict(dtype=np.float64)


ZERO_ATOL = 1e-14  # gradients that are zero in exact arithmetic (a conv bias feeding BatchNorm in training)


# ---------------------------------------------------------------------------------------------- helper


def check_layer(layer, torch_layer, x_shape, *, train=True, seed=0, x=None, prepare=None):
    """Compare ``layer`` with ``torch_layer``: output, input gradient, parameter gradients, buffers.

    ``prepare(layer, rng)`` may set non-default weights or buffers on the convprop side before they
    are copied to torch. Returns both layers for further checks.
    """
    rng = np.random.default_rng(seed)
    layer.astype(np.float64)
    torch_layer.double()
    if prepare is not None:
        prepare(layer, rng)
    torch_layer.load_state_dict({k: torch.tensor(np.array(v)) for k, v in layer.state_dict().items()}, strict=True)
    layer.train(train)
    torch_layer.train(train)

    x = rng.standard_normal(x_shape) if x is None else x
    if train:  # the seeds' style: the call keeps its context in training mode
        y = layer(x.copy())
    else:  # eval mode keeps none: differentiate through the explicit pair
        y, context = layer.forward_with_context(x.copy())
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_layer(xt)
    g = rng.standard_normal(tuple(yt.shape))
    dx = layer.backward(g.copy()) if train else layer.backward_with_context(context, g.copy())
    yt.backward(torch.tensor(g))

    assert y.dtype == np.float64 and dx.dtype == np.float64
    assert_close(y, yt.detach().numpy(), "output", TOL, atol=ZERO_ATOL)
    assert_close(dx, xt.grad.numpy(), "input gradient", TOL, atol=ZERO_ATOL)
    ours, theirs = dict(layer.named_parameters()), dict(torch_layer.named_parameters())
    assert list(ours) == list(theirs), "parameter names and order"
    for name, p in ours.items():
        assert p.grad is not None, f"{name} has no gradient"
        assert_close(p.grad, theirs[name].grad.numpy(), f"gradient of {name}", TOL, atol=ZERO_ATOL)
    ours_sd, theirs_sd = layer.state_dict(), torch_layer.state_dict()
    assert list(ours_sd) == list(theirs_sd), "state_dict keys"
    for name, value in ours_sd.items():
        assert_close(value, theirs_sd[name].numpy(), f"state {name} after forward", TOL, atol=ZERO_ATOL)
    return layer, torch_layer


def case(name, ours, theirs, x_shape, **kw):
    """One row of a table: the convprop layer factory, the torch.nn factory, the input shape."""
    return pytest.param(ours, theirs, x_shape, kw, id=name)


def run_case(ours, theirs, x_shape, kw):
    check_layer(ours(), theirs(), x_shape, **kw)


def distinct_values(shape, rng):
    """Values at least 0.05 apart, so max pooling has no ties (finite differences need that)."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.05 - n * 0.025).reshape(shape)


C, T = nn, torch.nn  # ours, theirs


# ---------------------------------------------------------------------------------------------- Linear, Flatten

LINEAR = [
    case("linear", lambda: C.Linear(7, 3, **F64), lambda: T.Linear(7, 3), (5, 7)),
    case("linear-no-bias", lambda: C.Linear(4, 6, bias=False, **F64), lambda: T.Linear(4, 6, bias=False), (3, 4)),
    case("linear-1to1", lambda: C.Linear(1, 1, **F64), lambda: T.Linear(1, 1), (4, 1)),
    case("linear-3d-input", lambda: C.Linear(5, 2, **F64), lambda: T.Linear(5, 2), (2, 3, 5)),
    case("linear-float32-cast", lambda: C.Linear(6, 4), lambda: T.Linear(6, 4), (2, 6)),
    case("flatten", lambda: C.Flatten(), lambda: T.Flatten(), (2, 3, 4, 5)),
    case("flatten-0", lambda: C.Flatten(0), lambda: T.Flatten(0), (2, 3, 4)),
    case("flatten-1-2", lambda: C.Flatten(1, 2), lambda: T.Flatten(1, 2), (2, 3, 4, 5)),
    case("flatten-neg", lambda: C.Flatten(-3, -2), lambda: T.Flatten(-3, -2), (2, 3, 4, 5)),
    case("flatten-single-axis", lambda: C.Flatten(2, 2), lambda: T.Flatten(2, 2), (2, 3, 4)),
]


@pytest.mark.parametrize("ours, theirs, x_shape, kw", LINEAR)
def test_linear_and_flatten_match_torch(ours, theirs, x_shape, kw):
    run_case(ours, theirs, x_shape, kw)


# ---------------------------------------------------------------------------------------------- activations

ACTIVATIONS = [
    case("relu", lambda: C.ReLU(), lambda: T.ReLU(), (2, 3, 4, 5)),
    case("leaky-relu", lambda: C.LeakyReLU(), lambda: T.LeakyReLU(), (2, 3, 4, 5)),
    case("leaky-relu-0.2", lambda: C.LeakyReLU(0.2), lambda: T.LeakyReLU(0.2), (4, 6)),
    case("leaky-relu-negative-slope", lambda: C.LeakyReLU(-1.5), lambda: T.LeakyReLU(-1.5), (4, 6)),
    case("sigmoid", lambda: C.Sigmoid(), lambda: T.Sigmoid(), (2, 3, 4, 5)),
    case("tanh", lambda: C.Tanh(), lambda: T.Tanh(), (2, 3, 4, 5)),
    case("gelu", lambda: C.GELU(), lambda: T.GELU(), (2, 3, 4, 5)),
    case("gelu-tanh", lambda: C.GELU("tanh"), lambda: T.GELU("tanh"), (2, 3, 4, 5)),
    *[
        case(
            f"{name}-dim{dim}-{len(shape)}d",
            lambda ours=ours, dim=dim: ours(dim),
            lambda theirs=theirs, dim=dim: theirs(dim),
            shape,
        )
        for name, ours, theirs in [("softmax", C.Softmax, T.Softmax), ("log-softmax", C.LogSoftmax, T.LogSoftmax)]
        for dim, shape in [
            (1, (4, 10)),
            (-1, (4, 10)),
            (0, (4, 10)),
            (1, (2, 3, 4, 5)),
            (-1, (2, 3, 4, 5)),
            (2, (2, 3, 4)),
        ]
    ],
]


@pytest.mark.parametrize("ours, theirs, x_shape, kw", ACTIVATIONS)
def test_activation_matches_torch(ours, theirs, x_shape, kw):
    x = 3 * np.random.default_rng(2).standard_normal(x_shape)
    check_layer(ours(), theirs(), x_shape, x=x, **kw)


def test_softmax_is_stable_for_large_inputs():
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1002.0]])
    for ours, theirs in [(nn.Softmax(1), torch.nn.Softmax(1)), (nn.LogSoftmax(1), torch.nn.LogSoftmax(1))]:
        check_layer(ours, theirs, x.shape, x=x)


# ---------------------------------------------------------------------------------------------- BatchNorm2d, Dropout


def random_running_stats(layer, rng):
    layer.running_mean[...] = rng.standard_normal(layer.num_features)
    layer.running_var[...] = rng.uniform(0.5, 2.0, layer.num_features)
    layer.num_batches_tracked[...] = 7


def random_affine(layer, rng):
    if layer.affine:
        layer.weight.data[...] = rng.standard_normal(layer.num_features)
        layer.bias.data[...] = rng.standard_normal(layer.num_features)


def random_bn_state(layer, rng):
    random_affine(layer, rng)
    if layer.track_running_stats:
        random_running_stats(layer, rng)


NORM = [
    *[
        case(
            f"bn-{'train' if train else 'eval'}-affine{affine}-momentum{momentum}",
            lambda affine=affine, momentum=momentum: C.BatchNorm2d(3, momentum=momentum, affine=affine, **F64),
            lambda affine=affine, momentum=momentum: T.BatchNorm2d(3, momentum=momentum, affine=affine),
            (4, 3, 5, 6),
            train=train,
            prepare=random_bn_state,
        )
        for train in (True, False)
        for affine in (True, False)
        for momentum in (0.1, 0.5, 1.0, 0.0)
    ],
    case(
        "bn-eps",
        lambda: C.BatchNorm2d(2, eps=0.5, **F64),
        lambda: T.BatchNorm2d(2, eps=0.5),
        (3, 2, 4, 4),
        prepare=random_bn_state,
    ),
    case(
        "bn-eval-eps",
        lambda: C.BatchNorm2d(2, eps=0.5, **F64),
        lambda: T.BatchNorm2d(2, eps=0.5),
        (3, 2, 4, 4),
        train=False,
        prepare=random_bn_state,
    ),
    case(
        "bn-1x1-spatial",
        lambda: C.BatchNorm2d(4, **F64),
        lambda: T.BatchNorm2d(4),
        (5, 4, 1, 1),
        prepare=random_bn_state,
    ),
    case(
        "bn-batch-of-one",
        lambda: C.BatchNorm2d(2, **F64),
        lambda: T.BatchNorm2d(2),
        (1, 2, 3, 3),
        prepare=random_bn_state,
    ),
    case(
        "bn-no-running-stats-train",
        lambda: C.BatchNorm2d(3, track_running_stats=False, **F64),
        lambda: T.BatchNorm2d(3, track_running_stats=False),
        (4, 3, 2, 3),
        prepare=random_bn_state,
    ),
    case(
        "bn-no-running-stats-eval",
        lambda: C.BatchNorm2d(3, track_running_stats=False, **F64),
        lambda: T.BatchNorm2d(3, track_running_stats=False),
        (4, 3, 2, 3),
        train=False,
        prepare=random_bn_state,
    ),
    case("bn-float32-cast", lambda: C.BatchNorm2d(3), lambda: T.BatchNorm2d(3), (4, 3, 2, 3), prepare=random_bn_state),
    case("dropout-eval", lambda: C.Dropout(0.5), lambda: T.Dropout(0.5), (4, 5), train=False),
    case("dropout-eval-p0.9", lambda: C.Dropout(0.9), lambda: T.Dropout(0.9), (2, 3, 4, 4), train=False),
    case("dropout-p0-train", lambda: C.Dropout(0.0), lambda: T.Dropout(0.0), (2, 3, 4, 4)),
    case("dropout-p1-train", lambda: C.Dropout(1.0), lambda: T.Dropout(1.0), (2, 3, 4, 4)),
]


@pytest.mark.parametrize("ours, theirs, x_shape, kw", NORM)
def test_batchnorm_and_dropout_match_torch(ours, theirs, x_shape, kw):
    x = 2 * np.random.default_rng(3).standard_normal(x_shape) + 1
    check_layer(ours(), theirs(), x_shape, x=x, **kw)


def test_batchnorm_running_stats_match_torch_over_several_steps():
    ours, theirs = nn.BatchNorm2d(3, momentum=0.3, dtype=np.float64), torch.nn.BatchNorm2d(3, momentum=0.3).double()
    rng = np.random.default_rng(4)
    for _ in range(4):
        x = 3 * rng.standard_normal((4, 3, 2, 5)) - 1
        ours(x)
        theirs(torch.tensor(x))
    for name, value in ours.state_dict().items():
        assert rel_error(value, theirs.state_dict()[name].numpy()) < TOL, name
    assert int(ours.num_batches_tracked) == 4


@pytest.mark.parametrize("p, x_shape", [(0.5, (4, 5)), (0.1, (2, 3, 4, 4)), (0.9, (50,)), (0.3, (3, 1, 2, 7))])
def test_dropout_train_matches_x_mask_over_keep_probability(p, x_shape):
    rng = np.random.default_rng(5)
    layer = nn.Dropout(p, rng=6).astype(np.float64)
    x, g = rng.standard_normal(x_shape), rng.standard_normal(x_shape)
    y, mask = layer.forward_with_context(x)  # the context is the keep-mask
    assert mask.shape == x_shape and mask.dtype == np.bool_
    dx = layer.backward_with_context(mask, g)
    xt = torch.tensor(x, requires_grad=True)
    yt = xt * torch.tensor(mask) / (1 - p)
    yt.backward(torch.tensor(g))
    assert rel_error(y, yt.detach().numpy()) < TOL
    assert rel_error(dx, xt.grad.numpy()) < TOL


def test_dropout_same_seed_same_mask_and_keep_rate():
    x = np.ones((200, 100))
    a, b, c = nn.Dropout(0.3, rng=1), nn.Dropout(0.3, rng=1), nn.Dropout(0.3, rng=2)
    (ya, mask), yb, yc = a.forward_with_context(x), b(x), c(x)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(ya, yc)
    assert abs(mask.mean() - 0.7) < 0.01  # 20,000 draws: std of the keep rate ≈ 0.003
    assert not np.array_equal(a(x), ya), "a new mask each forward"
