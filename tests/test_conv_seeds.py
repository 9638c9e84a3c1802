"""The seed notes' own examples and formulas, reproduced (with their errata corrected)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from convprop.functional import conv2d, conv2d_backward

ALGOS = ["direct", "scipy", "im2col", "auto"]


# --- seed 002: a 3×3 input X, a 2×2 filter F, output O = X ⋆ F (2×2) --------------------------------
X = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
FILT = np.array([[1.0, -1.0], [2.0, 0.5]])
DO = np.array([[0.5, -1.0], [2.0, 3.0]])  # dL/dO arriving from the next layer


def seed002_forward(X, W):
    """Seed 002's conv_forward loop (single channel, stride 1, no padding)."""
    f = W.shape[0]
    H = np.zeros((X.shape[0] - f + 1, X.shape[1] - f + 1))
    for h in range(H.shape[0]):
        for w in range(H.shape[1]):
            H[h, w] = np.sum(X[h : h + f, w : w + f] * W)
    return H


def seed002_backward(dH, X, W):
    """Seed 002's conv_backward loop, with its erratum fixed: dH[h, w] indexes, dH(h, w) would call."""
    f = W.shape[0]
    dX, dW = np.zeros(X.shape), np.zeros(W.shape)
    for h in range(dH.shape[0]):
        for w in range(dH.shape[1]):
            dW += X[h : h + f, w : w + f] * dH[h, w]
            dX[h : h + f, w : w + f] += W * dH[h, w]
    return dX, dW


