"""How a trained digit recogniser copes with the ways people draw: ``convprop evaluate RUN --robustness``.

Each *variant* changes every test digit in one way and measures the accuracy on the result:

=================  =========================================================================
group              variants
=================  =========================================================================
original           the test digits as they are (the reference row)
rotation           turned by ±10° and ±20° about the image centre (bilinear, counter-clockwise
                   for positive angles; :func:`convprop.data.warp_affine`)
stroke             thickened / thinned by one pixel: grey-scale dilation / erosion
                   (``scipy.ndimage.grey_dilation`` / ``grey_erosion``) with the disk of radius
                   one pixel (the cross: a pixel and its four neighbours), and with the 3 × 3
                   square, which also reaches the diagonal neighbours (√2 px away)
shift              moved by 2 pixels up, down, left or right (exact integer shifts, zeros fill in)
font               the digits 0–9 typeset in a font (the bundled fonts of Pillow and matplotlib),
                   drawn black on white at three ink weights like ``tests/digit_images.py``, and
                   prepared exactly as ``convprop predict`` prepares a user's image
=================  =========================================================================

The variants work on raw images in [0, 1] (ink 1, paper 0), before the model's normalisation.
:func:`robustness_report` returns the rows; :func:`format_table` prints them; :func:`write_report`
stores them as JSON, atomically (``robustness.json`` in the run directory).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from .data import DIGIT_CLASSES, warp_affine
from .data.augment import CROSS
from .errors import ArgumentError
from .fileio import write_text_atomic
from .inference import Predictor
from .train import evaluate

REPORT_NAME = "robustness.json"
ROTATIONS = (-20.0, -10.0, 10.0, 20.0)  # degrees
SHIFT = 2  # pixels
SQUARE = np.ones((1, 1, 3, 3), dtype=bool)  # the centre and all 8 neighbours; CROSS: the radius-1 disk
INK_WEIGHTS = (0, 3, 6)  # Pillow stroke widths (pixels on a 160-pixel-high canvas): thin, regular, bold
CANVAS = (120, 160)  # (width, height) of the drawing, as in tests/digit_images.py
# (label, file in matplotlib's mpl-data/fonts/ttf); None is Pillow's own bundled font (load_default)
FONTS: tuple[tuple[str, str | None], ...] = (
    ("Pillow default", None),
    ("DejaVu Sans", "DejaVuSans.ttf"),
    ("DejaVu Sans Bold", "DejaVuSans-Bold.ttf"),
    ("DejaVu Sans Oblique", "DejaVuSans-Oblique.ttf"),
    ("DejaVu Serif", "DejaVuSerif.ttf"),
    ("DejaVu Serif Italic", "DejaVuSerif-Italic.ttf"),
    ("DejaVu Sans Mono", "DejaVuSansMono.ttf"),
    ("STIX General", "STIXGeneral.ttf"),
    ("Computer Modern", "cmr10.ttf"),
)

Transform = Callable[[np.ndarray], np.ndarray]  # (N, 1, H, W) in [0, 1] -> same


@dataclass(frozen=True)
class VariantResult:
    """One row of the report: ``correct`` of ``images`` digits of a variant were classified right."""

    group: str
    name: str
    images: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.images if self.images else float("nan")


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def image_variants() -> list[tuple[str, str, Transform]]:
    """The (group, name, transform) of every variant computed from the test images."""
    variants: list[tuple[str, str, Transform]] = [("original", "test digits", _identity)]
    for angle in ROTATIONS:
        variants.append(("rotation", f"rotated {angle:+.0f}°", partial(warp_affine, rotation=angle)))
    for shape, footprint in (("cross", CROSS), ("3×3", SQUARE)):
        variants.append(("stroke", f"thickened 1 px ({shape})", partial(ndimage.grey_dilation, footprint=footprint)))
        variants.append(("stroke", f"thinned 1 px ({shape})", partial(ndimage.grey_erosion, footprint=footprint)))
    for name, move in (("up", (-SHIFT, 0)), ("down", (SHIFT, 0)), ("left", (0, -SHIFT)), ("right", (0, SHIFT))):
        variants.append(("shift", f"shifted {SHIFT} px {name}", partial(warp_affine, translation=move)))
    return variants


def font_path(file: str) -> str:
    """The full path of one of matplotlib's bundled fonts (``mpl-data/fonts/ttf/<file>``)."""
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", file)


