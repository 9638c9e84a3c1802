"""The tensor-plumbing layers (nn.tensor_ops): forward and every gradient against PyTorch in float64 over
random shapes, gradcheck, float32 kept, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import assert_close, check_against_torch

import convprop
from convprop import nn
from convprop.errors import ArgumentError


def as_pair(module: nn.Module):
    """The layer protocol as gradcheck's (forward, backward) pair."""

    def forward(*inputs):
        return module.forward_with_context(*inputs)[0]

    def backward(grad_output, *inputs):
        module.zero_grad()
        _, context = module.forward_with_context(*inputs)
        grads = module.backward_with_context(context, grad_output)
        return grads if isinstance(grads, tuple) else (grads,)

    return forward, backward


def check(module, torch_forward, *inputs):
    forward, backward = as_pair(module)
    check_against_torch(forward, backward, torch_forward, inputs)
    convprop.gradcheck(forward, backward, [np.array(a) for a in inputs])
    return forward(*inputs)


def torch_pad(mode):  # ONNX/NumPy mode → torch's (for the last axes only, as torch pads)
    return {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode]


rng = np.random.default_rng(0)


def randn(*shape):
    return rng.standard_normal(shape)


# --- broadcasting arithmetic ------------------------------------------------------------------------

BROADCAST = [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3)), ((2, 3), ())]
BINARY = {"Sub": (nn.Sub, torch.sub), "Div": (nn.Div, torch.div)}


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize(("shape_a", "shape_b"), BROADCAST)
def test_binary_matches_torch(name, shape_a, shape_b):
    cls, torch_op = BINARY[name]
    b = rng.uniform(0.5, 2.0, shape_b) if name == "Div" else randn(*shape_b)  # keep divisors away from 0
    check(cls(), torch_op, randn(*shape_a), np.asarray(b))


def test_binary_shapes_that_do_not_broadcast_are_refused():
    with pytest.raises(ArgumentError, match=r"\(2, 3\), \(4,\) do not broadcast"):
        nn.Sub().forward(np.zeros((2, 3)), np.zeros(4))


# --- matmul and gemm --------------------------------------------------------------------------------

MATMUL = [
    ((3,), (3,)),
    ((2, 3), (3, 4)),
    ((3,), (3, 4)),
    ((2, 3), (3,)),
    ((5, 2, 3), (3, 4)),
    ((2, 1, 2, 3), (4, 3, 2)),
]


@pytest.mark.parametrize(("shape_a", "shape_b"), MATMUL)
def test_matmul_matches_torch(shape_a, shape_b):
    check(nn.MatMul(), torch.matmul, randn(*shape_a), randn(*shape_b))


@settings(max_examples=20, deadline=None)
@given(
    m=st.integers(1, 4),
    k=st.integers(1, 4),
    n=st.integers(1, 4),
    batch=st.lists(st.integers(1, 3), max_size=2),
    ones=st.lists(st.booleans(), min_size=2, max_size=2),
    seed=st.integers(0, 2**16),
)
def test_matmul_broadcast_batches_match_torch(m, k, n, batch, ones, seed):
    gen = np.random.default_rng(seed)
    batch_b = [1 if one else b for b, one in zip(batch, ones, strict=False)]  # some batch axes broadcast
    a, b = gen.standard_normal((*batch, m, k)), gen.standard_normal((*batch_b, k, n))
    forward, backward = as_pair(nn.MatMul())
    check_against_torch(forward, backward, torch.matmul, [a, b])


def test_matmul_mismatch_is_refused():
    with pytest.raises(ArgumentError, match="must match b's contracted axis"):
        nn.MatMul().forward(np.zeros((2, 3)), np.zeros((4, 5)))


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("c_shape", [None, (5,), (1, 5), (4, 5), ()])
def test_gemm_matches_torch(trans_a, trans_b, c_shape):
    alpha, beta = 0.5, 2.0
    a = randn(3, 4) if trans_a else randn(4, 3)
    b = randn(5, 3) if trans_b else randn(3, 5)
    inputs = [a, b] if c_shape is None else [a, b, randn(*c_shape)]

    def torch_gemm(a, b, c=None):
        y = alpha * ((a.T if trans_a else a) @ (b.T if trans_b else b))
        return y if c is None else y + beta * c

    y = check(nn.Gemm(alpha, beta, trans_a, trans_b), torch_gemm, *inputs)
    assert y.shape == (4, 5)


# --- reshape, transpose, identity -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "target", "expected"),
    [
        ((2, 3, 4), [0, -1], (2, 12)),
        ((2, 3, 4), [4, 0, 2], (4, 3, 2)),
        ((2, 3, 4), [-1], (24,)),
        ((2, 3, 4), [2, 3, 2, 2], (2, 3, 2, 2)),
        ((2, 3, 4), [0, 0, 2, -1], (2, 3, 2, 2)),
    ],
)
def test_reshape_follows_onnx(shape, target, expected):
    x = randn(*shape)
    y = check(nn.Reshape(target), lambda t: t.reshape(expected), x)
    assert y.shape == expected


def test_reshape_allowzero_keeps_a_zero_as_an_empty_axis():
    assert nn.Reshape([0, 3], allowzero=True).forward(np.zeros((3, 0))).shape == (0, 3)


@pytest.mark.parametrize(
    ("args", "shape", "message"),
    [
        (([5, -1],), (2, 3), "cannot reshape"),
        (([-1, -1],), (2, 3), "one -1"),
        (([0, 0, 0],), (2, 3), "no input axis to copy"),
    ],
)
def test_reshape_errors(args, shape, message):
    with pytest.raises(ArgumentError, match=message):
        nn.Reshape(*args).forward(np.zeros(shape))


