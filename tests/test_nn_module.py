"""nn beyond single layers: Sequential against torch.nn, modes, gradient accumulation, the untied
bias, default initialisation, the model summary, in-place ReLU and BatchNorm's cumulative average.

The per-layer comparisons with torch.nn are in test_nn_layers.py, whose ``check_layer`` helper this
file reuses; the finite-difference check of every layer type is in test_nn_gradcheck.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reference import rel_error
from test_nn_layers import TOL, check_layer, random_bn_state

import convprop
from convprop import nn

C, T = nn, torch.nn  # ours, theirs

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")


# ---------------------------------------------------------------------------------------------- Sequential


def make_pair():
    """An equivalent (convprop, torch) Sequential mixing every layer type, nested once."""
    ours = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, dtype=np.float64),
        nn.BatchNorm2d(4, dtype=np.float64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Sequential(
            nn.Conv2d(4, 4, 3, padding="same", groups=2, padding_mode="reflect", bias=False, dtype=np.float64),
            nn.GELU("tanh"),
        ),
        nn.AvgPool2d(2, 1, 1),
        nn.Conv2d(4, 4, 1, groups=4, dtype=np.float64),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d((2, 3)),
        nn.Flatten(),
        nn.Dropout(0.4),
        nn.Linear(24, 10, dtype=np.float64),
        nn.LeakyReLU(0.1),
        nn.Linear(10, 5, bias=False, dtype=np.float64),
        nn.Sigmoid(),
        nn.Linear(5, 4, dtype=np.float64),
        nn.LogSoftmax(dim=1),
    )
    theirs = torch.nn.Sequential(
        T.Conv2d(3, 4, 3, padding=1),
        T.BatchNorm2d(4),
        T.ReLU(),
        T.MaxPool2d(2),
        T.Sequential(T.Conv2d(4, 4, 3, padding="same", groups=2, padding_mode="reflect", bias=False), T.GELU("tanh")),
        T.AvgPool2d(2, 1, 1),
        T.Conv2d(4, 4, 1, groups=4),
        T.Tanh(),
        T.AdaptiveAvgPool2d((2, 3)),
        T.Flatten(),
        T.Dropout(0.4),
        T.Linear(24, 10),
        T.LeakyReLU(0.1),
        T.Linear(10, 5, bias=False),
        T.Sigmoid(),
        T.Linear(5, 4),
        T.LogSoftmax(dim=1),
    )
    return ours, theirs


def test_sequential_matches_torch_in_eval_mode():
    ours, theirs = make_pair()
    check_layer(ours, theirs, (3, 3, 8, 9), train=False, prepare=lambda m, rng: random_bn_state(m[1], rng))


def test_sequential_matches_torch_in_train_mode_without_dropout():
    ours, theirs = make_pair()
    ours[10].p, theirs[10].p = 0.0, 0.0  # the only random layer; the masked form is tested on its own
    check_layer(ours, theirs, (3, 3, 8, 9), train=True, prepare=lambda m, rng: random_bn_state(m[1], rng))


def test_parameters_order_and_state_dict_keys_equal_torch():
    ours, theirs = make_pair()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [p.shape for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert {"1.running_mean", "1.running_var", "1.num_batches_tracked"} <= set(ours.state_dict())
    for k, v in ours.state_dict().items():
        assert np.shape(v) == tuple(theirs.state_dict()[k].shape), k
    assert ours.state_dict()["1.num_batches_tracked"].dtype == np.int64


def test_train_and_eval_propagate_to_every_module():
    ours, _ = make_pair()
    assert all(m.training for m in ours.modules())
    assert ours.eval() is ours
    assert not any(m.training for m in ours.modules())
    ours.train()
    assert all(m.training for m in ours.modules())
    ours.train(False)
    assert not any(m.training for m in ours.modules())
    assert len(list(ours.modules())) == 1 + 17 + 2


def test_astype_converts_parameters_and_float_buffers_only():
    ours, _ = make_pair()
    ours.astype(np.float32)
    assert all(p.data.dtype == np.float32 for p in ours.parameters())
    sd = ours.state_dict()
    assert sd["1.running_mean"].dtype == np.float32 and sd["1.num_batches_tracked"].dtype == np.int64
    y = ours.eval()(np.zeros((1, 3, 8, 9), np.float32))
    assert y.dtype == np.float32


# ---------------------------------------------------------------------------------------------- gradients accumulate


ACCUMULATING = [
    pytest.param(lambda: nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64), (2, 2, 5, 5), id="conv"),
    pytest.param(lambda: nn.Linear(4, 3, dtype=np.float64), (5, 4), id="linear"),
    pytest.param(lambda: nn.BatchNorm2d(3, dtype=np.float64), (4, 3, 2, 2), id="batchnorm"),
    pytest.param(
        lambda: nn.Conv2d(2, 2, 3, bias="untied", input_size=(4, 5), dtype=np.float64), (3, 2, 4, 5), id="untied"
    ),
    pytest.param(lambda: without_dropout(make_pair()[0]), (2, 3, 8, 9), id="sequential"),
]


def without_dropout(model):
    """Training mode (the call keeps its context) but deterministic: the only random layer drops nothing."""
    model[10].p = 0.0
    return model


@pytest.mark.parametrize("make, x_shape", ACCUMULATING)
def test_gradients_accumulate_over_two_backward_passes_and_zero_grad_clears(make, x_shape):
    layer = make()
    rng = np.random.default_rng(7)
    x1, x2 = rng.standard_normal(x_shape), rng.standard_normal(x_shape)
    y = layer(x1)
    g1, g2 = rng.standard_normal(y.shape), rng.standard_normal(y.shape)
    layer.backward(g1)
    first = [p.grad.copy() for p in layer.parameters()]
    layer.zero_grad()
    assert all(p.grad is None for p in layer.parameters())
    layer(x2)
    layer.backward(g2)
    second = [p.grad.copy() for p in layer.parameters()]
    layer.zero_grad()
    layer(x1)
    layer.backward(g1)
    layer(x2)
    layer.backward(g2)
    for name, a, b, total in zip(
        [n for n, _ in layer.named_parameters()], first, second, [p.grad for p in layer.parameters()], strict=True
    ):
        np.testing.assert_allclose(total, a + b, rtol=1e-12, atol=1e-12, err_msg=name)
    layer.zero_grad()
    assert all(p.grad is None for p in layer.parameters())


def test_accumulated_grad_is_a_copy_not_an_alias_of_the_gradient():
    layer = nn.Linear(3, 2, dtype=np.float64)
    x = np.ones((1, 3))
    layer(x)
    layer.backward(np.ones((1, 2)))
    snapshot = layer.weight.grad.copy()
    layer(x)
    layer.backward(np.ones((1, 2)))
    np.testing.assert_array_equal(layer.weight.grad, 2 * snapshot)


def test_an_owned_first_gradient_is_kept_without_a_copy_and_anything_else_is_copied():
    p = nn.Parameter(np.zeros((2, 3), np.float32))
    fresh = np.ones((2, 3), np.float32)
    p.accumulate(fresh, owned=True)
    assert p.grad is fresh  # handed over
    p.accumulate(fresh)  # later gradients are added in place
    assert p.grad is fresh and (fresh == 2).all()
    for given in (
        np.ones((2, 3), np.float64),  # another dtype
        np.ones((3, 2), np.float32).T,  # not C order
        np.broadcast_to(np.float32(1), (2, 3)),  # read-only
    ):
        q = nn.Parameter(np.zeros((2, 3), np.float32))
        q.accumulate(given, owned=True)
        assert q.grad is not given and q.grad.dtype == np.float32 and q.grad.flags.c_contiguous
        np.testing.assert_array_equal(q.grad, 1)
    r = nn.Parameter(np.zeros((2, 3), np.float32))
    r.accumulate(fresh)  # not owned: a copy
    assert r.grad is not fresh


# ---------------------------------------------------------------------------------------------- untied bias


@pytest.mark.parametrize(
    "options, input_size",
    [
        (dict(kernel_size=3), (6, 7)),
        (dict(kernel_size=3, padding="same"), (5, 5)),
        (dict(kernel_size=(2, 3), stride=2, padding=1), (7, 6)),
        (dict(kernel_size=3, stride=2, padding="same"), (7, 8)),
        (dict(kernel_size=1, groups=2), (3, 4)),
    ],
)
def test_untied_bias_shape_forward_and_gradient(options, input_size):
    layer = nn.Conv2d(2, 4, bias="untied", input_size=input_size, rng=3, dtype=np.float64, **options)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 2, *input_size))
    tied = nn.Conv2d(2, 4, bias=False, dtype=np.float64, **options)
    tied.weight.data[...] = layer.weight.data
    expected = tied(x)
    OH, OW = expected.shape[2:]
    assert layer.bias.shape == (4, OH, OW)
    layer.bias.data[...] = rng.standard_normal((4, OH, OW))
    y = layer(x)
    assert rel_error(y, expected + layer.bias.data) < TOL
    g = rng.standard_normal(y.shape)
    dx = layer.backward(g)
    assert rel_error(layer.bias.grad, g.sum(axis=0)) < TOL
    assert rel_error(dx, tied.backward(g)) < TOL
    assert rel_error(layer.weight.grad, tied.weight.grad) < TOL
    assert list(layer.state_dict()) == ["weight", "bias"]
    gradcheck_small = nn.Conv2d(2, 2, bias="untied", input_size=input_size, rng=3, dtype=np.float64, **options)
    convprop.gradcheck_module(gradcheck_small, rng.standard_normal((2, 2, *input_size)))


def test_untied_bias_unbatched_input():
    layer = nn.Conv2d(2, 3, 3, bias="untied", input_size=(5, 5), dtype=np.float64)
    x = np.random.default_rng(9).standard_normal((2, 5, 5))
    y = layer(x)
    assert y.shape == (3, 3, 3)
    layer.backward(np.ones_like(y))
    np.testing.assert_array_equal(layer.bias.grad, np.ones((3, 3, 3)))


# ---------------------------------------------------------------------------------------------- initialisation


INITIALISED = [
    pytest.param(lambda rng: nn.Conv2d(16, 32, 3, rng=rng), 16 * 9, id="conv"),
    pytest.param(lambda rng: nn.Conv2d(16, 32, (3, 5), groups=4, rng=rng), 4 * 15, id="conv-groups"),
    pytest.param(lambda rng: nn.Conv2d(1, 8, 5, bias="untied", input_size=(8, 8), rng=rng), 25, id="conv-untied"),
    pytest.param(lambda rng: nn.Linear(300, 200, rng=rng), 300, id="linear"),
]


@pytest.mark.parametrize("make, fan_in", INITIALISED)
def test_default_init_is_pytorchs_uniform_and_seeded(make, fan_in):
    layer = make(0)
    bound = 1 / math.sqrt(fan_in)
    for name, p in layer.named_parameters():
        assert p.data.dtype == np.float32
        values = p.data.astype(np.float64)
        assert np.abs(values).max() <= bound * (1 + 1e-6), name
        if values.size >= 1000:  # U(-b, b): mean 0, variance b²/3, fills the interval
            assert abs(values.mean()) < 0.05 * bound, name
            assert abs(values.var() / (bound**2 / 3) - 1) < 0.05, name
            assert np.abs(values).max() > 0.99 * bound, name
    same, other = make(0), make(1)
    for (name, p), q, r in zip(layer.named_parameters(), same.parameters(), other.parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
        assert not np.array_equal(p.data, r.data), name
    gen = make(np.random.default_rng(0))
    np.testing.assert_array_equal(gen.weight.data, layer.weight.data)  # a Generator and its seed agree


def test_torch_init_has_the_same_bound():
    """The bound the tests above use is torch's own: its default weights fill the same interval."""
    torch.manual_seed(0)
    w = torch.nn.Linear(300, 200).weight.detach().numpy()
    assert abs(np.abs(w).max() - 1 / math.sqrt(300)) < 1e-3 / math.sqrt(300)


