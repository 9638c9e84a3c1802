"""convprop.data offline: the embedded datasets, the IDX reader, batching, normalisation, shifts.

Downloads are tested in test_data_download.py against a local HTTP server.
"""

import gzip
import importlib.resources
import urllib.request

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convprop.data import (
    DATASETS,
    DEFAULT_DATASET,
    DIGIT_CLASSES,
    FASHION_CLASSES,
    Dataset,
    Normalization,
    batch_count,
    find_idx_files,
    iterate_batches,
    load_dataset,
    normalize,
    random_shift,
    read_idx,
    stratified_split,
    write_idx,
)
from convprop.data import datasets as datasets_module
from convprop.data.datasets import load_idx_dataset

# ---------------------------------------------------------------------------------------------
# Offline datasets


@pytest.fixture(scope="module")
def mnist5k() -> Dataset:
    return load_dataset("mnist-5k", seed=0)


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
    rows = lambda x, y: sorted(a.tobytes() + bytes([b]) for a, b in zip(x, y))  # noqa: E731
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
    with pytest.raises(ValueError, match="test_fraction must be strictly between 0 and 1, got 1.0"):
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
        (idx_bytes(0x08, (2, 3), 5), None, r"truncated IDX file: header says shape \(2, 3\) of uint8 = 6 payload bytes, file has 5"),
        (idx_bytes(0x0B, (2, 3), 13), None, r"IDX size mismatch: header says shape \(2, 3\) of int16 = 12 payload bytes, file has 13"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("compress", [False, True])
def test_idx_malformed_files_are_named_and_explained(tmp_path, data, ndim, match, compress):
    path = tmp_path / "bad-idx"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(ValueError, match=match) as info:
        read_idx(path, ndim=ndim)
    assert str(path) in str(info.value)


def test_idx_corrupt_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(0x08, (100,), 100))[:-12])
    with pytest.raises(ValueError, match="corrupt or truncated gzip stream"):
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
    with pytest.raises(FileNotFoundError, match=r"lacks t10k-labels-idx1-ubyte\[.gz\]"):
        load_dataset("mnist", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_dataset("mnist", data_dir=tmp_path / "nowhere")


@pytest.mark.parametrize(
    "change, match",
    [
        (("test_labels", np.zeros(4, np.uint8)), r"test split of mnist: 5 images in t10k-images-idx3-ubyte.gz but 4 labels"),
        (("train_labels", np.full(12, 10, np.uint8)), r"label 10 out of range: mnist has 10 classes"),
        (("train_images", np.zeros((12, 6, 5), np.int16)), r"expected uint8 images, got int16"),
        (("train_labels", np.zeros((12, 1), np.uint8)), r"IDX file has 2 dimensions, expected 1"),
        (("test_images", np.zeros((5, 6, 6), np.uint8)), r"train images are \(6, 5\) but test images \(6, 6\)"),
    ],
)  # fmt: skip
def test_inconsistent_idx_set(tmp_path, change, match):
    write_idx_set(tmp_path)
    key, array = change
    write_idx(tmp_path / (datasets_module.IDX_STEMS[key] + ".gz"), array)
    with pytest.raises(ValueError, match=match):
        load_idx_dataset("mnist", DIGIT_CLASSES, find_idx_files(tmp_path))


# ---------------------------------------------------------------------------------------------
# Batches


def labelled(n: int) -> tuple[np.ndarray, np.ndarray]:
    """images whose every pixel is the sample's index, so x and y can be checked against each other."""
    return np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 2, 2), np.float32), np.arange(n)


