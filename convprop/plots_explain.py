"""The figure of ``convprop explain``: one image's saliency, gradient × input, Grad-CAM and the gradient
maps dE/dy of every convolution (``convprop.explain``), with colour bars and the predicted class.

Rendered like every figure of :mod:`convprop.plots`: matplotlib's Agg canvas without pyplot, written
atomically (:func:`convprop.fileio.write_atomic`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import ArgumentError
from .explain import Explanation
from .plots_base import _new_figure, _save


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


def plot_explanation(
    image: np.ndarray,
    explanation: Explanation,
    classes: Sequence[str],
    path: str | os.PathLike,
    *,
    max_channels: int = 16,
) -> Path:
    """Input, saliency |dE/dx|, gradient × input, Grad-CAM over the input, then each convolution's dE/dy.

    Signed maps use one symmetric blue–red scale per panel (or per layer for the gradient maps), so
    white is zero; each panel has its colour bar. The title gives the predicted class and its
    probability, and the class whose logit E is explained.

    Shapes:
        image: (H, W) or (1, H, W), the picture as shown (e.g. in [0, 1])
        explanation: of one image (no N axis): saliency (C, H, W), grad_cam (H, W), layer gradients (O, h, w)
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]  # (H, W)
    if image.ndim != 2:
        raise ArgumentError(f"image must have shape (H, W) or (1, H, W), got {image.shape}")
    if explanation.saliency.ndim != 3 or explanation.saliency.shape[1:] != image.shape:
        raise ArgumentError(
            f"the explanation must be of one image of shape (C, {image.shape[0]}, {image.shape[1]}), "
            f"got saliency of shape {explanation.saliency.shape}"
        )
    logits = np.asarray(explanation.logits[0], dtype=np.float64)  # (K,)
    if len(classes) != len(logits):
        raise ArgumentError(f"{len(classes)} class names for a model of {len(logits)} classes")
    probs = _softmax(logits)
    predicted, target = int(np.argmax(probs)), int(explanation.target[0])
    layers = [(p, np.asarray(g, dtype=np.float64)[:max_channels]) for p, g in explanation.layer_gradients.items()]
    cols = 8
    rows_per_layer = [math.ceil(len(g) / cols) for _, g in layers]
    fig = _new_figure(11.0, 3.1 + 1.15 * sum(rows_per_layer))
    top = fig.add_gridspec(1, 4, left=0.02, right=0.98, top=0.98, bottom=1 - 2.6 / fig.get_figheight(), wspace=0.35)

    def panel(
        i: int, data: np.ndarray, title: str, cmap: str, symmetric: bool, under: np.ndarray | None = None
    ) -> None:
        ax = fig.add_subplot(top[0, i])
        if under is not None:
            ax.imshow(under, cmap="gray", interpolation="nearest")
        limit = float(np.abs(data).max()) or 1.0
        vmin, vmax = (-limit, limit) if symmetric else (0.0, limit)
        shown = ax.imshow(
            data, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", alpha=0.55 if under is not None else 1.0
        )
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()

    panel(0, image, f"input: predicted {classes[predicted]} ({100 * probs[predicted]:.1f}%)", "gray", False)
    panel(1, np.abs(explanation.saliency).max(axis=0), "saliency |dE/dx|", "hot", False)
    panel(2, explanation.gradient_x_input.sum(axis=0), "gradient × input", "RdBu_r", True)
    if explanation.grad_cam is not None:
        panel(3, explanation.grad_cam, f"Grad-CAM (layer {explanation.grad_cam_layer})", "jet", False, under=image)
    fig.suptitle(
        f"why {classes[target]}? E = logit of class {classes[target]} = {logits[target]:.3f}"
        + ("" if target == predicted else f" (the prediction is {classes[predicted]})"),
        fontsize=10,
        y=1.0,
    )
    if layers:
        bottom = fig.add_gridspec(
            sum(rows_per_layer), cols + 1, left=0.02, right=0.92, top=1 - 2.9 / fig.get_figheight(),
            bottom=0.01, hspace=0.15, wspace=0.08, width_ratios=[1.4] + [1] * cols,
        )  # fmt: skip
        row = 0
        for (label, grads), n_rows in zip(layers, rows_per_layer, strict=True):
            label_ax = fig.add_subplot(bottom[row : row + n_rows, 0])
            label_ax.set_axis_off()
            shape = "x".join(str(s) for s in grads.shape[1:])
            label_ax.text(0.5, 0.5, f"dE/dy of\nconv {label}\n{shape}", ha="center", va="center", fontsize=8)
            limit = float(np.abs(grads).max()) or 1.0
            shown = None
            for c in range(len(grads)):
                ax = fig.add_subplot(bottom[row + c // cols, 1 + c % cols])
                shown = ax.imshow(grads[c], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
                ax.set_axis_off()
            if shown is not None:
                bar_ax = fig.add_axes((0.93, ax.get_position().y0, 0.012, 0.9 / fig.get_figheight() * n_rows))
                fig.colorbar(shown, cax=bar_ax).ax.tick_params(labelsize=7)
            row += n_rows
    return _save(fig, path)
