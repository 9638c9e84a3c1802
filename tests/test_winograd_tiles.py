"""``winograd_tiles``: Winograd F(2×2, 3×3) on the tiles, inside ``conv_rows``' passes of a batch.

The transformed kernels against G g Gᵀ from ``conv_winograd``'s matrices; every epilogue (plain, ReLU,
batch norm, shortcut, 2×2 max-pool) against the direct reference in float64 (1e-9 relative) and
float32 (1e-5 of float64, as tight as the direct tiles' own sums: F(2×2, 3×3) adds no error of
note) over random geometries — odd and even sizes, pads 0–2 and asymmetric ones, channel counts
that leave a partial tile; the same bits on one thread and two (the workers' part a compiled job);
inputs holding an infinity or a NaN run the direct tiles (their bits exactly); a NaN in a pooled
window is reported as the direct pass reports it; and where ``auto`` takes it.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import assert_close

from convprop.functional import conv_rows, conv_single, threads, winograd_tiles
from convprop.functional.conv import _resolve, conv2d
from convprop.functional.conv_winograd import F2_G


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.setattr(threads, "THREADS", 2)


MODES = [conv_rows.PLAIN, conv_rows.RELU, conv_rows.NORM, conv_rows.NORM_RELU, conv_rows.RELU_POOL]


def _geo(x, w, padding):
    x4, w4, geo, _, _ = _resolve(x, w, 2, 1, padding, 1, 1, "zeros", "auto", "conv2d")
    return x4, w4, geo


def _case(rng, N, C, O, H, W, dtype):
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = (rng.standard_normal((O, C, 3, 3)) / np.sqrt(9 * C)).astype(dtype)
    bias = rng.standard_normal(O).astype(dtype)
    norm = tuple(rng.uniform(0.5, 1.5, O).astype(dtype) for _ in range(3))
    return x, w, bias, norm


def _reference(x, w, bias, norm, padding, mode, skip):
    """The unfused arithmetic in float64: conv (direct) + bias, batch norm, shortcut, ReLU, pool."""
    y = conv2d(x.astype(np.float64), w.astype(np.float64), bias.astype(np.float64), padding=padding,
               algorithm="direct")  # fmt: skip
    if mode in (conv_rows.NORM, conv_rows.NORM_RELU):
        mean, scale, shift = (a.astype(np.float64)[:, None, None] for a in norm)
        y = (y - mean) * scale + shift
    if skip is not None:
        y = y + skip
    if mode in (conv_rows.RELU, conv_rows.NORM_RELU, conv_rows.RELU_POOL):
        y = np.maximum(y, 0.0)
    if mode == conv_rows.RELU_POOL:
        N, O, OH, OW = y.shape
        y = y[:, :, : OH // 2 * 2, : OW // 2 * 2].reshape(N, O, OH // 2, 2, OW // 2, 2).max(axis=(3, 5))
    return y


def _run(x, w, bias, norm, padding, mode, skip=None, threads=None, winograd=True):
    x4, w4, geo = _geo(x, w, padding)
    p = conv_rows.plan(geo, x.dtype, mode, winograd)
    return conv_rows.run_planned(p, x4, w4, bias, norm if mode in (conv_rows.NORM, conv_rows.NORM_RELU) else None,
                                 threads, skip)  # fmt: skip


def test_kernels_are_g_g_gt():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3, 3, 3))
    u = winograd_tiles.kernels(w, np.float64(0.0))
    expected = np.einsum("xi,ocij,yj->xyoc", F2_G, w, F2_G).reshape(16 * 5, 3)  # row (4ξ + ν)·O + o
    np.testing.assert_allclose(u, expected, rtol=1e-15, atol=1e-15)
    w32 = w.astype(np.float32)
    u32 = winograd_tiles.kernels(w32, np.float32(0.0))
    assert u32.dtype == np.float32  # worked out in float64 (exactly, for float32 weights), rounded once
    exact = np.einsum("xi,ocij,yj->xyoc", F2_G, w32.astype(np.float64), F2_G).reshape(16 * 5, 3)
    np.testing.assert_array_equal(u32, exact.astype(np.float32))


@pytest.mark.parametrize("seed", range(12))
def test_every_epilogue_equals_direct(seed):
    rng = np.random.default_rng(seed)
    N, C, O = int(rng.integers(2, 5)), int(rng.integers(1, 9)), int(rng.integers(1, 11))
    H, W = int(rng.integers(3, 19)), int(rng.integers(3, 19))
    padding = [0, 1, 2, ((1, 0), (0, 2)), ((2, 1), (1, 1))][seed % 5]
    mode = MODES[seed % len(MODES)]
    for dtype, tol in ((np.float64, 1e-9), (np.float32, 1e-5)):
        x, w, bias, norm = _case(rng, N, C, O, H, W, dtype)
        _, _, geo = _geo(x, w, padding)
        if min(geo.out_size) < 1 or (mode == conv_rows.RELU_POOL and min(geo.out_size) < 2):
            continue
        residual = seed % 3 == 0 and mode != conv_rows.RELU_POOL
        skip = rng.standard_normal((N, O, *geo.out_size)).astype(dtype) if residual else None
        got, saw_nan = _run(x, w, bias, norm, padding, mode, skip)
        assert not saw_nan and got.dtype == dtype
        expected = _reference(x, w, bias, norm, padding, mode, skip)
        assert got.shape == expected.shape
        assert_close(got, expected, f"seed {seed} {np.dtype(dtype)} mode {mode}", rtol=tol)


def test_lenet_and_resnet_layers_float32_near_float64():
    """Channel counts of the models (whole tiles and a partial one), float32 against float64."""
    rng = np.random.default_rng(1)
    for N, C, O, H, mode in ((5, 16, 32, 14, conv_rows.RELU_POOL), (3, 64, 64, 14, conv_rows.NORM_RELU),
                             (4, 16, 30, 28, conv_rows.RELU), (3, 32, 32, 7, conv_rows.NORM)):  # fmt: skip
        x, w, bias, norm = _case(rng, N, C, O, H, H, np.float32)
        got, _ = _run(x, w, bias, norm, 1, mode)
        assert_close(got, _reference(x, w, bias, norm, 1, mode, None), f"{C}->{O} {H}²", rtol=1e-5)


def test_threads_and_the_workers_compiled_part_give_the_same_bits(two_threads):
    rng = np.random.default_rng(2)
    for mode in (conv_rows.RELU_POOL, conv_rows.NORM_RELU):
        x, w, bias, norm = _case(rng, 7, 16, 32, 14, 14, np.float32)
        one, _ = _run(x, w, bias, norm, 1, mode, threads=1)
        two, _ = _run(x, w, bias, norm, 1, mode, threads=2)
        np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("mode", [conv_rows.PLAIN, conv_rows.RELU_POOL])
def test_an_image_with_a_non_finite_value_runs_the_direct_tiles(bad, mode):
    """∞ − ∞ in the transforms would make NaN where the direct sums give ±∞: such a batch is the direct pass's."""
    rng = np.random.default_rng(3)
    x, w, bias, norm = _case(rng, 4, 16, 32, 10, 10, np.float32)
    x[2, 5, 4, 6] = bad
    got = _run(x, w, bias, norm, 1, mode)
    direct = _run(x, w, bias, norm, 1, mode, winograd=False)
    np.testing.assert_array_equal(got[0], direct[0])
    assert got[1] == direct[1]


