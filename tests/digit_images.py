"""Test utility: draw real-looking digits with Pillow, as a user's photo or drawing would look.

``render_digit(7, tmp_path / "seven.jpg")`` makes a JPEG of a black 7 on white paper; CLI and
preprocessing tests use it so they never need image files checked into the repository.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from convprop.fileio import write_atomic

Color = str | int | tuple[int, ...]


def render_digit(
    digit: int,
    path: str | os.PathLike | None = None,
    *,
    size: tuple[int, int] = (120, 160),  # (width, height) of the canvas, as Pillow orders it
    background: Color | None = "white",  # None: a transparent canvas (RGBA)
    ink: Color = "black",
    offset: tuple[int, int] = (0, 0),  # (dx, dy) of the glyph from the canvas centre, in pixels
    font_size: int | None = None,  # glyph size in pixels; default 60 % of the canvas height
    thickness: int = 3,  # extra stroke width around the glyph outline, in pixels
) -> Image.Image:
    """Draw ``digit`` with Pillow's bundled scalable font; save it to ``path`` if given (format from suffix).

    Returns an RGB image, or RGBA when ``background`` is None. JPEG files are saved as RGB on white.
    """
    if not 0 <= digit <= 9:
        raise ValueError(f"digit must be 0..9, got {digit}")
    width, height = size
    font = ImageFont.load_default(size=font_size or max(8, int(0.6 * height)))  # needs Pillow >= 10.1
    img = Image.new("RGBA", size, (0, 0, 0, 0)) if background is None else Image.new("RGB", size, background)
    draw = ImageDraw.Draw(img)
    centre = (width / 2 + offset[0], height / 2 + offset[1])
    draw.text(centre, str(digit), font=font, fill=ink, anchor="mm", stroke_width=thickness, stroke_fill=ink)
    if path is not None:
        path = Path(path)
        fmt = Image.registered_extensions().get(path.suffix.lower())
        if fmt is None:
            raise ValueError(f"unknown image suffix {path.suffix!r} in {path}")
        to_save = img
        if fmt == "JPEG" and img.mode == "RGBA":
            to_save = Image.alpha_composite(Image.new("RGBA", size, "white"), img).convert("RGB")
        buf = io.BytesIO()
        to_save.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        write_atomic(path, buf.getvalue())
    return img
