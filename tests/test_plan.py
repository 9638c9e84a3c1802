"""Single images and batches from a traced plan (``nn.plan``) equal the unplanned forward, bit for bit.

The reference is ``nn.fused.forward_fused`` over the model's layers, which is what
``Sequential.forward`` runs without a plan (and which ``tests/test_fused.py`` checks against each
layer's own forward). Every way a plan could go stale is tried: new values in place, a parameter's
array replaced, a layer replaced, a setting changed, the mode and the dtype changed, another input
shape, a NaN, a bad input, a forward that sets attributes, threads.
"""

from __future__ import annotations

import copy
import gc
import threading

import numpy as np
import pytest

import convprop
from convprop import models, nn
from convprop.errors import ArgumentError, ArgumentTypeError
from convprop.functional import conv_rows, conv_single
from convprop.functional.conv import resolve_forward
from convprop.functional.norm import normalisation_affine
from convprop.nn import fused, plan
from convprop.nn.module import structure_epoch

MODELS = {
    "lenet": lambda: models.lenet(1, (28, 28), 10, rng=0),
    "lenet_small": lambda: models.lenet_small(1, (28, 28), 10, rng=4),
    "lenet_bn": lambda: models.lenet_bn(1, (28, 28), 10, rng=1),
    "resnet": lambda: models.resnet(1, (28, 28), 10, rng=2),
    "resnet_wider": lambda: models.resnet(1, (16, 12), 3, rng=5, width=(4, 12, 20), blocks=(2, 1, 2)),
}


def _randomise(model, rng):
    """Running statistics and affine parameters away from 0/1, as after training (small and large σ²)."""
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.running_mean[...] = rng.standard_normal(layer.num_features)
            layer.running_var[...] = rng.uniform(1e-4, 4.0, layer.num_features)
            layer.weight.data[...] = rng.uniform(-1.5, 1.5, layer.num_features)
            layer.bias.data[...] = rng.standard_normal(layer.num_features) * 0.3


def reference(model, x):
    return fused.forward_fused(list(model), x)


def _outcome(fn, x):
    try:
        return fn(x)
    except Exception as exc:  # (compared by the callers: the same error, or the same result)
        return type(exc), str(exc)


def same_error(model, x, kind):
    """The planned forward raises what the unplanned one raises, of type ``kind``, with its message."""
    planned, unplanned = _outcome(model.forward, x), _outcome(lambda x: reference(model, x), x)
    assert isinstance(planned, tuple) and issubclass(planned[0], kind) and planned == unplanned


def steps_of(model, x):
    return plan._PLANS[model][(x.shape, x.dtype)][1].steps


@pytest.fixture
def two_threads(monkeypatch):
    """Two of convprop's threads, so that a batch's steps split their images (the workers' part as
    compiled jobs) wherever the tests run."""
    from convprop.functional import threads

    monkeypatch.setattr(threads, "THREADS", 2)


@pytest.mark.parametrize("batch", [1, 2, 9])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(MODELS))
def test_a_planned_forward_equals_the_unplanned_one(name, dtype, batch, two_threads, monkeypatch):
    rng = np.random.default_rng(7)
    model = MODELS[name]().astype(dtype).eval()
    _randomise(model, rng)
    size = (16, 12) if name == "resnet_wider" else (28, 28)
    for _ in range(2):
        x = rng.standard_normal((batch, 1, *size)).astype(dtype)
        first, second = model.forward(x), model.forward(x)  # traced, then from the plan
        expected = reference(model, x)
        assert second.dtype == dtype
        np.testing.assert_array_equal(first, expected)
        np.testing.assert_array_equal(second, expected)
        with monkeypatch.context() as patch:  # and the unplanned forward with its batch scope
            patch.setattr(plan, "takes", lambda x: False)
            np.testing.assert_array_equal(model.forward(x), expected)


@pytest.mark.parametrize("batch", [1, 9])
def test_the_plan_runs_the_tiles_without_the_walk(batch, two_threads, monkeypatch):
    """After the trace, the fused walk is not entered again: lenet's convolutions and resnet's blocks
    are compiled steps, the rest the layers' own forwards; a batch's steps hand a part to the worker."""
    from convprop.functional import threads

    for name, kinds in [("lenet", {"ConvStep"}), ("resnet", {"ConvStep", "ResidualStep"})]:
        model = MODELS[name]().eval()
        x = np.random.default_rng(1).standard_normal((batch, 1, 28, 28)).astype(np.float32)
        expected = model.forward(x)
        assert kinds <= {type(step).__name__ for step in steps_of(model, x)}
        worker = threads._crew().workers[0]
        posted = worker.posted
        with monkeypatch.context() as patch:
            patch.setattr(fused, "forward_fused", lambda *a: pytest.fail("walked again"))
            np.testing.assert_array_equal(model.forward(x), expected)
        assert (worker.posted > posted) == (batch > 1)


