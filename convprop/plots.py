"""Figures for the README and docs: learning curves, confusion matrix, filters, feature maps, worst digits.

Every function takes plain NumPy arrays and a path, renders a small PNG (about 100 dpi, a few hundred
pixels a side) into memory with matplotlib's Agg canvas, writes it with
:func:`convprop.fileio.write_atomic`, and returns the :class:`~pathlib.Path`. matplotlib is imported
inside the functions, never at module import, and no display is ever needed (``Figure`` +
``FigureCanvasAgg`` directly, so the global ``pyplot`` state and backend are never touched).

Inputs are validated at this boundary; a wrong shape raises ``ValueError`` quoting what was received, and
a path that does not end in ``.png`` is refused (ArgumentError) before anything is drawn or written.
What every figure shares (the figure, the trimmed PNG write, tile mosaics, those checks) is in
:mod:`convprop.plots_base`.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArgumentError, ArgumentTypeError
from .plots_base import DPI as DPI  # re-exported (`name as name`): imported from here before plots_base existed
from .plots_base import MARGIN_PX as MARGIN_PX
from .plots_base import (
    _as_images,
    _floats,
    _grid,
    _mosaic,
    _new_figure,
    _output,
    _save,
    _sequence,
    _show_mosaic,
    _tile_origin,
)

HISTORY_KEYS = ("epoch", "train_loss", "test_loss", "train_accuracy", "test_accuracy")
MAX_TILES = 64  # filters / feature maps shown per block; more would be unreadable at this size


# ---------------------------------------------------------------------------------------------------
# learning curves
# ---------------------------------------------------------------------------------------------------


def plot_learning_curves(history: Sequence[Mapping[str, float]], path: str | os.PathLike) -> Path:
    """Two panels over epochs: train/test loss, and train/test accuracy in percent.

    Args:
        history: one dict per epoch with keys ``epoch``, ``train_loss``, ``test_loss``,
            ``train_accuracy``, ``test_accuracy`` (accuracies in [0, 1]).
        path: where the PNG goes (replaced atomically if it exists).
    """
    path = _output(path)
    history = _sequence(history, "history", "per-epoch dicts")
    if not history:
        raise ArgumentError("history is empty: need at least one epoch")
    for i, row in enumerate(history):
        if not isinstance(row, Mapping):
            raise ArgumentTypeError(f"history[{i}] must be a dict with keys {list(HISTORY_KEYS)}, got {row!r:.60}")
        missing = [k for k in HISTORY_KEYS if k not in row]
        if missing:
            raise ArgumentError(f"history[{i}] is missing keys {missing}; expected {list(HISTORY_KEYS)}")
    col = {k: _floats([row[k] for row in history], f"history's {k!r} values") for k in HISTORY_KEYS}

    fig = _new_figure(8.0, 3.2)
    ax_loss, ax_acc = fig.subplots(1, 2)
    marker = "o" if len(history) <= 30 else None
    ax_loss.plot(col["epoch"], col["train_loss"], marker=marker, label="train")
    ax_loss.plot(col["epoch"], col["test_loss"], marker=marker, label="test")
    ax_loss.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    ax_acc.plot(col["epoch"], 100 * col["train_accuracy"], marker=marker, label="train")
    ax_acc.plot(col["epoch"], 100 * col["test_accuracy"], marker=marker, label="test")
    ax_acc.set(title="accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------
# confusion matrix
# ---------------------------------------------------------------------------------------------------


def plot_confusion_matrix(matrix: Any, classes: Sequence[str], path: str | os.PathLike) -> Path:
    """A K x K heat map of counts, each cell annotated; rows are true classes, columns predicted.

    Args:
        matrix: (K, K) non-negative integer counts.
        classes: K class names, in label order.
        path: where the PNG goes.
    """
    path = _output(path)
    matrix = np.asarray(matrix)
    classes = [str(c) for c in classes]
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ArgumentError(f"matrix must be square (K, K), got shape {matrix.shape}")
    if matrix.shape[0] != len(classes):
        raise ArgumentError(f"matrix is {matrix.shape} but {len(classes)} class names were given")
    if matrix.size and (not np.all(np.isfinite(matrix)) or matrix.min() < 0):
        raise ArgumentError("matrix must hold non-negative finite counts")
    k = len(classes)
    side = min(9.0, max(3.5, 0.45 * k + 1.5))
    fig = _new_figure(side + 0.8, side)
    ax = fig.subplots()
    im = ax.imshow(matrix, cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    long_names = max(map(len, classes), default=0) > 2  # e.g. Fashion-MNIST: slant the column labels
    ax.set_xticks(range(k), classes, rotation=45 if long_names else 0, ha="right" if long_names else "center")
    ax.set_yticks(range(k), classes)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    threshold = matrix.max() / 2 if matrix.size else 0
    fontsize = 8 if k <= 12 else 6
    for i in range(k):
        for j in range(k):
            value = matrix[i, j]
            text = f"{int(value)}" if float(value).is_integer() else f"{value:.2g}"
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                    color="white" if value > threshold else "black")  # fmt: skip
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------
# filters and feature maps
# ---------------------------------------------------------------------------------------------------


def plot_filters(weight: Any, path: str | os.PathLike, *, title: str = "first-layer filters") -> Path:
    """One tile per output channel of a first-layer kernel, on a diverging colour map centred at 0.

    With one input channel each tile is that kernel; with several the tile is their mean over input
    channels. Every tile shares one symmetric colour scale, so tiles are comparable.

    Shapes:
        weight: (O, C, KH, KW)

    Args:
        weight: the convolution weight (PyTorch's OIHW layout).
        path: where the PNG goes.
        title: figure title.
    """
    path = _output(path)
    weight = _floats(weight, "weight")
    if weight.ndim != 4:
        raise ArgumentError(f"weight must have shape (O, C, KH, KW), got {weight.shape}")
    if 0 in weight.shape:
        raise ArgumentError(f"weight has an empty dimension: {weight.shape}")
    tiles = weight.mean(axis=1)[:MAX_TILES]  # (O, KH, KW)
    limit = float(np.abs(tiles).max()) or 1.0
    rows, cols = _grid(len(tiles))
    fig = _new_figure(0.9 * cols + 0.8, 0.9 * rows + 0.6)
    ax = fig.add_axes((0.03, 0.04, 0.82, 0.84))
    size = tiles.shape[1:]
    gap = (max(1, round(0.45 * size[0])), max(1, round(0.2 * size[1])))  # room for each tile's number
    im = _show_mosaic(ax, _mosaic(tiles, cols, gap), "RdBu_r", vmin=-limit, vmax=limit)
    for i in range(len(tiles)):
        x, y = _tile_origin(i, cols, size, gap)
        ax.text(x + size[1] / 2, y - 0.15 * gap[0], str(i), ha="center", va="bottom", fontsize=7)
    ax.set_ylim(rows * (size[0] + gap[0]) - gap[0] - 0.5, -0.5 - gap[0])  # a title row above the first tiles
    suffix = "" if weight.shape[1] == 1 else f" (mean over {weight.shape[1]} input channels)"
    fig.suptitle(title + suffix, fontsize=9)
    fig.colorbar(im, cax=fig.add_axes((0.88, 0.1, 0.025, 0.72)))
    return _save(fig, path)


def plot_feature_maps(image: Any, maps: Sequence[tuple[str, Any]], path: str | os.PathLike,
                      *, max_channels: int = 16) -> Path:  # fmt: skip
    """The input digit, then one block of small tiles per layer showing its activation maps.

    Each tile is scaled on its own (viridis), since activations differ in range from channel to channel.

    Shapes:
        image: (H, W) or (1, H, W)
        maps[i][1]: (C, h, w) or (1, C, h, w)

    Args:
        image: the input digit.
        maps: ``(label, activations)`` pairs, one per layer, in network order; empty for a model
            without convolutions (the input is drawn with a note saying so).
        path: where the PNG goes.
        max_channels: at most this many channels are drawn per layer.
    """
    path = _output(path)
    image = _floats(image, "image")
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]  # (H, W)
    if image.ndim != 2:
        raise ArgumentError(f"image must have shape (H, W) or (1, H, W), got {image.shape}")
    blocks: list[tuple[str, np.ndarray]] = []
    for i, item in enumerate(_sequence(maps, "maps", "(label, array) pairs")):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ArgumentError(f"maps[{i}] must be a (label, array) pair, got {type(item).__name__}")
        label, arr = item
        arr = _floats(arr, f"maps[{i}] ({label!r})")
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]  # (C, h, w)
        if arr.ndim != 3 or 0 in arr.shape:
            raise ArgumentError(f"maps[{i}] ({label!r}) must have shape (C, h, w), got {arr.shape}")
        blocks.append((str(label), arr[:max_channels]))
    cols = min(8, max((len(a) for _, a in blocks), default=1))
    rows_per_block = [math.ceil(len(a) / cols) for _, a in blocks]
    total_rows = 1 + sum(rows_per_block)  # the input gets one row of its own
    fig = _new_figure(0.85 * cols + 1.6, 0.85 * total_rows + 0.4)
    gs = fig.add_gridspec(total_rows, cols + 1, width_ratios=[1.6] + [1] * cols, hspace=0.35, wspace=0.1)

    ax = fig.add_subplot(gs[0, 0])
    ax.imshow(image, cmap="gray", interpolation="nearest")
    ax.set_title("input", fontsize=8)
    ax.set_axis_off()
    if not blocks:  # a model without convolutions: the input alone, and a line saying why
        note = fig.add_subplot(gs[0, 1:])
        note.set_axis_off()
        note.text(0, 0.5, "no convolution layers:\nno feature maps to show", va="center", fontsize=8)
    row = 1
    for (label, arr), n_rows in zip(blocks, rows_per_block, strict=True):
        label_ax = fig.add_subplot(gs[row : row + n_rows, 0])
        label_ax.set_axis_off()
        shape = "x".join(str(s) for s in arr.shape[1:])
        label_ax.text(0.5, 0.5, f"{label}\n{shape}", ha="center", va="center", fontsize=8)
        low = arr.min(axis=(1, 2), keepdims=True)
        span = arr.max(axis=(1, 2), keepdims=True) - low
        scaled = np.divide(arr - low, span, out=np.zeros_like(arr), where=span > 0)  # each tile on its own scale
        gap = (max(1, round(0.3 * arr.shape[1])), max(1, round(0.2 * arr.shape[2])))
        ax = fig.add_subplot(gs[row : row + n_rows, 1:])
        _show_mosaic(ax, _mosaic(scaled, cols, gap), "viridis", vmin=0.0, vmax=1.0)
        ax.set_xlim(-0.5, cols * (arr.shape[2] + gap[1]) - gap[1] - 0.5)  # a short last row keeps the tile size
        ax.set_anchor("W")
        row += n_rows
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------
# worst-classified digits
# ---------------------------------------------------------------------------------------------------


def plot_worst(images: Any, true_labels: Any, predicted: Any, confidence: Any, classes: Sequence[str],
               path: str | os.PathLike) -> Path:  # fmt: skip
    """A grid of misclassified digits, each titled ``true → pred (p%)``.

    The caller chooses and orders the images (typically the most confident mistakes first).

    Shapes:
        images: (N, H, W) or (N, 1, H, W)
        true_labels, predicted: (N,) integer labels in [0, K)
        confidence: (N,) probability of the predicted class, in [0, 1]

    Args:
        classes: K class names, in label order.
        path: where the PNG goes.
    """
    path = _output(path)
    images = _as_images(images, "images")
    n = len(images)
    classes = _sequence(classes, "classes", "class names")
    true_labels = np.asarray(true_labels)
    predicted = np.asarray(predicted)
    confidence = _floats(confidence, "confidence")
    for name, arr in (("true_labels", true_labels), ("predicted", predicted)):
        if arr.size and arr.dtype.kind not in "iu":
            raise ArgumentTypeError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    for name, arr in (("true_labels", true_labels), ("predicted", predicted), ("confidence", confidence)):
        if arr.shape != (n,):
            raise ArgumentError(f"{name} must have shape ({n},) to match images {images.shape}, got {arr.shape}")
    if n == 0:
        raise ArgumentError("images is empty: nothing to plot")
    k = len(classes)
    for name, arr in (("true_labels", true_labels), ("predicted", predicted)):
        if arr.min() < 0 or arr.max() >= k:
            raise ArgumentError(f"{name} must lie in [0, {k}) for {k} classes, got range [{arr.min()}, {arr.max()}]")

    rows, cols = _grid(n)
    fig = _new_figure(max(3.6, 1.25 * cols), 1.4 * rows + 0.3)  # wide enough for the title
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.9))
    size = images.shape[1:]
    gap = (max(1, round(0.3 * size[0])), max(1, round(0.2 * size[1])))  # room for each title
    peak = np.maximum(1.0, images.max(axis=(1, 2), keepdims=True))  # each digit from 0 to max(1, its max)
    _show_mosaic(ax, _mosaic(np.clip(images / peak, 0.0, 1.0), cols, gap), "gray", vmin=0.0, vmax=1.0)
    for i in range(n):
        x, y = _tile_origin(i, cols, size, gap)
        title = f"{classes[true_labels[i]]} → {classes[predicted[i]]} ({100 * confidence[i]:.0f}%)"
        ax.text(x + size[1] / 2, y - 0.1 * gap[0], title, ha="center", va="bottom", fontsize=7)
    ax.set_ylim(rows * (size[0] + gap[0]) - gap[0] - 0.5, -0.5 - gap[0])  # a title row above the first digits
    fig.suptitle("worst-classified test images (true → predicted)", fontsize=9)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------
# raw bytes for a web UI
# ---------------------------------------------------------------------------------------------------


def heatmap_png(array2d: Any, *, cmap: str = "viridis", scale: int = 8, symmetric: bool = False) -> bytes:
    """PNG bytes of one 2-D array as a colour-mapped image, no axes; each value a ``scale``-pixel square.

    Args:
        array2d: (H, W) values; mapped linearly from their min to max (or ±max|x| if ``symmetric``).
        cmap: a matplotlib colour map name.
        scale: pixels per array element (nearest-neighbour upscaling keeps small maps crisp).
        symmetric: centre the colour scale at 0 (use with a diverging map for weights).
    """
    arr = np.asarray(array2d, dtype=np.float64)
    if arr.ndim != 2 or 0 in arr.shape:
        raise ArgumentError(f"array2d must be a non-empty (H, W) array, got shape {arr.shape}")
    if scale < 1:
        raise ArgumentError(f"scale must be >= 1, got {scale}")
    from matplotlib import colormaps
    from PIL import Image

    if symmetric:
        limit = float(np.abs(arr).max()) or 1.0
        lo, hi = -limit, limit
    else:
        lo, hi = float(arr.min()), float(arr.max())
    norm = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    rgba = colormaps[cmap](norm, bytes=True)  # (H, W, 4) uint8
    rgba = np.repeat(np.repeat(rgba, scale, axis=0), scale, axis=1)  # (H*scale, W*scale, 4)
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    return buf.getvalue()
