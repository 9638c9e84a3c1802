"""convprop.train.fit, called directly: every option reaches the run, schedules, and the seed promise."""

from __future__ import annotations

import json

import numpy as np
import pytest

import convprop
from convprop import nn
from convprop.errors import ConfigError
from convprop.train import TrainConfig, fit

QUIET = dict(dataset="digits", epochs=3, progress=False)


def run(tmp_path, name, **overrides):
    return fit(TrainConfig(**(QUIET | overrides), out_dir=str(tmp_path / name)), log=lambda line: None)


def test_options_reach_the_model_optimizer_and_schedule(tmp_path):
    result = run(
        tmp_path,
        "sgd",
        optimizer="sgd",
        lr=0.1,
        schedule="step",
        weight_decay=1e-4,
        batch_size=32,
        model="lenet-bn",
        algorithm="im2col",
        augment=0,
    )
    assert [h["lr"] for h in result.history] == pytest.approx([0.1, 0.1, 0.01])  # step at 2/3 of the epochs
    model = convprop.load(result.run_dir / "model.safetensors")
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # lenet-bn
    assert {m.config()["bias"] for m in model.modules() if isinstance(m, nn.Conv2d)} == {False}
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["config"]["optimizer"] == "sgd" and metrics["config"]["weight_decay"] == 1e-4
    assert metrics["config"]["batch_size"] == 32 and metrics["config"]["algorithm"] == "im2col"
    assert len(metrics["epochs"]) == 3 and result.test.accuracy > 0.5


def test_cosine_schedule_and_algorithm_choice(tmp_path, monkeypatch):
    seen = []
    original = nn.Conv2d.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("algorithm"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(nn.Conv2d, "__init__", spy)
    result = run(tmp_path, "cos", lr=1e-3, schedule="cosine", algorithm="gemm")
    assert [h["lr"] for h in result.history] == pytest.approx([1e-3, 7.5e-4, 2.5e-4])
    assert seen == ["gemm", "gemm"]


def test_same_seed_same_run_bit_for_bit(tmp_path):
    a, b, c = run(tmp_path, "a", seed=3), run(tmp_path, "b", seed=3), run(tmp_path, "c", seed=4)
    load = lambda r: convprop.load(r.run_dir / "model.safetensors").state_dict()  # noqa: E731
    sa, sb, sc = load(a), load(b), load(c)
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert not all(np.array_equal(sa[k], sc[k]) for k in sa)


def test_force_allows_reusing_a_run_directory(tmp_path):
    first = run(tmp_path, "again", epochs=1)
    with pytest.raises(ConfigError, match="already has files"):
        run(tmp_path, "again", epochs=1)
    second = run(tmp_path, "again", epochs=1, force=True, seed=9)
    assert second.run_dir == first.run_dir and len(second.history) == 1


def test_augmentation_changes_the_run(tmp_path):
    plain, shifted = run(tmp_path, "plain", epochs=1, augment=0), run(tmp_path, "shifted", epochs=1, augment=1)
    assert plain.history[0]["train_loss"] != shifted.history[0]["train_loss"]


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("epochs", 0, "epochs must be >= 1, got 0"),
        ("batch_size", -1, "batch_size must be >= 1, got -1"),
        ("optimizer", "rmsprop", "unknown optimizer 'rmsprop'"),
        ("schedule", "linear", "unknown schedule 'linear'"),
        ("lr", 0.0, "lr must be > 0.0, got 0.0"),
        ("weight_decay", -0.1, "weight_decay must be >= 0.0, got -0.1"),
        ("augment", 9, "augment must be a shift of 0 to 4 pixels, got 9"),
        ("label_smoothing", 1.0, r"label_smoothing must be a number in \[0, 1\), got 1.0"),
        ("label_smoothing", -0.1, r"label_smoothing must be a number in \[0, 1\), got -0.1"),
        ("label_smoothing", float("nan"), r"label_smoothing must be a number in \[0, 1\), got nan"),
        ("algorithm", "fft", "unknown algorithm 'fft'"),
        ("model", "vgg", "unknown model 'vgg'"),
        ("dataset", "cifar", "unknown dataset 'cifar'"),
    ],
)
def test_impossible_values_are_refused_before_anything_is_written(tmp_path, field, value, match):
    with pytest.raises(ValueError, match=match):
        run(tmp_path, "bad", **{field: value})
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("name, cls", [("sgd", "SGD"), ("adam", "Adam"), ("adamw", "AdamW")])
def test_make_optimizer(name, cls):
    from convprop import optim
    from convprop.train import make_optimizer

    params = nn.Linear(2, 2, rng=0).parameters()
    opt = make_optimizer(TrainConfig(optimizer=name, lr=0.05, weight_decay=0.01), params)
    assert type(opt) is getattr(optim, cls) and opt.lr == 0.05 and opt.weight_decay == 0.01
    if name == "sgd":
        assert opt.momentum == 0.9


