"""Figures (convprop.plots): each writes a valid, small PNG atomically and rejects bad shapes."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convprop import plots
from convprop.data import FASHION_CLASSES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RNG = np.random.default_rng(0)
HISTORY = [
    {"epoch": e, "train_loss": 2.3 / e, "test_loss": 2.4 / e, "train_accuracy": 1 - 0.5 / e,
     "test_accuracy": 1 - 0.6 / e}
    for e in range(1, 6)
]  # fmt: skip
CONFUSION = RNG.integers(0, 50, size=(10, 10)) + 400 * np.eye(10, dtype=np.int64)
CLASSES = [str(d) for d in range(10)]


def assert_png(path: Path, returned: Path) -> None:
    assert returned == path
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as img:
        img.verify()
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
    assert 150 <= width <= 1200 and 100 <= height <= 1200, img.size  # small enough for the README
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left behind


# one row per figure: (name, call with a path)
FIGURES = {
    "learning_curves": lambda p: plots.plot_learning_curves(HISTORY, p),
    "confusion_matrix": lambda p: plots.plot_confusion_matrix(CONFUSION, CLASSES, p),
    "confusion_fashion": lambda p: plots.plot_confusion_matrix(CONFUSION, FASHION_CLASSES, p),  # slanted labels
    "filters_gray": lambda p: plots.plot_filters(RNG.normal(size=(8, 1, 5, 5)), p),
    "filters_rgb": lambda p: plots.plot_filters(RNG.normal(size=(6, 3, 3, 3)), p),
    "filters_one": lambda p: plots.plot_filters(RNG.normal(size=(1, 1, 3, 3)), p),
    "feature_maps": lambda p: plots.plot_feature_maps(
        RNG.uniform(size=(28, 28)),
        [("conv1", RNG.normal(size=(8, 28, 28))), ("conv2", RNG.normal(size=(16, 14, 14)))],
        p,
    ),
    "feature_maps_batched": lambda p: plots.plot_feature_maps(
        RNG.uniform(size=(1, 28, 28)), [("conv1", RNG.normal(size=(1, 3, 24, 24)))], p
    ),
    "worst": lambda p: plots.plot_worst(
        RNG.uniform(size=(12, 1, 28, 28)),
        np.arange(12) % 10,
        (np.arange(12) + 3) % 10,
        RNG.uniform(size=12),
        CLASSES,
        p,
    ),
    "feature_maps_none": lambda p: plots.plot_feature_maps(RNG.uniform(size=(28, 28)), [], p),  # no conv layers
    "worst_one": lambda p: plots.plot_worst(RNG.uniform(size=(1, 8, 8)), [4], [9], [0.97], CLASSES, p),
}


@pytest.mark.parametrize("suffix", [".jpg", ".pdf", ".png.tmp", ""])
@pytest.mark.parametrize("name", ["learning_curves", "confusion_matrix", "filters_gray", "feature_maps", "worst"])
def test_an_extension_other_than_png_is_refused_before_anything_is_written(tmp_path, name, suffix):
    from convprop.errors import ArgumentError

    path = tmp_path / f"{name}{suffix}"
    with pytest.raises(ArgumentError, match=r"cannot write a PNG plot to .*: it has .*, expected '\.png'"):
        FIGURES[name](path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", FIGURES)
def test_writes_a_small_valid_png(tmp_path, name):
    path = tmp_path / f"{name}.png"
    assert_png(path, FIGURES[name](path))


@pytest.mark.parametrize("name", ["learning_curves", "filters_gray"])
def test_existing_file_is_replaced_atomically(tmp_path, name):
    path = tmp_path / f"{name}.png"
    path.write_bytes(b"old contents")
    assert_png(path, FIGURES[name](str(path)))  # str paths work too


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "curves.png"
    path.write_bytes(b"old contents")

    def broken_draw(self, *args, **kwargs):
        raise RuntimeError("renderer crashed")

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    monkeypatch.setattr(FigureCanvasAgg, "draw", broken_draw)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        plots.plot_learning_curves(HISTORY, path)
    assert path.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: plots.plot_learning_curves([], p), "empty"),
        (lambda p: plots.plot_learning_curves([{"epoch": 1, "train_loss": 1.0}], p), "missing keys"),
        (lambda p: plots.plot_confusion_matrix(np.zeros((3, 4), int), ["a", "b", "c"], p), r"\(3, 4\)"),
        (lambda p: plots.plot_confusion_matrix(np.zeros((3, 3), int), ["a", "b"], p), r"\(3, 3\).*2 class"),
        (lambda p: plots.plot_confusion_matrix(-np.ones((2, 2), int), ["a", "b"], p), "non-negative"),
        (lambda p: plots.plot_filters(np.zeros((8, 5, 5)), p), r"\(O, C, KH, KW\).*\(8, 5, 5\)"),
        (lambda p: plots.plot_filters(np.zeros((0, 1, 3, 3)), p), "empty"),
        (lambda p: plots.plot_feature_maps(np.zeros((2, 28, 28)), [("c", np.zeros((1, 4, 4)))], p), r"\(2, 28, 28\)"),
        (lambda p: plots.plot_feature_maps(np.zeros((28, 28)), [("conv1", np.zeros((4, 4)))], p), r"conv1.*\(4, 4\)"),
        (lambda p: plots.plot_feature_maps(np.zeros((28, 28)), [np.zeros((1, 4, 4))], p), "pair"),
        (
            lambda p: plots.plot_worst(np.zeros((3, 2, 8, 8)), [0] * 3, [1] * 3, [0.5] * 3, CLASSES, p),
            r"\(3, 2, 8, 8\)",
        ),
        (
            lambda p: plots.plot_worst(np.zeros((3, 8, 8)), [0] * 2, [1] * 3, [0.5] * 3, CLASSES, p),
            r"true_labels.*\(2,\)",
        ),
        (lambda p: plots.plot_worst(np.zeros((3, 8, 8)), [0] * 3, [10] * 3, [0.5] * 3, CLASSES, p), r"\[0, 10\)"),
        (lambda p: plots.plot_worst(np.zeros((0, 8, 8)), [], [], [], CLASSES, p), "empty"),
    ],
    ids=[
        "history-empty",
        "history-keys",
        "cm-not-square",
        "cm-classes",
        "cm-negative",
        "filters-3d",
        "filters-empty",
        "fm-image",
        "fm-map",
        "fm-pair",
        "worst-channels",
        "worst-labels",
        "worst-range",
        "worst-empty",
    ],
)
def test_bad_inputs_raise_before_writing(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


BAD_TYPES = [  # (call, message): wrong kinds of value, quoted plainly (no "not iterable", no NumPy message)
    (lambda p: plots.plot_learning_curves([1, 2], p), r"history\[0\] must be a dict with keys"),
    (lambda p: plots.plot_learning_curves("abc", p), "history must be a list of per-epoch dicts, got str"),
    (
        lambda p: plots.plot_learning_curves([{**HISTORY[0], "train_loss": "x"}], p),
        "history's 'train_loss' values must be an array of numbers",
    ),
    (lambda p: plots.plot_filters([["a"]], p), "weight must be an array of numbers, got list"),
    (
        lambda p: plots.plot_feature_maps(np.zeros((8, 8)), 5, p),
        r"maps must be a list of \(label, array\) pairs",
    ),
    (lambda p: plots.plot_feature_maps(np.zeros((8, 8)), [("c", "x")], p), r"maps\[0\] \('c'\) must be an array"),
    (lambda p: plots.plot_worst(np.zeros((1, 8, 8)), [0], [0], [0.5], 5, p), "classes must be a list of class names"),
    (lambda p: plots.plot_worst(np.zeros((1, 8, 8)), [0.5], [0], [0.5], CLASSES, p), "true_labels must hold integer"),
]


@pytest.mark.parametrize(("call", "message"), BAD_TYPES)
def test_values_of_the_wrong_kind_are_refused_plainly(tmp_path, call, message):
    from convprop.errors import ArgumentTypeError

    with pytest.raises(ArgumentTypeError, match=message):
        call(tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_heatmap_png():
    data = plots.heatmap_png(np.arange(12.0).reshape(3, 4), scale=5)
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (20, 15)
    assert plots.heatmap_png(np.zeros((2, 2)), symmetric=True, cmap="RdBu_r").startswith(PNG_SIGNATURE)
    with pytest.raises(ValueError, match=r"\(H, W\).*\(2, 2, 2\)"):
        plots.heatmap_png(np.zeros((2, 2, 2)))


def test_importing_plots_does_not_import_matplotlib():
    code = "import sys, convprop.plots; assert 'matplotlib' not in sys.modules, 'imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True)


def _margins(path: Path) -> tuple[int, int, int, int]:
    """Background pixels (white) before the first drawn pixel from the top, bottom, left and right."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    ink = (rgb != 255).any(axis=2)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return rows[0], len(ink) - 1 - rows[-1], cols[0], ink.shape[1] - 1 - cols[-1]


