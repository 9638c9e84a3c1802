"""``conv_lanes``: the weight gradient with the output channels in the vector lanes, against the
direct reference and PyTorch in float64 (rel. 1e-9) and float32 (rel. 1e-4) over random 2-D geometries
(strides that leave a remainder, dilation, per-side padding, stacked small images, channel counts that
take every tile and a partly empty last vector), 1-D and 3-D layers through the layer path, a float64
finite-difference check, inputs with infinities and NaNs (exact: no fallback), the channels-last copy
of δ bit for bit, and which layers take the path; the forward on the lanes bit for bit against the
direct tiles (2-D over random geometries, 3-D), the sums back to channels-first with the bias, and
which forwards take it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import assert_close
from torch_reference import torch_conv2d

import convprop
from convprop.functional import conv_direct, conv_lanes, conv_lanes_forward, conv_rows, conv_tiled, conv_volume
from convprop.functional.conv import _resolve, conv_backward_from_context, conv_with_context
from convprop.functional.conv_tile import VECTOR_BYTES


@pytest.fixture(autouse=True)
def _on_every_machine(monkeypatch):
    """The layer path takes these tiles where :data:`conv_lanes.LANES` (AVX-512); tests take them
    on any machine (the intrinsics are written for any vector width)."""
    monkeypatch.setattr(conv_lanes, "LANES", True)


def _geometry(x, w, stride, padding, dilation=1):
    ndim = x.ndim - 2
    return _resolve(x, w, ndim, stride, padding, dilation, 1, "zeros", "auto", f"conv{ndim}d")[2]


def _direct_dw(dy, x, w, geo):
    xp = np.pad(x, ((0, 0), (0, 0), *geo.pads))
    return conv_direct.grad_weight(dy, xp, geo)


def _db_rtol(dtype):
    """db from float64 sums: float32's rounded once; float64's in another order than NumPy's."""
    return 2 * float(np.finfo(np.float32).eps) if dtype == np.float32 else 1e-12


def _lanes(dtype):
    return VECTOR_BYTES // np.dtype(dtype).itemsize


@st.composite
def geometries(draw, outputs=(16, 19, 32, 48, 112, 78), max_channels=9, max_size=19, max_batch=9):
    """(N, C, (H, W), O, kernel, stride, dilation, per-side padding): O from ``outputs`` (one vector
    of float32 to seven, and counts that leave the last vector partly empty), any stride up to 3."""
    O = draw(st.sampled_from(outputs))
    C = draw(st.integers(1, max_channels))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    H, W = draw(st.integers(dh * (kh - 1) + 1, max_size)), draw(st.integers(dw * (kw - 1) + 1, max_size))
    padding = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(2))
    return draw(st.integers(1, max_batch)), C, (H, W), O, (kh, kw), (sh, sw), (dh, dw), padding


@settings(max_examples=60, deadline=None)
@given(geometries(), st.integers(0, 2**31 - 1))
def test_against_direct_and_torch_float64(geometry, seed):
    """Any stride (one that leaves a remainder too), dilation and per-side padding; O of 16 to 112
    channels (float64: 2 to 14 vectors of 8 with AVX-512, every tile) and O that leaves the last
    vector partly empty. (float32's one-vector tile: the layer tests below.)"""
    N, C, size, O, kernel, stride, dilation, padding = geometry
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((N, C, *size)), rng.standard_normal((O, C, *kernel))
    geo = _geometry(x, w, stride, padding, dilation)
    dy = rng.standard_normal((N, O, *geo.out_size))
    got, db = conv_tiled.grad_params_lanes(dy, x, geo, padded=False)
    assert got.shape == w.shape and got.dtype == np.float64 and db.shape == (O,) and db.dtype == np.float64
    assert_close(got, _direct_dw(dy, x, w, geo), f"dW {geometry}", rtol=1e-9)
    assert_close(db, dy.sum(axis=(0, 2, 3)), f"db {geometry}", rtol=1e-12)
    (top, bottom), (left, right) = geo.pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    options = dict(stride=stride, padding=0, dilation=dilation, groups=1, padding_mode="zeros")
    assert_close(got, torch_conv2d(xp, w, None, dy, **options)[2], f"dW vs torch {geometry}", rtol=1e-9)


