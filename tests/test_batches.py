"""Feeding data to a model: batch iteration, normalisation and random-shift augmentation."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convprop.data import Normalization, batch_count, iterate_batches, normalize, random_shift

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
        ((np.zeros((3, 1)), np.zeros(3), 0), {}, ValueError, "batch_size must be >= 1, got 0"),
        ((np.zeros((3, 1)), np.zeros(3), True), {}, TypeError, "batch_size must be an int, got True of type bool"),
        (([1, 2], np.zeros(2), 1), {}, TypeError, "must be numpy arrays, got list and ndarray"),
        ((np.zeros((3, 1)), np.zeros(3), 2), {"rng": "seed"}, TypeError, (
            "rng must be None, an int seed or a numpy.random.Generator, got .seed. \\(str\\)"
        ),
    ),
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
    _c, h, w = image.shape
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
        matches = [
            (dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if np.array_equal(out[n], shifted(images[n], dy, dx))
        ]
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
