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

Hostile or broken files (truncated, decompression bombs, huge declared dimensions, 16-bit, palette,
animated, odd modes) end in a ``DataError`` naming the file, never a Pillow traceback; see
:func:`decode_image` for the memory bound.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from ..errors import ArgumentError, DataError
from .idx import DataFileNotFoundError
from .resample import lanczos_resize

if TYPE_CHECKING:  # Pillow is imported lazily at run time
    from PIL import Image

ImageInput: TypeAlias = "str | os.PathLike[str] | np.ndarray | Image.Image"
"""What :func:`preprocess_image` accepts: a file path, a Pillow image or an array."""

MAX_SIDE = 4096  # larger images are refused from the header, before decoding: a digit needs no more
MAX_FILE_BYTES = 64 << 20  # larger image files are refused before they are read
WORK_SIDE = 512  # larger images are shrunk (by Pillow, keeping the aspect ratio) before any float copy
MIN_CONTRAST = 0.1  # brightest ink minus background below this (of full scale) means a blank image
INK_LEVEL = 0.1  # after contrast stretching, pixels above this count as ink for the bounding box
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, the weights of Pillow's convert("L")
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")  # what Pillow may decode from a file


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
    and a 4096² photo would otherwise cost hundreds of MB as float arrays. ``img`` is not changed.

    16-bit grayscale (``I;16*``, which Pillow cannot resample) comes back as mode ``"F"`` with the same
    values 0..65535; premultiplied ``La``/``RGBa`` as ``LA``/``RGBA``.
    """
    if img.mode.startswith("I;16"):
        img = img.convert("I").convert("F")  # same values, a mode Pillow resamples
    elif img.mode in ("La", "RGBa"):
        img = img.convert(img.mode.upper())
    if max(img.size) > WORK_SIDE:
        Image, _ = _pil()
        scale = WORK_SIDE / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        if img.mode in ("P", "PA"):  # resampling needs colours, not palette indices
            img = img.convert("RGBA")
        img = img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)  # a new, small image
    return img


def _pil_to_gray(img: Any, what: str = "image") -> np.ndarray:
    """A Pillow image → (H, W) float32 in [0, 1]; transparency composited on white, EXIF rotation applied."""
    Image, ImageOps = _pil()
    sixteen_bit = img.mode.startswith("I;16")
    img = shrink(ImageOps.exif_transpose(img))  # phone photos store their rotation in EXIF
    if img.mode in ("I", "F"):  # 16-bit, 32-bit int or float: scale by the full-scale value
        arr = np.asarray(img, dtype=np.float64)  # (H, W), at most WORK_SIDE on a side
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{what} has NaN or infinite pixel values: expected finite intensities")
        top = arr.max()  # 16-bit grayscale keeps its precision; otherwise the largest plausible full scale
        full = 65535.0 if sixteen_bit else 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else 65535.0
        return np.clip(arr / full, 0.0, 1.0).astype(np.float32)
    if "A" in img.getbands() or "transparency" in img.info or img.mode == "LAB":
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return (np.asarray(img.convert("L"), dtype=np.float32) / 255.0).astype(np.float32)


def decode_image(data: bytes, *, source: str = "image", formats: tuple[str, ...] = IMAGE_FORMATS) -> np.ndarray:
    """Decode image bytes (PNG, JPEG, GIF, BMP, TIFF, WebP, PPM) as grayscale, safely.

    Untrusted bytes are safe here: the dimensions are checked from the header before any pixel is
    decoded (at most ``MAX_SIDE`` x ``MAX_SIDE``, so Pillow allocates at most 4096² pixels of at most
    4 bytes each, 64 MiB, plus one shrunk working copy; Pillow's own ``MAX_IMAGE_PIXELS`` bomb check
    comes first), only ``formats`` are tried, only the first frame of an animation is read, and every
    failure of Pillow's decoders (truncated, corrupt, unsupported mode, hostile metadata) becomes a
    ``DataError`` quoting ``source``, never a Pillow traceback.

    Returns:
        (H, W) float32 in [0, 1], 0 black and 1 white (no inversion here; see :func:`to_mnist`), at most
        ``WORK_SIDE`` on the longer side.

    Raises:
        DataError: not an image of ``formats``, unreadable, empty, too large, or non-finite pixels.
    """
    Image, _ = _pil()
    if not data:
        raise DataError(f"cannot read {source}: it is empty (0 bytes), expected an image ({', '.join(formats)})")
    try:
        # no warnings.catch_warnings() here: it is not thread-safe, and the server decodes in threads.
        # Pillow's DecompressionBombWarning (above MAX_IMAGE_PIXELS) needs no escalation: MAX_SIDE is smaller.
        with Image.open(io.BytesIO(data), formats=list(formats)) as img:
            _check_size(img.height, img.width, source)  # from the header, before decoding
            img.load()  # the first frame only
            _check_size(img.height, img.width, source)  # some formats settle their size on load
            return _pil_to_gray(img, source)
    except DataError:
        raise
    except Image.UnidentifiedImageError:  # its message names a BytesIO object: say it plainly instead
        expected = ", ".join(formats)
        raise DataError(f"cannot read {source}: not an image Pillow can read, expected one of {expected}") from None
    except Exception as exc:
        # Pillow's decoders raise many types for malformed input (OSError, SyntaxError, ValueError,
        # EOFError, struct.error, IndexError, DecompressionBombError, ...): every one is about the file.
        raise DataError(f"cannot read {source}: {type(exc).__name__}: {exc}") from None


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file (PNG, JPEG, GIF, BMP, TIFF, WebP, PPM) as grayscale; see :func:`decode_image`.

    Transparent pixels are composited on white first, so a digit drawn on a transparent canvas reads
    as ink on paper. EXIF orientation is applied.

    Returns:
        (H, W) float32 in [0, 1], 0 black and 1 white (no inversion here; see :func:`to_mnist`).

    Raises:
        DataFileNotFoundError: ``path`` does not exist (also a ``FileNotFoundError``).
        DataError: not a regular file, larger than ``MAX_FILE_BYTES``, not a readable image, or larger
            than 4096 x 4096 pixels. The message names the file.
    """
    _pil()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataFileNotFoundError(f"no such image file: {path}")
    if os.path.isdir(path):
        raise DataError(f"cannot read image {path}: it is a directory")
    if not os.path.isfile(path):
        raise DataError(f"cannot read image {path}: not a regular file")
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise DataError(f"image {path} is {size} bytes; at most {MAX_FILE_BYTES} is accepted")
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from None
    return decode_image(data, source=f"image {path}")


