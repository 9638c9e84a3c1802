"""Activations and (log-)softmax: forward and gradient against PyTorch, gradcheck, stability, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import check_against_torch

import convprop
from convprop.functional import (
    gelu,
    gelu_backward,
    leaky_relu,
    leaky_relu_backward,
    log_softmax,
    log_softmax_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    softmax,
    softmax_backward,
    tanh,
    tanh_backward,
)

# name: (ours forward, ours backward (g, x), torch forward)
ELEMENTWISE = {
    "relu": (relu, relu_backward, TF.relu),
    "leaky_relu": (leaky_relu, leaky_relu_backward, TF.leaky_relu),
    "leaky_relu(0.3)": (
        lambda x: leaky_relu(x, 0.3),
        lambda g, x: leaky_relu_backward(g, x, 0.3),
        lambda x: TF.leaky_relu(x, 0.3),
    ),
    "sigmoid": (sigmoid, sigmoid_backward, torch.sigmoid),
    "tanh": (tanh, tanh_backward, torch.tanh),
    "gelu": (gelu, gelu_backward, TF.gelu),
    "gelu(tanh)": (
        lambda x: gelu(x, "tanh"),
        lambda g, x: gelu_backward(g, x, "tanh"),
        lambda x: TF.gelu(x, approximate="tanh"),
    ),
}
SOFTMAXES = {
    "softmax": (softmax, softmax_backward, TF.softmax),
    "log_softmax": (log_softmax, log_softmax_backward, TF.log_softmax),
}

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)


@pytest.mark.parametrize("name", ELEMENTWISE)
@settings(max_examples=15, deadline=None)
@given(shape=shapes, scale=st.sampled_from([0.1, 1.0, 10.0]), seed=st.integers(0, 2**16))
def test_elementwise_matches_torch(name, shape, scale, seed):
    fwd, bwd, ref = ELEMENTWISE[name]
    x = scale * np.random.default_rng(seed).standard_normal(shape)
    x.flat[0] = 0.0  # the kink: PyTorch's choice of derivative there
    check_against_torch(fwd, lambda g, x: (bwd(g, x),), ref, [x])


@pytest.mark.parametrize("name", SOFTMAXES)
@settings(max_examples=20, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=2, max_size=4).map(tuple),
    axis_pick=st.integers(0, 10),
    seed=st.integers(0, 2**16),
)
def test_softmax_matches_torch(name, shape, axis_pick, seed):
    fwd, bwd, ref = SOFTMAXES[name]
    axis = axis_pick % len(shape) - (len(shape) if axis_pick % 2 else 0)  # negative axes too
    x = 5 * np.random.default_rng(seed).standard_normal(shape)
    check_against_torch(lambda x: fwd(x, axis), lambda g, x: (bwd(g, x, axis),), lambda x: ref(x, dim=axis), [x])


@pytest.mark.parametrize("name", [*ELEMENTWISE, *SOFTMAXES])
def test_backward_passes_gradcheck(name):
    fwd, bwd, _ = {**ELEMENTWISE, **SOFTMAXES}[name]
    x = np.random.default_rng(5).standard_normal((3, 4, 2))
    x[np.abs(x) < 1e-3] = 0.5  # keep finite differences away from the kinks
    convprop.gradcheck(fwd, lambda g, x: (bwd(g, x),), [x], names=["x"])


@pytest.mark.parametrize(
    "fwd, bwd",
    [
        (sigmoid, sigmoid_backward),
        (tanh, tanh_backward),
        (softmax, softmax_backward),
        (log_softmax, log_softmax_backward),
    ],
)
def test_cached_output_gives_the_same_gradient(fwd, bwd):
    x = np.random.default_rng(6).standard_normal((4, 5))
    g = np.random.default_rng(7).standard_normal((4, 5))
    np.testing.assert_array_equal(bwd(g, x, output=fwd(x)), bwd(g, x))


def test_extreme_inputs_stay_finite_and_match_torch():
    x = np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # underflow to 0 is fine
        for fwd, ref in [
            (sigmoid, torch.sigmoid),
            (lambda v: softmax(v), lambda v: TF.softmax(v, 1)),
            (lambda v: log_softmax(v), lambda v: TF.log_softmax(v, 1)),
        ]:
            y = fwd(x)
            assert np.isfinite(y).all()
            np.testing.assert_allclose(y, ref(torch.tensor(x)).numpy(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", [*ELEMENTWISE, *SOFTMAXES])
def test_dtype_is_preserved(name, dtype):
    fwd, bwd, _ = {**ELEMENTWISE, **SOFTMAXES}[name]
    x = np.random.default_rng(8).standard_normal((2, 3)).astype(dtype)
    y = fwd(x)
    assert y.dtype == dtype
    assert bwd(np.ones_like(x), x).dtype == dtype


BAD_CALLS = [
    (lambda: relu([["a"]]), TypeError, r"x must have dtype float32 or float64, got <U1"),
    (lambda: relu_backward(np.ones(3), np.ones(4)), ValueError, r"grad_output must have x's shape \(4,\), got \(3,\)"),
    (lambda: tanh_backward(np.ones(3, np.float32), np.ones(3)), TypeError, r"grad_output=float32, x=float64"),
    (lambda: leaky_relu(np.ones(3), "0.1"), TypeError, r"negative_slope must be a real number, got '0.1'"),
    (lambda: gelu(np.ones(3), approximate="erf"), ValueError, r"approximate must be one of .*got 'erf'"),
    (lambda: softmax(np.ones((2, 3)), axis=2), ValueError, r"axis 2 is out of range .*\(2, 3\)"),
    (lambda: log_softmax(np.ones((2, 3)), axis=1.0), TypeError, r"axis must be an int, got 1.0"),
    (
        lambda: sigmoid_backward(np.ones(3), np.ones(3), output=np.ones(4)),
        ValueError,
        r"output must be the forward result.*\(4,\)",
    ),
]


@pytest.mark.parametrize("call, error, match", BAD_CALLS)
def test_bad_arguments_raise_with_the_value(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_relu_backward_edge_values_match_torch():
    """x = 0, x = NaN and infinite δ take PyTorch's threshold_backward rule (0 where x <= 0, else δ)."""
    x = np.array([-1.0, 0.0, 1.0, np.nan, -np.inf, np.inf, -2.0, 3.0])
    g = np.array([5.0, 5.0, 5.0, 5.0, 5.0, 5.0, np.inf, np.nan])
    xt = torch.tensor(x, requires_grad=True)
    torch.relu(xt).backward(torch.tensor(g))
    np.testing.assert_array_equal(relu_backward(g, x), xt.grad.numpy())
    x2 = np.random.default_rng(0).standard_normal((3, 4, 5))[:, ::2]  # non-contiguous input
    np.testing.assert_array_equal(relu_backward(np.ones_like(x2), x2), (x2 > 0).astype(float))


def test_relu_backward_edge_values_match_torch_in_float32():
    x = np.array([-1.0, 0.0, 1.0, np.nan, -np.inf, np.inf, -2.0, 3.0], dtype=np.float32)
    g = np.array([5.0, 5.0, 5.0, 5.0, 5.0, 5.0, np.inf, np.nan], dtype=np.float32)
    xt = torch.tensor(x, requires_grad=True)
    torch.relu(xt).backward(torch.tensor(g))
    got = relu_backward(g, x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, xt.grad.numpy())