def test_a_nan_in_a_pooled_window_is_reported_as_the_direct_pass_does():
    rng = np.random.default_rng(4)
    x, w, bias, norm = _case(rng, 3, 16, 32, 10, 10, np.float32)
    w[3, 2, 1, 1] = np.nan  # finite inputs, a NaN weight: every output of channel 3 is NaN
    _, saw_nan = _run(x, w, bias, norm, 1, conv_rows.RELU_POOL)
    assert saw_nan  # (the caller then runs the layers unfused, as for the direct tiles)
    plain, declined = _run(x, w, bias, norm, 1, conv_rows.PLAIN)
    assert not declined and np.isnan(plain[:, 3]).all() and not np.isnan(np.delete(plain, 3, axis=1)).any()


@pytest.fixture(autouse=True)
def avx2_gate(monkeypatch):
    """The admission rule as on AVX2's 8 lanes, whatever this CPU's vectors (the tiles themselves are
    the host's): the tests below take Winograd where a 16-lane CPU would keep the direct tiles."""
    monkeypatch.setattr(conv_rows, "_lanes", lambda: 8)
    # the fused calls' remembered plans were decided by the rule in force: forgotten before and after
    conv_single.REMEMBERED.clear()
    yield
    conv_single.REMEMBERED.clear()


def _admits(C, O, size, batch=64, kernel=3, stride=1, padding=1):
    x = np.zeros((2, C, size, size), np.float32)
    _, _, geo, _, _ = _resolve(x, np.zeros((O, C, kernel, kernel), np.float32), 2, stride, padding, 1, 1, "zeros",
                               "auto", "conv2d")  # fmt: skip
    return conv_rows.uses_winograd(geo, batch)


def test_where_auto_takes_it():
    assert _admits(16, 32, 14, batch=2) and not _admits(16, 32, 14, batch=1)  # batches only
    assert not _admits(1, 32, 14) and not _admits(8, 8, 14)  # balance C·O / (C + O) of 0.97 and 4
    assert not _admits(16, 16, 14)  # 8: measured even
    assert not _admits(16, 32, 14, kernel=5, padding=2) and not _admits(16, 32, 14, stride=2)
    assert _admits(32, 32, 7)  # resnet's stage 3
    assert not _admits(32, 32, 4)  # 4² maps (the digits' second layer): 4 tiles a map
    assert not _admits(8, 64, 14)  # 512 input × output channels, but a balance of 7.1