def render_font_digits(
    predictor: Predictor, font: str | None, weights: Sequence[int] = INK_WEIGHTS
) -> tuple[np.ndarray, np.ndarray]:
    """The digits 0–9 in one font at each ink weight, prepared as ``convprop predict`` prepares images.

    Shapes:
        returns: images (10 · len(weights), 1, H, W) float32 in [0, 1] and labels (10 · len(weights),) int64.
    """
    from PIL import Image, ImageDraw, ImageFont

    width, height = CANVAS
    size = int(0.6 * height)
    typeface = ImageFont.load_default(size=size) if font is None else ImageFont.truetype(font_path(font), size)
    images, labels = [], []
    for weight in weights:
        for digit in range(10):
            canvas = Image.new("RGB", CANVAS, "white")
            ImageDraw.Draw(canvas).text(
                (width / 2, height / 2), str(digit), font=typeface, fill="black", anchor="mm",
                stroke_width=weight, stroke_fill="black",
            )  # fmt: skip
            images.append(predictor.preprocess(canvas))  # (1, H, W)
            labels.append(digit)
    return np.stack(images).astype(np.float32), np.array(labels, dtype=np.int64)  # (10·W, 1, H, W), (10·W,)


def _count_correct(predictor: Predictor, images: np.ndarray, labels: np.ndarray) -> int:
    x = predictor.normalization(images.astype(predictor.dtype, copy=False))
    return int((evaluate(predictor.model, x, labels).predictions == labels).sum())


def robustness_report(
    predictor: Predictor,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    fonts: Sequence[tuple[str, str | None]] = FONTS,
) -> list[VariantResult]:
    """Accuracy of ``predictor`` on every variant of the test digits, and on typeset digits in ``fonts``.

    Font rows are computed only for a digit recogniser (classes "0".."9"), and skipped for fonts
    whose file is missing.

    Shapes:
        images: (N, 1, H, W) float in [0, 1], raw (not normalised); labels: (N,) int.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[1:] != (1, *predictor.image_size) or labels.shape != (len(images),):
        raise ArgumentError(
            f"expected images (N, 1, {predictor.image_size[0]}, {predictor.image_size[1]}) and labels (N,), "
            f"got {images.shape} and {labels.shape}"
        )
    if not len(images):
        raise ArgumentError("no test images: the report needs at least one")
    images = images.astype(np.float32, copy=False)
    rows = [
        VariantResult(group, name, len(labels), _count_correct(predictor, transform(images), labels))
        for group, name, transform in image_variants()
    ]
    if predictor.classes == DIGIT_CLASSES:
        found = [(name, file) for name, file in fonts if file is None or os.path.isfile(font_path(file))]
        font_rows = []
        for name, file in found:
            x, y = render_font_digits(predictor, file)
            font_rows.append(VariantResult("font", name, len(y), _count_correct(predictor, x, y)))
        if font_rows:
            total = VariantResult(
                "font",
                f"all {len(font_rows)} fonts",
                sum(r.images for r in font_rows),
                sum(r.correct for r in font_rows),
            )
            rows += [*font_rows, total]
    return rows


def format_table(rows: Sequence[VariantResult]) -> str:
    """The report as a plain-text table: group, variant, images, accuracy, change from the original."""
    reference = next((r.accuracy for r in rows if r.group == "original"), None)
    width = max(len(r.name) for r in rows)
    lines = [f"{'group':<9} {'variant':<{width}} {'images':>6} {'accuracy':>8} {'change':>7}"]
    for r in rows:
        change = (
            "" if reference is None or r.group in ("original", "font") else f"{100 * (r.accuracy - reference):+.2f}"
        )
        lines.append(f"{r.group:<9} {r.name:<{width}} {r.images:>6} {100 * r.accuracy:>7.2f}% {change:>7}")
    return "\n".join(lines)


def write_report(path: str | os.PathLike, rows: Sequence[VariantResult], **about: Any) -> Path:
    """Write the rows (and ``about``: checkpoint, dataset, ...) as JSON to ``path``, atomically."""
    report = about | {"variants": [asdict(r) | {"accuracy": r.accuracy} for r in rows]}
    return write_text_atomic(path, json.dumps(report, indent=2) + "\n")
