"""convprop.explain against PyTorch autograd in float64 (saliency, gradient × input, every conv's output
gradient, relative 1e-9) and against a Grad-CAM written here with torch hooks; a finite-difference check
of the saliency; the model left untouched; refusals that quote what was given."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from reference import assert_close
from torch_twins import twin

import convprop
from convprop import explain, models, nn
from convprop.data import Normalization
from convprop.errors import ArgumentError, ArgumentTypeError

f64 = dict(dtype=np.float64)


def randomise_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data[...] = rng.uniform(0.5, 1.5, m.num_features)
            m.bias.data[...] = rng.normal(size=m.num_features)
            m.running_mean[...] = rng.normal(size=m.num_features)
            m.running_var[...] = rng.uniform(0.5, 2, m.num_features)
    return model


def lenet():
    """models.lenet_bn (with its Dropout): for the tests that need no torch twin."""
    return randomise_bn(models.lenet_bn(1, (12, 12), 4, rng=0).astype(np.float64))


def plain_lenet():
    """conv → in-place ReLU → pool, conv → BN → ReLU → pool, linear: torch_twins can mirror it."""
    return randomise_bn(nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, rng=0, **f64), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1, rng=1, **f64), nn.BatchNorm2d(4, **f64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(36, 4, rng=2, **f64),
    ))  # fmt: skip


def small_resnet():
    return randomise_bn(models.resnet(1, (12, 12), 5, rng=0, width=(4, 6, 8), blocks=(1, 2, 1)).astype(np.float64))


def inception():
    def conv(c_in, c_out, k, seed):
        return nn.Conv2d(c_in, c_out, k, 1, k // 2, rng=seed, **f64)

    return nn.Sequential(
        nn.Concat(conv(1, 2, 1, 1), nn.Sequential(conv(1, 2, 1, 2), nn.ReLU(), conv(2, 3, 3, 3)), dim=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(20, 3, rng=4, **f64),
    )


MODELS = [
    pytest.param(plain_lenet, (3, 1, 12, 12), id="lenet-bn"),
    pytest.param(small_resnet, (2, 1, 12, 12), id="resnet"),
    pytest.param(inception, (2, 1, 6, 6), id="inception-concat"),
]


def torch_reference(model, x, target):
    """Input gradient and every conv output's gradient of the target logits, with torch autograd."""
    t = twin(model).eval()
    outputs = {}

    def keep(name, out):  # a forward hook returning None leaves the output as it is
        out.retain_grad()
        outputs[name] = out

    for name, module in t.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda _m, _i, out, name=name: keep(name, out))
    xt = torch.tensor(x, requires_grad=True)
    logits = t(xt)
    logits[torch.arange(len(x)), torch.tensor(target)].sum().backward()
    convs = {k: (v.detach().numpy(), v.grad.numpy()) for k, v in outputs.items()}
    return logits.detach().numpy(), xt.grad.numpy(), convs


def torch_grad_cam(feature_map, gradient, size):
    """Selvaraju et al.'s Grad-CAM from torch tensors: weights = spatial mean of the gradient."""
    alpha = gradient.mean(dim=(2, 3), keepdim=True)  # (N, K, 1, 1)
    cam = torch.relu((alpha * feature_map).sum(dim=1, keepdim=True))  # (N, 1, h, w)
    return TF.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]  # (N, H, W)


@pytest.mark.parametrize(("make", "shape"), MODELS)
def test_every_map_matches_torch_autograd(make, shape):
    model = make()
    x = np.random.default_rng(1).standard_normal(shape)
    target = np.arange(shape[0]) % 3
    logits, dx, convs = torch_reference(model, x, target)
    result = explain.explain(model, x, target)
    assert_close(result.logits, logits, "logits")
    assert_close(result.saliency, dx, "saliency")
    assert_close(result.gradient_x_input, x * dx, "gradient x input")
    assert list(result.layer_gradients) == list(convs) == explain.conv_paths(model)
    for path, (a, g) in convs.items():
        assert_close(result.feature_maps[path], a, f"feature map {path}")
        assert_close(result.layer_gradients[path], g, f"gradient at {path}")
    last = explain.conv_paths(model)[-1]
    a, g = convs[last]
    reference_cam = torch_grad_cam(torch.tensor(a), torch.tensor(g), shape[2:]).numpy()
    assert result.grad_cam_layer == last
    assert_close(result.grad_cam, reference_cam, "grad-cam")
    assert np.abs(reference_cam).max() > 0


def test_grad_cam_of_a_chosen_layer_by_path_or_module():
    model = plain_lenet()
    x = np.random.default_rng(2).standard_normal((2, 1, 12, 12))
    _, _, convs = torch_reference(model, x, [1, 2])
    first = explain.conv_paths(model)[0]
    reference = torch_grad_cam(*(torch.tensor(v) for v in convs[first]), (12, 12)).numpy()
    assert_close(explain.grad_cam(model, x, [1, 2], layer=first), reference, "grad-cam by path")
    assert_close(explain.grad_cam(model, x, [1, 2], layer=model[0]), reference, "grad-cam by module")


