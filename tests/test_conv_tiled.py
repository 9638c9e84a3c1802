"""``conv_tiled``: the training pass on tiles — forward, input gradient (the rotated kernel over δ
padded by d·(K−1) − p) and weight gradient (``conv_tile_grad``) — against PyTorch and the direct
reference, in float64 (rel. 1e-9) and float32 (rel. 1e-4), over random geometries (dilation,
asymmetric and 'same' padding, odd channel counts that leave a tile part empty, one input channel,
maps long and short enough for either weight gradient); a float64 finite-difference check through
``convprop.gradcheck``; the weight-gradient tile in every shape a CPU may get; the fallbacks (a
non-finite input, a padding wider than d·(K−1), a stride) and which layers take the path at all.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit
from reference import assert_close, conv_layer_against_direct
from torch_reference import torch_conv2d

import convprop
from convprop.functional import conv_gemm, conv_tile_grad, conv_tiled
from convprop.functional.conv import _resolve, conv2d_backward, conv2d_with_context, conv_backward_from_context
from convprop.functional.conv_resolve import _choose
from convprop.functional.conv_rows import _offsets


def _training_pass(x, w, b, dy, **options):
    y, ctx = conv2d_with_context(x, w, b, **options)
    return (y, *conv_backward_from_context(dy, ctx)), ctx


def _torch(x, w, b, dy, padding, dilation):
    """PyTorch's (y, dx, dw, db); a per-side padding as an explicitly zero-padded input, dx cropped."""
    if isinstance(padding, tuple):
        (top, bottom), (left, right) = padding
        xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        options = dict(stride=1, padding=0, dilation=dilation, groups=1, padding_mode="zeros")
        y, dxp, dw, db = torch_conv2d(xp, w, b, dy, **options)
        return y, dxp[:, :, top : top + x.shape[2], left : left + x.shape[3]], dw, db
    return torch_conv2d(x, w, b, dy, stride=1, padding=padding, dilation=dilation, groups=1, padding_mode="zeros")


@st.composite
def geometries(draw):
    C, O = draw(st.integers(1, 11)), draw(st.integers(1, 13))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(2, 5))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    H, W = draw(st.integers(dh * (kh - 1) + 1, 17)), draw(st.integers(dw * (kw - 1) + 1, 17))
    padding = draw(st.sampled_from(["same", 0, "full-ish"]))
    if padding == "full-ish":  # per side, each within d·(K−1)
        padding = tuple((draw(st.integers(0, d * (k - 1))), draw(st.integers(0, d * (k - 1))))
                        for k, d in ((kh, dh), (kw, dw)))  # fmt: skip
    return draw(st.integers(1, 4)), C, H, W, O, (kh, kw), (dh, dw), padding


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch pads a copy: fine
@settings(max_examples=40, deadline=None)
@given(geometries(), st.integers(0, 2**31 - 1))
def test_against_torch_and_direct_float64(geometry, seed):
    N, C, H, W, O, kernel, dilation, padding = geometry
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((O, C, *kernel)), rng.standard_normal(O)
    options = dict(padding=padding, dilation=dilation)
    _, _, geo, algo, _ = _resolve(x, w, 2, 1, padding, dilation, 1, "zeros", "auto", "conv2d")
    assert conv_tiled.for_training("auto", algo, geo) is not None
    y0 = conv2d_with_context(x, w, b, **options)[0]
    dy = rng.standard_normal(y0.shape)
    ours, ctx = _training_pass(x, w, b, dy, **options)
    assert isinstance(ctx.algo, conv_tiled.Tiled)
    for name, got, want in zip(("y", "dx", "dw", "db"), ours, _torch(x, w, b, dy, padding, dilation), strict=True):
        assert_close(got, want, f"{name} {geometry}")
    direct, _ = _training_pass(x, w, b, dy, **options, algorithm="direct")
    for name, got, want in zip(("y", "dx", "dw", "db"), ours, direct, strict=True):
        assert_close(got, want, f"{name} against direct {geometry}")


