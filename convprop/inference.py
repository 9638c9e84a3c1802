"""Serving a trained model: load a checkpoint once, then preprocess, predict and look inside.

Used by ``convprop predict``, ``evaluate`` and ``inspect``, and by the web page of ``convprop serve``.
A ``Predictor`` is read-only after construction, and its eval-mode model writes nothing when called,
so one Predictor may serve many threads at once (the web server shares one without a lock).

The training metadata is checked against the model when the checkpoint is loaded: image size within
bounds, normalisation finite with positive std, one class name per model output; anything else is a
``CheckpointError`` (never a NaN probability or a silently truncated class list).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint, nn
from .architecture import json_depth
from .data import Normalization
from .data.images import ImageInput
from .errors import ArgumentError
from .functional.activation import softmax
from .models import forward_with_feature_maps


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file (``.safetensors``, or an ``.onnx`` model), or a run directory holding ``model.safetensors``."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise checkpoint.CheckpointError(
            f"no checkpoint at {str(path)!r} (pass a .safetensors or .onnx file or a run directory)"
        )
    return path


def load_model_file(path: Path) -> tuple[nn.Module, dict[str, str]]:
    """The model and its metadata from a checkpoint, or from an ONNX file (by its ``.onnx`` suffix)."""
    if path.suffix.lower() == ".onnx":
        from .onnx import load_with_metadata

        return load_with_metadata(path)
    return checkpoint.load_with_metadata(path)


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
        self.model, meta = load_model_file(self.path)
        params = self.model.parameters()
        self.dtype = params[0].data.dtype if params else np.dtype(np.float32)
        where = str(self.path)
        self.image_size = _image_size(_metadata_json(meta, "image_size", "[28, 28]", where), where)
        self.normalization = _normalization(
            _metadata_json(meta, "normalization", '{"mean": [0.0], "std": [1.0]}', where), where
        )
        try:
            logits = self.model(np.zeros((1, 1, *self.image_size), dtype=self.dtype))
        except (ValueError, TypeError) as exc:
            raise checkpoint.CheckpointError(
                f"{where!r}: the model does not take the {self.image_size} images its metadata declares ({exc})"
            ) from None
        if not (isinstance(logits, np.ndarray) and logits.ndim == 2 and logits.shape[0] == 1):
            raise checkpoint.CheckpointError(
                f"{where!r}: the model must give (1, K) logits per image, got {logits!r:.100}"
            )
        outputs = logits.shape[1]
        classes = _metadata_json(meta, "classes", "null", where)
        if classes is None:
            classes = list(range(outputs))
        if not isinstance(classes, list) or not all(
            isinstance(c, str) or (isinstance(c, int) and not isinstance(c, bool)) for c in classes
        ):
            raise checkpoint.CheckpointError(
                f"{where!r}: classes metadata must be a list of names, got {classes!r:.200}"
            )
        if len(classes) != outputs:
            raise checkpoint.CheckpointError(
                f"{where!r}: classes metadata lists {len(classes)} names but the model has {outputs} outputs"
            )
        self.classes: tuple[str, ...] = tuple(str(c) for c in classes)
        self.dataset = meta.get("dataset", "unknown")
        self.split_seed = int(meta.get("split_seed", "0")) if meta.get("split_seed", "0").isdigit() else 0

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

    def first_layer_filters(self) -> np.ndarray | None:
        """The first convolution's kernel (O, C, KH, KW), or None when the model has no convolution."""
        conv = next((m for m in self.model.modules() if isinstance(m, nn.Conv2d)), None)
        return None if conv is None else conv.weight.data


MAX_IMAGE_SIDE = 1024  # an image_size metadata beyond this is refused (it sizes every forward pass)


def _metadata_json(meta: dict[str, str], key: str, default: str, where: str) -> Any:
    text = meta.get(key, default)
    if json_depth(text) > 4:
        raise checkpoint.CheckpointError(f"{where!r}: {key} metadata is nested too deeply")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise checkpoint.CheckpointError(f"{where!r}: {key} metadata is not valid JSON ({exc})") from None


def _image_size(value: Any, where: str) -> tuple[int, int]:
    if not (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_IMAGE_SIDE for v in value)
    ):
        raise checkpoint.CheckpointError(
            f"{where!r}: image_size metadata must be [H, W] with sides in 1..{MAX_IMAGE_SIDE}, got {value!r:.100}"
        )
    return value[0], value[1]


def _normalization(value: Any, where: str) -> Normalization:
    def numbers(key: str) -> tuple[float, ...]:
        items = value.get(key) if isinstance(value, dict) else None
        if not (isinstance(items, list) and len(items) == 1):
            raise checkpoint.CheckpointError(
                f"{where!r}: normalization metadata needs one-channel {key!r} lists, got {value!r:.200}"
            )
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in items):
            raise checkpoint.CheckpointError(
                f"{where!r}: normalization {key} must be finite numbers, got {items!r:.100}"
            )
        return tuple(float(v) for v in items)

    mean, std = numbers("mean"), numbers("std")
    if not all(s > 0 for s in std):
        raise checkpoint.CheckpointError(f"{where!r}: normalization std must be positive, got {list(std)}")
    return Normalization(mean, std)
