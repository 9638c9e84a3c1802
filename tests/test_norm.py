"""Batch normalisation and dropout: against PyTorch (values, running statistics, gradients), gradcheck, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import assert_close, check_against_torch

import convprop
from convprop.functional import (
    batch_norm,
    batch_norm_backward,
    batch_norm_with_stats,
    dropout,
    dropout_backward,
    dropout_mask,
)

bn_shapes = st.sampled_from([(4, 3), (2, 3, 4, 5), (3, 2, 1, 1), (1, 4, 2, 3), (2, 3, 7), (5, 1, 2, 2)])


@settings(max_examples=40, deadline=None)
@given(
    shape=bn_shapes,
    training=st.booleans(),
    affine=st.booleans(),
    track=st.booleans(),
    momentum=st.sampled_from([0.1, 0.5, 1.0, 0.0]),
    eps=st.sampled_from([1e-5, 1e-3]),
    seed=st.integers(0, 2**16),
)
def test_batch_norm_matches_torch(shape, training, affine, track, momentum, eps, seed):
    track = track or not training  # eval mode needs running statistics
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = 3 * rng.standard_normal(shape) + rng.standard_normal((1, C) + (1,) * (len(shape) - 2))
    w, b = (rng.standard_normal(C), rng.standard_normal(C)) if affine else (None, None)
    rm, rv = (rng.standard_normal(C), rng.uniform(0.5, 2, C)) if track else (None, None)
    kw = dict(training=training, eps=eps)
    inputs, names = [x], ["x"]
    if affine:
        inputs, names = [x, w, b], ["x", "weight", "bias"]

    def fwd(x, w=None, b=None):
        return batch_norm(x, w, b, rm, rv, momentum=momentum, **kw)[0]

    def bwd(g, x, w=None, b=None):
        return batch_norm_backward(g, x, w, rm, rv, **kw)[: len(inputs)]

    rm_t = None if rm is None else torch.tensor(rm)
    rv_t = None if rv is None else torch.tensor(rv)

    def ref(x, w=None, b=None):
        return TF.batch_norm(x, rm_t, rv_t, w, b, training=training, momentum=momentum, eps=eps)  # updates rm_t, rv_t

    check_against_torch(fwd, bwd, ref, inputs, names=names)
    _, new_rm, new_rv = batch_norm(x, w, b, rm, rv, momentum=momentum, **kw)
    if track:
        assert_close(new_rm, rm_t.numpy(), "running_mean")
        assert_close(new_rv, rv_t.numpy(), "running_var")
    else:
        assert new_rm is None and new_rv is None


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 3, 4)])
def test_batch_norm_backward_passes_gradcheck(training, shape):
    rng = np.random.default_rng(9)
    C = shape[1]
    x, w, b = rng.standard_normal(shape), rng.standard_normal(C), rng.standard_normal(C)
    rm, rv = rng.standard_normal(C), rng.uniform(0.5, 2, C)
    convprop.gradcheck(
        lambda x, w, b: batch_norm(x, w, b, rm, rv, training=training)[0],
        lambda g, x, w, b: batch_norm_backward(g, x, w, rm, rv, training=training),
        [x, w, b],
        names=["x", "weight", "bias"],
    )
    convprop.gradcheck(  # affine off: the gradient of x alone
        lambda x: batch_norm(x, None, None, rm, rv, training=training)[0],
        lambda g, x: batch_norm_backward(g, x, None, rm, rv, training=training)[:1],
        [x],
        names=["x"],
    )


def test_batch_norm_is_pure_and_eval_returns_running_stats_unchanged():
    rng = np.random.default_rng(10)
    x, rm, rv = rng.standard_normal((4, 2, 3, 3)), np.zeros(2), np.ones(2)
    before = x.copy(), rm.copy(), rv.copy()
    _, new_rm, _new_rv = batch_norm(x, None, None, rm, rv, training=True)
    for a, b in zip((x, rm, rv), before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(new_rm, rm)
    _, same_rm, same_rv = batch_norm(x, None, None, rm, rv, training=False)
    assert same_rm is rm and same_rv is rv


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_dtype_is_preserved(dtype):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 3, 2, 2)).astype(dtype)
    w, b, rm, rv = (np.ones(3, dtype), np.zeros(3, dtype), np.zeros(3, dtype), np.ones(3, dtype))
    y, new_rm, new_rv = batch_norm(x, w, b, rm, rv, training=True, momentum=0.3, eps=1e-3)
    assert y.dtype == new_rm.dtype == new_rv.dtype == dtype
    assert all(g.dtype == dtype for g in batch_norm_backward(np.ones_like(x), x, w, rm, rv, training=True))


# ---------------------------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9])
def test_dropout_matches_torch_given_its_mask(p):
    torch.manual_seed(0)
    x = np.random.default_rng(12).uniform(1, 2, (4, 3, 5, 5))  # no zeros: the mask is y != 0
    xt = torch.tensor(x, requires_grad=True)
    y_ref = TF.dropout(xt, p, training=True)
    mask = y_ref.detach().numpy() != 0
    g = np.random.default_rng(13).standard_normal(x.shape)
    y_ref.backward(torch.tensor(g))
    assert_close(dropout(x, p, mask), y_ref.detach().numpy(), "dropout")
    assert_close(dropout_backward(g, p, mask), xt.grad.numpy(), "dropout_backward")
    small, small_mask = x[0, 0], mask[0, 0]
    convprop.gradcheck(
        lambda v: dropout(v, p, small_mask),
        lambda g, v: (dropout_backward(g, p, small_mask),),
        [small.copy()],
        names=["x"],
    )


def test_dropout_mask_is_reproducible_and_keeps_1_minus_p():
    a = dropout_mask((200, 100), 0.3, np.random.default_rng(42))
    b = dropout_mask((200, 100), 0.3, np.random.default_rng(42))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.bool_ and a.shape == (200, 100)
    assert abs(a.mean() - 0.7) < 0.02  # 20,000 draws: the standard error is 0.003
    assert dropout_mask((5,), 0.0, np.random.default_rng(0)).all()
    assert not dropout_mask((5,), 1.0, np.random.default_rng(0)).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_p1_gives_zeros_and_dtype_is_preserved(dtype):
    x = np.ones((3, 4), dtype)
    mask = dropout_mask(x.shape, 1.0, np.random.default_rng(0))
    y = dropout(x, 1.0, mask)
    assert y.dtype == dtype and not y.any()
    mask = dropout_mask(x.shape, 0.5, np.random.default_rng(0))
    assert dropout(x, 0.5, mask).dtype == dtype == dropout_backward(x, 0.5, mask).dtype
    np.testing.assert_array_equal(dropout(x, 0.5, mask), np.where(mask, 2.0, 0.0))


X = np.ones((4, 3, 2, 2))
BAD_CALLS = [
    (
        lambda: batch_norm(X, np.ones(2), None, None, None, training=True),
        ValueError,
        r"weight must have shape \(C,\) = \(3,\), got \(2,\)",
    ),
    (
        lambda: batch_norm(X, None, None, None, None, training=False),
        ValueError,
        r"evaluation mode .* needs running_mean",
    ),
    (
        lambda: batch_norm(X, None, None, np.zeros(3), None, training=True),
        ValueError,
        r"both be arrays or both be None",
    ),
    (
        lambda: batch_norm(np.ones((1, 3)), None, None, None, None, training=True),
        ValueError,
        r"more than 1 value per channel.*\(1, 3\)",
    ),
    (lambda: batch_norm(np.ones(3), None, None, None, None, training=True), ValueError, r"\(N, C\).*got shape \(3,\)"),
    (lambda: batch_norm(X, None, None, None, None, training=1), TypeError, r"training must be a bool, got 1"),
    (
        lambda: batch_norm(X, None, None, None, None, training=True, momentum=1.5),
        ValueError,
        r"momentum must be in \[0, 1\], got 1.5",
    ),
    (
        lambda: batch_norm(X, None, None, None, None, training=True, eps=0),
        ValueError,
        r"eps must be > 0\.0, got 0$",
    ),
    (
        lambda: batch_norm(X, np.ones(3, np.float32), None, None, None, training=True),
        TypeError,
        r"x=float64, weight=float32",
    ),
    (
        lambda: batch_norm_backward(np.ones((4, 3)), X, None, None, None, training=True),
        ValueError,
        r"x's shape \(4, 3, 2, 2\), got \(4, 3\)",
    ),
    (lambda: dropout_mask((2, 2), 1.5, np.random.default_rng(0)), ValueError, r"p must be in \[0, 1\], got 1.5"),
    (lambda: dropout_mask((2, 2), 0.5, 0), TypeError, r"numpy.random.Generator.*got int"),
    (
        lambda: dropout(np.ones((2, 2)), 0.5, np.ones((2, 3), bool)),
        ValueError,
        r"x's shape \(2, 2\), got bool array of shape \(2, 3\)",
    ),
    (lambda: dropout(np.ones((2, 2)), 0.5, np.ones((2, 2))), ValueError, r"mask must be a bool array .* got float64"),
    (lambda: dropout_backward(np.ones((2, 2)), -0.1, np.ones((2, 2), bool)), ValueError, r"p must be in .* got -0.1"),
]


@pytest.mark.parametrize("call, error, match", BAD_CALLS)
def test_bad_arguments_raise_with_the_value(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_float64_eps_does_not_promote_float32_batch_norm():
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32)
    y, _, _ = batch_norm(x, None, None, None, None, training=True, eps=np.float64(1e-5))
    assert y.dtype == np.float32


def test_batch_statistics_kept_from_the_forward_give_the_same_gradients():
    """``batch_norm_with_stats`` hands the backward the batch's statistics: the same result as recomputing
    them; statistics of the wrong shape are refused with the shape."""
    rng = np.random.default_rng(12)
    x, dy = rng.standard_normal((5, 3, 4, 4)), rng.standard_normal((5, 3, 4, 4))
    w, b = rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)
    y, _, _, stats = batch_norm_with_stats(x, w, b, None, None, training=True)
    np.testing.assert_array_equal(y, batch_norm(x, w, b, None, None, training=True)[0])
    assert_close(stats[0], x.mean(axis=(0, 2, 3)), "mean")
    assert_close(stats[1], x.var(axis=(0, 2, 3)), "var")
    kept = batch_norm_backward(dy, x, w, None, None, training=True, batch_stats=stats)
    again = batch_norm_backward(dy, x, w, None, None, training=True)
    for a, c in zip(kept, again, strict=True):
        np.testing.assert_array_equal(a, c)
    with pytest.raises(ValueError, match=r"batch_stats\[0\] \(the mean\) must have shape \(C,\) = \(3,\), got \(2,\)"):
        batch_norm_backward(dy, x, w, None, None, training=True, batch_stats=(np.zeros(2), np.ones(3)))


@pytest.mark.parametrize("offset", [0.0, 1e3])  # far from zero: the two-pass variance must not cancel
def test_float32_statistics_over_a_large_batch_stay_accurate(offset):
    """The compiled sums accumulate in float64: float32 statistics over 50,000 values per channel agree
    with float64 to float32's own precision (a float32 running sum would lose about four digits)."""
    rng = np.random.default_rng(13)
    x64 = rng.standard_normal((64, 4, 28, 28)) * 3 + offset
    x32 = x64.astype(np.float32)
    _, _, _, (mean, var) = batch_norm_with_stats(x32, None, None, None, None, training=True)
    exact = x32.astype(np.float64)
    assert mean.dtype == np.float32 and var.dtype == np.float32
    assert_close(mean, exact.mean(axis=(0, 2, 3)), "mean", rtol=1e-6)
    assert_close(var, exact.var(axis=(0, 2, 3)), "var", rtol=1e-6)
