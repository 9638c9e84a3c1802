"""``row_vectors``: the pooled epilogue a vector at a time gives the scalar arithmetic's bits and NaN rule;
the masked row copies of a stride-1 fill give the padded image and touch nothing else.

``conv_rows_kernels.store`` with ``pool`` on a random accumulator against NumPy's version of the same
arithmetic in the same dtype — t = acc + bias, best = t0 if t0 > t1 else t1 (and so on, a NaN giving
way to the next value), ReLU by ``best > 0`` — over widths below, at and above a vector's lanes, odd
grids, one channel to many, and NaNs in a window (reported), in the junk columns the windows never
read and in the accumulator's spare rows (not reported).
"""

from __future__ import annotations

import numpy as np
import pytest

from convprop.functional.conv_rows_kernels import fill, store
from convprop.functional.conv_tile import VECTOR_BYTES
from convprop.functional.row_vectors import pool_tail


def _expected(acc, Wp, bias, PH, PW):
    """(out, saw_nan) by NumPy, in acc's dtype."""
    O = bias.shape[0]
    out = np.empty((O, PH, PW), dtype=acc.dtype)
    saw_nan = False
    for o in range(O):
        grid = acc[o, : 2 * PH * Wp].reshape(2 * PH, Wp)[:, : 2 * PW]
        t = [grid[i::2, j::2] + bias[o] for i in (0, 1) for j in (0, 1)]  # (top, 2l), (top, 2l+1), (bottom, …)
        best = t[0]
        for v in t[1:]:
            best = np.where(best > v, best, v)
        out[o] = np.where(best > 0, best, np.zeros((), acc.dtype))
        saw_nan |= bool(np.isnan(np.stack(t)).any())
    return out, saw_nan