@pytest.mark.parametrize("perm", [None, [0, 2, 1], [2, 0, 1], [1, 2, 0]])
def test_transpose_matches_torch(perm):
    x = randn(2, 3, 4)
    order = perm if perm is not None else [2, 1, 0]
    check(nn.Transpose(perm), lambda t: t.permute(*order), x)


def test_transpose_refuses_a_wrong_perm():
    with pytest.raises(ArgumentError, match="permutation"):
        nn.Transpose([0, 0, 1])
    with pytest.raises(ArgumentError, match="needs an input of 3 axes"):
        nn.Transpose([0, 2, 1]).forward(np.zeros((2, 3)))


def test_identity_passes_values_and_gradients():
    check(nn.Identity(), lambda t: t * 1, randn(2, 3))


# --- pad --------------------------------------------------------------------------------------------

widths = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=3)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@settings(max_examples=12, deadline=None)
@given(pads=widths, seed=st.integers(0, 2**16))
def test_pad_matches_torch(mode, pads, seed):
    shape = (2, *(3 + i for i in range(len(pads))))  # each padded axis at least 3 long (reflect needs > pad)
    x = np.random.default_rng(seed).standard_normal(shape)
    flat = [p for pair in reversed(pads) for p in pair]  # torch: last axis first
    if mode == "constant":
        torch_forward = lambda t: TF.pad(t, flat, mode="constant", value=1.5)  # noqa: E731
    else:  # torch pads (N, C, *spatial): a leading axis keeps (2, ...) as the batch
        torch_forward = lambda t: TF.pad(t[None], flat, mode=torch_pad(mode))[0]  # noqa: E731
    check(nn.Pad(pads, mode, 1.5), torch_forward, x)


def test_pad_with_negative_widths_crops():
    x = randn(2, 5, 6)
    check(nn.Pad([(-1, 2), (0, -3)]), lambda t: TF.pad(t, [0, -3, -1, 2]), x)


@pytest.mark.parametrize(
    ("pads", "mode", "message"),
    [
        ([(3, 0)], "reflect", "at most 2"),
        ([(4, 0)], "wrap", "at most 3"),
        ([(-1, 0)], "edge", "need mode 'constant'"),
        ([(-4, 0)], "constant", "crop more"),
    ],
)
def test_pad_errors(pads, mode, message):
    with pytest.raises(ArgumentError, match=message):
        nn.Pad(pads, mode).forward(np.zeros((2, 3)))


# --- constant and global pools ----------------------------------------------------------------------


def test_constant_is_a_trainable_parameter():
    value = randn(2, 3)
    layer = nn.Constant(value)
    y, context = layer.forward_with_context()
    assert_close(y, value, "value")
    g = randn(2, 3)
    assert layer.backward_with_context(context, g) == ()
    layer.backward_with_context(context, g)
    assert_close(layer.value.grad, 2 * g, "accumulated gradient")
    assert [n for n, _ in layer.named_parameters()] == ["value"]
    assert nn.Constant(shape=[2, 3]).config() == {"shape": [2, 3]}


def test_constant_ignores_its_inputs_and_their_gradient_is_a_zero_view():
    layer = nn.Constant(randn(2, 3))
    anchor = randn(5, 7)
    y, context = layer.forward_with_context(anchor)
    assert y is layer.value.data
    d_anchor = layer.backward_with_context(context, randn(2, 3))
    assert d_anchor.shape == (5, 7) and not d_anchor.any()
    assert d_anchor.strides == (0, 0)  # a broadcast view: nothing allocated


@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 5), (1, 2, 3, 2, 4)])
def test_global_max_pool_matches_torch(shape):
    x = randn(*shape)
    axes = tuple(range(2, len(shape)))
    check(nn.GlobalMaxPool(), lambda t: t.amax(dim=axes, keepdim=True), x)


@pytest.mark.parametrize(
    "layer",
    [nn.Sub(), nn.Div(), nn.MatMul(), nn.Gemm(), nn.Transpose(), nn.Reshape([-1]), nn.Pad([(1, 1)])],
    ids=lambda m: type(m).__name__,
)
def test_float32_stays_float32(layer):
    x = randn(3, 3).astype(np.float32)
    inputs = [x, x.copy()] if isinstance(layer, (nn.Sub, nn.Div, nn.MatMul, nn.Gemm)) else [x]
    y, context = layer.forward_with_context(*inputs)
    assert y.dtype == np.float32
    grads = layer.backward_with_context(context, np.ones_like(y))
    for g in grads if isinstance(grads, tuple) else (grads,):
        assert g.dtype == np.float32


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    keep=st.lists(st.booleans(), min_size=4, max_size=4),
    drop=st.integers(0, 3),
    name=st.sampled_from(sorted(BINARY)),
    seed=st.integers(0, 2**16),
)
def test_binary_broadcasting_matches_torch(shape, keep, drop, name, seed):
    """b takes a's shape with some axes set to 1 and some leading axes dropped: every broadcast pattern."""
    other = [n if k else 1 for n, k in zip(shape, keep, strict=False)][min(drop, len(shape) - 1) :]
    gen = np.random.default_rng(seed)
    cls, torch_op = BINARY[name]
    b = gen.uniform(0.5, 2.0, other) if name == "Div" else gen.standard_normal(other)  # divisors away from 0
    a = gen.standard_normal(shape)
    forward, backward = as_pair(cls())
    check_against_torch(forward, backward, torch_op, [a, b])