@pytest.mark.parametrize(
    "shape",
    [(4, 16, 14, 32), (3, 8, 28, 8), (2, 32, 7, 32), (5, 1, 12, 5), (2, 3, 9, 20)],
    ids=["lenet's second layer", "resnet's first stage", "7x7: images stacked", "one channel", "O=20"],
)
def test_float32_against_the_direct_reference(shape):
    N, C, H, O = shape
    rng = np.random.default_rng(1)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((N, C, H, H), (O, C, 3, 3), (O,)))
    dy = rng.standard_normal((N, O, H, H)).astype(np.float32)
    ours, ctx = _training_pass(x, w, b, dy, padding=1)
    assert isinstance(ctx.algo, conv_tiled.Tiled) and all(g.dtype == np.float32 for g in ours)
    reference, _ = _training_pass(*(a.astype(np.float64) for a in (x, w, b, dy)), padding=1, algorithm="direct")
    for name, got, want in zip(("y", "dx", "dw", "db"), ours, reference, strict=True):
        assert_close(got, want, f"{name} float32 {shape}", rtol=1e-4)


def test_finite_differences_float64():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 3, 7, 8)), rng.standard_normal((5, 3, 3, 2))

    def forward(x, w):
        return conv2d_with_context(x, w, padding=((1, 1), (0, 1)), dilation=(1, 2))[0]

    def backward(dy, x, w):
        _, ctx = conv2d_with_context(x, w, padding=((1, 1), (0, 1)), dilation=(1, 2))
        assert isinstance(ctx.algo, conv_tiled.Tiled)
        dx, dw, _ = conv_backward_from_context(dy, ctx)
        return dx, dw

    convprop.gradcheck(forward, backward, [x, w])  # raises GradcheckError on a mismatch