def _as_gray(image: Any) -> np.ndarray:
    """An array → (H, W) float64 in [0, 1]; see :func:`_gray_and_range`."""
    return _gray_and_range(image)[0]


def _gray_and_range(image: Any) -> tuple[np.ndarray, float, float]:
    """An array → (H, W) float64 in [0, 1], and its minimum and maximum.

    Accepts uint8 (0..255), other integers in 0..255, bool, or floats in [0, 1]; 2-D grayscale or
    (H, W, 3) RGB or (H, W, 4) RGBA (composited on white).
    """
    try:
        arr = np.asarray(image)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise DataError(f"image must be an array of shape (H, W), (H, W, 3) or (H, W, 4): {exc}") from None
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]  # (H, W)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise DataError(f"image must have shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    _check_size(arr.shape[0], arr.shape[1], "image")
    if arr.dtype == np.uint8 and arr.ndim == 3:  # a decoded colour PNG or JPEG: `convprop serve`'s every request
        return _gray_from_uint8(arr)
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
    return arr, float(arr.min()), float(arr.max())


def _gray_from_uint8(arr: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(H, W, 3|4) uint8 → (H, W) float64 luma in [0, 1], RGBA composited on white, computed in float32;
    and its minimum and maximum.

    The same values as the general path to float32 rounding (the result is resampled in float32 anyway)
    in one compiled pass (``image_passes.gray_range``): 0.08 ms for the page's 280 × 280 canvas, where
    the general path took 3 ms and NumPy's float32 passes 0.16 (RGB) to 0.28 (RGBA). Compositing after
    the weighted sum uses Σ_k L_k (c_k·a + 1 − a) = a·Σ_k L_k c_k + (1 − a), the weights summing to 1.
    """
    from .image_passes import gray_range

    gray = np.empty(arr.shape[:2])  # (H, W)
    lo, hi = gray_range(np.ascontiguousarray(arr).ravel(), arr.shape[2], (LUMA / 255).astype(np.float32), gray.ravel())
    return gray, lo, hi


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
        DataError: a bad shape, dtype or range; ``box`` not in [1, size]; or a blank image (no ink).
    """
    from .image_passes import ink_box

    _check_size_and_box(size, box)
    gray, lo, hi = _gray_and_range(image)  # (H, W) float64

    # 2. ink is bright: invert when the paper (border median) is nearer the light end of the image's range
    edge = _border(gray)
    inverted = bool(np.median(edge) > (lo + hi) / 2)
    edge = 1.0 - edge if inverted else edge  # the border of the ink, value for value
    peak = 1.0 - lo if inverted else hi  # ink.max(), exactly: x -> fl(1 - x) is monotonic

    # 3. background to 0, brightest ink to 1 (only inside the box of step 4, where it is also clipped)
    background = float(np.median(edge))
    if peak - background < MIN_CONTRAST:
        raise DataError(
            f"image is blank: no ink found (brightest ink {peak:.3f} vs background {background:.3f}; "
            f"need a difference of at least {MIN_CONTRAST})"
        )

    # 4. crop to the ink's bounding box: pixels whose stretched value exceeds INK_LEVEL (one compiled pass)
    top, bottom, left, right = ink_box(np.ascontiguousarray(gray), inverted, background, peak - background, INK_LEVEL)
    crop = gray[top:bottom, left:right]
    crop = np.clip((((1.0 - crop) if inverted else crop) - background) / (peak - background), 0.0, 1.0)  # (h0, w0)

    # 5. longer side to `box` pixels, aspect ratio kept
    h0, w0 = crop.shape
    scale = box / max(h0, w0)
    h, w = max(1, min(box, round(h0 * scale))), max(1, min(box, round(w0 * scale)))
    crop = lanczos_resize(crop, h, w)  # (h, w)
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


def preprocess_image(image: ImageInput, *, size: int = 28, box: int = 20) -> np.ndarray:
    """A file path, Pillow image or array → one MNIST-style input for a model.

    Shapes:
        returns: (1, size, size) float32 in [0, 1] — add a batch axis with ``x[None]``.

    Raises:
        DataFileNotFoundError: no such file. DataError: see :func:`load_image` and :func:`to_mnist`;
            for a file, the message names it.
    """
    Image, _ = _pil()
    _check_size_and_box(size, box)
    if isinstance(image, (str, os.PathLike)):
        gray = load_image(image)
        try:
            return to_mnist(gray, size=size, box=box)[None]  # (1, size, size)
        except DataError as exc:
            raise DataError(f"image {os.fspath(image)}: {exc}") from None
    if isinstance(image, Image.Image):
        _check_size(image.height, image.width, "image")
        try:
            gray = _pil_to_gray(image)
        except DataError:
            raise
        except Exception as exc:  # Pillow cannot convert this mode (e.g. LAB to L)
            raise DataError(f"cannot read the {image.mode} image: {type(exc).__name__}: {exc}") from None
        return to_mnist(gray, size=size, box=box)[None]  # (1, size, size)
    return to_mnist(image, size=size, box=box)[None]  # (1, size, size)


def _check_size_and_box(size: int, box: int) -> None:
    valid = (
        isinstance(size, (int, np.integer))
        and isinstance(box, (int, np.integer))
        and not isinstance(size, bool)
        and not isinstance(box, bool)
        and 1 <= box <= size <= MAX_SIDE
    )
    if not valid:
        raise ArgumentError(f"need integers 1 <= box <= size <= {MAX_SIDE}, got box={box!r}, size={size!r}")