@pytest.mark.parametrize(
    "N, C, size, O, kernel, stride, padding",
    [
        (64, 32, (14, 14), 64, 3, 1, 1),  # the conv benchmark's mnist-2: the 4-vector tile
        (7, 6, (14, 14), 16, 5, 1, 0),  # LeNet-5's second layer: one vector
        (9, 16, (14, 14), 32, 3, 2, 1),  # resnet's strided layer: two vectors, phases
        (11, 32, (7, 7), 32, 3, 1, 1),  # 7×7 maps: stacked images, a short last stack
        (3, 5, (17, 13), 112, (3, 4), (3, 2), (2, 1)),  # 4 + 2 + 1 vectors, remainders in both axes
        (2, 1, (28, 28), 32, 3, 1, 1),  # one input channel: 9 taps, most of a tile past T
        (1, 5, (16, 16), 32, 1, 1, 0),  # 1×1 on a plane of whole vectors, one image a stack: read in place
    ],
)
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-9)])
def test_benchmark_and_model_layers_against_direct(N, C, size, O, kernel, stride, padding, dtype, rtol):
    rng = np.random.default_rng(1)
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    x, w = rng.standard_normal((N, C, *size)).astype(dtype), rng.standard_normal((O, C, *k)).astype(dtype)
    geo = _geometry(x, w, stride, padding)
    dy = rng.standard_normal((N, O, *geo.out_size)).astype(dtype)
    got, db = conv_tiled.grad_params_lanes(dy, x, geo, padded=False)
    assert got.dtype == db.dtype == dtype
    want = _direct_dw(*(a.astype(np.float64) for a in (dy, x, w)), geo)
    assert_close(got, want, "dW", rtol=rtol)
    # db from float64 sums (float32's rounded once: within a rounding or two of the float64 sum)
    exact = dy.astype(np.float64).sum(axis=(0, 2, 3))
    assert_close(db, exact, "db", rtol=_db_rtol(dtype))
    # the padded form (what the protocol's grad_weight hands over) gives the same bits, as does a
    # read-only input (read in place where the image is its own buffer)
    xp = np.pad(x, ((0, 0), (0, 0), *geo.pads))
    np.testing.assert_array_equal(conv_tiled.grad_params_lanes(dy, xp, geo)[0], got)
    frozen = x.copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(conv_tiled.grad_params_lanes(dy, frozen, geo, padded=False)[0], got)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-9)])
@pytest.mark.parametrize("ndim, size", [(2, (9, 11)), (1, (40,)), (3, (5, 6, 4))])
def test_the_layer_path_takes_the_lanes_and_matches_direct(ndim, size, dtype, rtol, monkeypatch):
    """Through ``conv_with_context`` and its backward, a layer of 32 channels: the weight gradient's
    lanes taken (and the forward's where the grid has its junk), y, dx, dw and db against direct."""
    from reference import conv_layer_against_direct

    taken = []
    lanes, forward = conv_tiled.grad_params_lanes, conv_tiled.forward_lanes
    monkeypatch.setattr(conv_tiled, "grad_params_lanes", lambda *a, **k: taken.append("dw") or lanes(*a, **k))
    monkeypatch.setattr(conv_tiled, "forward_lanes", lambda *a, **k: taken.append("y") or forward(*a, **k))
    grads, volume = conv_volume.grad_params, conv_volume.forward_lanes
    monkeypatch.setattr(conv_volume, "grad_params", lambda *a, **k: taken.append("dw") or grads(*a, **k))
    monkeypatch.setattr(conv_volume, "forward_lanes", lambda *a, **k: taken.append("y") or volume(*a, **k))
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((3, 4, *size)), rng.standard_normal((32, 4, *(3,) * ndim)), rng.standard_normal(32)
    ctx = conv_layer_against_direct(x, w, b, rng, ndim=ndim, dtype=dtype, rtol=rtol, what=f"{ndim}-D", padding=1)
    assert isinstance(ctx.algo, conv_tiled.Tiled)
    geo = conv_rows.as_2d(ctx.geo) if ndim == 1 else ctx.geo
    assert "dw" in taken and ("y" in taken) is conv_tiled.forward_on_lanes(geo, np.dtype(dtype), x.shape[0])


