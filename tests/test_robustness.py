"""The robustness report (convprop.robustness, `convprop evaluate RUN --robustness`) on a tiny trained model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convprop import cli, robustness, save
from convprop.data import FASHION_CLASSES, Normalization, load_dataset, warp_affine
from convprop.errors import ArgumentError
from convprop.inference import Predictor
from convprop.models import build_model
from convprop.robustness import FONTS, VariantResult, format_table, render_font_digits, robustness_report
from convprop.train import TrainConfig, evaluate, fit, make_optimizer, train_epoch

TWO_FONTS = FONTS[:2]  # Pillow's own and DejaVu Sans: enough to exercise the font rows quickly


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """lenet-small, one epoch on 2,000 mnist-5k digits: a real (if weak) digit recogniser, trained in a second.

    Saved with the metadata ``convprop train`` writes (classes, image size, normalisation), without its plots.
    """
    out = tmp_path_factory.mktemp("robust") / "run"
    out.mkdir()
    dataset = load_dataset()
    norm = Normalization.fit(dataset.train_images)
    model = build_model("lenet-small", 1, (28, 28), 10, rng=0)
    config = TrainConfig(model="lenet-small", epochs=1, lr=3e-3, augment=0, progress=False)
    x, y = norm(dataset.train_images[:2000]), dataset.train_labels[:2000]
    train_epoch(model, make_optimizer(config, model.parameters()), x, y, config, np.random.default_rng(0), "")
    meta = {
        "dataset": "mnist-5k",
        "classes": json.dumps(list(dataset.classes)),
        "image_size": json.dumps([28, 28]),
        "normalization": json.dumps({"mean": norm.mean, "std": norm.std}),
    }
    save(model, out / "model.safetensors", metadata=meta)
    return out


@pytest.fixture(scope="module")
def predictor(tiny_run) -> Predictor:
    return Predictor(tiny_run)


@pytest.fixture(scope="module")
def test_digits() -> tuple[np.ndarray, np.ndarray]:
    dataset = load_dataset()
    return dataset.test_images[:200], dataset.test_labels[:200]


@pytest.fixture(scope="module")
def rows(predictor, test_digits) -> list[VariantResult]:
    return robustness_report(predictor, *test_digits, fonts=TWO_FONTS)


EXPECTED_ROWS = [
    ("original", "test digits", 200),
    ("rotation", "rotated -20°", 200),
    ("rotation", "rotated -10°", 200),
    ("rotation", "rotated +10°", 200),
    ("rotation", "rotated +20°", 200),
    ("stroke", "thickened 1 px (cross)", 200),
    ("stroke", "thinned 1 px (cross)", 200),
    ("stroke", "thickened 1 px (3×3)", 200),
    ("stroke", "thinned 1 px (3×3)", 200),
    ("shift", "shifted 2 px up", 200),
    ("shift", "shifted 2 px down", 200),
    ("shift", "shifted 2 px left", 200),
    ("shift", "shifted 2 px right", 200),
    ("font", "Pillow default", 30),
    ("font", "DejaVu Sans", 30),
    ("font", "all 2 fonts", 60),
]


def test_report_has_one_row_per_variant(rows):
    assert [(r.group, r.name, r.images) for r in rows] == EXPECTED_ROWS
    assert all(0 <= r.correct <= r.images for r in rows)
    assert rows[-1].correct == rows[-2].correct + rows[-3].correct  # the font total adds the fonts up


def test_original_row_is_the_plain_test_accuracy(rows, predictor, test_digits):
    images, labels = test_digits
    plain = evaluate(predictor.model, predictor.normalization(images), labels).accuracy
    assert rows[0].accuracy == plain
    assert plain > 0.6  # a real (if tiny) recogniser, so a drop under a variant means something


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("rotated +10°", lambda x: warp_affine(x, rotation=10.0)),
        ("rotated -20°", lambda x: warp_affine(x, rotation=-20.0)),
        ("shifted 2 px right", lambda x: np.pad(x, ((0, 0), (0, 0), (0, 0), (2, 0)))[..., :-2]),
        ("shifted 2 px up", lambda x: np.pad(x, ((0, 0), (0, 0), (0, 2), (0, 0)))[..., 2:, :]),
    ],
)
def test_variants_are_what_their_names_say(name, expected):
    x = np.random.default_rng(0).random((3, 1, 12, 12)).astype(np.float32)
    transform = {n: t for _, n, t in robustness.image_variants()}[name]
    np.testing.assert_allclose(transform(x), expected(x), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "lit", "ink"),
    [
        ("thickened 1 px (cross)", [(1, 3), (1, 5), (2, 2), (6, 6), (7, 4)], 7 * 5 - 4),  # edges out, corners not
        ("thickened 1 px (3×3)", [(1, 2), (1, 6), (7, 2), (7, 6)], 7 * 5),  # the diagonal corners too
        ("thinned 1 px (cross)", [(3, 4), (4, 4), (5, 4)], 3),
        ("thinned 1 px (3×3)", [(3, 4), (4, 4), (5, 4)], 3),
    ],
)
def test_thickening_and_thinning_move_each_stroke_edge_by_one_pixel(name, lit, ink):
    x = np.zeros((1, 1, 9, 9), dtype=np.float32)
    x[0, 0, 2:7, 3:6] = 1.0  # a 5 × 3 bar, rows 2..6, columns 3..5
    out = {n: t for _, n, t in robustness.image_variants()}[name](x)[0, 0]
    assert all(out[p] == 1 for p in lit)
    assert out.sum() == ink and set(np.unique(out)) <= {0.0, 1.0}


def test_font_digits_are_prepared_like_a_users_image(predictor):
    images, labels = render_font_digits(predictor, "DejaVuSans.ttf")
    assert images.shape == (30, 1, 28, 28) and images.dtype == np.float32
    assert labels.tolist() == list(range(10)) * 3
    assert images.min() >= 0 and images.max() == pytest.approx(1.0)
    ink = images.sum(axis=(1, 2, 3)).reshape(3, 10)  # (weights, digits)
    assert np.all(ink[0] < ink[1]) and np.all(ink[1] < ink[2])  # thin, regular, bold ink


def test_missing_font_files_are_skipped_and_other_classes_get_no_font_rows(predictor, test_digits, monkeypatch):
    images, labels = test_digits
    rows = robustness_report(predictor, images[:20], labels[:20], fonts=[("Nowhere", "no-such-font.ttf")])
    assert [r.group for r in rows].count("font") == 0
    monkeypatch.setattr(predictor, "classes", FASHION_CLASSES)
    rows = robustness_report(predictor, images[:20], labels[:20], fonts=TWO_FONTS)
    assert {r.group for r in rows} == {"original", "rotation", "stroke", "shift"}


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((4, 1, 8, 8)), np.zeros(4, int), "expected images (N, 1, 28, 28) and labels (N,), got (4, 1, 8, 8)"),
        (np.zeros((4, 1, 28, 28)), np.zeros(3, int), "got (4, 1, 28, 28) and (3,)"),
        (np.zeros((0, 1, 28, 28)), np.zeros(0, int), "no test images"),
    ],
)
def test_bad_inputs_are_rejected(predictor, images, labels, message):
    with pytest.raises(ArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        robustness_report(predictor, images, labels)


def test_table_lists_every_row_with_its_change(rows):
    table = format_table(rows).splitlines()
    assert table[0].split() == ["group", "variant", "images", "accuracy", "change"]
    assert len(table) == 1 + len(rows)
    for line, r in zip(table[1:], rows, strict=True):
        assert r.name in line and f"{100 * r.accuracy:.2f}%" in line
    rotated = next(line for line in table if "rotated +20°" in line)
    assert rotated.endswith(f"{100 * (rows[4].accuracy - rows[0].accuracy):+.2f}")


def test_evaluate_robustness_prints_the_table_and_writes_json(tiny_run, capsys, monkeypatch):
    full_report = robustness.robustness_report  # the CLI looks it up at call time: give it two fonts, for speed
    monkeypatch.setattr(robustness, "robustness_report", lambda p, x, y: full_report(p, x, y, fonts=TWO_FONTS))
    assert cli.main(["evaluate", str(tiny_run), "--robustness"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy:" in out and "rotated +10°" in out and "thinned 1 px (cross)" in out and "DejaVu Sans" in out
    report = json.loads((tiny_run / "robustness.json").read_text())
    assert report["dataset"] == "mnist-5k" and report["checkpoint"].endswith("model.safetensors")
    names = [v["name"] for v in report["variants"]]
    assert names == [name for _, name, _ in EXPECTED_ROWS]
    assert report["variants"][0]["images"] == 1000
    assert all(v["accuracy"] == v["correct"] / v["images"] for v in report["variants"])
    assert not list(tiny_run.glob(".*.tmp"))  # written atomically: no temporary file left behind


def test_evaluate_uses_the_test_split_the_model_was_trained_beside(tmp_path, capsys):
    """mnist-5k and digits are split by the training seed: with another split, "test" digits would be training ones."""
    config = TrainConfig(dataset="digits", epochs=1, seed=3, out_dir=str(tmp_path / "run"), progress=False)
    result = fit(config, log=lambda line: None)
    assert cli.main(["evaluate", str(tmp_path / "run")]) == 0
    assert f"test accuracy: {100 * result.test.accuracy:.2f}%" in capsys.readouterr().out
