"""Losses: value and gradient against PyTorch for every reduction, gradcheck, saturation, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import assert_close, check_against_torch

import convprop
from convprop.functional import binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, mse_loss

REDUCTIONS = ["mean", "sum", "none"]


def _scale(g: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """Chain rule for a loss's grad_input: g is () for mean/sum, per-sample/per-element for none."""
    return g.reshape(g.shape + (1,) * (grad.ndim - g.ndim)) * grad


@pytest.mark.parametrize("reduction", REDUCTIONS)
@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 6),
    k=st.integers(1, 7),
    smoothing=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    scale=st.sampled_from([1.0, 30.0]),
    seed=st.integers(0, 2**16),
)
def test_cross_entropy_matches_torch(reduction, n, k, smoothing, scale, seed):
    rng = np.random.default_rng(seed)
    logits, target = scale * rng.standard_normal((n, k)), rng.integers(0, k, n)
    opts = dict(reduction=reduction, label_smoothing=smoothing)
    check_against_torch(
        lambda z, t: cross_entropy(z, t, **opts)[0],
        lambda g, z, t: (_scale(g, cross_entropy(z, t, **opts)[1]), None),
        lambda z, t: TF.cross_entropy(z, t, **opts),
        [logits, target],
        names=["logits", "target"],
    )


ELEMENTWISE = {  # name: (ours, torch, input sampler (rng, shape) -> (input, target))
    "mse_loss": (mse_loss, TF.mse_loss, lambda r, s: (r.standard_normal(s), r.standard_normal(s))),
    "bce_with_logits": (
        binary_cross_entropy_with_logits,
        TF.binary_cross_entropy_with_logits,
        lambda r, s: (10 * r.standard_normal(s), r.uniform(0, 1, s)),
    ),
    "bce": (binary_cross_entropy, TF.binary_cross_entropy, lambda r, s: (r.uniform(0.01, 0.99, s), r.uniform(0, 1, s))),
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ELEMENTWISE)
@settings(max_examples=10, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple), seed=st.integers(0, 2**16))
def test_elementwise_losses_match_torch(name, reduction, shape, seed):
    ours, ref, sample = ELEMENTWISE[name]
    x, t = sample(np.random.default_rng(seed), shape)
    check_against_torch(
        lambda x, t: ours(x, t, reduction=reduction)[0],
        lambda g, x, t: (_scale(g, ours(x, t, reduction=reduction)[1]), None),
        lambda x, t: ref(x, t.detach(), reduction=reduction),
        [x, t],
        names=["input", "target"],
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_losses_pass_gradcheck(reduction):
    rng = np.random.default_rng(14)
    logits, target = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    convprop.gradcheck(
        lambda z: cross_entropy(z, target, reduction=reduction, label_smoothing=0.2)[0],
        lambda g, z: (_scale(g, cross_entropy(z, target, reduction=reduction, label_smoothing=0.2)[1]),),
        [logits],
        names=["logits"],
    )
    for name, (ours, _, sample) in ELEMENTWISE.items():
        x, t = sample(rng, (3, 4))
        convprop.gradcheck(
            lambda x, ours=ours, t=t: ours(x, t, reduction=reduction)[0],
            lambda g, x, ours=ours, t=t: (_scale(g, ours(x, t, reduction=reduction)[1]),),
            [x],
            names=[name],
        )


def test_saturated_inputs_stay_finite_and_match_torch():
    p = np.array([0.0, 1.0, 1e-50, 1 - 1e-16, 0.5, 1.0, 0.0])
    t = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    pt = torch.tensor(p, requires_grad=True)
    ref = TF.binary_cross_entropy(pt, torch.tensor(t), reduction="sum")
    ref.backward()
    loss, grad = binary_cross_entropy(p, t, reduction="sum")
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert_close(loss, ref.detach().numpy(), "bce loss at p = 0, 1")  # log clamped at -100, as PyTorch
    assert_close(grad, pt.grad.numpy(), "bce grad at p = 0, 1")
    z = np.array([[-1000.0, 0.0, 1000.0]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        bce, bce_grad = binary_cross_entropy_with_logits(z, np.array([[1.0, 0.5, 0.0]]), reduction="sum")
        ce, ce_grad = cross_entropy(z, np.array([0]), reduction="sum")
    assert_close(bce, 2000 + np.log(2), "bce with logits, saturated")
    assert_close(ce, 2000.0, "cross entropy, saturated")
    assert np.isfinite(bce_grad).all() and np.isfinite(ce_grad).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved_and_reduced_loss_is_0d(dtype):
    rng = np.random.default_rng(15)
    x, t = rng.uniform(0.1, 0.9, (3, 4)).astype(dtype), rng.uniform(0, 1, (3, 4)).astype(dtype)
    for fn in (mse_loss, binary_cross_entropy_with_logits, binary_cross_entropy):
        for reduction in REDUCTIONS:
            loss, grad = fn(x, t, reduction=reduction)
            assert loss.dtype == grad.dtype == dtype
            assert loss.shape == (() if reduction != "none" else x.shape)
    loss, grad = cross_entropy(x, np.array([0, 3, 1]), label_smoothing=0.1)
    assert loss.dtype == grad.dtype == dtype and loss.shape == ()


Z = np.zeros((3, 4))
BAD_CALLS = [
    (lambda: cross_entropy(Z, np.array([0, 1, 4])), ValueError, r"in \[0, 4\), got 4"),
    (lambda: cross_entropy(Z, np.array([0, -1, 2])), ValueError, r"in \[0, 4\), got -1"),
    (lambda: cross_entropy(Z, np.array([0.0, 1.0, 2.0])), TypeError, r"integer class indices, got dtype float64"),
    (lambda: cross_entropy(Z, np.array([0, 1])), ValueError, r"shape \(N,\) = \(3,\), got \(2,\)"),
    (lambda: cross_entropy(np.zeros(4), np.array([0])), ValueError, r"\(N, K\).*got shape \(4,\)"),
    (
        lambda: cross_entropy(Z, np.array([0, 1, 2]), reduction="avg"),
        ValueError,
        r"reduction must be one of .*got 'avg'",
    ),
    (lambda: cross_entropy(Z, np.array([0, 1, 2]), label_smoothing=1.5), ValueError, r"label_smoothing .* got 1.5"),
    (lambda: mse_loss(Z, np.zeros((4, 3))), ValueError, r"target must have input's shape \(3, 4\), got \(4, 3\)"),
    (lambda: mse_loss(Z, np.zeros((3, 4), np.float32)), TypeError, r"input=float64, target=float32"),
    (lambda: binary_cross_entropy(Z + 1.5, Z), ValueError, r"probs must all be in \[0, 1\], got 1.5"),
    (lambda: binary_cross_entropy(Z, Z, reduction=None), ValueError, r"reduction must be one of .*got None"),
    (
        lambda: binary_cross_entropy_with_logits(Z, "x"),
        TypeError,
        r"target must have dtype float32 or float64, got <U1",
    ),
]


@pytest.mark.parametrize("call, error, match", BAD_CALLS)
def test_bad_arguments_raise_with_the_value(call, error, match):
    with pytest.raises(error, match=match):
        call()
