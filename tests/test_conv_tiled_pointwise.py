"""1×1 kernels at stride 1 on ``conv_tiled``'s tiles (``POINTWISE_ON_TILES``, forced here: AVX-512
only in use) against the direct reference in float64 and float32, 1-D, 2-D and 3-D, padded and not,
from read-only inputs too; and which images the tiles read in place (``is_own_buffer``)."""

from __future__ import annotations

import numpy as np
import pytest
from reference import conv_layer_against_direct

from convprop.functional import conv_tiled
from convprop.functional.conv import _resolve, conv_backward_from_context


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-9), (np.float32, 1e-4)])
@pytest.mark.parametrize(
    "N, C, size, O, padding",
    [
        (3, 40, (9, 11), 32, 0),  # a product of 40 taps: the forward, the transposed weights' gradient
        (2, 1, (7, 8), 16, 0),  # one input channel: the input gradient unfolded
        (2, 6, (5, 6), 20, 1),  # a padded 1×1 (wider than d·(K−1) = 0): the input gradient by phases
        (2, 5, (30,), 17, 0),  # 1-D
        (2, 3, (4, 5, 6), 24, 0),  # 3-D
        (3, 7, (8, 8), 32, 0),  # planes of whole vectors: the tiles read the images themselves, no copy
        (2, 5, (32,), 40, 0),  # likewise, 1-D
    ],
)
def test_pointwise_layers_train_on_tiles(N, C, size, O, padding, dtype, rtol, monkeypatch):
    """A 1×1 kernel at stride 1 (on tiles where ``POINTWISE_ON_TILES``: forced here) against direct,
    from a read-only input too (where the tiles read the image in place)."""
    monkeypatch.setattr(conv_tiled, "POINTWISE_ON_TILES", True)
    rng = np.random.default_rng(12)
    ndim = len(size)
    x, w, b = rng.standard_normal((N, C, *size)), rng.standard_normal((O, C, *(1,) * ndim)), rng.standard_normal(O)
    ctx = conv_layer_against_direct(x, w, b, rng, ndim=ndim, dtype=dtype, rtol=rtol, what="1×1", padding=padding)
    assert isinstance(ctx.algo, conv_tiled.Tiled)
    from convprop.functional.conv import conv_with_context

    xs, ws, bs = x.astype(dtype), w.astype(dtype), b.astype(dtype)
    frozen = xs.copy()
    frozen.flags.writeable = False
    y, ctx = conv_with_context(xs, ws, bs, padding=padding, ndim=ndim)
    dy = rng.standard_normal(y.shape).astype(dtype)
    y_frozen, ctx_frozen = conv_with_context(frozen, ws, bs, padding=padding, ndim=ndim)
    mine = (y, *conv_backward_from_context(dy, ctx))
    for got, want in zip((y_frozen, *conv_backward_from_context(dy, ctx_frozen)), mine, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "size, kernel, padding, stride, own",
    [
        ((8, 8), 1, 0, 1, True),  # 64 values a plane: whole vectors, no tail
        ((9, 11), 1, 0, 1, False),  # 99: the grid's rounding needs a tail
        ((8, 8), 1, 1, 1, False),  # padded
        ((8, 8), 1, 0, 2, False),  # strided: phases
        ((8, 8), 3, 1, 1, False),  # a 3×3 kernel: padded planes
    ],
)
def test_which_images_are_their_own_buffer(size, kernel, padding, stride, own):
    from convprop.functional import conv_rows
    from convprop.functional.conv_rows_kernels import is_own_buffer

    x, w = np.zeros((2, 3, *size), np.float32), np.zeros((16, 3, kernel, kernel), np.float32)
    geo = _resolve(x, w, 2, stride, padding, 1, 1, "zeros", "auto", "conv2d")[2]
    _, phases, Wq, S, _ = conv_rows._layout(geo, x.dtype)
    (ph, _), (pw, _) = geo.pads
    assert is_own_buffer.py_func(x, phases, ph, pw, stride, stride, Wq, S) is own