def graph_model():
    """Two branches from one convolution (a fan-out), added, and a dead branch that reaches no output."""
    conv = nn.Conv2d(1, 3, 3, padding=1, rng=0, **f64)
    side = nn.Conv2d(3, 3, 1, rng=1, **f64)
    dead = nn.Conv2d(3, 2, 1, rng=2, **f64)
    head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 5 * 5, 4, rng=3, **f64))
    nodes = [("stem", conv, ["x"]), ("side", side, ["stem"]), ("dead", dead, ["stem"]),
             ("sum", nn.Add(), ["stem", "side"]), ("act", nn.Tanh(), ["sum"]), ("head", head, ["act"])]  # fmt: skip
    return nn.Graph(["x"], nodes, ["head"]), (conv, side, head)


def test_a_graph_matches_torch_and_a_dead_branch_gets_zero_gradient():
    model, (conv, side, head) = graph_model()
    tc, ts, th = (twin(m) for m in (conv, side, head))
    x = np.random.default_rng(3).standard_normal((2, 1, 5, 5))
    xt = torch.tensor(x, requires_grad=True)
    stem = tc(xt)
    stem.retain_grad()
    branch = ts(stem)
    branch.retain_grad()
    th(torch.tanh(stem + branch))[:, 2].sum().backward()
    result = explain.explain(model, x, 2)
    assert list(result.layer_gradients) == ["stem", "side", "dead"]
    assert_close(result.saliency, xt.grad.numpy(), "saliency")
    assert_close(result.layer_gradients["stem"], stem.grad.numpy(), "gradient at stem (sum of two uses)")
    assert_close(result.layer_gradients["side"], branch.grad.numpy(), "gradient at side")
    assert not result.layer_gradients["dead"].any()


def test_single_image_keeps_its_shape_and_equals_its_batch_row():
    model = lenet()
    x = np.random.default_rng(4).standard_normal((3, 1, 12, 12))
    batch = explain.explain(model, x, [0, 3, 1])
    one = explain.explain(model, x[1], 3)
    assert one.saliency.shape == x[1].shape and one.grad_cam.shape == (12, 12)
    assert_close(one.saliency, batch.saliency[1], "saliency of one image")
    assert_close(one.grad_cam, batch.grad_cam[1], "grad-cam of one image")
    for path, g in one.layer_gradients.items():
        assert_close(g, batch.layer_gradients[path][1], f"gradient at {path}")
    assert one.target.tolist() == [3]


def test_no_target_means_the_predicted_class_and_one_int_means_every_image():
    model = lenet()
    x = np.random.default_rng(5).standard_normal((3, 1, 12, 12))
    predicted = explain.explain(model, x)
    assert predicted.target.tolist() == predicted.logits.argmax(axis=1).tolist()
    assert explain.explain(model, x, 2).target.tolist() == [2, 2, 2]
    assert_close(explain.saliency(model, x, 2), explain.saliency(model, x, [2, 2, 2]), "one int for all")


def test_normalization_gives_the_gradient_with_respect_to_the_pixels():
    norm = Normalization((0.2,), (0.5,))
    x01 = np.random.default_rng(6).uniform(size=(2, 1, 12, 12))
    xt = torch.tensor(x01, requires_grad=True)
    twin(model := plain_lenet()).eval()((xt - 0.2) / 0.5)[:, 1].sum().backward()
    result = explain.explain(model, x01, 1, normalization=norm)
    assert_close(result.saliency, xt.grad.numpy(), "saliency in pixel units")
    assert_close(result.gradient_x_input, x01 * xt.grad.numpy(), "gradient x pixels")


def test_saliency_passes_gradcheck_on_a_small_model():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0, **f64), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(8, 3, rng=1, **f64))  # fmt: skip
    x = np.random.default_rng(7).standard_normal((2, 1, 6, 6))
    target = [2, 0]

    def energy(x):  # E = Σ_n logit[n, target_n], as a (1,) output
        with convprop.no_grad():
            return model(x)[[0, 1], target].sum(keepdims=True)

    convprop.gradcheck(energy, lambda g, x: [g[0] * explain.saliency(model, x, target)], [x], names=["x"])


def test_the_model_is_left_as_it_was():
    model = lenet().train()
    x = np.random.default_rng(8).standard_normal((2, 1, 12, 12))
    model[0].weight.grad = np.full_like(model[0].weight.data, 7.0)
    state = {k: v.copy() for k, v in model.state_dict().items()}
    in_eval = explain.explain(lenet(), x, 1)
    result = explain.explain(model, x, 1)
    assert_close(result.saliency, in_eval.saliency, "training-mode model explained in eval mode")
    assert model.training and all(m.training for m in model.modules())
    assert all(np.array_equal(v, state[k]) for k, v in model.state_dict().items())  # running statistics too
    assert np.all(model[0].weight.grad == 7.0)
    assert all(p.grad is None for name, p in model.named_parameters() if name != "0.weight")
    assert all(m.__dict__.get("_last_context") is None for m in model.modules())


