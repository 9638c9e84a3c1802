"""A LeNet-style network in convprop and in PyTorch with identical weights: same loss, same gradients,
same parameters after optimizer steps; and seed 000's layer trained the seeds' way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import rel_error
from scipy import signal

from convprop import nn, optim
from convprop.errors import ContextError
from convprop.functional.loss import cross_entropy


def lenet(rng: int = 0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, rng=rng, dtype=np.float64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, rng=rng + 1, dtype=np.float64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 16, rng=rng + 2, dtype=np.float64),
        nn.ReLU(),
        nn.Linear(16, 10, rng=rng + 3, dtype=np.float64),
    )


def torch_lenet(model: nn.Sequential) -> torch.nn.Sequential:
    t = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 6, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(24, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 10),
    ).double()
    t.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    return t


def batch(seed: int):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((8, 1, 12, 12)), rng.integers(0, 10, size=8)


def convprop_step(model, x, y):
    logits = model(x)
    loss, grad = cross_entropy(logits, y)
    model.backward(grad)
    return float(loss)


def torch_step(model, x, y):
    loss = torch.nn.functional.cross_entropy(model(torch.tensor(x)), torch.tensor(y))
    loss.backward()
    return loss.item()


def test_same_loss_and_gradients_as_torch():
    model = lenet()
    tmodel = torch_lenet(model)
    x, y = batch(0)
    loss = convprop_step(model, x, y)
    tloss = torch_step(tmodel, x, y)
    assert abs(loss - tloss) / abs(tloss) < 1e-12
    tgrads = {name: p.grad.numpy() for name, p in tmodel.named_parameters()}
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert grads.keys() == tgrads.keys()
    for name in grads:
        assert rel_error(grads[name], tgrads[name]) < 1e-9, name


@pytest.mark.parametrize(
    "make, make_torch",
    [
        (
            lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
            lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
        ),
        (
            lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
            lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
        ),
        (
            lambda ps: optim.AdamW(ps, lr=3e-3, weight_decay=0.05),
            lambda ps: torch.optim.AdamW(ps, lr=3e-3, weight_decay=0.05, foreach=False),
        ),
        (lambda ps: optim.Adam(ps, lr=3e-3), lambda ps: torch.optim.Adam(ps, lr=3e-3, foreach=False)),
    ],
    ids=["sgd-momentum", "sgd-nesterov", "adamw", "adam"],
)
def test_same_parameters_after_five_steps(make, make_torch):
    model = lenet(3)
    tmodel = torch_lenet(model)
    opt, topt = make(model.parameters()), make_torch(tmodel.parameters())
    for step in range(5):
        x, y = batch(step)
        opt.zero_grad()
        topt.zero_grad()
        loss, tloss = convprop_step(model, x, y), torch_step(tmodel, x, y)
        assert abs(loss - tloss) <= 1e-9 * abs(tloss), f"step {step}"
        opt.step()
        topt.step()
    tstate = tmodel.state_dict()
    for name, value in model.state_dict().items():
        assert rel_error(value, tstate[name].numpy()) < 1e-9, name


def test_seed000_untied_layer_trained_with_sgd_matches_corrected_update():
    """Seed 000's layer: y_n = Σ_m k_nm ⋆ x_m + b_n with a bias per output position, stepped with dt.

    The corrected update (001's derivation): dK_nm = x_m ⋆ dy_n, db = dy, dx_m = Σ_n dy_n * k_nm.
    """
    dt = 0.01
    rng = np.random.default_rng(0)
    C_in, C_out, H, W, K = 2, 3, 7, 6, 3
    layer = nn.Conv2d(C_in, C_out, K, bias="untied", input_size=(H, W), rng=1, dtype=np.float64)
    assert layer.bias.data.shape == (C_out, H - K + 1, W - K + 1)
    kernels, biases = layer.weight.data.copy(), layer.bias.data.copy()
    opt = optim.SGD(layer.parameters(), lr=dt)
    for _ in range(3):
        x = rng.standard_normal((C_in, H, W))  # one unbatched image, as in the seed
        dy = rng.standard_normal((C_out, H - K + 1, W - K + 1))
        # the seed's forward and backward, with its bugs corrected (bias once, grad_input summed)
        y_ref = np.stack(
            [
                sum(signal.correlate2d(x[m], kernels[n, m], "valid") for m in range(C_in)) + biases[n]
                for n in range(C_out)
            ]
        )
        dK = np.array([[signal.correlate2d(x[m], dy[n], "valid") for m in range(C_in)] for n in range(C_out)])
        dx_ref = np.stack(
            [sum(signal.convolve2d(dy[n], kernels[n, m], "full") for n in range(C_out)) for m in range(C_in)]
        )
        kernels, biases = kernels - dt * dK, biases - dt * dy

        opt.zero_grad()
        np.testing.assert_allclose(layer(x), y_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(layer.backward(dy), dx_ref, rtol=1e-12, atol=1e-12)
        opt.step()
        np.testing.assert_allclose(layer.weight.data, kernels, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(layer.bias.data, biases, rtol=1e-12, atol=1e-12)


def train_briefly(seed: int) -> list[np.ndarray]:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, rng=seed),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.3, rng=seed + 1),
        nn.Linear(4 * 10 * 10, 10, rng=seed + 2),
    )
    opt = optim.Adam(model.parameters(), lr=1e-2)
    data = np.random.default_rng(seed + 3)
    x = data.standard_normal((64, 1, 12, 12)).astype(np.float32)
    y = data.integers(0, 10, size=64)
    order = np.random.default_rng(seed + 4)
    for _ in range(3):
        for idx in np.array_split(order.permutation(64), 4):
            opt.zero_grad()
            _loss, grad = cross_entropy(model(x[idx]), y[idx])
            model.backward(grad)
            opt.step()
    return [p.data.copy() for p in model.parameters()]


def test_same_seed_gives_a_bit_identical_run():
    a, b, c = train_briefly(0), train_briefly(0), train_briefly(1)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c, strict=True))


def test_input_grad_false_gives_the_same_parameter_gradients():
    """The training loop's backward skips the first layer's input gradient; parameters are unaffected."""
    x, y = batch(5)
    full, params_only = lenet(7), lenet(7)
    convprop_step(full, x, y)
    _, grad = cross_entropy(params_only(x), y)
    assert params_only.backward(grad, input_grad=False) is None
    for (name, p), (_, q) in zip(full.named_parameters(), params_only.named_parameters(), strict=True):
        np.testing.assert_allclose(q.grad, p.grad, rtol=1e-12, atol=1e-15, err_msg=name)
    for layer in (nn.Linear(3, 2, rng=0), nn.Conv2d(1, 2, 3, rng=0), nn.ReLU()):
        with pytest.raises(ContextError, match="before forward"):
            layer.backward(np.ones((1, 2)), input_grad=False)