@pytest.mark.parametrize("lanes", [4, 8, 16, 32])
def test_the_rule_follows_the_vector_width(monkeypatch, lanes):
    """16 lanes (AVX-512) take twice AVX2's balance and maps of 14² or more; narrower or wider vectors
    than measured take the nearest measured rule."""
    monkeypatch.setattr(conv_rows, "_lanes", lambda: lanes)
    wide = lanes >= 16
    assert _admits(16, 32, 14) is not wide and _admits(32, 32, 7) is not wide  # lenet's 2nd, resnet's stage 3
    assert _admits(32, 64, 14) is not wide  # balance 21.3
    assert _admits(64, 64, 14) and _admits(128, 128, 28)  # 32 and 64
    assert _admits(128, 128, 7) is not wide  # 7² maps: a product's row of one vector on 16 lanes


def test_run_takes_it_from_the_batch():
    """Equal to the direct reference either way."""
    rng = np.random.default_rng(5)
    xs, ws, bias, _ = _case(rng, 3, 16, 32, 14, 14, np.float64)
    x4, w4, geo = _geo(xs, ws, 1)
    got, _ = conv_rows.run(x4, w4, geo, conv_rows.RELU, bias)
    assert_close(got, _reference(xs, ws, bias, None, 1, conv_rows.RELU, None), "run", rtol=1e-9)


@pytest.mark.parametrize(
    "geometry",
    [(3, 16, 32, 10, 10, 1), (2, 32, 20, 9, 7, ((1, 1), (0, 2))), (2, 24, 24, 8, 11, ((2, 0), (1, 1)))],
    ids=["lenet-like", "O=20, asymmetric", "C=O=24, wide padding"],
)
def test_the_training_pass_through_winograd_against_torch_and_direct(geometry):
    """The training forward and the input gradient (a 3×3 stride-1 convolution of δ with the rotated
    kernel) go through ``conv_rows.run``, so a batch's layer of enough channels runs them on Winograd."""
    from test_conv_tiled import _torch, _training_pass

    N, C, O, H, W, padding = geometry
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((O, C, 3, 3)), rng.standard_normal(O)
    _, _, geo = _geo(x, w, padding)
    assert conv_rows.uses_winograd(geo, N)
    dy = rng.standard_normal((N, O, *geo.out_size))
    ours, _ = _training_pass(x, w, b, dy, padding=padding)
    direct, _ = _training_pass(x, w, b, dy, padding=padding, algorithm="direct")
    for name, got, torch_, want in zip(("y", "dx", "dw", "db"), ours, _torch(x, w, b, dy, padding, 1), direct,
                                       strict=True):  # fmt: skip
        assert_close(got, torch_, f"{name} against torch {geometry}")
        assert_close(got, want, f"{name} against direct {geometry}", rtol=1e-9)
    ours32, _ = _training_pass(*(a.astype(np.float32) for a in (x, w, b, dy)), padding=padding)
    for name, got, want in zip(("y", "dx", "dw", "db"), ours32, direct, strict=True):
        assert got.dtype == np.float32
        assert_close(got, want, f"{name} float32 {geometry}", rtol=1e-5)


@pytest.mark.parametrize("name", ["lenet", "resnet"])
def test_a_traced_plan_runs_it_as_the_unplanned_forward(name):
    """``nn.plan``'s steps of a batch take Winograd's tiles (lenet's second layer, resnet's stage 3)
    and give the unplanned forward's bits."""
    from convprop import models
    from convprop.nn import fused, plan

    model = models.build_model(name, 1, (28, 28), 10, rng=3).eval()
    x = np.random.default_rng(8).standard_normal((5, 1, 28, 28)).astype(np.float32)
    traced = model.forward(x)
    steps = plan._PLANS[model][(x.shape, x.dtype)][1].steps
    convs = [s for s in steps if isinstance(s, plan.ConvStep)]
    for step in (s for s in steps if isinstance(s, plan.ResidualStep)):
        convs += [s for s in (*step.body, step.tail) if isinstance(s, plan.ConvStep)]
    assert any(step.winograd is not None for step in convs)
    planned = model.forward(x)
    np.testing.assert_array_equal(planned, traced)
    np.testing.assert_array_equal(planned, fused.forward_fused(list(model), x))


def test_finite_differences_through_winograd_float64():
    import convprop
    from convprop.functional.conv import conv2d_with_context, conv_backward_from_context

    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 16, 7, 7)), rng.standard_normal((32, 16, 3, 3))
    assert conv_rows.uses_winograd(_geo(x, w, 1)[2], 2)

    def forward(x, w):
        return conv2d_with_context(x, w, padding=1)[0]

    def backward(dy, x, w):
        dx, dw, _ = conv_backward_from_context(dy, conv2d_with_context(x, w, padding=1)[1])
        return dx, dw

    convprop.gradcheck(forward, backward, [x, w])  # raises GradcheckError on a mismatch
