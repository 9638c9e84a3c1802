"""The fused inference path equals the unfused eval path: conv + bias (+ BN) + ReLU (+ max-pool).

Bit for bit, for whole models in float64 and float32 (ReLU and max commute exactly; the batch norm
runs its own forward), within the issue's bounds a fortiori (float64 1e-12, float32 1e-5). The unfused
reference runs each layer's own ``forward`` in turn (``forward_fused`` replaced by the plain loop).
"""

from __future__ import annotations

import numpy as np
import pytest

import convprop
from convprop import models, nn
from convprop.errors import ArgumentError
from convprop.functional import conv2d, max_pool2d, relu
from convprop.functional.fused import conv2d_relu_pool
from convprop.nn import fused, plan


def _plain(layers, x):
    for layer in layers:
        x = layer.forward(x)
    return x


def unfused(model, x, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(fused, "forward_fused", _plain)
        patch.setattr(plan, "takes", lambda x: False)  # (a plan would trace the fused walk)
        return model.forward(x)


def _randomise_statistics(model, rng):
    """Running statistics and affine parameters away from their initial 0/1, as after training."""
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.running_mean[...] = rng.standard_normal(layer.num_features)
            layer.running_var[...] = rng.uniform(0.5, 2.0, layer.num_features)
            layer.weight.data[...] = rng.uniform(0.5, 1.5, layer.num_features)
            layer.bias.data[...] = rng.standard_normal(layer.num_features) * 0.1


MODELS = {
    "lenet": lambda: models.lenet(1, (28, 28), 10, rng=0),
    "lenet_bn": lambda: models.lenet_bn(1, (28, 28), 10, rng=1),
    "resnet": lambda: models.resnet(1, (28, 28), 10, rng=2),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(MODELS))
def test_models_equal_the_unfused_eval_path(name, dtype, monkeypatch):
    rng = np.random.default_rng(3)
    model = MODELS[name]().astype(dtype).eval()
    _randomise_statistics(model, rng)
    x = rng.standard_normal((6, 1, 28, 28)).astype(dtype)
    state = {k: v.copy() for k, v in model.state_dict().items()}
    got = model.forward(x)
    reference = unfused(model, x, monkeypatch)
    assert got.dtype == dtype and got.shape == reference.shape
    np.testing.assert_array_equal(got, reference, err_msg=f"{name} fused vs unfused")
    for key, value in model.state_dict().items():  # nothing written to the model
        np.testing.assert_array_equal(value, state[key], err_msg=key)


def test_lenet_without_batch_norm_is_exactly_equal(monkeypatch):
    model = models.lenet(1, (28, 28), 10, rng=4).eval()
    x = np.random.default_rng(5).standard_normal((3, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(model.forward(x), unfused(model, x, monkeypatch))


def test_training_mode_batch_norm_under_no_grad(monkeypatch):
    """Under no_grad in training mode a BatchNorm uses the batch and updates its statistics: the fused
    path must do exactly what its own forward does."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 1, 28, 28))
    a, b = models.lenet_bn(1, (28, 28), 10, rng=7).astype(np.float64), models.lenet_bn(1, (28, 28), 10, rng=7)
    b = b.astype(np.float64)
    for model in (a, b):
        model.train()
        for layer in model.modules():
            if isinstance(layer, nn.Dropout):
                layer.p = 0.0  # the random stream aside
    with convprop.no_grad():
        got = a(x)
        reference = unfused(b, x, monkeypatch)
    np.testing.assert_array_equal(got, reference)
    for (key, value), other in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        np.testing.assert_array_equal(value, other, err_msg=key)


# max_pool2d options: tiling windows take the compiled pass, the rest the in-place ReLU + max_pool2d
POOLS = [
    dict(kernel_size=(2, 2), stride=(2, 2), padding=0, dilation=1, ceil_mode=False),
    dict(kernel_size=(3, 3), stride=(3, 3), padding=0, dilation=1, ceil_mode=False),  # 10 → 3: a remainder
    dict(kernel_size=(2, 3), stride=(2, 3), padding=0, dilation=1, ceil_mode=True),  # ceil mode: fallback
    dict(kernel_size=(3, 3), stride=(2, 2), padding=1, dilation=1, ceil_mode=False),  # overlapping, padded
    dict(kernel_size=(2, 2), stride=(2, 2), padding=0, dilation=2, ceil_mode=False),  # dilated
]


@pytest.mark.parametrize("nan", [True, False], ids=["a NaN", "finite"])  # 2×2: the unrolled kernel, or its fallback
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("conv", [dict(padding=1), dict(stride=2, padding=(0, 1), groups=2), dict(padding="same")])
def test_block_equals_conv_relu_pool_exactly(conv, pool, dtype, nan):
    rng = np.random.default_rng(8)
    x, w, b = rng.standard_normal((3, 4, 10, 11)), rng.standard_normal((6, 4 // conv.get("groups", 1), 3, 3)), None
    b = rng.standard_normal(6)
    x, w, b = x.astype(dtype), w.astype(dtype), b.astype(dtype)
    if nan:
        x[0, 0, 4, 4] = np.nan  # a NaN wins its window in both
    options = dict(stride=1, dilation=1, groups=1, padding_mode="zeros", algorithm="auto") | conv
    reference = max_pool2d(relu(conv2d(x, w, b, **options)), **pool)
    got = conv2d_relu_pool(x, w, b, options, relu=True, pool=pool)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, reference)
    assert np.isnan(got).any() == nan


def test_unbatched_and_without_pool():
    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal((2, 7, 7)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    options = dict(stride=1, padding=1, dilation=1, groups=1, padding_mode="reflect", algorithm="auto")
    np.testing.assert_array_equal(conv2d_relu_pool(x, w, b, options, relu=True), relu(conv2d(x, w, b, **options)))
    pool = POOLS[0]
    np.testing.assert_array_equal(
        conv2d_relu_pool(x, w, b, options, relu=True, pool=pool), max_pool2d(relu(conv2d(x, w, b, **options)), **pool)
    )


# ------------------------------------------------------------------ training: ReLU → 2×2 max-pool as one pass


def _layer_by_layer(model, x, grad_fn, input_grad=True):
    """Each layer's own forward_with_context and backward_with_context: the reference for the fused pair."""
    contexts = []
    for layer in model:
        x, context = layer.forward_with_context(x)
        contexts.append(context)
    grad = grad_fn(x)
    layers = list(model)
    for i in reversed(range(len(layers))):
        grad = layers[i].backward_with_context(contexts[i], grad, input_grad=input_grad or i > 0)
    return x, grad


PAIRS = {
    "lenet": (lambda: models.lenet(1, (28, 28), 10, rng=0), (6, 1, 28, 28)),
    "lenet-bn (BatchNorm2d before the in-place ReLU)": (lambda: models.lenet_bn(1, (12, 12), 4, rng=2), (5, 1, 12, 12)),
    "odd size (the last row and column are not pooled)": (
        lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()),
        (4, 2, 7, 9),
    ),
    "ReLU first": (lambda: nn.Sequential(nn.ReLU(inplace=True), nn.MaxPool2d((2, 2), stride=2)), (3, 2, 6, 4)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(PAIRS))
def test_fused_relu_pool_training_pass_equals_the_layers_own(name, dtype):
    make, shape = PAIRS[name]
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    x[..., 0, :2] = 0.0  # exact zeros and ties: the first maximum wins, and ReLU's gradient at 0 is 0
    x[..., 1, 0] = x[..., 1, 1]
    a, b = make().astype(dtype), make().astype(dtype)
    y, contexts = a.forward_with_context(x.copy())
    assert any(isinstance(c, fused.ReluPoolContext) for c in contexts)
    assert fused.FUSED_WITH_NEXT in contexts
    g = rng.standard_normal(y.shape).astype(dtype)
    dx = a.backward_with_context(contexts, g)
    y_ref, dx_ref = _layer_by_layer(b, x.copy(), lambda out: g)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)
    assert dx.dtype == dtype and dx.shape == x.shape
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        np.testing.assert_array_equal(p.grad, q.grad)


def test_a_fused_pair_at_the_start_honours_input_grad_false():
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 2, rng=0))
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4)).astype(np.float32)
    y, contexts = model.forward_with_context(x)
    assert model.backward_with_context(contexts, np.ones_like(y), input_grad=False) is None
    assert model[3].weight.grad is not None


