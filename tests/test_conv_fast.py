"""The fast convolution algorithms against the direct reference, and ``auto``'s choice rules.

Every fast algorithm must agree with ``conv_direct`` (the specification) in float64 to rel. 1e-9,
forward and every gradient, and stay within rel. 1e-4 of the float64 reference when run in
float32. An explicit algorithm that cannot compute a geometry (``depthwise`` on grouped or dense
convolutions) must refuse it with the reason; small chunk budgets split the batch.
"""

from __future__ import annotations

import numpy as np
import pytest
from algorithm_cases import GENERAL
from reference import assert_close, rel_error

from convprop.errors import ArgumentError
from convprop.functional import conv_depthwise, conv_gemm, conv_im2col, conv_memory
from convprop.functional.conv import ALGORITHMS, _choose, conv2d, conv2d_backward
from convprop.functional.conv_algorithm import ConvAlgorithm, ConvGeometry
from convprop.functional.geometry import Window, scatter_windows, windows

FAST = ["im2col", "gemm", "depthwise"]

# (N, C, H, W, O, kernel, stride, padding, dilation, groups, padding_mode)
GEOMETRIES = [
    (2, 3, 9, 8, 4, 3, 1, 1, 1, 1, "zeros"),  # plain 3×3 'same'
    (3, 4, 10, 7, 6, (3, 2), (2, 1), (1, 0), (1, 2), 2, "zeros"),  # everything rectangular, grouped
    (2, 5, 8, 8, 3, 1, 1, 0, 1, 1, "zeros"),  # pointwise: a pure matrix product
    (2, 4, 9, 9, 4, 1, 2, 0, 1, 1, "zeros"),  # 1×1 with stride: the sampled positions, a product
    (2, 4, 7, 7, 6, 1, 1, 1, 1, 2, "zeros"),  # 1×1 with padding, grouped
    (2, 6, 11, 9, 6, 3, 2, 1, 1, 6, "zeros"),  # depthwise, strided
    (2, 3, 8, 8, 6, 3, 1, 2, 2, 3, "reflect"),  # depthwise ×2 multiplier, dilated
    (3, 1, 12, 10, 5, 3, 1, 1, 1, 1, "zeros"),  # one input channel (MNIST's first layer)
    (1, 4, 6, 6, 4, 5, 1, 2, 1, 4, "circular"),  # depthwise 5×5
    (2, 4, 9, 9, 8, 3, 3, 0, 1, 1, "replicate"),  # stride 3 leaves rows with zero gradient
    (2, 6, 7, 7, 4, 3, 1, "same", 1, 2, "zeros"),  # grouped, not depthwise
    (1, 2, 3, 3, 2, 3, 1, 0, 1, 1, "zeros"),  # a single output pixel
    (2, 4, 9, 7, 4, 3, 1, 1, 1, 4, "zeros"),  # depthwise 3×3 stride 1: the unrolled kernels
    (2, 3, 8, 10, 6, 3, 1, 0, 1, 3, "reflect"),  # ... with a ×2 multiplier, no padding
    (1, 2, 5, 6, 4, 3, 1, "same", 1, 2, "circular"),  # ... 'same', multiplier, circular
    (2, 3, 3, 3, 3, 3, 1, 0, 1, 3, "zeros"),  # ... a single output pixel
]


def _case(geometry, dtype, seed=0):
    N, C, H, W, O, k, stride, padding, dilation, groups, mode = geometry
    rng = np.random.default_rng(seed)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C // groups, kh, kw))
    b = rng.standard_normal(O)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=mode)
    return x, w, b, kwargs


def _all(x, w, b, kwargs, algorithm, seed=1):
    y = conv2d(x, w, b, algorithm=algorithm, **kwargs)
    dy = np.random.default_rng(seed).standard_normal(y.shape).astype(x.dtype)
    return (y, *conv2d_backward(dy, x, w, algorithm=algorithm, **kwargs))


