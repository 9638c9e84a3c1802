"""Training distortions (convprop.data.augment): identity at zero strength, known maps, seeds, bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from convprop import cli
from convprop.data import (
    elastic_distortion,
    random_affine,
    random_distortion,
    random_stroke,
    sample_bilinear,
    warp_affine,
)
from convprop.data.augment import CROSS, _sample_bilinear_numpy, cross_extremes, gaussian_matrix
from convprop.errors import ArgumentError, ArgumentTypeError, ConfigError
from convprop.train import TrainConfig, distort


def batch(shape=(5, 2, 9, 11), dtype=np.float32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(dtype)


STRONG = dict(rotation=20.0, scale=0.2, shear=15.0, translation=2.0)
RANDOM = [
    ("affine", lambda x, rng: random_affine(x, rng, **STRONG)),
    ("elastic", lambda x, rng: elastic_distortion(x, rng, alpha=34.0, sigma=4.0)),
    ("both", lambda x, rng: random_distortion(x, rng, **STRONG, alpha=34.0, sigma=4.0)),
    ("stroke", lambda x, rng: random_stroke(x, rng, probability=1.0)),
]
ZERO = [
    ("random_affine", lambda x: random_affine(x, 0)),
    ("elastic alpha=0", lambda x: elastic_distortion(x, 0, alpha=0.0)),
    ("random_distortion", lambda x: random_distortion(x, 0, sigma=2.0)),
    ("random_stroke p=0", lambda x: random_stroke(x, 0, probability=0.0)),
    ("warp_affine", lambda x: warp_affine(x)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "transform"), ZERO, ids=[z[0] for z in ZERO])
def test_zero_strength_is_exactly_the_identity(name, transform, dtype):
    """Exactly, not to tolerance: the grid is then the integer pixel grid, the bilinear weights 1 and 0."""
    x = batch(dtype=dtype)
    out = transform(x)
    assert out.dtype == dtype and out is not x
    assert np.array_equal(out, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "transform"), RANDOM, ids=[r[0] for r in RANDOM])
def test_shape_dtype_and_seed(name, transform, dtype):
    x = batch(dtype=dtype)
    before = x.copy()
    a, b, c = transform(x, 7), transform(x, np.random.default_rng(7)), transform(x, 8)
    assert a.shape == x.shape and a.dtype == dtype
    assert np.array_equal(a, b)  # same seed, same distortions, bit for bit
    assert not np.allclose(a, c)  # another seed, other distortions
    assert not np.allclose(a, x)  # something happened
    assert np.array_equal(x, before)  # the input is not modified
    assert np.all(np.isfinite(a))


def test_each_image_gets_its_own_distortion_and_channels_share_it():
    one = batch((1, 1, 12, 12))
    x = np.concatenate([one, one, one])  # three copies of one image
    x = np.concatenate([x, 2 * x], axis=1)  # (3, 2, 12, 12): channel 1 is twice channel 0
    out = random_distortion(x, 3, **STRONG, alpha=20.0)
    assert not np.allclose(out[0], out[1]) and not np.allclose(out[1], out[2])
    np.testing.assert_allclose(out[:, 1], 2 * out[:, 0], rtol=1e-6)


@pytest.mark.parametrize("k", [1, -1, 2])
def test_rotation_by_right_angles_is_np_rot90(k):
    """Positive angles turn the digit counter-clockwise as displayed, like np.rot90."""
    x = batch((3, 2, 7, 7), np.float64)
    np.testing.assert_allclose(warp_affine(x, rotation=90.0 * k), np.rot90(x, k, axes=(2, 3)), atol=1e-12)


def test_rotation_of_a_single_pixel_by_hand():
    """One lit pixel at (2, 3) of a 5×5 image, one step right of the centre c = (2, 2), turned 45°.

    Output pixel o reads the source at p = R(−45°)(o − c) + c, with R(−θ) = [[cos, sin], [−sin, cos]]:
    o = (1, 3): o − c = (−1, 1) → p = (2, 2 + √2); weight on (2, 3) is 1 − (√2 − 1) = 2 − √2.
    o = (2, 3): o − c = (0, 1) → p = (2 + √½, 2 + √½); weight (1 − √½) · √½ = √½ − ½.
    o = (1, 2): o − c = (−1, 0) → p = (2 − √½, 2 + √½); weight (1 − √½) · √½ = √½ − ½.
    o = (2, 2) reads the centre itself: 0. The lit pixel moved up and right: counter-clockwise.
    """
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 3] = 1.0
    out = warp_affine(x, rotation=45.0)[0, 0]
    half = np.sqrt(0.5)
    expected = np.zeros((5, 5))
    expected[1, 3], expected[2, 3], expected[1, 2] = 2 - np.sqrt(2), half - 0.5, half - 0.5
    np.testing.assert_allclose(out, expected, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "reference"),
    [
        (dict(rotation=30.0), lambda im: ndimage.rotate(im, 30.0, reshape=False, order=1, mode="grid-constant")),
        (dict(rotation=-75.0), lambda im: ndimage.rotate(im, -75.0, reshape=False, order=1, mode="grid-constant")),
        (dict(translation=(1.5, -0.25)), lambda im: ndimage.shift(im, (1.5, -0.25), order=1, mode="grid-constant")),
    ],
    ids=["rot30", "rot-75", "shift"],
)
def test_affine_maps_match_scipy_ndimage(kwargs, reference):
    x = batch((2, 3, 11, 13), np.float64)
    out = warp_affine(x, **kwargs)
    expected = np.stack([np.stack([reference(im) for im in images]) for images in x])
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_scale_and_shear_match_scipy_affine_transform():
    """ndimage.affine_transform reads output o at matrix · o + offset: our p = A⁻¹(o − c) + c."""
    x = batch((1, 1, 15, 15), np.float64)
    s, phi = 1.3, np.deg2rad(20.0)
    inverse = np.array([[1.0, 0.0], [np.tan(phi), 1.0]]) / s  # (1/s) K(−φ), no rotation
    centre = np.array([7.0, 7.0])
    expected = ndimage.affine_transform(
        x[0, 0], inverse, offset=centre - inverse @ centre, order=1, mode="grid-constant"
    )
    np.testing.assert_allclose(warp_affine(x, scale=s, shear=20.0)[0, 0], expected, atol=1e-12)


def test_positive_shear_leans_the_top_to_the_right():
    x = np.zeros((1, 1, 9, 9))
    x[0, 0, :, 4] = 1.0  # a vertical bar
    out = warp_affine(x, shear=25.0)[0, 0]
    top_col = (out[1] * np.arange(9)).sum() / out[1].sum()
    bottom_col = (out[7] * np.arange(9)).sum() / out[7].sum()
    assert top_col > 4.5 > 3.5 > bottom_col


def test_elastic_field_is_a_gaussian_blur_of_uniform_noise():
    u = np.random.default_rng(0).uniform(-1, 1, (3, 28, 28))
    g = gaussian_matrix(28, 4.0)
    np.testing.assert_allclose(g @ u @ g.T, ndimage.gaussian_filter(u, (0, 4.0, 4.0), mode="constant"), atol=1e-12)


def test_elastic_displacements_have_simards_size():
    """α = 34, σ = 4 on 28×28 moves pixels by about a pixel and a half (rms), never by a whole image."""
    x = np.zeros((200, 1, 28, 28))
    x[:, 0, 14, 14] = 1.0
    out = elastic_distortion(x, 0, alpha=34.0, sigma=4.0)
    rows, cols = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")
    mass = out[:, 0].sum(axis=(1, 2))
    moved = np.hypot((out[:, 0] * rows).sum(axis=(1, 2)) / mass - 14, (out[:, 0] * cols).sum(axis=(1, 2)) / mass - 14)
    assert 0.5 < np.sqrt((moved**2).mean()) < 3.0


def test_points_outside_read_the_fill_value():
    x = batch((2, 1, 6, 6), np.float64)
    far = np.full((2, 3, 4), 100.0)
    assert np.array_equal(sample_bilinear(x, far, -far, fill=-0.5), np.full((2, 1, 3, 4), -0.5))
    shifted = warp_affine(x, translation=(0.0, 10.0), fill=7.0)
    assert np.array_equal(shifted, np.full_like(x, 7.0))


def test_sample_bilinear_at_integer_points_gathers_pixels():
    x = batch((2, 3, 5, 6), np.float64)
    rows = np.array([[[0, 4], [2, 1]], [[3, 3], [0, 0]]], dtype=float)  # (2, 2, 2)
    cols = np.array([[[5, 0], [2, 3]], [[1, 4], [0, 5]]], dtype=float)
    out = sample_bilinear(x, rows, cols)
    n = np.arange(2)[:, None, None]
    assert out.shape == (2, 3, 2, 2)
    assert np.array_equal(out, x[n, :, rows.astype(int), cols.astype(int)].transpose(0, 3, 1, 2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("seed", range(4))
def test_compiled_sampler_equals_the_numpy_reference_bit_for_bit(dtype, seed):
    """Random points inside, on the edge of and far outside images of random sizes, integer points too."""
    rng = np.random.default_rng(seed)
    n, c, h, w, oh, ow = rng.integers(1, 9, size=6)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    rows, cols = rng.uniform(-3, h + 3, (n, oh, ow)), rng.uniform(-3, w + 3, (n, oh, ow))
    rows[0, 0] = rng.integers(-2, h + 2, ow)  # whole pixels, in and out of the image
    cols[0, 0] = rng.integers(-2, w + 2, ow)
    fill = float(rng.uniform(-1, 1))
    got = sample_bilinear(x, rows, cols, fill=fill)
    assert got.dtype == dtype
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=fill)
    np.testing.assert_array_equal(got, _sample_bilinear_numpy(padded, rows, cols))


def test_random_stroke_dilates_or_erodes_each_image_with_the_radius_one_disk():
    x = np.zeros((200, 1, 7, 7), dtype=np.float32)
    x[:, 0, 2:5, 2:5] = 1.0  # a 3 × 3 square: dilated 21 pixels (5 × 5 minus corners), eroded 1
    out = random_stroke(x, 0, probability=0.5)
    ink = out.sum(axis=(1, 2, 3))
    assert set(ink.tolist()) == {21.0, 9.0, 1.0}
    assert 0.35 < (ink == 9).mean() < 0.65  # about half unchanged, a quarter each way
    assert np.array_equal(out[ink == 1][0, 0, 3, 3], 1.0)
    thin_only = random_stroke(x, 1, probability=1.0)
    assert set(thin_only.sum(axis=(1, 2, 3)).tolist()) == {21.0, 1.0}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_extremes_are_scipys_grey_dilation_and_erosion(dtype):
    x = batch((6, 2, 9, 7), dtype)
    high, low = cross_extremes(x)
    assert high.dtype == low.dtype == dtype
    assert np.array_equal(high, ndimage.grey_dilation(x, footprint=CROSS))
    assert np.array_equal(low, ndimage.grey_erosion(x, footprint=CROSS))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda x: random_affine(x, 0, rotation=-5.0), ArgumentError, "rotation must be in [0.0, 180.0], got -5.0"),
        (lambda x: random_affine(x, 0, scale=1.5), ArgumentError, "scale must be in [0.0, 0.9], got 1.5"),
        (lambda x: random_affine(x, 0, shear=90), ArgumentError, "shear must be in [0.0, 60.0], got 90"),
        (lambda x: random_affine(x, 0, translation=-1), ArgumentError, "translation must be >= 0.0, got -1"),
        (lambda x: random_affine(x, 0, rotation=float("nan")), ArgumentError, "rotation must be in"),
        (lambda x: random_affine(x, 0, rotation="10"), ArgumentTypeError, "rotation must be a real number, got '10'"),
        (lambda x: elastic_distortion(x, 0, alpha=-1.0), ArgumentError, "alpha must be >= 0.0, got -1.0"),
        (lambda x: elastic_distortion(x, 0, sigma=0.0), ArgumentError, "sigma must be > 0.0, got 0.0"),
        (lambda x: random_distortion(x, 0, sigma=-2), ArgumentError, "sigma must be > 0.0, got -2"),
        (lambda x: warp_affine(x, scale=0.0), ArgumentError, "scale must be positive, got 0.0"),
        (lambda x: random_stroke(x, 0, probability=1.5), ArgumentError, "probability must be in [0.0, 1.0], got 1.5"),
        (lambda x: warp_affine(x, rotation=[1.0, 2.0]), ArgumentError, "rotation must be a number or an array of"),
        (lambda x: warp_affine(x, translation=np.zeros((4, 3))), ArgumentError, "shape (4, 2) (one per image)"),
        (lambda x: random_affine(x[0], 0), ArgumentError, "images must have shape (N, C, H, W), got 3-D"),
        (lambda x: random_affine(x.astype(np.uint8), 0), ArgumentTypeError, "float dtype, got uint8"),
        (lambda x: random_affine(x.tolist(), 0), ArgumentTypeError, "numpy array (N, C, H, W), got list"),
        (lambda x: sample_bilinear(x, np.zeros((4, 2, 2)), np.zeros((4, 2))), ArgumentError, "got (4, 2, 2) and"),
        (lambda x: sample_bilinear(x, np.full((4, 1, 1), np.nan), np.zeros((4, 1, 1))), ArgumentError, "NaN"),
    ],
)
def test_bad_arguments_are_rejected_quoting_the_value(call, error, message):
    with pytest.raises(error) as info:
        call(batch((4, 1, 6, 6)))
    assert message in str(info.value)


def test_each_image_alone_or_in_a_batch_gives_the_same_result():
    """Vectorised over N: the same grid gives the same image whether it is transformed alone or in a batch."""
    x = batch((6, 1, 10, 10), np.float64)
    angles = np.linspace(-20, 20, 6)
    together = warp_affine(x, rotation=angles)
    alone = np.concatenate([warp_affine(x[i : i + 1], rotation=angles[i]) for i in range(6)])
    np.testing.assert_array_equal(together, alone)


# ------------------------------------------------------------------ the training options (TrainConfig, CLI)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rotation", -1.0, "rotation must be between 0 and 180, got -1.0"),
        ("scale", 0.95, "scale must be between 0 and 0.9, got 0.95"),
        ("shear", 61, "shear must be between 0 and 60, got 61"),
        ("elastic_alpha", -3.0, "elastic_alpha must be a number >= 0, got -3.0"),
        ("elastic_alpha", float("inf"), "elastic_alpha must be a number >= 0, got inf"),
        ("elastic_sigma", 0.0, "elastic_sigma must be a positive number, got 0.0"),
        ("stroke", -0.1, "stroke must be a probability between 0 and 1, got -0.1"),
        ("rotation", True, "rotation must be between 0 and 180, got True"),
    ],
)
def test_train_config_rejects_impossible_distortions(field, value, message):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{field: value}).validate()
    assert message in str(info.value)


def test_distort_applies_the_configured_distortions_with_the_background_fill():
    x = batch((8, 1, 28, 28), np.float32)
    off = TrainConfig(augment=0, rotation=0.0, scale=0.0, shear=0.0, elastic_alpha=0.0, stroke=0.0)
    assert np.array_equal(distort(x, off, np.random.default_rng(0), fill=-0.4), x)
    on = TrainConfig(augment=0, rotation=10.0, scale=0.1, shear=10.0, elastic_alpha=34.0, stroke=0.0)
    out = distort(x, on, np.random.default_rng(0), fill=-0.4)
    assert out.shape == x.shape and out.dtype == np.float32 and not np.allclose(out, x)
    expected = random_distortion(
        x, np.random.default_rng(0), rotation=10, scale=0.1, shear=10, alpha=34, sigma=4, fill=-0.4
    )
    assert np.array_equal(out, expected)  # no shift or stroke first, so the same draws in the same order
    assert out.min() >= -0.4 - 1e-6  # the background the image moves in is the fill, not 0


def test_stroke_comes_before_the_resampling():
    x = batch((8, 1, 28, 28), np.float32)
    config = TrainConfig(augment=0, rotation=10.0, scale=0.0, shear=0.0, elastic_alpha=0.0, stroke=0.5)
    rng = np.random.default_rng(2)
    expected = random_distortion(random_stroke(x, rng, 0.5), rng, rotation=10.0, sigma=4.0)
    assert np.array_equal(distort(x, config, np.random.default_rng(2)), expected)


def test_elastic_strength_is_scaled_to_small_images():
    """α and σ are given for 28×28 digits: 8×8 digits get σ × 8/28 and α × (8/28)², so displacements × 8/28."""
    x = batch((4, 1, 8, 8), np.float64)
    config = TrainConfig(augment=0, rotation=0.0, scale=0.0, shear=0.0, elastic_alpha=34.0, stroke=0.0)
    expected = random_distortion(x, np.random.default_rng(1), alpha=34.0 * (8 / 28) ** 2, sigma=4.0 * 8 / 28)
    np.testing.assert_array_equal(distort(x, config, np.random.default_rng(1)), expected)


def test_cli_options_come_from_the_config():
    args = cli.build_parser().parse_args(
        [
            "train",
            "--rotation",
            "7.5",
            "--scale",
            "0.05",
            "--shear",
            "3",
            "--elastic-alpha",
            "20",
            "--elastic-sigma",
            "5",
        ]
    )
    assert (args.rotation, args.scale, args.shear, args.elastic_alpha, args.elastic_sigma) == (
        7.5,
        0.05,
        3.0,
        20.0,
        5.0,
    )
    defaults = cli.build_parser().parse_args(["train"])
    assert defaults.rotation == TrainConfig().rotation and defaults.elastic_alpha == TrainConfig().elastic_alpha


def test_the_smoothing_matrices_are_built_once_and_cannot_be_changed():
    from convprop.data import augment

    first = augment._smoothing(28, 4.0)
    assert augment._smoothing(28, 4.0) is first and first.dtype == np.float32 and not first.flags.writeable
    np.testing.assert_array_equal(first, augment.gaussian_matrix(28, 4.0).T.astype(np.float32))
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0] = 1.0


def _distortion_on_a_stored_grid(x, seed, *, alpha, sigma, fill, **affine):
    """random_distortion as it ran before its compiled pass: the composed (N, H, W) grid stored, then
    sample_bilinear — the same draws from the same seed, the same arithmetic in NumPy."""
    from convprop.data import augment

    generator = np.random.default_rng(seed)
    n, _, h, w = x.shape
    angles, scales, shears, shifts = augment._draw_affine(generator, n, **affine)
    d_row, d_col = augment._elastic_field(generator, n, h, w, alpha, sigma)
    inv = augment._inverse_matrix(n, angles, scales, shears)
    rows, cols = augment._grid(inv, shifts, h, w)
    rows = rows + inv[:, 0, 0, None, None] * d_row + inv[:, 0, 1, None, None] * d_col
    cols = cols + inv[:, 1, 0, None, None] * d_row + inv[:, 1, 1, None, None] * d_col
    return sample_bilinear(x, rows, cols, fill=fill)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(32, 1, 28, 28), (5, 3, 9, 11), (1, 2, 6, 4)])
def test_the_compiled_distortion_equals_the_stored_grid_bit_for_bit(shape, dtype, monkeypatch):
    """The one-pass warp (augment_compiled.warp, images split between threads) computes every source
    point and read as the stored grid did, so a run's distortions are unchanged by it; strong maps
    send points beyond the ring, where both read the fill."""
    from convprop.functional import threads

    monkeypatch.setattr(threads, "THREADS", 2)  # split the images even on a one-core machine
    x = batch(shape, dtype, seed=4) - 0.3
    for seed, strength in ((0, STRONG), (1, dict(rotation=60.0, scale=0.8, shear=40.0, translation=6.0))):
        got = random_distortion(x, seed, **strength, alpha=34.0, sigma=4.0, fill=-0.42)
        want = _distortion_on_a_stored_grid(x, seed, **strength, alpha=34.0, sigma=4.0, fill=-0.42)
        assert got.dtype == dtype and got.shape == x.shape and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)
    assert np.any(got == dtype(-0.42))  # some points did read the fill


def test_the_compiled_distortion_reads_a_non_contiguous_batch():
    x = batch((4, 2, 10, 12), np.float64)
    view = x[:, ::-1]  # channels reversed: a view, not C-contiguous
    got = random_distortion(view, 7, **STRONG, alpha=20.0, sigma=3.0)
    np.testing.assert_array_equal(
        got, random_distortion(np.ascontiguousarray(view), 7, **STRONG, alpha=20.0, sigma=3.0)
    )
