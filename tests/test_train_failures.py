"""How training ends when it does not simply finish: divergence, Ctrl-C, --force over an old run, a kill.

Each test says what the run directory holds afterwards: which checkpoint, and what metrics.json says.
metrics.json is always strict JSON (no NaN/Infinity tokens).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import convprop
from convprop import train
from convprop.checkpoint import metadata
from convprop.errors import ConfigError, ConvpropError
from convprop.train import TrainConfig, TrainingDivergedError, fit

FAST = dict(dataset="digits", model="lenet-small", batch_size=64, augment=0, progress=False)


@pytest.fixture(autouse=True)
def small_digits(monkeypatch):
    """The 8×8 digits cut to 256 training and 128 test images, and no plots: these tests are about the
    checkpoint and metrics.json, not accuracy or pictures."""
    real = train.data.load_dataset

    def load(name, **kwargs):
        d = real(name, **kwargs)
        if name != "digits":
            return d
        return dataclasses.replace(
            d,
            train_images=d.train_images[:256],
            train_labels=d.train_labels[:256],
            test_images=d.test_images[:128],
            test_labels=d.test_labels[:128],
        )

    monkeypatch.setattr(train.data, "load_dataset", load)
    monkeypatch.setattr(train, "write_plots", lambda *args: [])  # the plots have their own tests


def run(tmp_path, name="run", **overrides):
    return fit(TrainConfig(**(FAST | overrides), out_dir=str(tmp_path / name)), log=lambda line: None)


def strict_json(path):
    def refuse(token):
        raise AssertionError(f"{path.name} holds the non-JSON token {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture
def poison_from_epoch(monkeypatch):
    """``poison_from_epoch(k)``: from epoch k on, every training loss is NaN (the weights stay finite)."""

    def arm(first_bad_epoch: int) -> None:
        state = {"epoch": 0}
        real_epoch, real_loss = train.train_epoch, train.cross_entropy

        def counting_epoch(*args, **kwargs):
            state["epoch"] += 1
            return real_epoch(*args, **kwargs)

        def loss(logits, target, **kwargs):
            value, grad = real_loss(logits, target, **kwargs)
            return (np.asarray(np.nan), grad) if state["epoch"] >= first_bad_epoch else (value, grad)

        monkeypatch.setattr(train, "train_epoch", counting_epoch)
        monkeypatch.setattr(train, "cross_entropy", loss)

    return arm


def test_a_huge_learning_rate_stops_with_an_error_naming_epoch_and_step(tmp_path):
    with pytest.raises(TrainingDivergedError, match=r"diverged at epoch 1, step \d+: the training loss is") as info:
        run(tmp_path, epochs=3, optimizer="sgd", lr=1e30)
    error = info.value
    assert isinstance(error, ConvpropError) and isinstance(error, ConfigError)
    assert error.epoch == 1 and error.step >= 1 and error.checkpoint is None
    assert "no checkpoint was written" in str(error) and "smaller --lr (it was 1e+30)" in str(error)
    out = tmp_path / "run"
    assert not (out / "model.safetensors").exists()
    metrics = strict_json(out / "metrics.json")
    assert metrics["status"] == "diverged" and metrics["epochs"] == [] and metrics["test"] is None


def test_divergence_keeps_the_last_finite_checkpoint(tmp_path, poison_from_epoch):
    poison_from_epoch(2)
    with pytest.raises(TrainingDivergedError, match=r"at epoch 2, step 1: .*checkpoint of epoch 1 is kept") as info:
        run(tmp_path, epochs=3)
    out = tmp_path / "run"
    assert info.value.checkpoint == out / "model.safetensors"
    assert metadata(out / "model.safetensors")["epoch"] == "1"
    model = convprop.load(out / "model.safetensors")
    assert all(np.isfinite(p.data).all() for p in model.parameters())
    metrics = strict_json(out / "metrics.json")
    assert metrics["status"] == "diverged" and [e["epoch"] for e in metrics["epochs"]] == [1]
    assert 0 <= metrics["test"]["accuracy"] <= 1  # evaluated with the kept weights


def test_non_finite_weights_after_an_epoch_are_never_saved(tmp_path, monkeypatch):
    real_epoch = train.train_epoch
    calls = []

    def epoch_then_blow_up(model, *args, **kwargs):
        result = real_epoch(model, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            model.parameters()[0].data[...] = np.inf  # as an overflowing update would leave it
        return result

    monkeypatch.setattr(train, "train_epoch", epoch_then_blow_up)
    with pytest.raises(TrainingDivergedError, match=r"at the end of epoch 2: parameter .* non-finite value"):
        run(tmp_path, epochs=3)
    assert metadata(tmp_path / "run" / "model.safetensors")["epoch"] == "1"


def test_non_finite_numbers_in_metrics_are_written_as_null(tmp_path, monkeypatch):
    real_evaluate = train.evaluate

    def infinite_accuracy(*args, **kwargs):  # finite loss, a NaN elsewhere in the record
        result = real_evaluate(*args, **kwargs)
        result.accuracy = float("nan")
        return result

    monkeypatch.setattr(train, "evaluate", infinite_accuracy)
    run(tmp_path, epochs=1)
    metrics = strict_json(tmp_path / "run" / "metrics.json")
    assert metrics["epochs"][0]["test_accuracy"] is None and metrics["test"]["accuracy"] is None


def test_a_running_run_says_so_in_its_metrics(tmp_path, monkeypatch):
    """What a kill -9 during training would leave: status "running", never "finished"."""
    seen = []
    real_epoch = train.train_epoch

    def look(*args, **kwargs):
        seen.append(strict_json(tmp_path / "run" / "metrics.json")["status"])
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train, "train_epoch", look)
    result = run(tmp_path, epochs=2)
    assert seen == ["running", "running"]
    assert result.status == "finished" and strict_json(tmp_path / "run" / "metrics.json")["status"] == "finished"


def test_ctrl_c_early_in_a_force_rerun_does_not_mix_in_the_old_checkpoint(tmp_path, monkeypatch):
    run(tmp_path, epochs=1)  # the earlier run: a checkpoint of its epoch 1
    (tmp_path / "run" / "notes.txt").write_text("mine")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train_epoch", interrupted)
    result = run(tmp_path, epochs=1, force=True, seed=5)
    assert result.interrupted and result.status == "interrupted" and result.history == []
    out = tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "notes.txt"]  # the old run's files are gone
    metrics = strict_json(out / "metrics.json")
    assert metrics["status"] == "interrupted" and metrics["interrupted"] is True and metrics["epochs"] == []
    assert metrics["config"]["seed"] == 5


def test_ctrl_c_between_saving_and_recording_an_epoch_keeps_that_epoch(tmp_path, monkeypatch):
    real_save = train.checkpoint.save

    def save_then_interrupt(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train.checkpoint, "save", save_then_interrupt)
    result = run(tmp_path, epochs=3)
    assert result.interrupted and [h["epoch"] for h in result.history] == [1]
    assert strict_json(tmp_path / "run" / "metrics.json")["epochs"][0]["epoch"] == 1


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (dict(lr=float("nan")), ConfigError, "lr must be finite, got nan"),
        (dict(lr=float("inf")), ConfigError, "lr must be finite, got inf"),
        (dict(weight_decay=float("nan")), ConfigError, "weight_decay must be finite, got nan"),
        (dict(lr="0.1"), ConvpropError, "lr must be a real number, got '0.1'"),
        (dict(seed=-1), ConfigError, "seed must be an integer >= 0, got -1"),
        (dict(dataset="mnist", data_dir="no-such-folder"), ConvpropError, "data_dir no-such-folder does not exist"),
    ],
)
def test_a_refused_run_leaves_no_directory(tmp_path, overrides, error, match):
    with pytest.raises(error, match=match):
        run(tmp_path, "refused", **overrides)
    assert not (tmp_path / "refused").exists()


def test_an_out_dir_that_is_a_file_is_refused_before_anything_else(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        run(tmp_path, "file")
    assert (tmp_path / "file").read_text() == "x"


def test_divergence_through_the_cli_is_one_error_line_and_exit_code_2(tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "cli"
    args = ["train", "--dataset", "digits", "--model", "lenet-small", "--optimizer", "sgd", "--lr", "1e30"]
    result = subprocess.run(
        [sys.executable, "-m", "convprop", *args, "--epochs", "2", "--out-dir", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("CONVPROP_")},
    )
    assert result.returncode == 2, result
    assert result.stderr.startswith("convprop: error: training diverged at epoch 1, step ")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr  # no NumPy warnings
    assert strict_json(out / "metrics.json")["status"] == "diverged"
    assert not (out / "model.safetensors").exists()