def assert_matches_direct(geometry, algorithm, dtype, tol):
    """Forward and all three gradients of ``algorithm`` in ``dtype`` vs direct in float64."""
    x, w, b, kwargs = _case(geometry, np.float64)
    if algorithm == "depthwise" and w.shape[1] != 1:  # not depthwise: refused, saying why
        with pytest.raises(ArgumentError, match=r"algorithm='depthwise' cannot .* one input channel per group"):
            _all(x.astype(dtype), w.astype(dtype), b.astype(dtype), kwargs, algorithm)
        return
    reference = _all(x, w, b, kwargs, "direct")
    got = _all(x.astype(dtype), w.astype(dtype), b.astype(dtype), kwargs, algorithm)
    for name, g, r in zip(("y", "dx", "dw", "db"), got, reference, strict=True):
        assert g.dtype == dtype, f"{name} has dtype {g.dtype}, expected {dtype}"
        assert g.shape == r.shape, f"{name} has shape {g.shape}, expected {r.shape}"
        assert_close(g, r, f"{algorithm} {name} on {geometry}", tol)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("algorithm", FAST)
def test_float64_matches_direct(algorithm, geometry):
    assert_matches_direct(geometry, algorithm, np.float64, 1e-9)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("algorithm", FAST)
def test_float32_within_1e4_of_float64_direct(algorithm, geometry):
    assert_matches_direct(geometry, algorithm, np.float32, 1e-4)


@pytest.mark.parametrize("algorithm", ["im2col", "gemm"])
def test_batch_split_into_chunks(algorithm, monkeypatch):
    """A tiny chunk budget (one image per chunk) gives the same answer as one chunk."""
    geometry = (5, 3, 8, 8, 4, 3, 2, 1, 1, 1, "zeros")
    x, w, b, kwargs = _case(geometry, np.float64)
    whole = _all(x, w, b, kwargs, algorithm)
    monkeypatch.setattr(conv_memory, "CHUNK_BYTES", 1)
    assert len(list(conv_memory.batch_chunks(5, 100))) == 5  # im2col and gemm share this chunking
    split = _all(x, w, b, kwargs, algorithm)
    for g, r in zip(split, whole, strict=True):
        assert rel_error(g, r) < 1e-12


def test_chunks_cover_the_batch_once():
    for N, per_image, budget in [(10, 3, 7), (1, 100, 1), (64, 1, 10**9), (7, 10, 10)]:
        chunks = list(conv_memory.batch_chunks(N, per_image, budget))
        assert [i for c in chunks for i in range(c.start, c.stop)] == list(range(N))
        assert all((c.stop - c.start) * per_image <= budget or c.stop - c.start == 1 for c in chunks)


@pytest.mark.parametrize("algorithm", FAST)
def test_unbatched_input(algorithm):
    x, w, b, kwargs = _case(GEOMETRIES[12 if algorithm == "depthwise" else 0], np.float64)
    got = _all(x[0], w, b, kwargs, algorithm)
    reference = _all(x[:1], w, b, kwargs, "direct")
    assert got[0].shape == reference[0].shape[1:]
    assert rel_error(got[0], reference[0][0]) < 1e-9


def _geometry(weight_shape, stride=(1, 1), dilation=(1, 1), groups=1, in_size=(8, 8)):
    kernel = tuple(weight_shape[2:])
    window = Window.fitted(in_size, kernel, stride, dilation, ((1, 1),) * len(kernel))
    return ConvGeometry(window, groups, weight_shape[1] * groups, weight_shape[0])


@pytest.mark.parametrize(
    "weight_shape, groups, stride, expected",
    [
        ((64, 1, 3, 3), 64, (1, 1), conv_depthwise),  # depthwise
        ((128, 1, 3, 3), 64, (2, 2), conv_depthwise),  # depthwise with multiplier 2, strided
        ((32, 1, 3, 3), 1, (1, 1), conv_im2col),  # a single input channel, dense
        ((64, 32, 3, 3), 1, (1, 1), conv_gemm),  # dense 3×3
        ((64, 64, 3, 3), 1, (2, 2), conv_gemm),  # dense strided
        ((64, 256, 1, 1), 1, (1, 1), conv_gemm),  # pointwise
        ((64, 2, 3, 3), 32, (1, 1), conv_gemm),  # grouped, two channels per group
    ],
)
def test_auto_rules(weight_shape, groups, stride, expected):
    geo = _geometry(weight_shape, stride=stride, groups=groups)
    assert _choose("auto", geo) is expected


