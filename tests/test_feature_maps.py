"""models.forward_with_feature_maps: the fused pass over a plain Sequential gives the walk's answer."""

from __future__ import annotations

import numpy as np
import pytest

from convprop import models, nn
from convprop.models import MODELS, build_model, forward_with_feature_maps


def walked(model, x):
    """The general walk (nn.trace), whatever the model."""
    original = models._plain
    try:
        models._plain = lambda model: False
        return forward_with_feature_maps(model, x)
    finally:
        models._plain = original


def custom(dtype):
    """Convolutions followed by ReLU, LeakyReLU, nothing, pooling; a strided one with a remainder; one last."""
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1, rng=0, dtype=dtype),
        nn.ReLU(),
        nn.Conv2d(5, 4, 3, stride=2, bias=False, rng=1, dtype=dtype),  # 15 -> 7: a remainder
        nn.LeakyReLU(0.1),
        nn.Conv2d(4, 6, 1, rng=2, dtype=dtype),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 2, 3, padding=1, rng=3, dtype=dtype),  # no activation after it
    )


def check_same(model, x):
    y, maps = forward_with_feature_maps(model, x)
    y_ref, maps_ref = walked(model, x)
    np.testing.assert_array_equal(y, y_ref)  # bit for bit
    assert [label for label, _ in maps] == [label for label, _ in maps_ref]
    for (label, m), (_, m_ref) in zip(maps, maps_ref, strict=True):
        assert m.dtype == m_ref.dtype and m.shape == m_ref.shape, label
        np.testing.assert_array_equal(m, m_ref, err_msg=label)
    return maps


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plain_sequentials_take_the_fused_pass_with_the_walk_s_answer(dtype):
    rng = np.random.default_rng(0)
    model = custom(dtype).eval()
    assert models._plain(model)
    maps = check_same(model, rng.normal(size=(3, 15, 15)).astype(dtype))
    assert [label for label, _ in maps] == ["conv1 [0] + ReLU", "conv2 [2] + LeakyReLU", "conv3 [4]", "conv4 [6]"]
    lenet = build_model("lenet", 1, (28, 28), 10, rng=0).astype(dtype).eval()
    assert models._plain(lenet)
    check_same(lenet, rng.random((1, 1, 28, 28)).astype(dtype))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_gives_the_walk_s_maps(name):
    model = build_model(name, 1, (28, 28), 10, rng=0).eval()
    check_same(model, np.random.default_rng(1).random((1, 28, 28)).astype(np.float32))


def test_a_model_in_training_mode_is_switched_for_the_pass_and_back():
    model = custom(np.float32)  # training mode
    x = np.random.default_rng(2).normal(size=(1, 3, 15, 15)).astype(np.float32)
    check_same(model, x)
    assert all(m.training for m in model.modules())


def test_containers_and_batch_norm_after_a_convolution_take_the_walk():
    with_norm = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.BatchNorm2d(2), nn.ReLU()).eval()
    nested = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.ReLU()), nn.Flatten()).eval()
    assert not models._plain(with_norm) and not models._plain(nested)
    x = np.random.default_rng(3).random((1, 1, 9, 9)).astype(np.float32)
    assert [label for label, _ in check_same(with_norm, x)] == ["conv1 [0] + ReLU"]
    assert [label for label, _ in check_same(nested, x)] == ["conv1 [0.0] + ReLU"]