def _case(rng, dtype, O, OH, OW, extra):
    """A grid of O rows (whole tiles and pool_tail's spare rows), rows Wp = OW + extra wide."""
    Wp = OW + extra
    lanes = VECTOR_BYTES // np.dtype(dtype).itemsize
    L = -(-OH * Wp // lanes) * lanes
    rows = -(-O // 8) * 8
    acc = np.zeros((rows + pool_tail(L, np.dtype(dtype).itemsize), L), dtype=dtype)
    acc[:O, : OH * Wp] = rng.standard_normal((O, OH * Wp))
    bias = rng.standard_normal(O).astype(dtype)
    return acc, Wp, bias


def _store(acc, Wp, bias, PH, PW):
    epilogue = np.zeros((4, bias.shape[0]), dtype=acc.dtype)
    epilogue[0], epilogue[2] = bias, 1
    out = np.full((bias.shape[0], PH, PW), -7.0, dtype=acc.dtype)
    skip = np.zeros((1, 1, 1), dtype=acc.dtype)
    saw_nan = store(acc, Wp, True, False, True, epilogue, False, skip, out)
    return out, saw_nan


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("O", "OH", "OW", "extra"),
    [(1, 2, 2, 2), (16, 28, 28, 2), (32, 14, 14, 2), (3, 7, 9, 2), (5, 15, 33, 1), (9, 40, 40, 2), (2, 6, 70, 3),
     (8, 4, 4, 0)],
)  # fmt: skip
def test_every_width_gives_the_scalar_bits(dtype, O, OH, OW, extra):
    rng = np.random.default_rng(O * 1000 + OW)
    acc, Wp, bias = _case(rng, dtype, O, OH, OW, extra)
    PH, PW = OH // 2, OW // 2
    got, saw_nan = _store(acc, Wp, bias, PH, PW)
    want, want_nan = _expected(acc, Wp, bias, PH, PW)
    np.testing.assert_array_equal(got, want)
    assert saw_nan is want_nan is False


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("OW", [21, 9])  # pooled rows of 10 (a vector each), of 4 (two a vector)
def test_a_nan_in_a_window_is_reported_and_junk_is_not(dtype, OW):
    rng = np.random.default_rng(3)
    O, OH = 6, 13  # odd: the last row and column of the grid are in no window
    acc, Wp, bias = _case(rng, dtype, O, OH, OW, 2)
    junk = acc.copy()
    grid = junk[:O, : OH * Wp].reshape(O, OH, Wp)
    grid[:, :, OW - 1 :] = np.nan  # the odd last column and the padding's junk columns
    grid[:, OH - 1] = np.nan  # the odd last row
    junk[O:] = np.nan  # the spare rows
    got, saw_nan = _store(junk, Wp, bias, OH // 2, OW // 2)
    want, _ = _expected(acc, Wp, bias, OH // 2, OW // 2)
    np.testing.assert_array_equal(got, want)
    assert saw_nan is False
    for o, r, c in ((0, 0, 0), (O - 1, OH - 2, OW - 2), (2, 5, OW - 4), (4, 11, 3), (1, 3, 1)):
        bad = acc.copy()
        bad[o, r * Wp + c] = np.nan
        got, saw_nan = _store(bad, Wp, bias, OH // 2, OW // 2)
        want, want_nan = _expected(bad, Wp, bias, OH // 2, OW // 2)
        np.testing.assert_array_equal(got, want)  # (NaN where the scalar code keeps one, in the same places)
        assert saw_nan is want_nan is True, (o, r, c)


def test_minus_zero_and_ties_follow_the_scalar_rule():
    acc, Wp, bias = _case(np.random.default_rng(4), np.float32, 2, 8, 40, 2)
    acc[:, : 8 * Wp : 3] = -0.0
    acc[:, 1 : 8 * Wp : 5] = 0.0
    bias[:] = 0
    got, _ = _store(acc, Wp, bias, 4, 20)
    want, _ = _expected(acc, Wp, bias, 4, 20)
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("C", "H", "W", "ph", "pw", "extra"),
    [(1, 1, 1, 0, 0, 0), (3, 5, 7, 1, 1, 0), (16, 14, 14, 1, 1, 0), (2, 9, 17, 2, 3, 5), (4, 6, 33, 0, 2, 1),
     (1, 28, 28, 2, 2, 0), (2, 3, 64, 1, 0, 0)],
)  # fmt: skip
def test_a_stride_1_fill_is_the_padded_image(dtype, C, H, W, ph, pw, extra):
    """``fill`` at stride 1 (``row_vectors.copy_row``'s masked rows): the zero-padded planes, nothing
    written outside the rows' cells (the buffer's sentinel values past the planes survive)."""
    rng = np.random.default_rng(C * 100 + W)
    N = 3
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    Wq = W + 2 * pw + extra
    S = (H + 2 * ph) * Wq
    phases = np.zeros((1, 2), dtype=np.int64)
    for n in range(N):
        buffer = np.zeros(C * S + 40, dtype=dtype)
        buffer[C * S :] = 7.0
        assert fill(x, n, phases, ph, pw, 1, 1, Wq, S, buffer, True) is False
        want = np.zeros((C, H + 2 * ph, Wq), dtype=dtype)
        want[:, ph : ph + H, pw : pw + W] = x[n]
        np.testing.assert_array_equal(buffer[: C * S].reshape(C, H + 2 * ph, Wq), want)
        assert (buffer[C * S :] == 7.0).all()


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_stride_1_fill_reports_a_non_finite_value(bad):
    x = np.ones((2, 3, 5, 19), dtype=np.float32)
    x[1, 2, 4, 18] = bad
    phases = np.zeros((1, 2), dtype=np.int64)
    buffer = np.zeros(3 * 7 * 21 + 40, dtype=np.float32)
    assert fill(x, 0, phases, 1, 1, 1, 1, 21, 7 * 21, buffer, True) is False
    assert fill(x, 1, phases, 1, 1, 1, 1, 21, 7 * 21, buffer, True) is True
    assert fill(x, 1, phases, 1, 1, 1, 1, 21, 7 * 21, buffer, False) is False  # (unchecked)


def test_a_strided_output_takes_the_scalar_path_with_the_same_bits():
    acc, Wp, bias = _case(np.random.default_rng(9), np.float32, 5, 14, 14, 2)
    want, _ = _store(acc, Wp, bias, 7, 7)
    epilogue = np.zeros((4, 5), dtype=np.float32)
    epilogue[0], epilogue[2] = bias, 1
    wide = np.full((5, 7, 14), -7.0, dtype=np.float32)
    assert store(acc, Wp, True, False, True, epilogue, False, np.zeros((1, 1, 1), np.float32), wide[:, :, ::2]) is False
    np.testing.assert_array_equal(wide[:, :, ::2], want)
    assert (wide[:, :, 1::2] == -7.0).all()


def _phase_planes(x, n, phases, ph, pw, sh, sw, Hq, Wq, S):
    """The buffer fill should leave: plane k = (rh, rw) of channel c holds the zero-padded image at
    (r·sh + rh, j·sw + rw) at r·Wq + j; every other cell 0."""
    C, H, W = x.shape[1:]
    want = np.zeros(phases.shape[0] * C * S, dtype=x.dtype)
    for k, (rh, rw) in enumerate(phases):
        for c in range(C):
            plane = np.zeros((Hq, Wq), dtype=x.dtype)
            for r in range(Hq):
                h = r * sh + rh - ph
                if 0 <= h < H:
                    for j in range(Wq):
                        w = j * sw + rw - pw
                        if 0 <= w < W:
                            plane[r, j] = x[n, c, h, w]
            want[(k * C + c) * S : (k * C + c) * S + Hq * Wq] = plane.ravel()
    return want


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("C", "H", "W", "kernel", "stride", "padding"),
    [(8, 28, 28, 3, 2, 1), (16, 14, 14, 3, 2, 1), (8, 28, 28, 1, 2, 0), (3, 9, 11, 3, 2, 2), (2, 7, 40, 4, 2, 1),
     (2, 5, 70, 3, (1, 2), 1), (2, 12, 9, 3, (2, 1), (1, 0)), (1, 10, 13, 5, 3, 2), (2, 6, 33, 2, 2, 0),
     (1, 1, 1, 1, 2, 0)],
)  # fmt: skip
def test_a_strided_fill_is_the_padded_images_phases(dtype, C, H, W, kernel, stride, padding):
    """``fill`` into the stride phases a plan lays out (``row_vectors.split_row`` at a column stride of
    2, the general loop otherwise), against the phases' definition; nothing past the planes written."""
    from convprop.functional import conv_rows
    from convprop.functional.conv_resolve import _resolve

    rng = np.random.default_rng(H * 100 + W)
    x = rng.standard_normal((2, C, H, W)).astype(dtype)
    w = np.zeros((4, C, kernel, kernel), dtype=dtype)
    x4, _, geo, _, _ = _resolve(x, w, 2, stride, padding, 1, 1, "zeros", "auto", "conv2d")
    p = conv_rows.plan(geo, x.dtype, conv_rows.PLAIN)
    (sh, sw), (ph, pw) = p.stride, p.pads
    Hq = -(-geo.padded_size[0] // sh)
    for n in range(2):
        buffer = np.zeros(p.phases.shape[0] * C * p.S + 40, dtype=dtype)
        buffer[-40:] = 7.0
        assert fill(x4, n, p.phases, ph, pw, sh, sw, p.Wq, p.S, buffer, True) is False
        want = _phase_planes(x4, n, p.phases, ph, pw, sh, sw, Hq, p.Wq, p.S)
        np.testing.assert_array_equal(buffer[:-40], want)
        assert (buffer[-40:] == 7.0).all()


def _finished_expected(acc, Wp, epilogue, skip, OH, OW, normalise, residual, relu):
    O = epilogue.shape[1]
    grid = acc[:O, : OH * Wp].reshape(O, OH, Wp)[:, :, :OW]
    b, mu, k, sh = (epilogue[i][:, None, None] for i in range(4))
    v = grid + b
    if normalise:
        v = (v - mu) * k + sh
    if residual:
        v = v + skip
    if relu:
        v = np.where((v > 0) | np.isnan(v), v, np.zeros((), v.dtype))
    return v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("flags", [(False, False, False), (False, False, True), (True, False, True), (True, True, True),
                                   (False, True, False), (True, True, False)])  # fmt: skip
@pytest.mark.parametrize(("O", "OH", "OW", "extra"), [(8, 28, 28, 2), (16, 14, 14, 2), (32, 7, 7, 2), (3, 5, 40, 1),
                                                      (2, 3, 70, 3), (1, 1, 1, 0)])  # fmt: skip
def test_the_unpooled_epilogue_a_vector_at_a_time_gives_the_scalar_bits(dtype, flags, O, OH, OW, extra):
    """``store`` without pooling (``row_vectors.finished_row``): bias, batch norm, shortcut and ReLU as
    NumPy computes them in the same dtype and order, with infinities, NaNs and −0.0 among the sums; a
    strided output takes the scalar loop and gives the same bits."""
    normalise, residual, relu = flags
    rng = np.random.default_rng(O * 7 + OW)
    acc, Wp, bias = _case(rng, dtype, O, OH, OW, extra)
    flat = acc[:O, : OH * Wp].reshape(-1)
    flat[rng.integers(0, flat.size, 5)] = np.nan
    flat[rng.integers(0, flat.size, 5)] = np.inf
    flat[rng.integers(0, flat.size, 5)] = -0.0
    epilogue = np.stack([bias, *(rng.standard_normal(O).astype(dtype) for _ in range(3))])
    epilogue[0, 0] = 0.0
    skip = rng.standard_normal((O, OH, OW)).astype(dtype) if residual else np.zeros((1, 1, 1), dtype)
    want = np.ascontiguousarray(_finished_expected(acc, Wp, epilogue, skip, OH, OW, normalise, residual, relu))
    out = np.full((O, OH, OW), -7.0, dtype=dtype)
    assert store(acc, Wp, False, normalise, relu, epilogue, residual, skip, out) is False
    np.testing.assert_array_equal(out.view(np.uint8), want.view(np.uint8))
    wide = np.full((O, OH, 2 * OW), -7.0, dtype=dtype)
    store(acc, Wp, False, normalise, relu, epilogue, residual, skip, wide[:, :, ::2])
    np.testing.assert_array_equal(np.ascontiguousarray(wide[:, :, ::2]).view(np.uint8), want.view(np.uint8))
    assert (wide[:, :, 1::2] == -7.0).all()


def test_the_scalar_loops_avx2_keeps_give_the_same_bits(monkeypatch):
    """Without AVX-512 (``row_vectors.MASKED`` false) ``store`` and ``fill`` keep their scalar loops: run
    here as Python (``py_func``) with the flag off, against the same expectations as the vector paths."""
    from convprop.functional import conv_rows_kernels

    monkeypatch.setattr(conv_rows_kernels, "MASKED", False)
    rng = np.random.default_rng(11)
    for O, OH, OW in ((3, 6, 7), (2, 5, 20)):
        acc, Wp, bias = _case(rng, np.float32, O, OH, OW, 2)
        epilogue = np.stack([bias, *(rng.standard_normal(O).astype(np.float32) for _ in range(3))])
        skip = rng.standard_normal((O, OH, OW)).astype(np.float32)
        out = np.empty((O, OH, OW), np.float32)
        assert not conv_rows_kernels.store.py_func(acc, Wp, False, True, True, epilogue, True, skip, out)
        want = _finished_expected(acc, Wp, epilogue, skip, OH, OW, True, True, True)
        np.testing.assert_array_equal(out, want)
        pooled = np.empty((O, OH // 2, OW // 2), np.float32)
        conv_rows_kernels.store.py_func(acc, Wp, True, False, True, epilogue, False, skip[:1, :1, :1], pooled)
        np.testing.assert_array_equal(pooled, _expected(acc, Wp, bias, OH // 2, OW // 2)[0])
    x = rng.standard_normal((1, 2, 5, 9)).astype(np.float32)
    phases = np.zeros((1, 2), dtype=np.int64)
    buffer = np.zeros(2 * 7 * 11, np.float32)
    assert not conv_rows_kernels.fill.py_func(x, 0, phases, 1, 1, 1, 1, 11, 77, buffer, True)
    want = np.zeros((2, 7, 11), np.float32)
    want[:, 1:6, 1:10] = x[0]
    np.testing.assert_array_equal(buffer.reshape(2, 7, 11), want)