def test_mixed_dtypes_are_copied_in_the_inputs_dtype():
    """δ in float64 with a float32 input (the protocol's methods do not check): δ's copy is made in x's
    dtype, never written past its rows."""
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((2, 3, 9, 9)).astype(np.float32), rng.standard_normal((32, 3, 3, 3))
    geo = _geometry(x, w, 1, 1)
    dy = rng.standard_normal((2, 32, *geo.out_size))
    got, db = conv_tiled.grad_params_lanes(dy, x, geo, padded=False)
    assert got.dtype == db.dtype == np.float32
    assert_close(got, _direct_dw(dy, x.astype(np.float64), w, geo), "dW", rtol=1e-5)


def test_an_empty_batch_on_the_lanes():
    """No images: zero gradients of the right shapes, through the 2-D and the 3-D paths."""
    for ndim, size in ((2, (8, 8)), (3, (4, 4, 4))):
        x, w = np.zeros((0, 3, *size), np.float32), np.ones((32, 3, *(3,) * ndim), np.float32)
        y, ctx = conv_with_context(x, w, padding=1, ndim=ndim)
        dx, dw, db = conv_backward_from_context(np.zeros(y.shape, np.float32), ctx)
        assert y.shape == (0, 32, *size) and dx.shape == x.shape and dw.shape == w.shape and db.shape == (32,)
        assert not dw.any() and not db.any()


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-9)])
@pytest.mark.parametrize(
    "C, O, size, kernel, padding", [(3, 16, (6, 7, 5), 3, 1), (4, 32, (5, 5, 5), 2, 0), (2, 48, (4, 6, 7), 3, 2)]
)
def test_3d_on_the_volumes_grid(C, O, size, kernel, padding, dtype, rtol):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, C, *size)).astype(dtype)
    w = rng.standard_normal((O, C, *(kernel,) * 3)).astype(dtype)
    geo = _geometry(x, w, 1, padding)
    dy = rng.standard_normal((2, O, *geo.out_size)).astype(dtype)
    got, db = conv_volume.grad_params(dy, x, geo)
    assert got is not None and db is not None and got.dtype == db.dtype == dtype
    assert_close(got, _direct_dw(*(a.astype(np.float64) for a in (dy, x, w)), geo), "3-D dW", rtol=rtol)
    exact = dy.astype(np.float64).sum(axis=(0, 2, 3, 4))
    assert_close(db, exact, "3-D db", rtol=_db_rtol(dtype))


def test_finite_differences_float64():
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 3, 7, 8)), rng.standard_normal((16, 3, 3, 3))
    geo = _geometry(x, w, (2, 1), 1)

    def forward(x, w):
        return conv_direct.forward(np.pad(x, ((0, 0), (0, 0), *geo.pads)), w, geo)

    def backward(dy, x, w):
        return None, conv_tiled.grad_params_lanes(dy, x, geo, padded=False)[0]

    convprop.gradcheck(forward, backward, [x, w])  # raises GradcheckError on a mismatch