@pytest.mark.parametrize("batch_size", [1, 7, 50, 53])
@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_cover_every_sample_once(batch_size, shuffle):
    images, labels = labelled(50)
    batches = list(iterate_batches(images, labels, batch_size, shuffle=shuffle, rng=0))
    assert len(batches) == batch_count(50, batch_size)
    seen = np.concatenate([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(50))
    assert all(len(y) == batch_size for _, y in batches[:-1])
    for x, y in batches:
        assert x.shape == (len(y), 1, 2, 2) and np.array_equal(x[:, 0, 0, 0], y)
    assert (seen.tolist() == list(range(50))) is (not shuffle)  # a shuffled order is never the identity here


def test_drop_last():
    images, labels = labelled(50)
    batches = list(iterate_batches(images, labels, 7, rng=0, drop_last=True))
    assert len(batches) == 7 == batch_count(50, 7, drop_last=True) and all(len(y) == 7 for _, y in batches)


@given(n=st.integers(0, 40), batch_size=st.integers(1, 12), drop_last=st.booleans(), seed=st.integers(0, 2**32))
def test_batches_property(n, batch_size, drop_last, seed):
    images, labels = labelled(n)
    ys = [y for _, y in iterate_batches(images, labels, batch_size, rng=seed, drop_last=drop_last)]
    assert len(ys) == batch_count(n, batch_size, drop_last=drop_last)
    seen = np.concatenate(ys) if ys else np.array([], int)
    assert len(np.unique(seen)) == len(seen) == (n - n % batch_size if drop_last else n)


def test_shuffle_is_seeded():
    images, labels = labelled(100)
    order = lambda rng: np.concatenate([y for _, y in iterate_batches(images, labels, 16, rng=rng)])  # noqa: E731
    assert np.array_equal(order(3), order(3))
    assert np.array_equal(order(np.random.default_rng(3)), order(3))
    assert not np.array_equal(order(3), order(4))
    shared = np.random.default_rng(5)  # one generator across epochs: a new order each epoch
    assert not np.array_equal(order(shared), order(shared))


def test_batches_are_copies():
    images, labels = labelled(4)
    for x, _ in iterate_batches(images, labels, 2, shuffle=False):
        x[:] = -1
    assert images.min() == 0


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((np.zeros((3, 1)), np.zeros(4), 2), {}, ValueError, r"same N, got shapes \(3, 1\) and \(4,\)"),
        ((np.zeros((3, 1)), np.zeros(3), 0), {}, ValueError, "batch_size must be a positive int, got 0"),
        ((np.zeros((3, 1)), np.zeros(3), True), {}, ValueError, "batch_size must be a positive int, got True"),
        (([1, 2], np.zeros(2), 1), {}, TypeError, "must be numpy arrays, got list and ndarray"),
        ((np.zeros((3, 1)), np.zeros(3), 2), {"rng": "seed"}, TypeError, "rng must be None, an int seed or a numpy.random.Generator, got .seed. \\(str\\)"),
    ],
)  # fmt: skip
def test_iterate_batches_rejects_eagerly(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        iterate_batches(*args, **kwargs)  # raises at the call, not at the first next()


# ---------------------------------------------------------------------------------------------
# Normalisation


def test_normalization_fit_on_mnist_5k(mnist5k):
    norm = Normalization.fit(mnist5k.train_images)
    assert len(norm.mean) == len(norm.std) == 1
    assert 0.11 < norm.mean[0] < 0.15 and 0.28 < norm.std[0] < 0.33  # MNIST: 0.1307, 0.3081
    out = norm(mnist5k.train_images)
    assert out.dtype == np.float32 and out.shape == mnist5k.train_images.shape
    assert abs(out.mean()) < 1e-4 and abs(out.std() - 1) < 1e-4


def test_normalize_per_channel():
    x = np.random.default_rng(0).random((4, 3, 5, 5))
    out = normalize(x, [1.0, 2.0, 3.0], [2.0, 4.0, 8.0])
    assert np.allclose(out[:, 2], (x[:, 2] - 3) / 8) and out.dtype == np.float64
    assert np.allclose(normalize(x, 0.5, 2.0), (x - 0.5) / 2)
    constant = Normalization.fit(np.ones((2, 1, 3, 3), np.float32))
    assert constant == Normalization((1.0,), (1.0,))


@pytest.mark.parametrize(
    "images, mean, std, error, match",
    [
        (np.zeros((2, 3, 4, 4)), [0, 0], 1, ValueError, "mean must be a float or 3 floats"),
        (np.zeros((2, 1, 4, 4)), 0, 0, ValueError, "std must be positive, got 0"),
        (np.zeros((2, 4, 4)), 0, 1, ValueError, r"must have shape \(N, C, H, W\), got 3-D shape"),
        (np.zeros((2, 1, 4, 4), np.uint8), 0, 1, TypeError, "must have a float dtype, got uint8"),
    ],
)
def test_normalize_rejects(images, mean, std, error, match):
    with pytest.raises(error, match=match):
        normalize(images, mean, std)


# ---------------------------------------------------------------------------------------------
# Random shift


def shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Reference: out[c, i, j] = image[c, i - dy, j - dx], zero outside. Loops, on purpose."""
    c, h, w = image.shape
    out = np.zeros_like(image)
    for i in range(h):
        for j in range(w):
            if 0 <= i - dy < h and 0 <= j - dx < w:
                out[:, i, j] = image[:, i - dy, j - dx]
    return out


def test_random_shift_matches_the_loop_reference():
    images = np.random.default_rng(0).random((24, 2, 7, 6)).astype(np.float32) + 0.5  # no zeros
    out = random_shift(images, 2, rng=1)
    assert out.shape == images.shape and out.dtype == images.dtype
    offsets = set()
    for n in range(len(images)):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if np.array_equal(out[n], shifted(images[n], dy, dx))]
        assert len(matches) == 1, n
        offsets.add(matches[0])
    assert len(offsets) > 5  # each image draws its own shift


def test_random_shift_is_seeded_and_pure():
    images = np.random.default_rng(0).random((10, 1, 8, 8))
    before = images.copy()
    assert np.array_equal(random_shift(images, 3, 4), random_shift(images, 3, np.random.default_rng(4)))
    assert not np.array_equal(random_shift(images, 3, 4), random_shift(images, 3, 5))
    assert np.array_equal(images, before)
    same = random_shift(images, 0, 4)
    assert np.array_equal(same, images) and not np.shares_memory(same, images)


@pytest.mark.parametrize("max_shift", [-1, 1.5, True])
def test_random_shift_rejects(max_shift):
    with pytest.raises(ValueError, match=f"max_shift must be an int >= 0, got {max_shift!r}"):
        random_shift(np.zeros((1, 1, 4, 4)), max_shift, 0)
