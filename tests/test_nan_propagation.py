"""NaN and infinity through every activation, loss and batch norm: values and gradients as PyTorch's.

Each row feeds NaN, +inf and -inf into the input and into ``grad_output`` (where the op has one) and
compares with torch element by element: the same entries NaN, the same entries ±inf, the rest close.
Pools and convolutions have their own tests.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import assert_close

from convprop.functional import activation as A
from convprop.functional import loss as L
from convprop.functional import norm as N

nan, inf = np.nan, np.inf
X = np.array([nan, inf, -inf, 0.0, 1.0, -1.0, 2.0, -0.5, 0.0, 3.0])
G = np.array([1.0, 1.0, 1.0, nan, nan, inf, -inf, 2.0, inf, 0.0])  # NaN/inf δ at x = 0 and elsewhere
ROWS = np.array([[nan, 1.0, 2.0], [0.0, 1.0, 2.0], [inf, 0.0, 1.0], [-inf, 0.0, 1.0], [1.0, 2.0, 3.0]])
ROWS_G = np.array([[1.0, 2.0, 3.0], [nan, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [inf, 0.0, 0.0]])


def assert_same(ours, theirs, what: str) -> None:
    """Same NaN entries, same ±inf entries, finite entries within reference.RTOL."""
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, what
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs), err_msg=f"{what}: NaN entries differ")
    np.testing.assert_array_equal(np.isposinf(ours), np.isposinf(theirs), err_msg=f"{what}: +inf entries differ")
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(theirs), err_msg=f"{what}: -inf entries differ")
    finite = np.isfinite(theirs)
    assert_close(ours[finite], theirs[finite], what)


ELEMENTWISE = {  # name: (forward, backward(g, x), torch)
    "relu": (A.relu, A.relu_backward, torch.relu),
    "leaky_relu": (A.leaky_relu, A.leaky_relu_backward, lambda t: F.leaky_relu(t, 0.01)),
    "sigmoid": (A.sigmoid, A.sigmoid_backward, torch.sigmoid),
    "tanh": (A.tanh, A.tanh_backward, torch.tanh),
    "gelu": (A.gelu, A.gelu_backward, F.gelu),
    "gelu tanh": (
        lambda x: A.gelu(x, "tanh"),
        lambda g, x: A.gelu_backward(g, x, "tanh"),
        lambda t: F.gelu(t, approximate="tanh"),
    ),
    "softmax": (A.softmax, A.softmax_backward, lambda t: torch.softmax(t, 1)),
    "log_softmax": (A.log_softmax, A.log_softmax_backward, lambda t: torch.log_softmax(t, 1)),
}


def torch_value_and_grad(fn, x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = torch.tensor(x, requires_grad=True)
    y = fn(t)
    y.backward(torch.tensor(g))
    return y.detach().numpy(), t.grad.numpy()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_activation_values_and_gradients_at_nan_and_inf(name):
    forward, backward, reference = ELEMENTWISE[name]
    x, g = (ROWS, ROWS_G) if "softmax" in name else (X, G)
    y_ref, dx_ref = torch_value_and_grad(reference, x, g)
    assert_same(forward(x), y_ref, f"{name} forward")
    assert_same(backward(g, x), dx_ref, f"{name} backward")


def test_relu_backward_is_torch_threshold_backward():
    """``dx = 0 if x <= 0 else δ``: NaN x passes δ through; NaN or inf δ at x <= 0 gives 0."""
    x = np.array([nan, nan, 0.0, -1.0, 0.0, 1.0])
    g = np.array([2.0, nan, nan, inf, -inf, nan])
    np.testing.assert_array_equal(A.relu_backward(g, x), [2.0, nan, 0.0, 0.0, 0.0, nan])
    np.testing.assert_array_equal(A.relu_backward(g, x), torch_value_and_grad(torch.relu, x, g)[1])


TARGETS = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, nan, 0.5, 0.0, 1.0])
LOSSES = {  # name: (ours, torch, input, target)
    "cross_entropy": (L.cross_entropy, F.cross_entropy, ROWS, np.array([0, 1, 2, 0, 1])),
    "mse_loss": (L.mse_loss, F.mse_loss, X, np.array([0.0, nan, 1.0, 0.0, 1.0, inf, 1.0, -inf, 0.0, 1.0])),
    "bce_with_logits": (L.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, X, TARGETS),
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name", LOSSES)
def test_loss_values_and_gradients_at_nan_and_inf(name, reduction):
    ours, reference, x, target = LOSSES[name]
    t = torch.tensor(x, requires_grad=True)
    loss_ref = reference(t, torch.tensor(target), reduction=reduction)
    loss_ref.sum().backward()
    loss, grad = ours(x, target, reduction=reduction)
    assert_same(loss, loss_ref.detach().numpy(), f"{name} loss")
    assert_same(grad, t.grad.numpy(), f"{name} gradient")


@pytest.mark.parametrize(
    ("probs", "target", "message"),
    [
        ([nan, 0.5], [0.0, 1.0], r"probs must all be in \[0, 1\], got nan"),
        ([0.5, 0.5], [nan, 1.0], r"target must all be in \[0, 1\], got nan"),
        ([0.5, 0.5], [2.0, 1.0], r"target must all be in \[0, 1\], got 2.0"),
        ([0.5, 0.5], [0.0, -inf], r"target must all be in \[0, 1\], got -inf"),
    ],
)
def test_binary_cross_entropy_refuses_what_torch_refuses(probs, target, message):
    with pytest.raises(RuntimeError, match="should be between 0 and 1"):
        F.binary_cross_entropy(torch.tensor(probs), torch.tensor(target))
    with pytest.raises(ValueError, match=message):
        L.binary_cross_entropy(np.array(probs), np.array(target))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("poison", ["x", "grad_output", "running_var"])
def test_batch_norm_at_nan(training, poison):
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((3, 2, 2, 2)), rng.standard_normal((3, 2, 2, 2))
    w, b, mean, var = rng.standard_normal(2), rng.standard_normal(2), np.zeros(2), np.ones(2)
    {"x": x, "grad_output": g, "running_var": var}[poison].flat[1] = nan
    y, new_mean, new_var = N.batch_norm(x, w, b, mean, var, training=training)
    dx, dw, db = N.batch_norm_backward(g, x, w, mean, var, training=training)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    t_mean, t_var = torch.tensor(mean), torch.tensor(var)
    ty = F.batch_norm(tx, t_mean, t_var, tw, tb, training=training)  # updates t_mean, t_var in place
    ty.backward(torch.tensor(g))
    for what, ours, theirs in [
        ("y", y, ty.detach()),
        ("running_mean", new_mean, t_mean),
        ("running_var", new_var, t_var),
        ("dx", dx, tx.grad),
        ("dweight", dw, tw.grad),
        ("dbias", db, tb.grad),
    ]:
        assert_same(ours, theirs.numpy(), f"batch_norm {what}")
