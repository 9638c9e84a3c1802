"""Reading a user's own digit image and preparing it the way MNIST's digits were prepared.

MNIST's recipe (LeCun et al.): each digit was scaled, keeping its aspect ratio, to fit a 20 x 20 box
with anti-aliasing, then placed in a 28 x 28 field so that its centre of mass lands at the centre.
Ink is bright (1.0) on a black (0.0) background. :func:`to_mnist` does the same to any photo, scan or
drawing, after deciding which way round ink and paper are:

1. grayscale in [0, 1] (RGB by ITU-R 601-2 luma, as Pillow's ``"L"``; transparency composited on white);
2. invert if the paper is light: the border's median lies above the middle of the image's range
   (for a clean scan, "above 0.5"; the relative test also works for a dim photo of grey paper);
3. stretch contrast so the background (border median) is 0 and the brightest ink is 1;
4. crop to the bounding box of ink (pixels > 0.1);
5. resize so the longer side is ``box`` (20) pixels, aspect ratio kept (Lanczos, anti-aliased);
6. paste into a ``size`` x ``size`` (28) canvas at the integer offset that brings the centre of mass
   nearest to ``(size / 2, size / 2)`` in 0-based pixel-index coordinates, clipped so nothing is cut.

The target (14, 14) is MNIST's own: over the 5,000 digits of ``mnist-5k`` the centre of mass, in the
same coordinates, averages (13.99, 14.00) with a spread of 0.29 px, which is what integer shifts give.
Pillow is imported lazily, as matplotlib is in :mod:`convprop.plots`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from ..errors import DataError

if TYPE_CHECKING:  # Pillow is imported lazily at run time
    from PIL import Image

ImageInput: TypeAlias = "str | os.PathLike[str] | np.ndarray | Image.Image"
"""What :func:`preprocess_image` accepts: a file path, a Pillow image or an array."""

MAX_SIDE = 4096  # larger images are refused: a digit needs no more, and it bounds memory
WORK_SIDE = 512  # larger images are shrunk (by Pillow, keeping the aspect ratio) before any float copy
MIN_CONTRAST = 0.1  # brightest ink minus background below this (of full scale) means a blank image
INK_LEVEL = 0.1  # after contrast stretching, pixels above this count as ink for the bounding box
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, the weights of Pillow's convert("L")


def _pil() -> Any:
    try:
        from PIL import Image, ImageOps
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading images needs Pillow: pip install pillow") from exc
    return Image, ImageOps


def _check_size(height: int, width: int, what: str) -> None:
    if height > MAX_SIDE or width > MAX_SIDE:
        raise DataError(f"{what} is {width} x {height} pixels; at most {MAX_SIDE} x {MAX_SIDE} is accepted")
    if height == 0 or width == 0:
        raise DataError(f"{what} is empty ({width} x {height} pixels)")


def shrink(img: Any) -> Any:
    """A Pillow image no larger than WORK_SIDE on its longer side: the 28×28 result needs no more,
    and a 4096² photo would otherwise cost hundreds of MB as float arrays."""
    if max(img.size) > WORK_SIDE:
        img = img.copy()
        img.thumbnail((WORK_SIDE, WORK_SIDE))
    return img


def _pil_to_gray(img: Any) -> np.ndarray:
    """A Pillow image → (H, W) float32 in [0, 1]; transparency composited on white, EXIF rotation applied."""
    Image, ImageOps = _pil()
    img = shrink(ImageOps.exif_transpose(img))  # phone photos store their rotation in EXIF
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grayscale PNG: keep its precision
        return (np.asarray(img, dtype=np.float64) / 65535.0).astype(np.float32)
    if img.mode in ("I", "F"):  # 32-bit int / float: scale by the largest plausible full-scale value
        arr = np.asarray(img, dtype=np.float64)
        full = 1.0 if arr.max() <= 1.0 else 255.0 if arr.max() <= 255.0 else 65535.0
        return np.clip(arr / full, 0.0, 1.0).astype(np.float32)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return (np.asarray(img.convert("L"), dtype=np.float32) / 255.0).astype(np.float32)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file (PNG, JPEG, GIF, BMP, ... anything Pillow reads) as grayscale.

    Transparent pixels are composited on white first, so a digit drawn on a transparent canvas reads
    as ink on paper. EXIF orientation is applied.

    Returns:
        (H, W) float32 in [0, 1], 0 black and 1 white (no inversion here; see :func:`to_mnist`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable image, or is larger than 4096 x 4096.
    """
    Image, _ = _pil()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"no such image file: {path}")
    if os.path.isdir(path):
        raise DataError(f"cannot read image {path}: it is a directory")
    try:
        with Image.open(path) as img:
            _check_size(img.height, img.width, f"image {path}")  # from the header, before decoding
            img.load()
            return _pil_to_gray(img)
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
        raise DataError(f"cannot read image {path}: {exc}") from exc


