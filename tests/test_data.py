"""convprop.data offline: the embedded datasets and the IDX reader.

Batching, normalisation and shifts are tested in test_batches.py; downloads in test_data_download.py,
against a local HTTP server.
"""

import gzip
import importlib.resources
import re
import tracemalloc
import urllib.request

import numpy as np
import pytest

from convprop.data import (
    DATASETS,
    DEFAULT_DATASET,
    DIGIT_CLASSES,
    FASHION_CLASSES,
    DataFileNotFoundError,
    Dataset,
    find_idx_files,
    load_dataset,
    read_idx,
    stratified_split,
    write_idx,
)
from convprop.data import datasets as datasets_module
from convprop.data.datasets import load_idx_dataset
from convprop.errors import ArgumentError, DataError

# ---------------------------------------------------------------------------------------------
# Offline datasets


def test_default_is_mnist_5k():
    assert DEFAULT_DATASET == "mnist-5k"
    assert set(DATASETS) == {"mnist-5k", "digits", "mnist", "fashion-mnist"}


def test_mnist_5k_shapes_dtypes_ranges(mnist5k):
    d = mnist5k
    assert d.name == "mnist-5k" and d.classes == DIGIT_CLASSES and d.num_classes == 10
    assert d.train_images.shape == (4000, 1, 28, 28) and d.test_images.shape == (1000, 1, 28, 28)
    assert d.train_images.dtype == d.test_images.dtype == np.float32
    assert d.train_labels.dtype == d.test_labels.dtype == np.int64
    assert d.image_size == (28, 28) and d.in_channels == 1
    for images in (d.train_images, d.test_images):
        assert images.min() == 0.0 and images.max() == 1.0
    assert "4000, 1, 28, 28" in repr(d)


def test_mnist_5k_is_stratified_400_100(mnist5k):
    assert np.bincount(mnist5k.train_labels).tolist() == [400] * 10
    assert np.bincount(mnist5k.test_labels).tolist() == [100] * 10


def test_mnist_5k_split_is_a_partition_of_the_5000_rows(mnist5k):
    images, labels = datasets_module._mnist_5k_arrays()
    assert images.shape == (5000, 1, 28, 28) and np.bincount(labels).tolist() == [500] * 10
    rows = lambda x, y: sorted(a.tobytes() + bytes([b]) for a, b in zip(x, y, strict=True))  # noqa: E731
    split = rows(np.concatenate([mnist5k.train_images, mnist5k.test_images]),
                 np.concatenate([mnist5k.train_labels, mnist5k.test_labels]))  # fmt: skip
    assert split == rows(images, labels)


def test_mnist_5k_labels_follow_the_pixels(mnist5k):
    """Label is the last CSV column: 1s have the least ink, and 0s far more than 1s."""
    ink = np.array([mnist5k.train_images[mnist5k.train_labels == k].mean() for k in range(10)])
    assert ink.argmin() == 1 and ink[0] > 1.5 * ink[1]


def test_mnist_5k_needs_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("mnist-5k must not touch the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    datasets_module._mnist_5k_arrays.cache_clear()
    assert load_dataset().train_images.shape == (4000, 1, 28, 28)


def test_mnist_5k_resource_layout():
    """The packaged file really is 5,000 rows of 784 pixels then the label, sorted by label."""
    package, inner = datasets_module.MNIST_5K_RESOURCE
    text = gzip.decompress(importlib.resources.files(package).joinpath(inner).read_bytes()).decode()
    first = [int(v) for v in text.split("\n", 1)[0].split(",")]
    assert len(first) == 785 and first[-1] == 0 and max(first[:-1]) == 255


@pytest.mark.parametrize("name", ["mnist-5k", "digits"])
def test_split_is_seeded(name):
    a, b, c = (load_dataset(name, seed=s) for s in (7, 7, 8))
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert not np.array_equal(a.test_images, c.test_images)


def test_digits_shapes_ranges_and_stratification():
    d = load_dataset("digits", seed=1)
    assert d.train_images.shape[1:] == (1, 8, 8) and d.image_size == (8, 8)
    assert len(d.train_images) + len(d.test_images) == 1797
    assert d.train_images.dtype == np.float32 and d.train_labels.dtype == np.int64
    assert d.train_images.min() == 0.0 and d.train_images.max() == 1.0
    totals = np.bincount(d.train_labels) + np.bincount(d.test_labels)
    assert np.array_equal(np.bincount(d.test_labels), np.round(0.2 * totals).astype(int))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"name": "cifar10"}, ValueError, "unknown dataset 'cifar10': expected one of mnist-5k, digits, mnist"),
        ({"name": None}, ValueError, "unknown dataset None"),
        ({"name": "digits", "seed": -1}, ValueError, r"seed must be an int >= 0, got -1"),
        ({"name": "digits", "seed": 1.5}, ValueError, r"seed must be an int >= 0, got 1.5"),
        ({"name": "mnist-5k", "data_dir": "."}, ValueError, "data_dir only applies to mnist and fashion-mnist"),
    ],
)
def test_load_dataset_rejects(kwargs, error, match):
    with pytest.raises(error, match=match):
        load_dataset(**kwargs)


