"""``--ema``: the averaged weights follow the formula, are evaluated and saved, and leave training alone."""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pytest

from convprop import checkpoint, data, train
from convprop.cli import build_parser
from convprop.ema import WeightAverage
from convprop.errors import ConfigError
from convprop.models import lenet
from convprop.optim import Adam
from convprop.train import TrainConfig, evaluate, fit, train_epoch

QUIET = dict(dataset="digits", epochs=1, progress=False)


def run(tmp_path, name, **overrides):
    return fit(TrainConfig(**(QUIET | overrides), out_dir=str(tmp_path / name)), log=lambda line: None)


class Recording(WeightAverage):
    """A WeightAverage that remembers the weights it saw at each step and the trained weights at the end."""

    instances: ClassVar[list[Recording]] = []

    def __init__(self, params, decay):
        super().__init__(params, decay)
        self.seen: list[list[np.ndarray]] = []
        self.trained: list[np.ndarray] | None = None
        Recording.instances.append(self)

    def update(self):
        self.seen.append([p.data.astype(np.float64) for p in self.params])
        super().update()

    def copy_to_model(self):
        self.trained = [p.data.copy() for p in self.params]
        super().copy_to_model()


@pytest.fixture
def recording(monkeypatch):
    Recording.instances = []
    monkeypatch.setattr(train, "WeightAverage", Recording)
    return Recording.instances


def test_the_average_is_the_bias_corrected_formula_computed_by_hand():
    dataset = data.load_dataset("digits", seed=0)
    x, y = dataset.train_images[:200], dataset.train_labels[:200]  # batches of 64: 4 optimizer steps
    model = lenet(1, dataset.image_size, dataset.num_classes, rng=0)
    config = TrainConfig(dataset="digits", batch_size=64, progress=False)
    decay = 0.9
    average = Recording(model.parameters(), decay)
    train_epoch(model, Adam(model.parameters(), lr=1e-2), x, y, config, np.random.default_rng(0), "", average=average)
    assert average.steps == len(average.seen) == 4
    for i, avg in enumerate(average.average):
        m = np.zeros_like(average.seen[0][i])
        for weights in average.seen:  # avg = decay·avg + (1 − decay)·w from zero, divided by 1 − decay^t
            m = decay * m + (1 - decay) * weights[i]
        expected = m / (1 - decay**4)
        np.testing.assert_allclose(avg, expected, rtol=1e-5, atol=1e-7)
        assert avg.dtype == model.parameters()[i].data.dtype
    # the first step's average is that step's weights alone: the random initialisation does not count
    first = Recording(model.parameters(), 0.999)
    first.update()
    for avg, p in zip(first.average, model.parameters(), strict=True):
        np.testing.assert_array_equal(avg, p.data)


def test_applied_swaps_the_average_in_and_the_trained_weights_back():
    model = lenet(1, (8, 8), 10, rng=0)
    average = WeightAverage(model.parameters(), 0.5)
    average.update()
    trained = [p.data.copy() for p in model.parameters()]
    ids = [id(p.data) for p in model.parameters()]
    for p in model.parameters():
        p.data += 1.0
    average.update()  # bias-corrected: w + 2/3, the newer step counting twice the older
    with average.applied():
        for p, w in zip(model.parameters(), trained, strict=True):
            np.testing.assert_allclose(p.data, w + 2 / 3, rtol=1e-6)  # (0.5·(w+1) + 0.25·w) / (1 − 0.5²)
    for p, w in zip(model.parameters(), trained, strict=True):
        np.testing.assert_array_equal(p.data, w + 1.0)
    assert ids == [id(p.data) for p in model.parameters()]  # in place: the optimizer's arrays stay the same


def test_ema_zero_builds_no_average_and_the_average_never_changes_training(tmp_path, recording):
    off = run(tmp_path, "off", epochs=2)
    assert recording == []  # the default: no average, today's training exactly
    on = run(tmp_path, "on", epochs=2, ema=0.9)
    steps = -(-len(data.load_dataset("digits", seed=0).train_labels) // TrainConfig().batch_size)  # per epoch
    assert len(recording) == 1 and recording[0].steps == 2 * steps
    for a, b in zip(off.history, on.history, strict=True):  # the same trained weights, epoch after epoch
        assert (a["train_loss"], a["train_accuracy"]) == (b["train_loss"], b["train_accuracy"])
    saved = checkpoint.load(tmp_path / "off" / "model.safetensors")
    for p, w in zip(saved.parameters(), recording[0].trained, strict=True):
        np.testing.assert_array_equal(p.data, w)


def test_the_checkpoint_and_the_test_figures_are_the_averaged_weights(tmp_path, recording):
    result = run(tmp_path, "ema", ema=0.9)
    (average,) = recording
    saved = checkpoint.load(tmp_path / "ema" / "model.safetensors")
    for s, avg, w in zip(saved.parameters(), average.average, average.trained, strict=True):
        np.testing.assert_array_equal(s.data, avg)
        assert not np.array_equal(s.data, w)
    metrics = json.loads((tmp_path / "ema" / "metrics.json").read_text())
    dataset = data.load_dataset("digits", seed=0)
    norm = data.Normalization.fit(dataset.train_images)
    again = evaluate(saved, norm(dataset.test_images), dataset.test_labels)
    assert metrics["test"]["accuracy"] == result.test.accuracy == again.accuracy
    assert metrics["config"]["ema"] == 0.9


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan"), float("inf"), True, "0.9"])
def test_an_impossible_decay_is_a_config_error_quoting_it(tmp_path, value):
    with pytest.raises(ConfigError, match=r"ema must be 0 \(off\) or a decay between 0 and 1") as error:
        run(tmp_path, "refused", ema=value)
    assert repr(value) in str(error.value)
    assert not (tmp_path / "refused").exists()


def test_the_cli_option():
    parser = build_parser()
    args = parser.parse_args(["train", "--ema", "0.999"])
    assert args.ema == 0.999
    assert parser.parse_args(["train"]).ema == 0.0
    train_help = parser._subparsers._group_actions[0].choices["train"].format_help()
    assert "--ema DECAY" in train_help


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 2.0])
def test_weight_average_refuses_a_decay_outside_the_open_interval(decay):
    from convprop.errors import ArgumentError

    with pytest.raises(ArgumentError, match=f"decay must be between 0 and 1 \\(exclusive\\), got {decay!r}"):
        WeightAverage(lenet(1, (8, 8), 10, rng=0).parameters(), decay)