def _as_gray(image: Any) -> np.ndarray:
    """An array → (H, W) float64 in [0, 1].

    Accepts uint8 (0..255), other integers in 0..255, bool, or floats in [0, 1]; 2-D grayscale or
    (H, W, 3) RGB or (H, W, 4) RGBA (composited on white).
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]  # (H, W)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise DataError(f"image must have shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    _check_size(arr.shape[0], arr.shape[1], "image")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.float64)
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 255:
            raise DataError(f"integer images must lie in 0..255, got range [{arr.min()}, {arr.max()}]")
        arr = arr.astype(np.float64) / 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise DataError("image contains NaN or infinite values")
        if arr.min() < 0.0 or arr.max() > 1.0:
            raise DataError(f"float images must lie in [0, 1], got range [{arr.min():.4g}, {arr.max():.4g}]")
    else:
        raise DataError(f"image dtype must be integer, bool or float, got {arr.dtype}")
    if arr.ndim == 3:
        rgb = arr[:, :, :3]  # (H, W, 3)
        if arr.shape[2] == 4:
            alpha = arr[:, :, 3:]  # (H, W, 1)
            rgb = rgb * alpha + (1.0 - alpha)  # composite on white
        arr = rgb @ LUMA  # (H, W)
    return arr


def _border(gray: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels, flattened."""
    return np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])


def to_mnist(image: Any, *, size: int = 28, box: int = 20) -> np.ndarray:
    """Make any digit image look like an MNIST digit: bright ink on black, fit to ``box``, centred by mass.

    See the module docstring for the six steps. The result depends only on the digit's shape, not on
    where it sits in the picture, how large it is drawn, or whether it is dark-on-light.

    Shapes:
        image: (H, W), (H, W, 3) or (H, W, 4); uint8 0..255 or float 0..1
        returns: (size, size) float32 in [0, 1]

    Raises:
        ValueError: a bad shape, dtype or range; ``box`` not in [1, size]; or a blank image (no ink).
    """
    if not (isinstance(size, (int, np.integer)) and isinstance(box, (int, np.integer)) and 1 <= box <= size):
        raise DataError(f"need integers 1 <= box <= size, got box={box!r}, size={size!r}")
    gray = _as_gray(image)

    # 2. ink is bright: invert when the paper (border median) is nearer the light end of the image's range
    paper = float(np.median(_border(gray)))
    ink = 1.0 - gray if paper > (gray.min() + gray.max()) / 2 else gray

    # 3. background to 0, brightest ink to 1
    background = float(np.median(_border(ink)))
    peak = float(ink.max())
    if peak - background < MIN_CONTRAST:
        raise DataError(
            f"image is blank: no ink found (brightest ink {peak:.3f} vs background {background:.3f}; "
            f"need a difference of at least {MIN_CONTRAST})"
        )
    ink = np.clip((ink - background) / (peak - background), 0.0, 1.0)

    # 4. crop to the ink's bounding box
    rows = np.flatnonzero((ink > INK_LEVEL).any(axis=1))
    cols = np.flatnonzero((ink > INK_LEVEL).any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # (h0, w0)

    # 5. longer side to `box` pixels, aspect ratio kept
    h0, w0 = crop.shape
    scale = box / max(h0, w0)
    h, w = max(1, min(box, round(h0 * scale))), max(1, min(box, round(w0 * scale)))
    crop = _resize(crop, h, w)  # (h, w)
    crop = np.clip(crop, 0.0, None)  # Lanczos rings slightly below 0 and above the peak
    crop = np.clip(crop / crop.max(), 0.0, 1.0)  # a thin stroke on a big canvas must not fade

    # 6. place so the centre of mass is nearest (size/2, size/2); never cut the digit
    mass = crop.sum()
    cy = float((crop.sum(axis=1) * np.arange(h)).sum() / mass)  # within the crop
    cx = float((crop.sum(axis=0) * np.arange(w)).sum() / mass)
    top = int(np.clip(round(size / 2 - cy), 0, size - h))
    left = int(np.clip(round(size / 2 - cx), 0, size - w))
    out = np.zeros((size, size), dtype=np.float32)
    out[top : top + h, left : left + w] = crop
    return out


def _resize(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resample a float (H, W) array with Pillow's anti-aliased Lanczos filter (mode "F", no quantising)."""
    Image, _ = _pil()
    img = Image.fromarray(arr.astype(np.float32))  # mode "F"
    return np.asarray(img.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float64)


def preprocess_image(image: ImageInput, *, size: int = 28, box: int = 20) -> np.ndarray:
    """A file path, Pillow image or array → one MNIST-style input for a model.

    Shapes:
        returns: (1, size, size) float32 in [0, 1] — add a batch axis with ``x[None]``.
    """
    Image, _ = _pil()
    if isinstance(image, (str, os.PathLike)):
        gray = load_image(image)
    elif isinstance(image, Image.Image):
        _check_size(image.height, image.width, "image")
        gray = _pil_to_gray(image)
    else:
        gray = np.asarray(image)
    return to_mnist(gray, size=size, box=box)[None]  # (1, size, size)