def test_dataset_checks_its_arrays():
    x, y = np.zeros((2, 1, 4, 4), np.float32), np.zeros(2, np.int64)
    with pytest.raises(ValueError, match=r"train_images must be float32 \(N, 1, H, W\), got float64"):
        Dataset("t", DIGIT_CLASSES, x.astype(np.float64), y, x, y)
    with pytest.raises(ValueError, match=r"test_labels must be int64 \(2,\)"):
        Dataset("t", DIGIT_CLASSES, x, y, x, y[:1])


def test_stratified_split_partitions_each_class():
    labels = np.repeat(np.arange(3), [10, 20, 5])
    train, test = stratified_split(labels, 0.2, 0)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(35))
    assert np.bincount(labels[test]).tolist() == [2, 4, 1]
    with pytest.raises(ValueError, match=r"test_fraction must be strictly between 0 and 1, got 1\.0"):
        stratified_split(labels, 1.0, 0)


# ---------------------------------------------------------------------------------------------
# IDX files


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (3, 4, 5), (2, 1, 3, 2)])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, shape, suffix):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 50).astype(dtype)
    path = write_idx(tmp_path / f"a-idx{suffix}", array)
    back = read_idx(path, ndim=len(shape))
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative and np.array_equal(back, array)


def test_idx_layout_is_big_endian_mnist_style(tmp_path):
    path = write_idx(tmp_path / "labels", np.array([1, 2, 258], dtype=np.int32))
    assert path.read_bytes() == bytes.fromhex("0000 0C01 00000003 00000001 00000002 00000102")


def idx_bytes(code: int, shape: tuple[int, ...], payload: int) -> bytes:
    return bytes([0, 0, code, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape) + bytes(payload)


@pytest.mark.parametrize(
    "data, ndim, match",
    [
        (b"\x00\x00", None, r"truncated IDX file: 2 bytes, expected at least a 4-byte magic"),
        (b"\x01\x00\x08\x01" + bytes(8), None, r"bad IDX magic number 0x01000801: expected 0x0000TTDD"),
        (idx_bytes(0x0A, (4,), 4), None, r"unsupported IDX dtype code 0x0A: expected one of 0x08, 0x09"),
        (idx_bytes(0x08, (), 0), None, r"IDX header declares 0 dimensions"),
        (idx_bytes(0x08, (2, 3), 6), 3, r"IDX file has 2 dimensions, expected 3"),
        (idx_bytes(0x08, (2, 3, 4), 0)[:10], None, r"truncated IDX file: 10 bytes, the header of a 3-D file needs 16"),
        (idx_bytes(0x08, (2, 3), 5), None, r"truncated IDX file: header says shape \(2, 3\) of uint8 = 6 "
        r"payload bytes, file has 5"),
        (idx_bytes(0x0B, (2, 3), 13), None, r"IDX size mismatch: header says shape \(2, 3\) of int16 = 12 "
        r"payload bytes, (file has 13|the file holds more \(the rest was not read\))$"),
        (idx_bytes(0x08, (1 << 16, 1 << 16), 0), None, r"shape \(65536, 65536\) of uint8 = 4294967296 payload bytes, "
        r"more than the 2147483648-byte limit"),
        (idx_bytes(0x0E, (0xFFFFFFFF,) * 255, 0), None, r"of float64 = \d{2000,} payload bytes, more than"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("compress", [False, True])
def test_idx_malformed_files_are_named_and_explained(tmp_path, data, ndim, match, compress):
    path = tmp_path / "bad-idx"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(DataError, match=match) as info:
        read_idx(path, ndim=ndim)
    assert str(path) in str(info.value)


def test_idx_corrupt_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(0x08, (100,), 100))[:-12])
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: corrupt or truncated gzip stream"):
        read_idx(path)


def test_write_idx_rejects_unsupported(tmp_path):
    with pytest.raises(TypeError, match="cannot write dtype int64 as IDX"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"IDX arrays need 1 to 255 dimensions, got shape \(\)"):
        write_idx(tmp_path / "x", np.uint8(3))


def write_idx_set(directory, n_train=12, n_test=5, size=(6, 5), gz=True, stems=None):
    """Four small IDX files in MNIST naming; pixel values 0..255, labels 0..9. Returns the arrays."""
    rng = np.random.default_rng(1)
    stems = stems or datasets_module.IDX_STEMS
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, *size), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, *size), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for key, array in arrays.items():
        write_idx(directory / (stems[key] + (".gz" if gz else "")), array)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_load_dataset_from_data_dir(tmp_path, gz):
    arrays = write_idx_set(tmp_path, gz=gz)
    d = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert d.classes == FASHION_CLASSES and d.image_size == (6, 5)
    assert d.train_images.shape == (12, 1, 6, 5) and d.train_images.dtype == np.float32
    assert np.array_equal(d.train_images[:, 0] * 255, arrays["train_images"].astype(np.float32))
    assert np.array_equal(d.test_labels, arrays["test_labels"]) and d.test_labels.dtype == np.int64