@pytest.mark.parametrize("ndim", [2, 3])
def test_an_infinite_or_nan_input_gives_what_the_sums_give(ndim):
    """Every product is one the definition has (no grid columns): an infinity or a NaN in x gives
    direct's NaN and infinity pattern, with no fallback (``conv_tile_grad``'s tiles need one)."""
    rng = np.random.default_rng(5)
    size = (9, 10) if ndim == 2 else (4, 5, 6)
    x, w = rng.standard_normal((2, 3, *size)), rng.standard_normal((16, 3, *(3,) * ndim))
    x[(1, 2, *(s - 1 for s in size))] = np.inf  # the last column: what a grid's extra columns read
    x[(0, 0, *(1,) * ndim)] = np.nan
    geo = _geometry(x, w, 1, 1)
    dy = rng.standard_normal((2, 16, *geo.out_size))
    dy[1, 3] = 0.0  # a zero δ times the infinity: NaN in the true sum too
    grads = conv_tiled.grad_params_lanes(dy, x, geo, padded=False) if ndim == 2 else conv_volume.grad_params(dy, x, geo)
    got = grads[0]
    with np.errstate(invalid="ignore"):  # (the reference's products: inf · 0)
        want = _direct_dw(dy, x, w, geo)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    assert_close(got[finite], want[finite], "the finite sums", rtol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("O, P", [(64, 196), (16, 16), (20, 37), (6, 100), (33, 5), (1, 1)])
def test_the_channels_last_copy_of_delta(O, P, dtype):
    """Whole V × V blocks by shuffles, the rest value by value: every value where it belongs, the rows
    before ``row`` and the channels past O untouched."""
    rng = np.random.default_rng(6)
    dy = rng.standard_normal((2, O, P)).astype(dtype)
    d = np.full((P + 3, conv_lanes.channels_padded(O, dtype)), -7.0, dtype)
    conv_lanes.transpose_into(dy, 1, d, 3)
    np.testing.assert_array_equal(d[3:, :O], dy[1].T)
    assert (d[:3] == -7.0).all() and (d[:, O:] == -7.0).all()


def test_which_weight_gradients_take_the_lanes(monkeypatch):
    """At least a vector of channels and at most a quarter more rounded up to whole vectors; none
    where ``LANES`` is off (AVX2 keeps ``conv_tile_grad``'s tiles)."""
    v = _lanes(np.float32)
    assert conv_lanes.on_lanes(v, np.float32) and conv_lanes.on_lanes(4 * v, np.float32)
    assert conv_lanes.on_lanes(4 * v + 3, np.float32) is (4 * (5 * v) <= 5 * (4 * v + 3))
    assert not conv_lanes.on_lanes(v - 1, np.float32) and not conv_lanes.on_lanes(v + 1, np.float32)
    assert conv_lanes.on_lanes(_lanes(np.float64), np.float64)
    monkeypatch.setattr(conv_lanes, "LANES", False)
    assert not conv_lanes.on_lanes(4 * v, np.float32)


# --- the forward with the output channels in the lanes: the direct tiles' sums in their order ---


@settings(max_examples=50, deadline=None)
@given(
    geometries(outputs=(16, 19, 32, 48, 64, 112), max_channels=7, max_size=17, max_batch=4),
    st.sampled_from([np.float32, np.float64]),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_the_forward_on_the_lanes_gives_the_direct_tiles_bits(geometry, dtype, with_bias, seed):
    """Every output the same bits as ``conv_rows``' direct tiles (tap by tap, one rounding each, the
    bias added as each value is stored), any stride, dilation, per-side padding and channel count."""
    from convprop.functional import conv_rows

    N, C, size, O, kernel, stride, dilation, padding = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, *size)).astype(dtype)
    w, b = rng.standard_normal((O, C, *kernel)).astype(dtype), rng.standard_normal(O).astype(dtype)
    geo = _geometry(x, w, stride, padding, dilation)
    bias = b if with_bias else None
    got = conv_tiled.forward_lanes(x, w, geo, bias, None)
    np.testing.assert_array_equal(got, conv_rows.run(x, w, geo, conv_rows.PLAIN, bias)[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "O, size, kernel, padding", [(32, (6, 7, 5), 3, 1), (48, (5, 5, 6), 2, 0), (20, (4, 6, 7), 3, 2)]
)
def test_the_volume_forward_on_the_lanes_gives_the_direct_tiles_bits(O, size, kernel, padding, dtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, *size)).astype(dtype)
    w, b = rng.standard_normal((O, 4, *(kernel,) * 3)).astype(dtype), rng.standard_normal(O).astype(dtype)
    geo = _geometry(x, w, 1, padding)
    for bias in (b, None):
        got = conv_volume.forward_lanes(x, w, geo, None, bias)
        np.testing.assert_array_equal(got, conv_volume.forward(x, w, geo, None, bias))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("O, P", [(64, 196), (16, 16), (20, 37), (6, 100), (33, 5)])
