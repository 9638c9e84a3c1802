"""Checkpoints: safetensors files that round-trip, move to and from PyTorch, and fail cleanly."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as np_save_file
from safetensors.torch import load_file, save_file

import convprop
from convprop import nn
from convprop.checkpoint import CheckpointError


def model_pair(dtype=np.float32):
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding="same", rng=0, dtype=dtype),
        nn.BatchNorm2d(4, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, groups=2, padding_mode="reflect", padding=1, rng=1, dtype=dtype),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(16, 10, rng=2, dtype=dtype),
    )
    torch_model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding="same"),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 4, 3, groups=2, padding_mode="reflect", padding=1),
        torch.nn.Tanh(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.25),
        torch.nn.Linear(16, 10),
    )
    return model, torch_model


def trained_a_little(model):
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(model.parameters()[0].data.dtype)
    model.train()
    model(x)  # updates BatchNorm's running statistics, so buffers are non-trivial
    return model.eval()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_rebuilds_the_model(tmp_path, dtype):
    model = trained_a_little(model_pair(dtype)[0])
    path = convprop.save(model, tmp_path / "m.safetensors", metadata={"note": "hello"})
    loaded = convprop.load(path)
    assert repr(loaded) == repr(model)
    assert loaded.parameters()[0].data.dtype == dtype
    x = np.random.default_rng(1).standard_normal((3, 1, 8, 8)).astype(dtype)
    np.testing.assert_array_equal(loaded(x), model(x))
    assert convprop.checkpoint.metadata(path)["note"] == "hello"
    assert not loaded.training


def test_convprop_checkpoint_loads_into_torch(tmp_path):
    model, torch_model = model_pair()
    model = trained_a_little(model)
    convprop.save(model, tmp_path / "m.safetensors")
    torch_model.load_state_dict(load_file(tmp_path / "m.safetensors"))  # strict: every key and shape fits
    torch_model.eval()
    x = np.random.default_rng(2).standard_normal((3, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = torch_model(torch.tensor(x)).numpy()
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-6)


def test_torch_checkpoint_loads_into_convprop(tmp_path):
    model, torch_model = model_pair()
    torch.manual_seed(0)
    torch_model.train()
    torch_model(torch.randn(4, 1, 8, 8))  # non-trivial running statistics
    torch_model.eval()
    save_file(torch_model.state_dict(), tmp_path / "t.safetensors")
    with pytest.raises(CheckpointError, match="no convprop architecture metadata"):
        convprop.load(tmp_path / "t.safetensors")
    loaded = convprop.load(tmp_path / "t.safetensors", model=model)
    x = np.random.default_rng(3).standard_normal((3, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = torch_model(torch.tensor(x)).numpy()
    np.testing.assert_allclose(loaded(x), expected, rtol=1e-5, atol=1e-6)


def test_write_is_atomic(tmp_path, monkeypatch):
    model = model_pair()[0]
    path = convprop.save(model, tmp_path / "m.safetensors")
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        convprop.save(nn.Sequential(nn.Linear(2, 2)), path)
    assert path.read_bytes() == before  # the old checkpoint is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temporary left behind


def test_truncated_corrupted_and_foreign_files(tmp_path):
    model = model_pair()[0]
    good = convprop.save(model, tmp_path / "good.safetensors").read_bytes()
    cases = {
        "empty": b"",
        "tiny": b"\x01\x02",
        "truncated": good[: len(good) // 2],
        "bad-header-length": (10**9).to_bytes(8, "little") + good[8:],
        "garbage-header": len(b"{not json").to_bytes(8, "little") + b"{not json",
        "pickle": b"\x80\x04\x95" + b"\x00" * 64,  # a pickle stream is never unpickled, just rejected
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=rf"{name}' (is not a safetensors file|is truncated|is corrupted)"):
            convprop.load(tmp_path / name)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        convprop.load(tmp_path / "missing.safetensors")


def test_checkpoints_that_lie_about_their_architecture(tmp_path):
    tensors = {"0.weight": np.zeros((2, 3), np.float32)}

    def write(arch, **extra):
        meta = {"format": "convprop", "format_version": "1", "architecture": arch} | extra
        np_save_file(tensors, tmp_path / "x.safetensors", metadata=meta)
        return tmp_path / "x.safetensors"

    with pytest.raises(CheckpointError, match=r"unknown layer type 'os\.system'"):
        convprop.load(write(json.dumps({"type": "Sequential", "layers": [{"type": "os.system", "config": {}}]})))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        convprop.load(write("{"))
    with pytest.raises(CheckpointError, match="cannot rebuild Linear"):
        convprop.load(write(json.dumps({"type": "Linear", "config": {"in_features": -1, "out_features": 2}})))
    linear = {"type": "Linear", "config": {"in_features": 4, "out_features": 2, "bias": False}}
    with pytest.raises(
        CheckpointError, match=r"state_dict\['0.weight'\] has shape \(2, 3\), the model expects \(2, 4\)"
    ):
        convprop.load(write(json.dumps({"type": "Sequential", "layers": [linear]})))
    with pytest.raises(CheckpointError, match=r"missing keys \['0.bias'\]"):
        convprop.load(
            write(
                json.dumps({"type": "Sequential", "layers": [linear | {"config": linear["config"] | {"bias": True}}]})
            )
        )
    with pytest.raises(CheckpointError, match="format version '99'"):
        convprop.load(write("{}", format_version="99"))


def test_save_rejects_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="needs a convprop Module, got dict"):
        convprop.save({}, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        convprop.save(nn.Linear(2, 2), tmp_path / "nowhere" / "m.safetensors")
    with pytest.raises(TypeError, match="metadata must map strings to strings"):
        convprop.save(nn.Linear(2, 2), tmp_path / "m.safetensors", metadata={"epochs": 3})


def test_saved_files_get_ordinary_permissions(tmp_path):
    """Atomic writes go through a private temporary file, but the result is readable like any file."""
    mask = os.umask(0)
    os.umask(mask)
    path = convprop.save(nn.Sequential(nn.Linear(2, 2, rng=0)), tmp_path / "m.safetensors")
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_numpy_integer_arguments_still_make_a_savable_model(tmp_path):
    model = nn.Sequential(nn.Conv2d(np.int64(1), np.int64(2), np.int64(3), padding=np.int64(1), groups=np.int64(1)))
    path = convprop.save(model, tmp_path / "m.safetensors")
    assert repr(convprop.load(path)) == repr(model)


def test_checkpoint_with_a_bad_dtype_is_a_checkpoint_error(tmp_path):
    arch = json.dumps(
        {"type": "Sequential", "layers": [{"type": "Linear", "config": {"in_features": 2, "out_features": 2}}]}
    )
    meta = {"format": "convprop", "format_version": "1", "architecture": arch, "dtype": "nonsense"}
    np_save_file(
        {"0.weight": np.zeros((2, 2), np.float32), "0.bias": np.zeros(2, np.float32)},
        tmp_path / "x.safetensors",
        metadata=meta,
    )
    with pytest.raises(CheckpointError, match="dtype metadata must be 'float32' or 'float64', got 'nonsense'"):
        convprop.load(tmp_path / "x.safetensors")


@pytest.mark.parametrize("name", ["model.pt", "model.json", "model", "model.safetensors.tmp"])
def test_save_refuses_a_name_that_is_not_safetensors(tmp_path, name):
    model = nn.Sequential(nn.Linear(2, 2, rng=0))
    with pytest.raises(convprop.errors.ArgumentError, match=r"cannot write a checkpoint to .*expected '\.safetensors'"):
        convprop.save(model, tmp_path / name)
    assert list(tmp_path.iterdir()) == []  # nothing written under the wrong name