def test_a_non_finite_input_takes_the_unfolded_weight_gradient():
    """A zero of δ's grid times an infinite input would add a NaN the true sum lacks: same as gemm."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 4, 14, 14)), rng.standard_normal((8, 4, 3, 3))
    x[1, 2, 5, 13] = np.inf  # the last column: what the grid's extra columns read
    _, ctx = conv2d_with_context(x, w, padding=1)
    assert ctx.xp is x and not ctx.padded  # the context keeps x as it came
    dy = rng.standard_normal((2, 8, 14, 14))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    assert conv_tiled.grad_weight_tiles(dy, xp, ctx.geo) is None
    assert conv_tiled.grad_weight_tiles(dy, x, ctx.geo, padded=False) is None
    got = conv_backward_from_context(dy, ctx)[1]
    want = conv_gemm.grad_weight(dy, xp, ctx.geo)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))


@pytest.mark.parametrize(
    "stride, padding, dilation, algorithm, kernel, expected",
    [
        (1, 1, 1, "auto", 3, True),
        (2, 1, 1, "auto", 3, True),  # strided: the input gradient through the stride phases
        (1, 3, 1, "auto", 3, True),  # padding 3 > d·(K−1) = 2: likewise (one phase, cropped)
        (1, 0, 1, "auto", 1, conv_tiled.POINTWISE_ON_TILES),  # 1×1: on tiles with AVX-512, else a product
        (2, 0, 1, "auto", 1, False),  # 1×1 with a stride: a product
        (1, 1, 1, "gemm", 3, False),  # an explicit algorithm runs as named
    ],
)
def test_which_layers_train_on_tiles(stride, padding, dilation, algorithm, kernel, expected):
    x, w = np.zeros((2, 4, 12, 12)), np.zeros((6, 4, kernel, kernel))
    _, _, geo, _, _ = _resolve(x, w, 2, stride, padding, dilation, 1, "zeros", algorithm, "conv2d")
    assert (conv_tiled.for_training(algorithm, _choose(algorithm, geo), geo) is not None) is expected
    _, ctx = conv2d_with_context(x, w, stride=stride, padding=padding, dilation=dilation, algorithm=algorithm)
    assert isinstance(ctx.algo, conv_tiled.Tiled) is expected


def test_the_protocol_forms_equal_the_layer_path():
    """``Tiled.forward`` and ``grad_input`` take and give padded arrays, as every ConvAlgorithm."""
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 9, 10, 11)), rng.standard_normal((10, 9, 3, 3))
    (y, dx, _, _), ctx = _training_pass(x, w, None, dy := rng.standard_normal((2, 10, 10, 11)), padding=1)
    tiled = ctx.algo
    assert tiled.supports(ctx.geo) is None
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    assert_close(tiled.forward(xp, w, ctx.geo), y, "forward from the padded input")
    dxp = tiled.grad_input(dy, w, ctx.geo)
    assert dxp.shape == xp.shape and not dxp[:, :, 0].any() and not dxp[:, :, :, -1].any()
    assert_close(dxp[:, :, 1:-1, 1:-1], dx, "the padded input's gradient")
    _, _, strided, _, _ = _resolve(x, w, 2, 2, 1, 1, 1, "zeros", "auto", "conv2d")
    assert tiled.supports(strided) is None  # strides: through the phases
    assert_close(tiled.grad_weight(dy, xp, ctx.geo), _training_pass(x, w, None, dy, padding=1)[0][2], "dW, padded")
    _, _, pointwise, _, _ = _resolve(x, w[:, :, :1, :1], 2, 2, 0, 1, 1, "zeros", "auto", "conv2d")
    assert "kernels larger than 1" in tiled.supports(pointwise)  # a strided 1×1: a product


def _grad_accumulate(vector_bytes, channels, taps):
    grad_tile = conv_tile_grad.make_grad_tile(vector_bytes, channels, taps)

    @njit
    def accumulate(x, g, offs, part):
        for o0 in range(0, g.shape[0], channels):
            for t0 in range(0, offs.shape[0], taps):
                grad_tile(x, g, offs, o0, t0, part)

    return accumulate


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize(
    "vector_bytes, channels, taps",
    [(64, 4, 4), (32, 2, 4), (16, 2, 4), (64, 3, 5)],
    ids=["AVX-512", "AVX2", "SSE/NEON", "3 channels x 5 taps"],
)
@pytest.mark.parametrize("O, T", [(8, 9), (5, 27), (1, 2), (7, 50)])
def test_every_weight_gradient_tile_shape(vector_bytes, channels, taps, dtype, rtol, O, T):
    rng = np.random.default_rng(O * T)
    lanes = vector_bytes // np.dtype(dtype).itemsize
    length = 5 * lanes
    offs = np.sort(rng.choice(100, size=T, replace=False)).astype(np.int64)
    x = rng.standard_normal(100 + length).astype(dtype)
    g = rng.standard_normal((O, length)).astype(dtype)
    shape = conv_tile_grad.part_shape(O, T, dtype, vector_bytes, (channels, taps))
    part = np.zeros(shape[0] * shape[1] * shape[2] + lanes, dtype=dtype)  # one vector more: must stay zero
    accumulate = _grad_accumulate(vector_bytes, channels, taps)
    accumulate(x, g, offs, part[:-lanes].reshape(shape))
    accumulate(x, g, offs, part[:-lanes].reshape(shape))  # sums accumulate: twice the gradient
    assert not part[-lanes:].any()
    got = conv_tile_grad.unpack(part[:-lanes].reshape(shape), (channels, taps))[:O, :T]
    want = 2 * np.stack([g.astype(np.float64) @ x[off : off + length].astype(np.float64) for off in offs], axis=1)
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * np.abs(want).max())


def test_the_machines_weight_gradient_tile_on_a_real_layout():
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((3, 6, 14, 14)).astype(np.float32), rng.standard_normal((9, 6, 3, 3)).astype(np.float32)
    _, _, geo, _, _ = _resolve(x, w, 2, 1, 1, 1, 1, "zeros", "auto", "conv2d")
    dy = rng.standard_normal((3, 9, 14, 14)).astype(np.float32)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    got = conv_tiled.grad_weight_tiles(dy, xp, geo)
    want = conv_gemm.grad_weight(dy.astype(np.float64), xp.astype(np.float64), geo)
    assert got.shape == w.shape and got.dtype == np.float32
    assert_close(got, want, "dW", rtol=1e-5)
    assert _offsets(6, 3, 3, 300, 16, 1, 1, 1, 1)[1].tolist() == [[0, 0]]  # stride 1: one phase


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-9), (np.float32, 1e-4)])
@pytest.mark.parametrize(
    "C, O, L, K, dilation, padding",
    [(64, 64, 100, 9, 1, 4), (3, 10, 37, 4, 2, "same"), (1, 8, 50, 5, 1, 2)],
    ids=["the benchmark's shape, shorter", "even kernel, dilated, 'same'", "one channel"],
)
def test_1d_trains_as_2d_of_height_one(C, O, L, K, dilation, padding, dtype, rtol):
    rng = np.random.default_rng(7)
    x, w, b = (rng.standard_normal(s) for s in ((3, C, L), (O, C, K), (O,)))
    ctx = conv_layer_against_direct(x, w, b, rng, ndim=1, dtype=dtype, rtol=rtol, what="1-D",
                                    padding=padding, dilation=dilation)  # fmt: skip
    assert isinstance(ctx.algo, conv_tiled.Tiled) and ctx.geo.ndim == 1


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-9), (np.float32, 1e-4)])
@pytest.mark.parametrize(
    "C, O, size, kernel, dilation, padding",
    [
        (16, 32, (6, 7, 8), (3, 3, 3), (1, 1, 1), 1),
        (3, 10, (5, 9, 6), (2, 3, 1), (2, 1, 1), "same"),
        (9, 4, (4, 5, 5), (3, 1, 2), 1, 0),
        (4, 16, (5, 6, 7), (3, 3, 3), 1, ((1, 2), (2, 1), (0, 2))),
        (3, 8, (4, 5, 6), (2, 2, 3), 1, ((2, 2), (1, 2), (1, 1))),
        (3, 32, (4, 5, 6), (2, 3, 3), 1, ((1, 2), (3, 3), (3, 4))),
    ],
    ids=[
        "the benchmark's kernel",
        "even, dilated, 'same'",
        "no padding, 4 outputs",
        "per side: rows and slices share their padding",  # conv_volume._pitch
        "padded wider than the kernel in depth (no pitch there)",
        "padded wider than the kernel in rows and columns: no sharing, the lanes' passes",
    ],
)
def test_3d_on_the_volumes_grid(C, O, size, kernel, dilation, padding, dtype, rtol):
    from convprop.functional import conv3d

    rng = np.random.default_rng(9)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((2, C, *size), (O, C, *kernel), (O,)))
    ctx = conv_layer_against_direct(x, w, b, rng, ndim=3, dtype=dtype, rtol=rtol, what="3-D",
                                    padding=padding, dilation=dilation)  # fmt: skip
    assert isinstance(ctx.algo, conv_tiled.Tiled) and ctx.geo.ndim == 3
    y_ref = conv3d(*(a.astype(np.float64) for a in (x, w, b)), padding=padding, dilation=dilation, algorithm="direct")
    assert_close(conv3d(x, w, b, padding=padding, dilation=dilation), y_ref, "conv3d's eval path", rtol=rtol)


def test_3d_rows_and_slices_share_their_padding():
    """The volume's buffer holds rows W + max(left, right) apart and slices H + max(top, bottom) rows
    apart where the smaller side is at most (K − 1)·d; else the padded size."""
    from convprop.functional import conv_volume

    x, w = np.zeros((1, 16, 16, 16, 16), np.float32), np.zeros((32, 16, 3, 3, 3), np.float32)
    geo = _resolve(x, w, 3, 1, 1, 1, 1, "zeros", "auto", "conv3d")[2]
    assert conv_volume._plane(geo) == ((1, 1, 1), 17, 17)  # 18 − 1: the benchmark's grid 4,607 against 5,148
    w = np.zeros((4, 16, 2, 2, 3), np.float32)
    geo = _resolve(x, w, 3, 1, ((0, 0), (2, 2), (1, 3)), 1, 1, "zeros", "auto", "conv3d")[2]
    assert conv_volume._plane(geo) == ((0, 2, 1), 20, 19)  # 2 > (2 − 1)·1: rows unshared; 20 − 1 columns


def test_3d_with_an_infinite_input_takes_the_unfolded_weight_gradient():
    from convprop.functional import conv_volume
    from convprop.functional.conv import conv_with_context

    rng = np.random.default_rng(10)
    x, w = rng.standard_normal((2, 3, 5, 6, 7)), rng.standard_normal((4, 3, 3, 3, 3))
    x[1, 0, 2, 3, 6] = -np.inf
    _, ctx = conv_with_context(x, w, padding=1, ndim=3)
    dy = rng.standard_normal((2, 4, 5, 6, 7))
    assert conv_volume.grad_weight(dy, x, ctx.geo) is None
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (1, 1)))
    got, want = conv_backward_from_context(dy, ctx)[1], conv_gemm.grad_weight(dy, xp, ctx.geo)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    with pytest.raises(ValueError, match="no epilogue"):
        from convprop.functional import conv_rows

        conv_rows.run(x, w, ctx.geo, conv_rows.RELU)


@pytest.mark.parametrize("stride, padding", [((2, 2), 1), ((1, 3), (2, 0)), ((3, 2), 0)])
def test_the_weight_gradients_tiles_take_strides_through_phases(stride, padding):
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((3, 5, 15, 16)), rng.standard_normal((6, 5, 3, 4))
    _, _, geo, _, _ = _resolve(x, w, 2, stride, padding, 1, 1, "zeros", "auto", "conv2d")
    dy = rng.standard_normal((3, 6, *geo.out_size))
    xp = np.pad(x, ((0, 0), (0, 0), *geo.pads))
    assert_close(conv_tiled.grad_weight_tiles(dy, xp, geo), conv_gemm.grad_weight(dy, xp, geo), f"dW stride {stride}")


@pytest.mark.parametrize("tiled", [True, False], ids=["tiles", "unfolding"])
@pytest.mark.parametrize("ndim, size, k", [(1, (30,), 5), (2, (5, 5), 3), (2, (20, 20), 3), (3, (6, 6, 6), 3)])
def test_an_empty_batch_trains_to_empty_gradients(ndim, size, k, tiled, monkeypatch):
    """No images: shapes as for any batch, zero weight gradient (conv_gemm's reshapes once failed here)."""
    from convprop.functional.conv import conv_with_context

    if not tiled:
        monkeypatch.setattr(conv_tiled, "for_training", lambda *a: None)
    x, w = np.zeros((0, 2, *size), np.float32), np.ones((3, 2, *(k,) * ndim), np.float32)
    y, ctx = conv_with_context(x, w, padding=k // 2, ndim=ndim)
    assert isinstance(ctx.algo, conv_tiled.Tiled) is tiled and y.shape == (0, 3, *size)
    dx, dw, db = conv_backward_from_context(np.zeros(y.shape, np.float32), ctx)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (3,)
    assert not dw.any() and not db.any()


@pytest.mark.parametrize("positions", [1, 100, 400, 10_000], ids=["one image a stack", "3", "8 (short last)", "all"])
@pytest.mark.parametrize("stride", [1, 2])
def test_stacked_images_give_the_weight_gradient(positions, stride, monkeypatch):
    """Small images are stacked into one tall grid for the weight gradient: every stack size (the last
    stack short, cleared of the one before) gives direct's answer; an infinity anywhere in a stack is
    still found."""
    monkeypatch.setattr(conv_tiled, "STACK_POSITIONS", positions)
    rng = np.random.default_rng(12)
    x, w = rng.standard_normal((11, 9, 7, 6)), rng.standard_normal((5, 9, 3, 3))
    _, _, geo, _, _ = _resolve(x, w, 2, stride, 1, 1, 1, "zeros", "auto", "conv2d")
    dy = rng.standard_normal((11, 5, *geo.out_size))
    got = conv_tiled.grad_weight_tiles(dy, x, geo, padded=False)
    want = conv2d_backward(dy, x, w, stride=stride, padding=1, algorithm="direct")[1]
    assert_close(got, want, f"dW, {positions} positions a stack")
    x[10, 3, 6, 5] = np.inf  # the last image, its last pixel
    assert conv_tiled.grad_weight_tiles(dy, x, geo, padded=False) is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "size, kernel, stride, padding",
    [
        ((40,), (5,), (1,), 2),
        ((11, 9), (3, 3), (1, 1), 1),
        ((12, 13), (3, 3), (2, 2), 1),
        ((6, 7, 5), (3, 3, 3), (1, 1, 1), 1),
    ],
)
def test_the_bias_in_the_epilogue_gives_the_bits_of_adding_it_after(size, kernel, stride, padding, dtype):
    """The training forward adds the bias as each value is stored (1-D, 2-D, strided, 3-D): the same
    bits as the pass without it followed by ``y += b``."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((3, 5, *size)).astype(dtype)
    w = rng.standard_normal((7, 5, *kernel)).astype(dtype)
    b = rng.standard_normal(7).astype(dtype) * 10
    *_, geo, _, _ = _resolve(x, w, len(size), stride, padding, 1, 1, "zeros", "auto", "conv")
    expected = conv_tiled.forward_unpadded(x, w, geo)
    expected += b.reshape(-1, *(1,) * len(size))
    np.testing.assert_array_equal(conv_tiled.forward_unpadded(x, w, geo, b), expected)