@pytest.mark.parametrize(
    "weight_shape, groups, expected",
    [
        ((4, 4, 3), 1, conv_gemm),  # 1-D dense
        ((4, 1, 3), 4, conv_depthwise),  # 1-D depthwise: as 2-D of height 1
        ((4, 1, 3, 3, 3), 4, conv_gemm),  # 3-D depthwise: the depthwise kernels are 1-D and 2-D only
        ((4, 1, 3, 3, 3), 1, conv_im2col),  # 3-D, one input channel
    ],
)
def test_auto_rules_in_1d_and_3d(weight_shape, groups, expected):
    geo = _geometry(weight_shape, stride=(1,) * (len(weight_shape) - 2), dilation=(1,) * (len(weight_shape) - 2),
                    groups=groups, in_size=(8,) * (len(weight_shape) - 2))  # fmt: skip
    assert _choose("auto", geo) is expected


@pytest.mark.parametrize("name", GENERAL)  # the specialised ones: tests/algorithm_cases.py
def test_explicit_algorithm_is_used(name):
    depthwise = _geometry((4, 1, 3, 3), groups=4)  # every algorithm computes this one
    assert _choose(name, depthwise) is ALGORITHMS[name]


@pytest.mark.parametrize(
    "weight_shape, groups, reason",
    [
        ((4, 4, 3, 3), 1, r"one input channel per group \(groups == in_channels\), got in_channels=4, groups=1"),
        ((4, 2, 3, 3), 2, r"got in_channels=4, groups=2"),
        ((4, 1, 3, 3, 3), 4, r"compiled for 1-D and 2-D convolutions, this one has 3 spatial axes"),
    ],
)
def test_explicit_algorithm_that_cannot_do_the_shape_is_refused(weight_shape, groups, reason):
    n = len(weight_shape) - 2
    geo = _geometry(weight_shape, stride=(1,) * n, dilation=(1,) * n, groups=groups, in_size=(8,) * n)
    assert conv_depthwise.supports(geo) is not None
    with pytest.raises(ArgumentError, match=r"algorithm='depthwise' cannot compute this convolution: .*" + reason):
        _choose("depthwise", geo)


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_every_algorithm_satisfies_the_interface(name):
    assert isinstance(ALGORITHMS[name], ConvAlgorithm)


def test_new_algorithms_are_registered():
    assert ALGORITHMS["gemm"] is conv_gemm and ALGORITHMS["depthwise"] is conv_depthwise


@pytest.mark.parametrize("stride, dilation", [((1, 1, 1), (1, 1, 1)), ((2, 1, 3), (1, 2, 1)), ((1, 2, 1), (2, 1, 1))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_3d_unfold_and_fold_equal_numpy_bit_for_bit(stride, dilation, dtype):
    """The 3-D unfold (compiled at stride 1) and col2im (compiled always) against NumPy's window view and
    its per-tap slice-adds, on a padded input with a remainder left by the stride."""
    geo = _geometry((3, 2, 2, 3, 2), stride=stride, dilation=dilation, in_size=(5, 7, 6))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, *geo.padded_size)).astype(dtype)  # (n, C, *padded)
    view = windows(x, geo.kernel, geo.stride, geo.dilation, geo.out_size).transpose(1, 2, 3, 4, 0, 5, 6, 7)
    assert np.array_equal(conv_gemm.unfold(x, geo), view)
    dcols = rng.standard_normal(view.shape).astype(dtype)  # (C, *K, n, *Q)
    got = np.zeros((3, *x.shape[1:]), dtype=dtype)
    conv_gemm._col2im(dcols, 1, geo, got)  # into images 1 and 2 of 3
    expected = np.zeros_like(got)
    scatter_windows(dcols.transpose(4, 0, 1, 2, 3, 5, 6, 7), expected[1:], geo.stride, geo.dilation)
    assert np.array_equal(got, expected) and not got[0].any()