@pytest.mark.parametrize(
    "pool, shape",
    [
        (nn.MaxPool2d(2, ceil_mode=True), (2, 3, 5, 5)),
        (nn.MaxPool2d(3), (2, 3, 6, 6)),
        (nn.MaxPool2d(2, 1), (2, 3, 4, 4)),
    ],
    ids=["ceil mode, odd size", "3x3", "stride 1"],
)
def test_pools_that_do_not_tile_2x2_run_as_their_own_layers(pool, shape):
    model = nn.Sequential(nn.ReLU(), pool)
    _, contexts = model.forward_with_context(np.random.default_rng(0).standard_normal(shape))
    assert not any(isinstance(c, fused.ReluPoolContext) for c in contexts)


def test_a_nan_makes_the_pair_run_unfused_and_propagate_it():
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 0] = np.nan
    y, contexts = model.forward_with_context(x)
    assert not any(isinstance(c, fused.ReluPoolContext) for c in contexts)
    assert np.isnan(y[0, 0, 0, 0]) and (y[0, 0, 1:, 1:] == 0).all()


def test_fused_backward_refuses_a_gradient_of_the_wrong_shape():
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))
    _, contexts = model.forward_with_context(np.ones((1, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"grad_output must have the pooled shape \(1, 1, 2, 2\), got \(1, 1, 3, 3\)"):
        model.backward_with_context(contexts, np.ones((1, 1, 3, 3)))


@pytest.mark.parametrize("relu", [True, False], ids=["with ReLU", "without"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "conv",
    [
        dict(padding=1, padding_mode="reflect"),
        dict(padding=1, stride=2),
        dict(padding=0, channels=1),
        dict(padding=1, size=(9, 16)),
    ],
    ids=["on the grid", "strided", "one channel", "conv_rows"],
)
def test_conv_batch_norm_relu_equals_the_layers_exactly(conv, dtype, relu, monkeypatch):
    """conv → BatchNorm2d (eval) [→ ReLU] as one block — on the grid (a padding to reflect), in
    ``conv_rows`` (zero padding, strided or not) — with a NaN: the layers' bits."""
    from convprop.functional import conv_flat, conv_rows

    calls = []
    for module, name in ((conv_flat, "grid_chunks"), (conv_rows, "run")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, real=real, name=name, **k: calls.append(name) or real(*a, **k))
    expected = "grid_chunks" if "padding_mode" in conv else "run"
    conv = dict(conv)
    channels, size = conv.pop("channels", 4), conv.pop("size", (9, 10))
    rng = np.random.default_rng(14)
    layers = [nn.Conv2d(channels, 6, 3, **conv, rng=1), nn.BatchNorm2d(6), *([nn.ReLU()] if relu else [])]
    model = nn.Sequential(*layers).astype(dtype).eval()
    _randomise_statistics(model, rng)
    x = rng.standard_normal((5, channels, *size)).astype(dtype)
    x[1, 0, 4, 4] = np.nan
    got = model.forward(x)
    reference = _plain(model, x)
    assert got.dtype == dtype and np.isnan(got).any()
    assert calls[:1] == ([expected] if expected else [])
    np.testing.assert_array_equal(got, reference)
    if relu:
        assert not np.signbit(got[~np.isnan(got)]).any()


def test_a_batch_norm_of_the_wrong_width_still_says_so():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=0), nn.BatchNorm2d(4), nn.ReLU()).eval()
    with pytest.raises(ValueError, match=r"BatchNorm2d\(4\) expects"):
        model.forward(np.zeros((1, 2, 5, 5), dtype=np.float32))


def _block(c_in, c_out, stride, *, projection, bias=False):
    body = nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=bias, rng=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, 1, 1, bias=bias, rng=2), nn.BatchNorm2d(c_out),
    )  # fmt: skip
    shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, rng=3), nn.BatchNorm2d(c_out)) if projection else None
    return nn.Sequential(nn.Residual(body, shortcut), nn.ReLU(inplace=True))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "c_in, c_out, stride, projection, bias",
    [(4, 4, 1, False, False), (4, 8, 2, True, False), (3, 6, 1, True, True)],
    ids=["identity", "strided projection", "biased"],
)
def test_a_residual_block_sums_and_relus_in_its_last_convolution_exactly(
    c_in, c_out, stride, projection, bias, dtype, monkeypatch
):
    """Residual(conv → BN → ReLU → conv → BN, shortcut) → ReLU: the sum and the ReLU run in the last
    convolution's epilogue on conv_rows' tiles (a shortcut passed to it), with the unfused block's bits —
    a NaN in the input included."""
    from convprop.functional import conv_rows

    skips = []
    real = conv_rows.run
    monkeypatch.setattr(conv_rows, "run", lambda *a, **k: skips.append(k.get("skip") is not None) or real(*a, **k))
    rng = np.random.default_rng(21)
    model = _block(c_in, c_out, stride, projection=projection, bias=bias).astype(dtype).eval()
    _randomise_statistics(model, rng)
    x = rng.standard_normal((3, c_in, 9, 10)).astype(dtype)
    x[2, 0, 4, 5] = np.nan
    got = model.forward(x)
    assert skips[-1] and not any(skips[:-1])  # (a projection on tiles,) the body's two: the second sums
    reference = unfused(model, x, monkeypatch)
    assert got.dtype == dtype and np.isnan(got[2]).any() and not np.isnan(got[:2]).any()
    np.testing.assert_array_equal(got, reference)