@pytest.mark.parametrize("algorithm", ALGOS)
def test_seed002_forward_by_hand(algorithm):
    # O11 = X11 F11 + X12 F12 + X21 F21 + X22 F22, and so on for the other three outputs.
    expected = np.array(
        [
            [1 * 1 - 2 * 1 + 4 * 2 + 5 * 0.5, 2 * 1 - 3 * 1 + 5 * 2 + 6 * 0.5],
            [4 * 1 - 5 * 1 + 7 * 2 + 8 * 0.5, 5 * 1 - 6 * 1 + 8 * 2 + 9 * 0.5],
        ]
    )
    got = conv2d(X[None, None], FILT[None, None], algorithm=algorithm)[0, 0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(seed002_forward(X, FILT), expected, atol=1e-12)


@pytest.mark.parametrize("algorithm", ALGOS)
def test_seed002_filter_gradient_is_valid_correlation_of_x_with_do(algorithm):
    # dL/dF11 = dO11 X11 + dO12 X12 + dO21 X21 + dO22 X22: the "valid" correlation of X with dL/dO.
    expected = signal.correlate2d(X, DO, mode="valid")
    by_hand = np.array(
        [[sum(DO[i, j] * X[i + a, j + b] for i in range(2) for j in range(2)) for b in range(2)] for a in range(2)]
    )
    np.testing.assert_allclose(expected, by_hand, atol=1e-12)
    _, dw, _ = conv2d_backward(DO[None, None], X[None, None], FILT[None, None], algorithm=algorithm)
    np.testing.assert_allclose(dw[0, 0], expected, atol=1e-12)
    np.testing.assert_allclose(seed002_backward(DO, X, FILT)[1], expected, atol=1e-12)


@pytest.mark.parametrize("algorithm", ALGOS)
def test_seed002_input_gradient_is_full_convolution_with_rotated_filter(algorithm):
    # Rotate the filter by 180° and take the full correlation with dL/dO (= full convolution with F).
    rotated = np.rot90(FILT, 2)
    padded = np.pad(DO, 1)  # "full": every overlap of the 2×2 filter with the 2×2 dO
    expected = np.array([[np.sum(padded[i : i + 2, j : j + 2] * rotated) for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(expected, signal.convolve2d(DO, FILT, mode="full"), atol=1e-12)
    dx, _, _ = conv2d_backward(DO[None, None], X[None, None], FILT[None, None], algorithm=algorithm)
    np.testing.assert_allclose(dx[0, 0], expected, atol=1e-12)
    np.testing.assert_allclose(seed002_backward(DO, X, FILT)[0], expected, atol=1e-12)


# --- seed 000 (corrected): y_n = Σ_m k_nm ⋆ x_m + b_n, dx_m = Σ_n dy_n * k_nm ------------------------
def seed000_corrected(x, K, b, dy):
    """Seed 000's per-channel-pair scipy layer with its two bugs fixed (bias once, grad_input summed)."""
    C_out, C_in = K.shape[:2]
    y = np.stack(
        [sum(signal.correlate2d(x[m], K[n, m], mode="valid") for m in range(C_in)) + b[n] for n in range(C_out)]
    )
    dK = np.array([[signal.correlate2d(x[m], dy[n], mode="valid") for m in range(C_in)] for n in range(C_out)])
    dx = np.stack([sum(signal.convolve2d(dy[n], K[n, m], mode="full") for n in range(C_out)) for m in range(C_in)])
    return y, dx, dK, dy.sum(axis=(1, 2))


@pytest.mark.parametrize("algorithm", ALGOS)
def test_seed000_layer_corrected(algorithm):
    rng = np.random.default_rng(0)
    x, K, b = rng.standard_normal((3, 8, 7)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    dy = rng.standard_normal((4, 6, 5))
    y_ref, dx_ref, dK_ref, db_ref = seed000_corrected(x, K, b, dy)
    np.testing.assert_allclose(conv2d(x, K, b, algorithm=algorithm), y_ref, atol=1e-12)
    dx, dK, db = conv2d_backward(dy, x, K, algorithm=algorithm)
    np.testing.assert_allclose(dx, dx_ref, atol=1e-12)
    np.testing.assert_allclose(dK, dK_ref, atol=1e-12)
    np.testing.assert_allclose(db, db_ref, atol=1e-12)


def test_seed000_bugs_would_be_caught():
    """The seed's literal code gives different answers; our corrected reference is the one that matches."""
    rng = np.random.default_rng(1)
    x, K, b = rng.standard_normal((2, 5, 5)), rng.standard_normal((2, 2, 2, 2)), rng.standard_normal(2)
    dy = rng.standard_normal((2, 4, 4))
    buggy_y = np.zeros((2, 4, 4))
    buggy_dx = np.zeros((2, 5, 5))
    for n in range(2):
        for m in range(2):
            buggy_y[n] += signal.correlate2d(x[m], K[n, m], mode="valid") + b[n]  # bias added per m
            buggy_dx[m] = signal.convolve2d(dy[n], K[n, m], "full")  # overwritten per n
    y = conv2d(x, K, b)
    dx, _, _ = conv2d_backward(dy, x, K)
    np.testing.assert_allclose(buggy_y - y, np.broadcast_to(b[:, None, None], y.shape), atol=1e-12)
    assert not np.allclose(buggy_dx, dx)


# --- seeds 001/003: the index formulas, evaluated literally --------------------------------------------
@pytest.mark.parametrize("algorithm", ALGOS)
def test_seed003_index_formulas(algorithm):
    rng = np.random.default_rng(2)
    C_in, C_out, H, W, KH, KW = 2, 3, 6, 5, 3, 2
    X, Wt, b = rng.standard_normal((C_in, H, W)), rng.standard_normal((C_out, C_in, KH, KW)), rng.standard_normal(C_out)
    Ho, Wo = H - KH + 1, W - KW + 1
    delta = rng.standard_normal((C_out, Ho, Wo))
    # Y_{c,i,j} = Σ_k Σ_m Σ_n W_{c,k,m,n} X_{k,i+m,j+n} + b_c
    Y = np.zeros((C_out, Ho, Wo))
    for c in range(C_out):
        for i in range(Ho):
            for j in range(Wo):
                Y[c, i, j] = b[c] + sum(
                    Wt[c, k, m, n] * X[k, i + m, j + n] for k in range(C_in) for m in range(KH) for n in range(KW)
                )
    # dL/dW_{c,k,m,n} = Σ_{i,j} δ_{c,i,j} X_{k,i+m,j+n};  dL/db_c = Σ_{i,j} δ_{c,i,j}
    dW = np.zeros_like(Wt)
    for c, k, m, n in np.ndindex(*Wt.shape):
        dW[c, k, m, n] = sum(delta[c, i, j] * X[k, i + m, j + n] for i in range(Ho) for j in range(Wo))
    # dL/dX_{k,p,q} = Σ_{c,i,j} δ_{c,i,j} W_{c,k,p-i,q-j} where 0 <= p-i < KH and 0 <= q-j < KW
    dX = np.zeros_like(X)
    for k, p, q in np.ndindex(*X.shape):
        dX[k, p, q] = sum(
            delta[c, i, j] * Wt[c, k, p - i, q - j]
            for c in range(C_out)
            for i in range(Ho)
            for j in range(Wo)
            if 0 <= p - i < KH and 0 <= q - j < KW
        )
    np.testing.assert_allclose(conv2d(X, Wt, b, algorithm=algorithm), Y, atol=1e-12)
    dx, dw, db = conv2d_backward(delta, X, Wt, algorithm=algorithm)
    np.testing.assert_allclose(dx, dX, atol=1e-12)
    np.testing.assert_allclose(dw, dW, atol=1e-12)
    np.testing.assert_allclose(db, delta.sum(axis=(1, 2)), atol=1e-12)


def test_seed003_output_size_formula_with_floor():
    # H_out = floor((H + 2P - K) / stride) + 1; seed 003 writes it without the floor.
    x, w = np.zeros((1, 1, 10, 9)), np.zeros((1, 1, 3, 3))
    for stride in (1, 2, 3, 4):
        for P in (0, 1, 2):
            y = conv2d(x, w, stride=stride, padding=P)
            assert y.shape[2:] == ((10 + 2 * P - 3) // stride + 1, (9 + 2 * P - 3) // stride + 1)
