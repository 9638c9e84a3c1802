"""convprop.inference: the Predictor that serves a checkpoint, and finding the latest run."""

from __future__ import annotations

import os

import numpy as np

import convprop
from convprop.inference import Predictor, latest_run
from convprop.models import build_model


def test_predictor_runs_a_float64_checkpoint(tmp_path):
    model = build_model("lenet-small", 1, (28, 28), 10, rng=0).astype(np.float64)
    convprop.save(model, tmp_path / "m.safetensors")
    predictor = Predictor(tmp_path / "m.safetensors")
    image = np.zeros((28, 28))
    image[8:20, 12:16] = 1.0
    probs = predictor.probabilities(predictor.preprocess(image))
    assert probs.dtype == np.float64 and abs(probs.sum() - 1) < 1e-12


def test_latest_run_is_the_most_recently_written(tmp_path):
    older, newer = tmp_path / "b-older", tmp_path / "a-newer"  # names sort the other way round
    for run_dir, stamp in ((older, 1_000_000), (newer, 2_000_000)):
        run_dir.mkdir()
        (run_dir / "model.safetensors").write_bytes(b"x")
        os.utime(run_dir / "model.safetensors", (stamp, stamp))
    (tmp_path / "no-checkpoint").mkdir()
    assert latest_run(tmp_path) == newer
    assert latest_run(tmp_path / "missing") is None
