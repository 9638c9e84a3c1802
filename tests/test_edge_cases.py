"""Edge cases found in review: each was a silent wrong answer, a bare error or a lost file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

import convprop
from convprop import nn
from convprop.checkpoint import CheckpointError
from convprop.functional import batch_norm, linear_backward, max_pool2d_backward


def test_max_pool_backward_rejects_indices_outside_the_plane():
    x, dy = np.zeros((1, 2, 4, 4)), np.ones((1, 2, 2, 2))
    idx = np.zeros((1, 2, 2, 2), dtype=np.int64)
    idx[0, 0, 0, 0] = 16  # one past the 4×4 plane: would land in the next channel
    with pytest.raises(ValueError, match=r"indices must lie in \[0, H·W\) = \[0, 16\).*to 16"):
        max_pool2d_backward(dy, x, 2, indices=idx)


def test_linear_param_grads_check_grad_output():
    layer = nn.Linear(4, 2, rng=0, dtype=np.float64)
    layer(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 2\), got \(3, 2\)"):
        layer.backward(np.ones((3, 2)), input_grad=False)
    with pytest.raises(TypeError, match="grad_output=float32, x=float64"):
        linear_backward(np.ones((2, 2), np.float32), np.ones((2, 4)), np.ones((2, 4)))


def test_numpy_integer_arguments_still_make_a_savable_model(tmp_path):
    model = nn.Sequential(nn.Conv2d(np.int64(1), np.int64(2), np.int64(3), padding=np.int64(1), groups=np.int64(1)))
    path = convprop.save(model, tmp_path / "m.safetensors")
    assert repr(convprop.load(path)) == repr(model)


def test_checkpoint_with_a_bad_dtype_is_a_checkpoint_error(tmp_path):
    arch = json.dumps(
        {"type": "Sequential", "layers": [{"type": "Linear", "config": {"in_features": 2, "out_features": 2}}]}
    )
    meta = {"format": "convprop", "format_version": "1", "architecture": arch, "dtype": "nonsense"}
    save_file(
        {"0.weight": np.zeros((2, 2), np.float32), "0.bias": np.zeros(2, np.float32)},
        tmp_path / "x.safetensors",
        metadata=meta,
    )
    with pytest.raises(CheckpointError, match="dtype metadata must be 'float32' or 'float64', got 'nonsense'"):
        convprop.load(tmp_path / "x.safetensors")


def test_a_failed_load_leaves_the_model_untouched():
    model = nn.Sequential(nn.Linear(2, 2, rng=0), nn.Linear(2, 3, rng=1))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    bad = {k: np.full_like(v, 7.0) for k, v in before.items()}
    bad["1.weight"] = np.zeros((9, 9), np.float32)  # the second layer does not fit
    with pytest.raises(ValueError, match=r"state_dict\['1.weight'\] has shape \(9, 9\)"):
        model.load_state_dict(bad)
    assert all(np.array_equal(model.state_dict()[k], v) for k, v in before.items())


def test_predictor_runs_a_float64_checkpoint(tmp_path):
    from convprop.inference import Predictor
    from convprop.models import build_model

    model = build_model("lenet-small", 1, (28, 28), 10, rng=0).astype(np.float64)
    convprop.save(model, tmp_path / "m.safetensors")
    predictor = Predictor(tmp_path / "m.safetensors")
    image = np.zeros((28, 28))
    image[8:20, 12:16] = 1.0
    probs = predictor.probabilities(predictor.preprocess(image))
    assert probs.dtype == np.float64 and abs(probs.sum() - 1) < 1e-12


def test_float64_eps_does_not_promote_float32_batch_norm():
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32)
    y, _, _ = batch_norm(x, None, None, None, None, training=True, eps=np.float64(1e-5))
    assert y.dtype == np.float32


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


def test_latest_run_is_the_most_recently_written(tmp_path):
    import os

    from convprop.inference import latest_run

    older, newer = tmp_path / "b-older", tmp_path / "a-newer"  # names sort the other way round
    for run_dir, stamp in ((older, 1_000_000), (newer, 2_000_000)):
        run_dir.mkdir()
        (run_dir / "model.safetensors").write_bytes(b"x")
        os.utime(run_dir / "model.safetensors", (stamp, stamp))
    (tmp_path / "no-checkpoint").mkdir()
    assert latest_run(tmp_path) == newer
    assert latest_run(tmp_path / "missing") is None
