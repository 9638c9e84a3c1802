"""Serving a trained model: load a checkpoint once, then preprocess, predict and look inside.

Used by ``convprop predict``, ``evaluate`` and ``inspect``, and by the web page of ``convprop serve``.
A ``Predictor`` is read-only after construction except for the layers' forward caches, so callers
that share one between threads must serialise calls (the web server holds a lock).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checkpoint, nn
from .data import Normalization
from .data.images import ImageInput
from .errors import ArgumentError
from .functional.activation import softmax
from .models import forward_with_feature_maps


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory holding ``model.safetensors``."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise checkpoint.CheckpointError(
            f"no checkpoint at {str(path)!r} (pass a .safetensors file or a run directory)"
        )
    return path


def latest_run(root: str | os.PathLike = "runs") -> Path | None:
    """The most recently written run directory under ``root`` that has a checkpoint, or None."""
    root = Path(root)
    runs = [p.parent for p in root.glob("*/model.safetensors")] if root.is_dir() else []
    return max(runs, key=lambda p: (p / "model.safetensors").stat().st_mtime, default=None)


@dataclass
class Prediction:
    label: str
    index: int
    probabilities: np.ndarray  # (K,)

    def top(self, classes: tuple[str, ...], k: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(classes[i], float(self.probabilities[i])) for i in order]


class Predictor:
    """A checkpoint ready for inference: model in eval mode, normalisation and class names from its metadata."""

    def __init__(self, path: str | os.PathLike):
        self.path = resolve_checkpoint(path)
        self.model, meta = checkpoint.load_with_metadata(self.path)
        self.dtype = self.model.parameters()[0].data.dtype if self.model.parameters() else np.dtype(np.float32)
        try:
            names = json.loads(meta.get("classes", "null")) or range(10)
            self.classes: tuple[str, ...] = tuple(str(c) for c in names)
            self.image_size: tuple[int, int] = tuple(json.loads(meta.get("image_size", "[28, 28]")))
            norm = json.loads(meta.get("normalization", '{"mean": [0.0], "std": [1.0]}'))
            self.normalization = Normalization(tuple(norm["mean"]), tuple(norm["std"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise checkpoint.CheckpointError(f"{str(self.path)!r}: unreadable training metadata ({exc})") from None
        self.dataset = meta.get("dataset", "unknown")

    def preprocess(self, image: ImageInput) -> np.ndarray:
        """A path, a Pillow image or an array → the network's input (1, H, W) in [0, 1], MNIST-style."""
        from .data.images import preprocess_image

        H, W = self.image_size
        box = max(1, round(min(H, W) * 20 / 28))  # MNIST fits digits into 20 of 28 pixels
        return preprocess_image(image, size=H, box=box)  # (1, H, W)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, 1, H, W) or (1, H, W) images in [0, 1] → (N, K) class probabilities."""
        x = np.asarray(images, dtype=self.dtype)  # the checkpoint's own dtype, float32 or float64
        if x.ndim == 3:
            x = x[None]
        if x.shape[1:] != (1, *self.image_size):
            raise ArgumentError(
                f"expected images of shape (N, 1, {self.image_size[0]}, {self.image_size[1]}), got {x.shape}"
            )
        return softmax(self.model(self.normalization(x)), axis=1)

    def predict(self, image: ImageInput) -> Prediction:
        probs = self.probabilities(self.preprocess(image))[0]
        index = int(np.argmax(probs))
        return Prediction(self.classes[index], index, probs)

    def feature_maps(self, image01: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """Feature maps of every conv layer for one preprocessed image (1, H, W) in [0, 1]."""
        return self.analyse(image01)[1]

    def analyse(self, image01: np.ndarray) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
        """One forward pass for one preprocessed image (1, H, W): (class probabilities (K,), feature maps)."""
        x = self.normalization(np.asarray(image01, dtype=self.dtype)[None])[0]  # (1, H, W)
        logits, maps = forward_with_feature_maps(self.model, x)
        return softmax(logits, axis=1)[0], maps

    def first_layer_filters(self) -> np.ndarray:
        return next(m for m in self.model.modules() if isinstance(m, nn.Conv2d)).weight.data
