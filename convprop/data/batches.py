"""Feeding a dataset to a model: mini-batches, normalisation, and a light shift augmentation.

Randomness is always explicit: every random function takes ``rng``, a ``np.random.Generator`` or an
int seed (``None`` draws fresh OS entropy); the global ``np.random`` state is never touched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ArgumentError, ArgumentTypeError
from ..functional.validation import check_positive_int
from ..init import RngLike, as_generator


def batch_count(num_samples: int, batch_size: int, *, drop_last: bool = False) -> int:
    """How many batches :func:`iterate_batches` yields for ``num_samples`` samples."""
    batch_size = check_positive_int(batch_size, "batch_size")
    return num_samples // batch_size if drop_last else -(-num_samples // batch_size)


def iterate_batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = True,
    rng: RngLike = None,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of ``(x, y)`` mini-batches; every sample appears exactly once (bar a dropped tail).

    With ``shuffle`` the order is a permutation drawn from ``rng``: the same seed gives the same
    order. Pass one Generator across epochs to get a fresh order each epoch. Batches are new arrays
    (never views into ``images``), so modifying one does not modify the dataset.

    Shapes:
        images: (N, C, H, W) (any leading N works), labels: (N,)
        x: (B, C, H, W), y: (B,) with B = batch_size, except a smaller last batch unless ``drop_last``.

    Args:
        images, labels: the samples and their labels, same length N.
        batch_size: B >= 1.
        shuffle: draw a random order (else the stored order).
        rng: Generator or int seed for the order; ignored without ``shuffle``.
        drop_last: skip a final batch smaller than ``batch_size``.
    """
    if not isinstance(images, np.ndarray) or not isinstance(labels, np.ndarray):
        raise ArgumentTypeError(
            f"images and labels must be numpy arrays, got {type(images).__name__} and {type(labels).__name__}"
        )
    if images.ndim < 1 or labels.ndim != 1 or len(images) != len(labels):
        raise ArgumentError(
            f"images (N, ...) and labels (N,) must have the same N, got shapes {images.shape} and {labels.shape}"
        )
    batch_size = check_positive_int(batch_size, "batch_size")
    count = len(labels)
    order = as_generator(rng).permutation(count) if shuffle else np.arange(count)
    stop = count - count % batch_size if drop_last else count

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, stop, batch_size):
            index = order[start : start + batch_size]  # (B,)
            yield images[index], labels[index]

    return batches()  # arguments are checked now, not at the first next()


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - mean) / std``; fitted on the training images and stored with a model.

    ``mean`` and ``std`` are tuples of floats, one per channel C, so they serialise to JSON as they
    are. For MNIST the train set gives about mean 0.1307, std 0.3081.
    """

    mean: tuple[float, ...]  # (C,)
    std: tuple[float, ...]  # (C,)

    @classmethod
    def fit(cls, images: np.ndarray) -> Normalization:
        """Mean and standard deviation of each channel over N, H and W of ``images`` (N, C, H, W).

        A constant channel (std 0) gets std 1, so it is centred but not blown up.
        """
        images = _check_images(images, "images")
        mean = images.mean(axis=(0, 2, 3), dtype=np.float64)  # (C,)
        std = images.std(axis=(0, 2, 3), dtype=np.float64)  # (C,)
        std = np.where(std > 0, std, 1.0)
        return cls(tuple(float(m) for m in mean), tuple(float(s) for s in std))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return normalize(images, self.mean, self.std)


def normalize(images: np.ndarray, mean: float | Sequence[float], std: float | Sequence[float]) -> np.ndarray:
    """``(images - mean) / std`` per channel, as a new array of the same float dtype.

    Shapes:
        images: (N, C, H, W); mean, std: a float or C floats.
    """
    images = _check_images(images, "images")
    channels = images.shape[1]
    mean_c = np.asarray(mean, dtype=images.dtype).reshape(-1)  # (1,) or (C,)
    std_c = np.asarray(std, dtype=images.dtype).reshape(-1)  # (1,) or (C,)
    for name, value in (("mean", mean_c), ("std", std_c)):
        if value.size not in (1, channels):
            raise ArgumentError(f"{name} must be a float or {channels} floats (one per channel), got {value.size}")
    if np.any(~(std_c > 0)):
        raise ArgumentError(f"std must be positive, got {std!r}")
    return (images - mean_c.reshape(1, -1, 1, 1)) / std_c.reshape(1, -1, 1, 1)  # (N, C, H, W)


def random_shift(images: np.ndarray, max_shift: int, rng: RngLike) -> np.ndarray:
    """Shift each image by its own random integer offset, filling the uncovered border with zeros.

    Image n is moved down by dy[n] and right by dx[n], both uniform in [-max_shift, max_shift]:
    ``out[n, c, i, j] = images[n, c, i - dy[n], j - dx[n]]``, zero where that index is outside the
    image. Vectorised: pad once, view every H x W window, pick one window per image.

    Shapes:
        images: (N, C, H, W) -> (N, C, H, W), same dtype.

    Args:
        images: the batch to augment (not modified).
        max_shift: the largest shift in pixels, >= 0; 0 returns a copy.
        rng: Generator or int seed; the same seed gives the same shifts.
    """
    images = _check_images(images, "images", float_only=False)
    if isinstance(max_shift, bool) or not isinstance(max_shift, (int, np.integer)) or max_shift < 0:
        raise ArgumentError(f"max_shift must be an int >= 0, got {max_shift!r}")
    generator = as_generator(rng)
    n, _, h, w = images.shape
    s = int(max_shift)
    dy = generator.integers(-s, s, endpoint=True, size=n)  # (N,)
    dx = generator.integers(-s, s, endpoint=True, size=n)  # (N,)
    padded = np.pad(images, ((0, 0), (0, 0), (s, s), (s, s)))  # (N, C, H+2s, W+2s)
    windows = sliding_window_view(padded, (h, w), axis=(2, 3))  # (N, C, 2s+1, 2s+1, H, W), a view
    # padded[s + p] holds images[p], so out[i] = images[i - dy] = padded[i + (s - dy)]: window s - dy.
    batch = np.arange(n)
    return windows[batch, :, s - dy, s - dx]  # (N, C, H, W): advanced indices first, then C, H, W


def _check_images(images: np.ndarray, name: str, *, float_only: bool = True) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise ArgumentTypeError(f"{name} must be a numpy array (N, C, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise ArgumentError(f"{name} must have shape (N, C, H, W), got {images.ndim}-D shape {images.shape}")
    if float_only and images.dtype.kind != "f":
        raise ArgumentTypeError(f"{name} must have a float dtype, got {images.dtype}")
    return images