# ---------------------------------------------------------------------------------------------- summary


def test_summary_lists_output_shapes_and_torch_parameter_count():
    ours, theirs = make_pair()
    ours.train()
    text = nn.summary(ours, (3, 8, 9))
    assert all(m.training for m in ours.modules()), "summary restores the mode"
    x = torch.zeros((1, 3, 8, 9), dtype=torch.float64)
    theirs.double().eval()
    shapes = []
    for layer in theirs:
        if isinstance(layer, torch.nn.Sequential):
            for inner in layer:
                x = inner(x)
                shapes.append(tuple(x.shape))
        else:
            x = layer(x)
            shapes.append(tuple(x.shape))
    for shape in shapes:
        assert str(shape) in text, shape
    total = sum(p.numel() for p in theirs.parameters())
    assert f"total parameters: {total:,}" in text
    for name in ("Conv2d", "BatchNorm2d", "MaxPool2d", "GELU", "AdaptiveAvgPool2d", "Linear", "LogSoftmax"):
        assert name in text


def test_summary_of_a_single_layer():
    text = nn.summary(nn.Conv2d(3, 8, 3, padding=1), (3, 10, 12))
    assert "(1, 8, 10, 12)" in text and "total parameters: 224" in text


# ---------------------------------------------------------------------------------------------- ReLU, BatchNorm, load