def test_data_dir_accepts_dotted_names(tmp_path):
    dotted = {k: v.replace("-idx", ".idx") for k, v in datasets_module.IDX_STEMS.items()}
    write_idx_set(tmp_path, gz=False, stems=dotted)
    assert find_idx_files(tmp_path)["test_labels"].name == "t10k-labels.idx1-ubyte"


def test_data_dir_missing_files(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataFileNotFoundError, match=r"lacks t10k-labels-idx1-ubyte\[.gz\]"):
        load_dataset("mnist", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):  # also a DataError
        load_dataset("mnist", data_dir=tmp_path / "nowhere")
    with pytest.raises(DataError, match="is not a directory"):
        load_dataset("mnist", data_dir=tmp_path / "train-images-idx3-ubyte.gz")


@pytest.mark.parametrize(
    "change, match",
    [
        (("test_labels", np.zeros(4, np.uint8)), r"test split of mnist: 5 images in \S*t10k-images-idx3-ubyte.gz "
        r"but 4 labels in \S*t10k-labels-idx1-ubyte.gz"),
        (("train_labels", np.full(12, 10, np.uint8)), r"label 10 out of range: mnist has 10 classes"),
        (("train_images", np.zeros((12, 6, 5), np.int16)), r"expected uint8 images, got int16"),
        (("train_labels", np.zeros((12, 1), np.uint8)), r"IDX file has 2 dimensions, expected 1"),
        (("test_images", np.zeros((5, 6, 6), np.uint8)), r"train images in \S*train-images-idx3-ubyte.gz are "
        r"\(6, 5\) but test images in \S*t10k-images-idx3-ubyte.gz are \(6, 6\)"),
        (("test_images", np.zeros((0, 6, 5), np.uint8)), r"t10k-images-idx3-ubyte.gz: the test split of mnist has "
        r"0 images: expected at least 1"),
        (("train_images", np.zeros((12, 0, 5), np.uint8)), r"train-images-idx3-ubyte.gz: train images of mnist are "
        r"0 x 5 pixels"),
    ],
)  # fmt: skip
def test_inconsistent_idx_set(tmp_path, change, match):
    write_idx_set(tmp_path)
    key, array = change
    write_idx(tmp_path / (datasets_module.IDX_STEMS[key] + ".gz"), array)
    with pytest.raises(DataError, match=match):
        load_idx_dataset("mnist", DIGIT_CLASSES, find_idx_files(tmp_path))


def test_empty_split_in_data_dir_is_a_clear_error(tmp_path):
    write_idx_set(tmp_path, n_test=0)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: the test split of mnist has 0 images"):
        load_dataset("mnist", data_dir=tmp_path)


def peak_bytes(call):
    """Peak traced allocation (NumPy reports its buffers to tracemalloc) while ``call()`` runs."""
    tracemalloc.start()
    try:
        call()
    except DataError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_gzip_that_expands_without_bound_is_refused_after_the_declared_payload(tmp_path):
    """A gzip IDX whose header declares 10 bytes, followed by 64 MB of zeros: not decompressed, refused."""
    path = tmp_path / "bomb-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(0x08, (10,), 10) + bytes(64 << 20), compresslevel=9))
    assert path.stat().st_size < 100_000
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: IDX size mismatch: .* = 10 payload bytes, the file"):
        read_idx(path)
    assert peak_bytes(lambda: read_idx(path)) < 4 << 20  # the 64 MB were never expanded


@pytest.mark.parametrize("compress", [False, True])
def test_header_claiming_a_terabyte_is_refused_before_reading(tmp_path, compress):
    data = idx_bytes(0x08, (1_000_000, 1_000, 1_000), 100)  # 10**12 bytes declared, 100 present
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(DataError, match=r"= 1000000000000 payload bytes, (more than|file has 100$)"):
        read_idx(path, max_bytes=1 << 40)  # even with the limit lifted: the file cannot hold that much
    assert peak_bytes(lambda: read_idx(path, max_bytes=1 << 40)) < 1 << 20


def test_read_idx_arguments(tmp_path):
    with pytest.raises(DataFileNotFoundError, match=r"no such IDX file: .*missing-idx"):
        read_idx(tmp_path / "missing-idx")
    with pytest.raises(DataError, match="is not a regular file"):
        read_idx(tmp_path)
    with pytest.raises(ArgumentError, match=r"ndim must be an int in 1..255 or None, got '3'"):
        read_idx(tmp_path / "x", ndim="3")