def test_values_changed_in_place_are_read_at_each_call():
    rng = np.random.default_rng(2)
    model = MODELS["resnet"]().eval()
    x = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
    model.forward(x)
    epoch = structure_epoch()
    _randomise(model, rng)  # in place: the same arrays, new values
    for p in model.parameters():
        p.data[...] *= 1.5
    assert structure_epoch() == epoch  # (nothing replaced: the same plan)
    np.testing.assert_array_equal(model.forward(x), reference(model, x))


def test_a_replaced_parameter_array_is_traced_again():
    rng = np.random.default_rng(3)
    model = MODELS["lenet"]().eval()
    x = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
    model.forward(x)
    conv = model[0]
    conv.weight.data = rng.standard_normal(conv.weight.data.shape).astype(np.float32)  # a new array
    np.testing.assert_array_equal(model.forward(x), reference(model, x))
    conv.weight.data = conv.weight.data[:, :, ::-1, :]  # not C-contiguous: the layer's own call
    np.testing.assert_array_equal(model.forward(x), reference(model, x))
    assert not isinstance(steps_of(model, x)[0], plan.ConvStep)
    conv.weight.data = np.ones((6, 2, 5, 5), dtype=np.float32)  # the wrong shape: the layer's own error
    same_error(model, x, ArgumentError)


def test_a_replaced_layer_or_setting_is_traced_again():
    rng = np.random.default_rng(4)
    model = MODELS["resnet"]().eval()
    x = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
    model.forward(x)
    model.__setattr__("0", nn.Conv2d(1, 8, 5, padding=2, bias=False, rng=9))  # the stem replaced
    np.testing.assert_array_equal(model.forward(x), reference(model, x))
    block = model[3][0]  # the first block's body ends with a batch norm
    block.body[4].eps = 0.25
    np.testing.assert_array_equal(model.forward(x), reference(model, x))
    block.body[0].algorithm = "direct"  # not the tiles: that convolution is the layer's own call
    np.testing.assert_array_equal(model.forward(x), reference(model, x))
    assert not isinstance(steps_of(model, x)[1].body[0], plan.ConvStep)


def test_modes_and_dtypes_are_traced_again():
    rng = np.random.default_rng(5)
    model = MODELS["resnet"]()
    _randomise(model, rng)
    x = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
    model.eval().forward(x)
    twin = copy.deepcopy(model).train()  # (a copy has no plans of its own yet)
    model.train()  # under no_grad a training-mode forward normalises with the batch, updating the statistics
    with convprop.no_grad():
        got = model(x)
    np.testing.assert_array_equal(got, reference(twin, x))
    np.testing.assert_array_equal(model[1].running_mean, twin[1].running_mean)
    model.eval()
    np.testing.assert_array_equal(model.forward(x), reference(model, x))
    model.astype(np.float64)
    x64 = x.astype(np.float64)
    got = model.forward(x64)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, reference(model, x64))
    same_error(model, x, ArgumentTypeError)  # float32 data into a float64 model: as without a plan


@pytest.mark.parametrize("batch, image", [(1, 0), (6, 0), (6, 5)])  # (6, 5): in the worker's part
def test_a_nan_in_a_pooled_window_gives_the_unplanned_result(batch, image, two_threads):
    rng = np.random.default_rng(6)
    model = MODELS["lenet"]().eval()
    x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    model.forward(x)
    x[image, 0, 5, 7] = np.nan
    got = model.forward(x)
    assert np.isnan(got[image]).all() and not np.isnan(np.delete(got, image, axis=0)).any()
    np.testing.assert_array_equal(got, reference(model, x))


def test_other_inputs_run_as_without_a_plan():
    rng = np.random.default_rng(8)
    model = MODELS["lenet"]().eval()
    x = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
    model.forward(x)
    for other in [
        x[:, :, ::-1],  # not C-contiguous
        x[0],  # unbatched (C, H, W) of one channel: lenet's Flatten then refuses it, as without a plan
        np.concatenate([x, x]),  # a batch
        x.astype(np.float64),  # another dtype
        np.zeros((1, 3, 28, 28), dtype=np.float32),  # three channels for one: the layer's own error
        np.zeros((1, 1, 28, 28, 1), dtype=np.float32),
    ]:
        for _ in range(2):  # (traced, then planned where it was kept)
            planned, unplanned = _outcome(model.forward, other), _outcome(lambda x: reference(model, x), other)
            if isinstance(unplanned, np.ndarray):
                np.testing.assert_array_equal(planned, unplanned)
            else:
                assert planned == unplanned
    assert ((1, 3, 28, 28), np.dtype(np.float32)) not in plan._PLANS[model]  # a failed trace is not kept