def test_a_residual_block_whose_body_ends_otherwise_runs_as_it_is(monkeypatch):
    """A body ending in a ReLU, or a batch norm in training mode (under no_grad: it normalises with the
    batch and updates its statistics once), is not fused: the layers' own results."""
    rng = np.random.default_rng(22)
    x = rng.standard_normal((4, 4, 8, 8)).astype(np.float32)
    ends_in_relu = nn.Sequential(
        nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, rng=0), nn.ReLU())), nn.ReLU()
    ).eval()
    np.testing.assert_array_equal(ends_in_relu.forward(x), unfused(ends_in_relu, x, monkeypatch))
    training = _block(4, 4, 1, projection=False)
    twin = _block(4, 4, 1, projection=False)
    with convprop.no_grad():
        got = training.forward(x)
        expected = unfused(twin, x, monkeypatch)
    np.testing.assert_array_equal(got, expected)
    for key, value in training.state_dict().items():  # the running statistics, updated once alike
        np.testing.assert_array_equal(value, twin.state_dict()[key], err_msg=key)


def test_a_residual_block_of_mismatched_shapes_says_so_in_eval_too():
    body = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, rng=0), nn.BatchNorm2d(6))
    model = nn.Sequential(nn.Residual(body), nn.ReLU()).eval()
    with pytest.raises(ArgumentError, match=r"Residual: body output \(2, 6, 5, 5\) and shortcut output \(2, 4, 5, 5\)"):
        model.forward(np.zeros((2, 4, 5, 5), dtype=np.float32))


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"], ids=["on tiles", "on the grid"])
def test_conv2d_norm_relu_adds_a_skip_before_the_relu(padding_mode):
    from convprop.functional.fused import conv2d_norm_relu
    from convprop.functional.norm import normalisation_affine

    rng = np.random.default_rng(23)
    x = rng.standard_normal((3, 4, 7, 8)).astype(np.float32)
    w = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    mean, var = rng.standard_normal(5).astype(np.float32), rng.uniform(0.5, 2, 5).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 1.5, 5).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    skip = rng.standard_normal((3, 5, 7, 8)).astype(np.float32)
    options = dict(stride=1, padding=1, dilation=1, groups=1, padding_mode=padding_mode, algorithm="auto")
    norm = (mean, *normalisation_affine(var, gamma, beta, 1e-5))
    got = conv2d_norm_relu(x, w, b, options, norm, skip=skip)
    bn = nn.BatchNorm2d(5).astype(np.float32).eval()
    bn.running_mean[...], bn.running_var[...], bn.weight.data[...], bn.bias.data[...] = mean, var, gamma, beta
    y = bn.forward(conv2d(x, w, b, padding=1, padding_mode=padding_mode))
    np.testing.assert_array_equal(got, np.maximum(y + skip, 0))
    with pytest.raises(
        ArgumentError, match=r"skip must have the convolution's output shape \(3, 5, 7, 8\), got \(3, 5, 7, 7\)"
    ):
        conv2d_norm_relu(x, w, b, options, norm, skip=skip[..., :7])


