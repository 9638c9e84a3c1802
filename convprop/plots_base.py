"""What every figure of :mod:`convprop.plots` shares: a figure without pyplot, the PNG written atomically,
tiles laid out as one image, and the checks that turn inputs into arrays.

matplotlib is imported inside the functions, never at module import, and no display is ever needed
(``Figure`` + ``FigureCanvasAgg`` directly, so the global ``pyplot`` state and backend are never touched).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArgumentError, ArgumentTypeError
from .fileio import check_suffix, write_atomic

DPI = 100  # small PNGs: they are committed to docs/ and embedded in the README
MARGIN_PX = 10  # background kept around a plot's content: 0.1 inch at DPI


def _new_figure(width_in: float, height_in: float) -> Any:
    """A matplotlib Figure with its own Agg canvas (no pyplot, no display)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("convprop.plots needs matplotlib: pip install matplotlib") from exc
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _output(path: str | os.PathLike) -> Path:
    """``path`` if it names a PNG, else ArgumentError: checked first, before anything is drawn or written."""
    return check_suffix(path, (".png",), "a PNG plot")


def _save(fig: Any, path: str | os.PathLike) -> Path:
    """Render ``fig`` to PNG bytes in memory, then write them atomically to ``path``.

    Empty margins are trimmed from the rendered pixels (to :data:`MARGIN_PX` of the figure's background
    on each side), after one draw: ``savefig(bbox_inches="tight")`` draws the figure twice, once to
    measure it, which took ~1 s of the 2 s the five plots of a run cost. Only when the drawing touches
    the figure's edge (a long label may then reach beyond it) does matplotlib measure and draw again.
    """
    from matplotlib.image import imsave

    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())  # (H, W, 4) uint8
    background = np.round(255 * np.asarray(fig.get_facecolor())).astype(np.uint8)  # (4,) RGBA
    ink = (rgba != background).any(axis=2)  # (H, W): pixels that are not the figure's background
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    buf = io.BytesIO()
    if rows.size and min(rows[0], cols[0]) > 0 and rows[-1] < ink.shape[0] - 1 and cols[-1] < ink.shape[1] - 1:
        top, left = max(rows[0] - MARGIN_PX, 0), max(cols[0] - MARGIN_PX, 0)
        imsave(buf, rgba[top : rows[-1] + MARGIN_PX + 1, left : cols[-1] + MARGIN_PX + 1], format="png", dpi=DPI)
    else:  # something touches the edge, so may lie beyond it (a long label): let matplotlib measure the whole
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=MARGIN_PX / DPI)
    return write_atomic(path, buf.getvalue())


def _grid(n: int, max_cols: int = 8) -> tuple[int, int]:
    """Rows and columns of a near-square grid holding ``n`` tiles, at most ``max_cols`` wide."""
    cols = min(max_cols, max(1, math.ceil(math.sqrt(n))))
    return math.ceil(n / cols), cols


def _mosaic(tiles: np.ndarray, cols: int, gap: tuple[int, int]) -> np.ndarray:
    """Tiles (n, h, w) laid out row by row, ``cols`` a row, ``gap`` = (rows, columns) of NaN between them.

    One image instead of one axes per tile: matplotlib spends most of a tile plot creating and laying
    out axes (the three tile plots of a run took ~1.1 s that way). NaN is drawn in the figure's
    background colour, so the tiles stand apart exactly as separate axes did.

    Shapes: tiles (n, h, w) → (rows·(h + gap_h) − gap_h, cols·(w + gap_w) − gap_w), rows = ⌈n / cols⌉.
    """
    n, h, w = tiles.shape
    rows = math.ceil(n / cols)
    gh, gw = gap
    out = np.full((rows * (h + gh) - gh, cols * (w + gw) - gw), np.nan)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + gh) : r * (h + gh) + h, c * (w + gw) : c * (w + gw) + w] = tiles[i]
    return out


def _tile_origin(i: int, cols: int, size: tuple[int, int], gap: tuple[int, int]) -> tuple[float, float]:
    """Data coordinates (x, y) of the top-left corner of tile ``i`` in :func:`_mosaic`'s image."""
    r, c = divmod(i, cols)
    return c * (size[1] + gap[1]) - 0.5, r * (size[0] + gap[0]) - 0.5


def _show_mosaic(ax: Any, mosaic: np.ndarray, cmap: str, **kwargs: Any) -> Any:
    """``imshow`` of a mosaic, NaN in the background colour, no axis."""
    from matplotlib import colormaps

    colours = colormaps[cmap].with_extremes(bad=(1.0, 1.0, 1.0, 0.0))  # NaN: transparent over the background
    ax.set_axis_off()
    return ax.imshow(mosaic, cmap=colours, interpolation="nearest", **kwargs)


def _floats(value: Any, name: str) -> np.ndarray:
    """``value`` as a float64 array, or ArgumentTypeError saying what it was (not NumPy's message)."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ArgumentTypeError(f"{name} must be an array of numbers, got {type(value).__name__}") from None


def _sequence(value: Any, name: str, of: str) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise ArgumentTypeError(f"{name} must be a list of {of}, got {type(value).__name__}")
    return list(value)


def _as_images(images: Any, name: str) -> np.ndarray:
    """(N, H, W) or (N, 1, H, W) → float (N, H, W)."""
    images = _floats(images, name)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]  # (N, H, W)
    if images.ndim != 3:
        raise ArgumentError(f"{name} must have shape (N, H, W) or (N, 1, H, W), got {images.shape}")
    return images