def test_inplace_relu_overwrites_its_input_and_keeps_the_gradient():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 4, 4))
    x[0, 0, 0, :2] = 0.0  # exactly at the kink
    g = rng.standard_normal(x.shape)
    plain, inplace = nn.ReLU(), nn.ReLU(inplace=True)
    expected_y, expected_dx = plain(x.copy()), None
    expected_dx = plain.backward(g)
    x_in = x.copy()
    y = inplace(x_in)
    assert y is x_in  # no new array
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(inplace.backward(g), expected_dx)
    assert inplace.config() == {"inplace": True} and plain.config() == {}
    assert convprop.gradcheck_module(nn.ReLU(inplace=True), np.where(np.abs(x) < 1e-3, 0.5, x)).ok
    with pytest.raises(TypeError, match="inplace must be True or False, got 1"):
        nn.ReLU(inplace=1)


def test_batchnorm_momentum_none_is_torchs_cumulative_average():
    rng = np.random.default_rng(4)
    ours, theirs = nn.BatchNorm2d(3, momentum=None, dtype=np.float64), torch.nn.BatchNorm2d(3, momentum=None).double()
    for _ in range(4):
        x = rng.standard_normal((5, 3, 2, 2)) * rng.uniform(0.5, 3)
        ours(x)
        theirs(torch.from_numpy(x))
    for name in ("running_mean", "running_var"):
        assert rel_error(getattr(ours, name), getattr(theirs, name).numpy()) < TOL
    assert int(ours.num_batches_tracked) == 4 and ours.config()["momentum"] is None


def test_a_failed_load_leaves_the_model_untouched():
    model = nn.Sequential(nn.Linear(2, 2, rng=0), nn.Linear(2, 3, rng=1))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    bad = {k: np.full_like(v, 7.0) for k, v in before.items()}
    bad["1.weight"] = np.zeros((9, 9), np.float32)  # the second layer does not fit
    with pytest.raises(ValueError, match=r"state_dict\['1.weight'\] has shape \(9, 9\)"):
        model.load_state_dict(bad)
    assert all(np.array_equal(model.state_dict()[k], v) for k, v in before.items())


def test_a_replaced_layer_keeps_its_place():
    """``setattr(model, "0", layer)`` replaces the first layer where it is (PyTorch's order), and a
    parameter or child replaced by a plain value is unregistered."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten())
    stem = nn.Conv2d(1, 2, 5)
    setattr(model, "0", stem)
    assert next(iter(model)) is stem and [type(m).__name__ for m in model] == ["Conv2d", "ReLU", "Flatten"]
    assert list(model.state_dict()) == ["0.weight", "0.bias"]
    conv = model[0]
    conv.bias = None  # a parameter unregistered
    assert list(model.state_dict()) == ["0.weight"]