def test_default_run_directories_never_collide(tmp_path, monkeypatch):
    import datetime as real_datetime

    from convprop import train
    from convprop.train import TrainConfig, prepare_run_dir

    class FrozenClock(real_datetime.datetime):  # two runs started within the same second
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 11, 21, 6, 0, 0)

    monkeypatch.setattr(train, "datetime", FrozenClock)
    monkeypatch.chdir(tmp_path)
    first, second, third = (prepare_run_dir(TrainConfig()) for _ in range(3))
    assert [p.name for p in (first, second, third)] == ["20261121-060000", "20261121-060000-2", "20261121-060000-3"]
    assert all(p.is_dir() for p in (first, second, third))


def test_a_run_directory_that_cannot_be_created_is_a_config_error(tmp_path):
    from convprop.train import prepare_run_dir

    (tmp_path / "a-file").write_text("in the way")
    with pytest.raises(ConfigError, match=r"cannot create run directory .*a-file/run"):
        prepare_run_dir(TrainConfig(out_dir=str(tmp_path / "a-file" / "run")))


def test_label_smoothing_reaches_the_training_loss(tmp_path, monkeypatch):
    """--label-smoothing ε trains on the smoothed target; the test loss stays the plain cross-entropy."""
    from convprop import train

    seen = []
    original = train.cross_entropy

    def spy(logits, target, **kwargs):
        seen.append(kwargs.get("label_smoothing", 0.0))
        return original(logits, target, **kwargs)

    monkeypatch.setattr(train, "cross_entropy", spy)
    result = run(tmp_path, "smooth", epochs=1, label_smoothing=0.1)
    assert seen and set(seen) == {0.1, 0.0}  # 0.1 in every training step, 0.0 in the test evaluation
    smoothed = run(tmp_path, "plain", epochs=1)
    assert result.history[0]["train_loss"] != smoothed.history[0]["train_loss"]
    assert json.loads((result.run_dir / "metrics.json").read_text())["config"]["label_smoothing"] == 0.1


def test_an_epoch_holds_blas_to_one_thread_while_it_distorts_and_trains(tmp_path, monkeypatch):
    """The distortions' products run with BLAS held too (a spinning BLAS thread would take the core the
    next step's passes split onto); the count is restored once the epoch ends."""
    from convprop import train
    from convprop.functional import threads

    seen = []
    original = train.distort

    def spy(xb, *args, **kwargs):
        seen.append(threads._depth > 0)
        return original(xb, *args, **kwargs)

    monkeypatch.setattr(train, "distort", spy)
    run(tmp_path, "held", epochs=1)
    assert seen and all(seen) and threads._depth == 0


def test_the_default_model_is_the_recipe_that_was_chosen():
    """docs/training.md's fourth round chose 256 hidden units and no dropout for lenet; lenet-small and
    lenet-bn keep 0.1's head (dropout 0.25, 64 and 128 hidden units)."""
    from convprop import models

    def head(model):
        return [type(m).__name__ for m in model][6:], model[7].config()["out_features"]

    assert head(models.lenet(1, (28, 28), 10, rng=0)) == (["Flatten", "Linear", "ReLU", "Linear"], 256)
    assert head(models.lenet(1, (28, 28), 10, rng=0, dropout=0.25, hidden=128)) == (
        ["Flatten", "Linear", "ReLU", "Dropout", "Linear"],
        128,
    )
    assert head(models.lenet_small(1, (28, 28), 10, rng=0)) == (["Flatten", "Linear", "ReLU", "Dropout", "Linear"], 64)
    bn = models.lenet_bn(1, (28, 28), 10, rng=0)
    assert [type(m).__name__ for m in bn][-3:] == ["ReLU", "Dropout", "Linear"] and bn[-1].config()[
        "in_features"
    ] == 128
    defaults = TrainConfig()
    assert (defaults.model, defaults.epochs, defaults.batch_size, defaults.lr) == ("lenet", 20, 32, 2e-3)
    assert (defaults.label_smoothing, defaults.ema) == (0.0, 0.0)


def test_the_default_is_the_candidate_benchmarks_recipe_chose():
    """benchmarks/recipe.py's CHOSEN candidate, applied to 0.1's recipe and lenet, is convprop train's default."""
    import importlib.util
    import inspect
    from pathlib import Path

    from convprop import models

    path = Path(__file__).parents[1] / "benchmarks" / "recipe.py"
    spec = importlib.util.spec_from_file_location("recipe", path)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    chosen = dict(recipe.CANDIDATES[recipe.CHOSEN])
    lenet_options = recipe.LENET_01 | chosen.pop("lenet", {})
    defaults = TrainConfig()
    for field, value in (recipe.RECIPE_01 | chosen).items():
        assert getattr(defaults, field) == value, field
    signature = inspect.signature(models.lenet).parameters
    for option, value in lenet_options.items():
        assert signature[option].default == value, option