def test_shared_layers_and_a_nested_sequential():
    """One convolution used twice (its input shape differs the second time) inside nested Sequentials."""
    conv = nn.Conv2d(4, 4, 3, padding=1, rng=3)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, rng=2), nn.ReLU(),
        nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2)), conv, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 7 * 7, 3, rng=1),
    ).eval()  # fmt: skip
    x = np.random.default_rng(9).standard_normal((1, 1, 14, 14)).astype(np.float32)
    model.forward(x)
    np.testing.assert_array_equal(model.forward(x), reference(model, x))
    assert sum(isinstance(s, plan.ConvStep) for s in steps_of(model, x)) == 3  # the nested layers in line


def test_a_forward_that_sets_attributes_is_not_kept():
    class Counting(nn.Module):
        def forward_with_context(self, x):
            self.calls = getattr(self, "calls", 0) + 1
            return x, None

    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.ReLU(), Counting()).eval()
    x = np.ones((1, 1, 6, 6), dtype=np.float32)
    model.forward(x)
    model.forward(x)
    assert model[2].calls == 2 and not plan._PLANS.get(model)


def test_plans_are_per_model_bounded_and_go_with_the_model():
    def make():
        return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, rng=0), nn.ReLU(), nn.MaxPool2d(2)).eval()

    model = make()
    for size in range(20, 20 + plan.LIMIT + 3):
        model.forward(np.zeros((1, 1, size, size), dtype=np.float32))
    assert 0 < len(plan._PLANS[model]) <= plan.LIMIT
    gc.collect()
    count = len(plan._PLANS)
    other = make()
    other.forward(np.zeros((1, 1, 8, 8), dtype=np.float32))
    assert len(plan._PLANS) == count + 1
    del other, model
    gc.collect()
    assert len(plan._PLANS) == count - 1  # (weak: a model's plans go with it)


@pytest.mark.parametrize("batch", [1, 5])
def test_one_plan_serves_many_threads(batch, two_threads):
    """(Batches: one caller at a time has the worker, the others run their parts themselves.)"""
    rng = np.random.default_rng(10)
    model = MODELS["resnet"]().eval()
    _randomise(model, rng)
    images = [rng.standard_normal((batch, 1, 28, 28)).astype(np.float32) for _ in range(8)]
    expected = [reference(model, x) for x in images]
    results: dict[int, list[np.ndarray]] = {}

    def work(k):
        results[k] = [model.forward(images[(k + i) % 8]) for i in range(40)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, got in results.items():
        for i, y in enumerate(got):
            np.testing.assert_array_equal(y, expected[(k + i) % 8])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compiled_scale_is_normalisation_affines(dtype):
    """conv_single.image's batch norm: the scale and shift of ``normalisation_affine``, bit for bit,
    over variances from 1e-12 to 1e6 and eps from 1e-8 to 0.5 (a 1×1 convolution of ones reads them)."""
    rng = np.random.default_rng(11)
    O = 64
    for eps in [1e-8, 1e-5, 1e-3, 0.5]:
        var = (10.0 ** rng.uniform(-12, 6, O)).astype(dtype)
        gamma, beta, mean = (rng.standard_normal(O).astype(dtype) for _ in range(3))
        for affine in (True, False):
            scale, shift = normalisation_affine(var, gamma if affine else None, beta if affine else None, eps)
            x = np.ones((1, 1, 1, 1), dtype=dtype)
            w = np.zeros((O, 1), dtype=dtype)  # y = 0: the stored value is (0 − μ)·scale + shift
            out = np.empty((1, O, 1, 1), dtype=dtype)
            absent = np.zeros(0, dtype=dtype)
            args = (x, w, absent, mean, var, gamma if affine else absent, beta if affine else absent)
            options = dict(stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", algorithm="auto")
            geo = resolve_forward(2, x, w.reshape(O, 1, 1, 1), None, **options, name="conv2d")[3]
            p = conv_rows.plan(geo, np.dtype(dtype), conv_rows.NORM)
            constants = np.array([eps, 1.0], dtype=dtype)
            (ph, pw), (sh, sw) = p.pads, p.stride
            conv_single.image(*args, np.zeros((1, 1, 1, 1), dtype), out, constants, p.offs, p.phases, ph, pw, sh, sw,
                              p.Wq, p.S, p.L, p.pool, p.normalise, p.relu, False)  # fmt: skip
            np.testing.assert_array_equal(out[0, :, 0, 0], (np.zeros(O, dtype) - mean) * scale + shift)