def test_empty_margins_are_trimmed_to_a_tenth_of_an_inch(tmp_path):
    """One draw, then the figure's empty background is cut to MARGIN_PX on every side."""
    path = plots.plot_confusion_matrix(np.eye(3, dtype=int) * 5, ["a", "b", "c"], tmp_path / "c.png")
    assert all(m == plots.MARGIN_PX for m in _margins(path))
    assert Image.open(path).size < (plots.DPI * 6, plots.DPI * 6)  # smaller than the figure drawn


def test_a_label_reaching_past_the_figure_is_kept_whole(tmp_path, monkeypatch):
    """Long class names make the titles of the worst digits reach the figure's edge: matplotlib then
    measures the whole drawing (bbox_inches="tight") instead of the pixels being cropped."""
    calls = []
    savefig = plots._new_figure(1, 1).savefig.__func__

    def spy(fig, *args, **kwargs):
        calls.append(kwargs.get("bbox_inches"))
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr("matplotlib.figure.Figure.savefig", spy)
    images, true, predicted = np.zeros((16, 28, 28)), np.arange(16) % 10, 9 - np.arange(16) % 10
    path = plots.plot_worst(images, true, predicted, [0.9] * 16, list(FASHION_CLASSES), tmp_path / "w.png")
    assert calls == ["tight"]
    assert min(_margins(path)) > 0  # nothing cut off at any edge
    calls.clear()
    plots.plot_worst(images, true, predicted, [0.9] * 16, [str(i) for i in range(10)], tmp_path / "d.png")
    assert calls == []  # short labels: one draw, cropped
