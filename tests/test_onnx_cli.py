"""The command line with ONNX: ``convprop export RUN_OR_CHECKPOINT OUT.onnx``, and an ``.onnx`` model accepted
by evaluate, predict, inspect and serve (through ``Predictor``), with the run's metadata carried along."""

from __future__ import annotations

import json

import numpy as np
import pytest
from digit_images import render_digit

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from convprop import checkpoint, cli, models  # noqa: E402
from convprop.inference import Predictor  # noqa: E402

META = {
    "classes": json.dumps([str(d) for d in range(10)]),
    "image_size": "[8, 8]",
    "normalization": json.dumps({"mean": [0.3], "std": [0.4]}),
    "dataset": "digits",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory with a (briefly initialised, untrained) checkpoint of the 8×8 digits model."""
    out = tmp_path_factory.mktemp("run")
    checkpoint.save(models.lenet_small(1, (8, 8), 10, rng=0), out / "model.safetensors", metadata=META)
    return out


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "digits.onnx"
    assert cli.main(["export", str(run_dir), str(out)]) == 0
    return out


def test_export_writes_a_file_onnx_runtime_runs(run_dir, exported, capsys):
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x})
    expected = checkpoint.load(run_dir / "model.safetensors").forward(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_the_run_metadata_travels_with_the_model(exported):
    import onnx

    props = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert props == META


def test_predictor_reads_an_onnx_model_like_a_checkpoint(run_dir, exported):
    ours, theirs = Predictor(run_dir), Predictor(exported)
    assert theirs.classes == ours.classes and theirs.image_size == (8, 8) and theirs.dataset == "digits"
    image = ours.preprocess(render_digit(3))
    np.testing.assert_allclose(theirs.probabilities(image), ours.probabilities(image), rtol=1e-5, atol=1e-7)
    assert len(theirs.feature_maps(image)) == 2  # inspect and serve draw both convolutions
    assert theirs.first_layer_filters().shape == (8, 1, 3, 3)


def test_predict_and_evaluate_accept_an_onnx_file(exported, tmp_path, capsys):
    digit = tmp_path / "seven.png"
    render_digit(7, digit)
    assert cli.main(["predict", str(exported), str(digit), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result[0]["image"] == str(digit) and len(result[0]["top"]) == 3
    assert cli.main(["evaluate", str(exported)]) == 0
    assert "digits test split" in capsys.readouterr().out


def test_inspect_accepts_an_onnx_file(exported, tmp_path):
    digit = tmp_path / "two.png"
    render_digit(2, digit)
    assert cli.main(["inspect", str(exported), str(digit), "--out", str(tmp_path / "maps.png")]) == 0
    assert (tmp_path / "maps.png").stat().st_size > 0


def test_export_refuses_to_overwrite_and_names_bad_opsets(run_dir, exported, capsys):
    assert cli.main(["export", str(run_dir), str(exported)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert cli.main(["export", str(run_dir), str(exported.with_name("x.onnx")), "--opset", "9"]) == 2
    assert "opset must be an int from 13" in capsys.readouterr().err
    assert cli.main(["export", str(run_dir), str(exported.parent / "missing" / "x.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_broken_onnx_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    render_digit(1, tmp_path / "one.png")
    assert cli.main(["predict", str(bad), str(tmp_path / "one.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convprop: error: ") and "not a valid ONNX file" in err and err.count("\n") == 1
