"""nn.MaxPool2d, nn.AvgPool2d and nn.AdaptiveAvgPool2d against torch.nn, through test_nn_layers.py's
``check_layer``: a table of windows, padding and ceil mode, then random geometries (hypothesis), float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_nn_layers import case, check_layer, distinct_values

from convprop import nn

C, T = nn, torch.nn  # ours, theirs

POOL = [
    case("max-2", lambda: C.MaxPool2d(2), lambda: T.MaxPool2d(2), (2, 3, 6, 6)),
    case("max-3-stride2", lambda: C.MaxPool2d(3, 2), lambda: T.MaxPool2d(3, 2), (2, 2, 7, 8)),
    case("max-overlap-pad", lambda: C.MaxPool2d(3, 1, 1), lambda: T.MaxPool2d(3, 1, 1), (1, 2, 5, 6)),
    case(
        "max-rect",
        lambda: C.MaxPool2d((2, 3), (1, 2), (1, 1)),
        lambda: T.MaxPool2d((2, 3), (1, 2), (1, 1)),
        (2, 2, 5, 7),
    ),
    case(
        "max-dilation", lambda: C.MaxPool2d(3, 1, 1, dilation=2), lambda: T.MaxPool2d(3, 1, 1, dilation=2), (2, 2, 7, 7)
    ),
    case(
        "max-dilation-pair",
        lambda: C.MaxPool2d(2, 2, 0, dilation=(1, 3)),
        lambda: T.MaxPool2d(2, 2, 0, dilation=(1, 3)),
        (1, 2, 6, 9),
    ),
    case("max-ceil", lambda: C.MaxPool2d(2, ceil_mode=True), lambda: T.MaxPool2d(2, ceil_mode=True), (2, 2, 5, 7)),
    case(
        "max-ceil-pad",
        lambda: C.MaxPool2d(3, 2, 1, ceil_mode=True),
        lambda: T.MaxPool2d(3, 2, 1, ceil_mode=True),
        (1, 2, 6, 8),
    ),
    case(
        "max-ceil-dropped-window",
        lambda: C.MaxPool2d(2, 3, 1, ceil_mode=True),
        lambda: T.MaxPool2d(2, 3, 1, ceil_mode=True),
        (1, 1, 5, 5),
    ),
    case("max-unbatched", lambda: C.MaxPool2d(2), lambda: T.MaxPool2d(2), (3, 4, 4)),
    case("avg-2", lambda: C.AvgPool2d(2), lambda: T.AvgPool2d(2), (2, 3, 6, 6)),
    case("avg-3-stride2", lambda: C.AvgPool2d(3, 2), lambda: T.AvgPool2d(3, 2), (2, 2, 7, 8)),
    case("avg-pad-include", lambda: C.AvgPool2d(3, 1, 1), lambda: T.AvgPool2d(3, 1, 1), (2, 2, 5, 6)),
    case(
        "avg-pad-exclude",
        lambda: C.AvgPool2d(3, 1, 1, count_include_pad=False),
        lambda: T.AvgPool2d(3, 1, 1, count_include_pad=False),
        (2, 2, 5, 6),
    ),
    case(
        "avg-rect",
        lambda: C.AvgPool2d((2, 4), (2, 1), (1, 2)),
        lambda: T.AvgPool2d((2, 4), (2, 1), (1, 2)),
        (1, 2, 5, 7),
    ),
    case("avg-ceil", lambda: C.AvgPool2d(2, ceil_mode=True), lambda: T.AvgPool2d(2, ceil_mode=True), (2, 2, 5, 7)),
    case(
        "avg-ceil-pad-include",
        lambda: C.AvgPool2d(3, 2, 1, ceil_mode=True),
        lambda: T.AvgPool2d(3, 2, 1, ceil_mode=True),
        (1, 2, 6, 8),
    ),
    case(
        "avg-ceil-pad-exclude",
        lambda: C.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
        lambda: T.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
        (1, 2, 6, 8),
    ),
    case(
        "avg-divisor",
        lambda: C.AvgPool2d(2, 1, 1, divisor_override=3),
        lambda: T.AvgPool2d(2, 1, 1, divisor_override=3),
        (2, 2, 4, 5),
    ),
    case("avg-unbatched", lambda: C.AvgPool2d(2), lambda: T.AvgPool2d(2), (3, 4, 4)),
    *[
        case(
            f"adaptive-{out}-from-{size}",
            lambda out=out: C.AdaptiveAvgPool2d(out),
            lambda out=out: T.AdaptiveAvgPool2d(out),
            (2, 3, *size),
        )
        for out, size in [
            (1, (5, 7)),
            ((1, 1), (4, 4)),
            (2, (4, 6)),
            (3, (7, 7)),
            ((2, 5), (5, 7)),
            ((4, 3), (5, 5)),
            (7, (5, 5)),
            ((3, 1), (3, 8)),
        ]
    ],
]


@pytest.mark.parametrize("ours, theirs, x_shape, kw", POOL)
def test_pooling_matches_torch(ours, theirs, x_shape, kw):
    x = distinct_values(x_shape, np.random.default_rng(1))
    check_layer(ours(), theirs(), x_shape, x=x, **kw)


@st.composite
def pool_geometries(draw):
    kind = draw(st.sampled_from(["max", "avg"]))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pad = tuple(draw(st.integers(0, k // 2)) for k in kernel)  # torch's limit: at most half the kernel
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if kind == "max" else (1, 1)
    size = tuple(
        draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), 9)) for k, p, d in zip(kernel, pad, dilation, strict=True)
    )
    ceil_mode = draw(st.booleans())
    # With dilation, "padding <= kernel/2" still allows a window whose taps all fall in the padding
    # (e.g. kernel 2, dilation 2, padding 1, size 1): torch's max_pool2d backward then corrupts the heap
    # and aborts the process, so such geometries have no reference. Keep windows that touch the input.
    for k, s, p, d, n in zip(kernel, stride, pad, dilation, size, strict=True):
        span = n + 2 * p - d * (k - 1) - 1
        out = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (out - 1) * s >= n + p:
            out -= 1
        assume(all(any(0 <= o * s - p + t * d < n for t in range(k)) for o in range(out)))
    return kind, kernel, stride, pad, dilation, size, ceil_mode


@settings(max_examples=80, deadline=None)
@given(geometry=pool_geometries(), count_include_pad=st.booleans(), seed=st.integers(0, 2**16))
def test_pooling_random_geometry_matches_torch(geometry, count_include_pad, seed):
    kind, kernel, stride, pad, dilation, size, ceil_mode = geometry
    if kind == "max":
        ours, theirs = (
            nn.MaxPool2d(kernel, stride, pad, dilation, ceil_mode),
            torch.nn.MaxPool2d(kernel, stride, pad, dilation, ceil_mode=ceil_mode),
        )
    else:
        ours = nn.AvgPool2d(kernel, stride, pad, ceil_mode, count_include_pad)
        theirs = torch.nn.AvgPool2d(kernel, stride, pad, ceil_mode, count_include_pad)
    x_shape = (2, 2, *size)
    check_layer(ours, theirs, x_shape, x=distinct_values(x_shape, np.random.default_rng(seed)), seed=seed)