def test_a_module_shared_by_two_graph_nodes_is_explained_per_node():
    conv = nn.Conv2d(2, 2, 3, padding=1, rng=0, **f64)
    head = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3, rng=1, **f64))
    nodes = [("a", conv, ["x"]), ("act", nn.Tanh(), ["a"]), ("b", conv, ["act"]), ("head", head, ["b"])]
    model = nn.Graph(["x"], nodes, ["head"])
    tc, th = twin(conv), twin(head)
    x = np.random.default_rng(10).standard_normal((2, 2, 4, 4))
    xt = torch.tensor(x, requires_grad=True)
    a = tc(xt)
    a.retain_grad()
    b = tc(torch.tanh(a))
    b.retain_grad()
    th(b)[:, 1].sum().backward()
    result = explain.explain(model, x, 1)
    assert list(result.layer_gradients) == ["a", "b"] == explain.conv_paths(model)
    assert_close(result.layer_gradients["a"], a.grad.numpy(), "gradient at the first use")
    assert_close(result.layer_gradients["b"], b.grad.numpy(), "gradient at the second use")
    assert_close(result.saliency, xt.grad.numpy(), "saliency")


def test_many_threads_explaining_one_model_agree_bit_for_bit():
    from concurrent.futures import ThreadPoolExecutor

    model = lenet()
    images = np.random.default_rng(11).standard_normal((6, 1, 12, 12))
    alone = [explain.explain(model, images[i], i % 4) for i in range(6)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda i: explain.explain(model, images[i], i % 4), [*range(6), *range(6)]))
    for i, result in enumerate(together):
        assert np.array_equal(result.saliency, alone[i % 6].saliency)
        assert np.array_equal(result.grad_cam, alone[i % 6].grad_cam)
    assert all(p.grad is None for p in model.parameters())


def test_an_in_place_first_layer_leaves_the_images_alone():
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(1, 2, 3, rng=0, **f64), nn.Flatten(),
                          nn.Linear(2 * 4 * 4, 3, rng=1, **f64))  # fmt: skip
    x = np.random.default_rng(12).standard_normal((2, 1, 6, 6))
    kept = x.copy()
    result = explain.explain(model, x, 0)
    assert np.array_equal(x, kept)
    assert_close(result.gradient_x_input, x * result.saliency, "gradient x the given input")


def test_bilinear_resize_matches_torch_interpolate():
    maps = np.random.default_rng(9).standard_normal((2, 3, 4, 5))
    for size in [(12, 12), (4, 5), (7, 3), (1, 1)]:
        reference = TF.interpolate(torch.tensor(maps), size=size, mode="bilinear", align_corners=False).numpy()
        assert_close(explain.bilinear_resize(maps, size), reference, f"bilinear to {size}")


def no_conv_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3, rng=0, **f64))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda m, x: explain.saliency(m, x, 4), ArgumentError, r"target 4 is out of range: the model has 4 classes"),
        (lambda m, x: explain.saliency(m, x, -1), ArgumentError, r"target -1 is out of range"),
        (lambda m, x: explain.saliency(m, x, [0, 1, 2]), ArgumentError, r"target gives 3 class indices for 2 images"),
        (lambda m, x: explain.saliency(m, x[0], [0, 1]), ArgumentError, r"target gives 2 class indices for one image"),
        (lambda m, x: explain.saliency(m, x, True), ArgumentTypeError, r"target must be a class index .* got True"),
        (lambda m, x: explain.saliency(m, x, [0.5, 1]), ArgumentTypeError, r"must hold class indices .* \[0.5, 1\]"),
        (lambda m, x: explain.saliency(m, x[0, 0], 0), ArgumentError, r"got shape \(12, 12\)"),
        (lambda m, x: explain.saliency(m, x.tolist(), 0), ArgumentTypeError, r"NumPy array, got list"),
        (lambda m, x: explain.saliency(m, x * np.nan, 0), ArgumentError, r"NaN"),
        (lambda m, x: explain.grad_cam(m, x, 0, layer="9.9"), ArgumentError, r"no layer at path '9.9'; .*'0'"),
        (lambda m, x: explain.grad_cam(m, x, 0, layer="9"), ArgumentError, r"the layer at '9' gives shape \(2, 128\)"),
        (lambda m, x: explain.saliency("model", x, 0), ArgumentTypeError, r"convprop Module, got str"),
    ],
)
def test_bad_input_is_refused_with_the_values(call, error, message):
    x = np.zeros((2, 1, 12, 12))
    with pytest.raises(error, match=message):
        call(lenet(), x)


def test_grad_cam_of_a_model_without_a_convolution_is_refused():
    x = np.zeros((2, 1, 4, 4))
    assert explain.saliency(no_conv_model(), x, 1).shape == x.shape
    assert explain.layer_gradients(no_conv_model(), x, 1) == {}
    with pytest.raises(ArgumentError, match=r"grad_cam needs a convolution .*Sequential has none"):
        explain.grad_cam(no_conv_model(), x, 1)