def test_the_channels_last_sums_back_with_the_bias(O, P, dtype):
    """``untranspose_into``: out[n, o, p] = src[p, o] + bias[o], blocks and tails; other images untouched."""
    rng = np.random.default_rng(8)
    O_ = conv_lanes.channels_padded(O, dtype)
    src, bias = rng.standard_normal((P + 5, O_)).astype(dtype), rng.standard_normal(O_).astype(dtype)
    out = np.full((2, O, P), -7.0, dtype)
    conv_lanes.untranspose_into(src, bias, out, 1)
    np.testing.assert_array_equal(out[1], src[:P, :O].T + bias[:O, None])
    assert (out[0] == -7.0).all()


def test_which_forwards_take_the_lanes():
    """Two vectors of channels or more and a direct grid at least ``LANE_FORWARD_GRID`` times the
    output (its junk columns and rows); not where Winograd's tiles run, not in float64 on fewer lanes'
    worth, not for one vector of channels."""
    v = _lanes(np.float32)

    def takes(shape, weight, stride=1, padding=1, dtype=np.float32, N=1):
        x, w = np.zeros(shape, dtype), np.zeros(weight, dtype)
        return conv_tiled.forward_on_lanes(_geometry(x, w, stride, padding), np.dtype(dtype), N)

    assert takes((1, 32, 14, 14), (4 * v, 32, 3, 3))  # mnist-2: a grid 224 / 196 of the output
    assert not takes((1, 32, 14, 14), (v, 32, 3, 3))  # one vector of channels
    assert not takes((1, 64, 56, 56), (4 * v, 64, 3, 3), stride=2)  # the strided layer: 816 / 784
    assert not takes((1, 64, 1000), (4 * v, 64, 9), padding=4)  # 1-D: no junk
    assert takes((1, 16, 16, 16, 16), (2 * v, 16, 3, 3, 3))  # the 3-D benchmark layer: 4,608 / 4,096
    w64 = _lanes(np.float64)
    assert takes((1, 32, 14, 14), (2 * w64, 32, 3, 3), dtype=np.float64)  # two vectors of float64
    assert not takes((1, 32, 14, 14), (w64, 32, 3, 3), dtype=np.float64)  # one
    from convprop.functional import conv_rows

    x, w = np.zeros((64, 64, 14, 14), np.float32), np.zeros((4 * v, 64, 3, 3), np.float32)
    geo = _geometry(x, w, 1, 1)
    assert conv_tiled.forward_on_lanes(geo, np.dtype(np.float32), 64) is not conv_rows.uses_winograd(geo, 64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("vectors, count", [(2, 4), (1, 8), (4, 6), (3, 5)])
def test_every_tile_shape_a_cpu_may_get(vectors, count, dtype):
    """Both tiles in shapes other CPUs compile (AVX2's 2 × 4 and 1 × 8, and others), on this one:
    the weight gradient's against δᵀ·x, the forward's against w·x, over every tile of small arrays."""
    from numba import njit

    grad_tile, forward_tile = (
        conv_lanes.make_lane_tile(vectors, count),
        conv_lanes_forward.make_forward_tile(vectors, count),
    )

    step = vectors * _lanes(dtype)  # a tile's channels

    @njit
    def run(x, d, pos, offs, part, w, out):
        for o0 in range(0, d.shape[1], step):
            for t0 in range(0, offs.shape[0], count):
                grad_tile(x, d, pos, offs, o0, t0, part)
            for p0 in range(0, pos.shape[0], count):
                forward_tile(x, w, pos, offs, p0, o0, out)

    V = _lanes(dtype)
    O_, P, T = 2 * vectors * V, 5 * count, 3 * count
    rng = np.random.default_rng(10)
    x = rng.standard_normal(200).astype(dtype)
    pos = rng.integers(0, 100, P).astype(np.int64)
    offs = rng.integers(0, 100, T).astype(np.int64)
    d, w = rng.standard_normal((P, O_)).astype(dtype), rng.standard_normal((T, O_)).astype(dtype)
    part, out = np.zeros((T, O_), dtype), np.zeros((P, O_), dtype)
    run(x, d, pos, offs, part, w, out)
    gathered = x[pos[:, None] + offs[None, :]].astype(np.float64)  # (P, T)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert_close(part, gathered.T @ d.astype(np.float64), "weight-gradient tile", rtol=rtol)
    assert_close(out, gathered @ w.astype(np.float64), "forward tile", rtol=rtol)
