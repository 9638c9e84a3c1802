"""The width of the pen: thicken or thin a digit by one pixel, a grey-scale dilation or erosion with the disk
of radius one pixel (the centre and its four neighbours), one of the training distortions of
:mod:`convprop.data.augment` (which re-exports these names).
"""

from __future__ import annotations

import numpy as np

from ..init import RngLike, as_generator
from .sampling import _check_images, _real

# the digital disk of radius one pixel, per image and channel (nothing across them): centre and 4 neighbours
CROSS = np.zeros((1, 1, 3, 3), dtype=bool)
CROSS[0, 0, 1, :] = CROSS[0, 0, :, 1] = True


def random_stroke(images: np.ndarray, rng: RngLike, probability: float = 0.5) -> np.ndarray:
    """Thicken or thin each image's strokes by one pixel at random, as a wider or finer pen would.

    Image n is dilated (``max`` over the radius-1 disk: every stroke grows by a pixel on each side) with
    probability p/2, eroded (``min``: shrinks by a pixel) with probability p/2, and left alone otherwise.
    Both commute with an increasing affine map, so normalised images can be given as they are.
    One grey-scale dilation and one erosion of the whole batch; a per-image choice picks among them.

    Shapes:
        images: (N, C, H, W) -> (N, C, H, W), same dtype.

    Args:
        rng: Generator or int seed.
        probability: p in [0, 1]; 0 returns an exact copy.
    """
    images = _check_images(images)
    p = _real("probability", probability, 0.0, 1.0)
    draw = as_generator(rng).random(len(images))[:, None, None, None]  # (N, 1, 1, 1)
    if p == 0:
        return images.copy()
    thick, thin = cross_extremes(images)  # (N, C, H, W) each
    return np.where(draw < p / 2, thick, np.where(draw < p, thin, images))  # (N, C, H, W)


def cross_extremes(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grey-scale dilation and erosion with the radius-1 disk (:data:`CROSS`): max and min of five pixels.

    The same as ``scipy.ndimage.grey_dilation(images, footprint=CROSS)`` (and ``grey_erosion``) with
    their default ``mode="reflect"``, which for a radius of one repeats the edge pixel; written as five
    shifted slices of one edge-padded array, several times faster than the general filter on small batches.

    Shapes:
        images: (N, C, H, W) -> two arrays (N, C, H, W), same dtype.
    """
    h, w = images.shape[2:]
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")  # (N, C, H+2, W+2)
    centre = padded[:, :, 1 : h + 1, 1 : w + 1]
    neighbours = [
        padded[:, :, 0:h, 1 : w + 1],  # above
        padded[:, :, 2 : h + 2, 1 : w + 1],  # below
        padded[:, :, 1 : h + 1, 0:w],  # left
        padded[:, :, 1 : h + 1, 2 : w + 2],  # right
    ]
    high, low = centre.copy(), centre.copy()
    for view in neighbours:
        np.maximum(high, view, out=high)
        np.minimum(low, view, out=low)
    return high, low