@pytest.mark.parametrize("batch", [1, 5])
def test_a_call_runs_from_its_remembered_plan(batch, monkeypatch):
    """One image or a batch: the second call with the same shapes, dtypes and options skips the checks
    and the choice (``functional.conv_single.REMEMBERED``), reads the arrays' new values, and gives the
    same bits as the call that resolved everything; another shape is resolved (and checked) again."""
    from convprop.functional import conv_single
    from convprop.functional import fused as functional_fused

    conv_single.REMEMBERED.clear()
    resolved = []
    real = functional_fused.resolve_forward
    monkeypatch.setattr(functional_fused, "resolve_forward", lambda *a, **k: resolved.append(1) or real(*a, **k))
    rng = np.random.default_rng(31)
    x = rng.standard_normal((batch, 3, 10, 10)).astype(np.float32)
    w, b = rng.standard_normal((5, 3, 3, 3)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    options = dict(stride=1, padding=1, dilation=1, groups=1, padding_mode="zeros", algorithm="auto")
    pool = dict(kernel_size=(2, 2), stride=(2, 2), padding=0, dilation=1, ceil_mode=False)
    first = conv2d_relu_pool(x, w, b, options, relu=True, pool=pool)
    w2 = w * 2  # new values, same shape: read again
    again = conv2d_relu_pool(x, w2, b, options, relu=True, pool=pool)
    assert len(resolved) == 1 and len(conv_single.REMEMBERED) == 1
    with monkeypatch.context() as patch:  # the reference: nothing remembered
        patch.setattr(functional_fused, "call_key", lambda *a, **k: None)
        np.testing.assert_array_equal(first, conv2d_relu_pool(x, w, b, options, relu=True, pool=pool))
        np.testing.assert_array_equal(again, conv2d_relu_pool(x, w2, b, options, relu=True, pool=pool))
    x[-1, 1, 3, 4] = np.nan  # a NaN in a pooled window: the planned pass says so, the general kernels run
    with_nan = conv2d_relu_pool(x, w, b, options, relu=True, pool=pool)
    assert np.isnan(with_nan[-1]).any()
    np.testing.assert_array_equal(with_nan, max_pool2d(relu(conv2d(x, w, b, padding=1)), 2))
    with pytest.raises(ArgumentError, match="weight"):  # another shape: checked again
        conv2d_relu_pool(x, w[:, :2], b, options, relu=True, pool=pool)
    listed = dict(options, padding=[1, 1])  # unhashable options: not remembered, still right
    np.testing.assert_array_equal(
        conv2d_relu_pool(x[:, :, :, :], w, b, listed, relu=True), relu(conv2d(x, w, b, padding=1))
    )


def test_remembered_plans_are_bounded():
    from convprop.functional import conv_single

    conv_single.REMEMBERED.clear()
    w = np.ones((2, 1, 3, 3), dtype=np.float32)
    options = dict(stride=1, padding=1, dilation=1, groups=1, padding_mode="zeros", algorithm="auto")
    for size in range(4, 4 + conv_single.REMEMBERED_LIMIT + 3):
        conv2d_relu_pool(np.ones((1, 1, size, 4), dtype=np.float32), w, None, options, relu=True)
    assert 0 < len(conv_single.REMEMBERED) <= conv_single.REMEMBERED_LIMIT
