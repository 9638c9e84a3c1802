"""``convprop explain``: one figure per image, written atomically; user mistakes are one line and exit 2."""

from __future__ import annotations

import json

import pytest
from digit_images import render_digit
from PIL import Image
from test_serve import save_untrained

from convprop import checkpoint, nn
from convprop.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("run")
    save_untrained(directory)
    return directory


@pytest.fixture
def seven(tmp_path):
    path = tmp_path / "seven.png"
    render_digit(7, path)
    return path


def test_explain_writes_one_figure(run_dir, seven, capsys):
    assert main(["explain", str(run_dir), str(seven)]) == 0
    out = seven.with_name("seven_explain.png")
    printed = capsys.readouterr().out
    assert f"figure written to {out}" in printed and "predicted" in printed
    with Image.open(out) as figure:
        assert figure.format == "PNG" and figure.width > 800 and figure.height > 400
    assert not list(out.parent.glob("*.tmp*"))  # written atomically: no temporary file left behind


def test_explain_another_class_and_refuse_to_overwrite(run_dir, seven, tmp_path, capsys):
    out = tmp_path / "why_one.png"
    assert main(["explain", str(run_dir), str(seven), "--target", "1", "--out", str(out)]) == 0
    assert "explained class 1" in capsys.readouterr().out
    assert main(["explain", str(run_dir), str(seven), "--out", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["explain", str(run_dir), str(seven), "--out", str(out), "--force"]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "10"], "convprop: error: target 10 is out of range: the model has 10 classes (0..9)"),
        (["--target", "-1"], "convprop: error: target -1 is out of range"),
    ],
)
def test_explain_refuses_a_bad_target(run_dir, seven, args, message, capsys):
    assert main(["explain", str(run_dir), str(seven), *args]) == 2
    assert message in capsys.readouterr().err


def test_explain_a_model_without_a_convolution(tmp_path, seven, capsys):
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10, rng=0))
    meta = {"classes": json.dumps([str(d) for d in range(10)]), "image_size": "[28, 28]"}
    ckpt = checkpoint.save(model, tmp_path / "model.safetensors", metadata=meta)
    assert main(["explain", str(ckpt), str(seven), "--out", str(tmp_path / "linear.png")]) == 0
    assert (tmp_path / "linear.png").stat().st_size > 1000
