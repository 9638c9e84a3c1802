"""The 1-D, 3-D and transposed layers against torch.nn (float64; output, input gradient, every parameter
gradient, buffers and state_dict names through ``check_layer``), their default initialisation, the
transposed layers' ``output_size=``, and checkpoints that rebuild them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_nn_layers import case, check_layer, run_case

import convprop
from convprop import nn
from convprop.errors import ArgumentError

F64 = dict(dtype=np.float64)
T = torch.nn

LAYERS = [
    case("conv1d", lambda: nn.Conv1d(3, 4, 3, **F64), lambda: T.Conv1d(3, 4, 3), (2, 3, 9)),
    case(
        "conv1d-strided-dilated-grouped",
        lambda: nn.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2, **F64),
        lambda: T.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2),
        (2, 4, 12),
    ),
    case(
        "conv1d-same-reflect",
        lambda: nn.Conv1d(2, 3, 4, padding="same", padding_mode="reflect", **F64),
        lambda: T.Conv1d(2, 3, 4, padding="same", padding_mode="reflect"),
        (2, 2, 10),
    ),
    case(
        "conv1d-depthwise-unbatched",
        lambda: nn.Conv1d(3, 6, 3, groups=3, bias=False, **F64),
        lambda: T.Conv1d(3, 6, 3, groups=3, bias=False),
        (3, 8),
    ),
    case(
        "conv3d",
        lambda: nn.Conv3d(2, 3, (2, 3, 2), stride=(1, 2, 1), padding=(1, 0, 1), **F64),
        lambda: T.Conv3d(2, 3, (2, 3, 2), stride=(1, 2, 1), padding=(1, 0, 1)),
        (2, 2, 4, 6, 5),
    ),
    case(
        "conv3d-circular-grouped",
        lambda: nn.Conv3d(4, 4, 3, padding=1, groups=2, padding_mode="circular", **F64),
        lambda: T.Conv3d(4, 4, 3, padding=1, groups=2, padding_mode="circular"),
        (1, 4, 4, 4, 4),
    ),
    case(
        "convtranspose1d",
        lambda: nn.ConvTranspose1d(3, 2, 4, stride=2, padding=1, **F64),
        lambda: T.ConvTranspose1d(3, 2, 4, stride=2, padding=1),
        (2, 3, 7),
    ),
    case(
        "convtranspose2d-output-padding-groups-dilation",
        lambda: nn.ConvTranspose2d(
            4, 6, (3, 2), stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2, dilation=(1, 2), **F64
        ),
        lambda: T.ConvTranspose2d(
            4, 6, (3, 2), stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2, dilation=(1, 2)
        ),
        (2, 4, 5, 4),
    ),
    case(
        "convtranspose2d-depthwise-no-bias",
        lambda: nn.ConvTranspose2d(3, 3, 3, stride=2, groups=3, bias=False, **F64),
        lambda: T.ConvTranspose2d(3, 3, 3, stride=2, groups=3, bias=False),
        (2, 3, 4, 4),
    ),
    case(
        "convtranspose2d-dilation-beyond-stride",
        lambda: nn.ConvTranspose2d(2, 2, 3, stride=1, dilation=3, output_padding=2, **F64),
        lambda: T.ConvTranspose2d(2, 2, 3, stride=1, dilation=3, output_padding=2),
        (1, 2, 4, 4),
    ),
    case(
        "convtranspose3d",
        lambda: nn.ConvTranspose3d(2, 3, (2, 3, 2), stride=2, padding=(0, 1, 0), output_padding=(1, 0, 1), **F64),
        lambda: T.ConvTranspose3d(2, 3, (2, 3, 2), stride=2, padding=(0, 1, 0), output_padding=(1, 0, 1)),
        (2, 2, 3, 3, 2),
    ),
    case("maxpool1d", lambda: nn.MaxPool1d(3, 2, 1), lambda: T.MaxPool1d(3, 2, 1), (2, 3, 10)),
    case(
        "maxpool1d-dilated-ceil",
        lambda: nn.MaxPool1d(2, 2, 1, 2, True),
        lambda: T.MaxPool1d(2, 2, 1, 2, ceil_mode=True),
        (2, 3, 9),
    ),
    case(
        "maxpool3d",
        lambda: nn.MaxPool3d((2, 3, 2), 2, (1, 1, 0)),
        lambda: T.MaxPool3d((2, 3, 2), 2, (1, 1, 0)),
        (2, 2, 5, 6, 5),
    ),
    case(
        "avgpool1d",
        lambda: nn.AvgPool1d(3, 2, 1, count_include_pad=False),
        lambda: T.AvgPool1d(3, 2, 1, count_include_pad=False),
        (2, 3, 10),
    ),
    case(
        "avgpool3d-ceil-divisor",
        lambda: nn.AvgPool3d(2, 2, 1, True, True, 3),
        lambda: T.AvgPool3d(2, 2, 1, True, True, 3),
        (2, 2, 5, 4, 5),
    ),
    case("adaptive1d", lambda: nn.AdaptiveAvgPool1d(4), lambda: T.AdaptiveAvgPool1d(4), (2, 3, 10)),
    case(
        "adaptive3d",
        lambda: nn.AdaptiveAvgPool3d((2, None, 3)),
        lambda: T.AdaptiveAvgPool3d((2, None, 3)),
        (2, 3, 5, 4, 7),
    ),
    case("batchnorm1d-nc", lambda: nn.BatchNorm1d(5, **F64), lambda: T.BatchNorm1d(5), (8, 5)),
    case(
        "batchnorm1d-ncl",
        lambda: nn.BatchNorm1d(3, momentum=None, **F64),
        lambda: T.BatchNorm1d(3, momentum=None),
        (4, 3, 6),
    ),
    case("batchnorm1d-eval", lambda: nn.BatchNorm1d(3, **F64), lambda: T.BatchNorm1d(3), (4, 3), train=False),
    case("batchnorm3d", lambda: nn.BatchNorm3d(2, **F64), lambda: T.BatchNorm3d(2), (2, 2, 3, 4, 3)),
    case(
        "batchnorm3d-no-affine",
        lambda: nn.BatchNorm3d(2, affine=False, **F64),
        lambda: T.BatchNorm3d(2, affine=False),
        (2, 2, 3, 2, 3),
    ),
]


@pytest.mark.parametrize("ours, theirs, x_shape, kw", LAYERS)
def test_layer_matches_torch(ours, theirs, x_shape, kw):
    run_case(ours, theirs, x_shape, kw)


@st.composite
def transpose_layers(draw):
    ndim = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 2))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True))
    padding = tuple(draw(st.integers(0, (d * (k - 1)) // 2)) for k, d in zip(kernel, dilation, strict=True))
    size = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    options = dict(
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        groups=groups,
        dilation=dilation,
        bias=draw(st.booleans()),
    )
    ours = getattr(nn, f"ConvTranspose{ndim}d")(c_in, c_out, kernel, **options, **F64)
    theirs = getattr(T, f"ConvTranspose{ndim}d")(c_in, c_out, kernel, **options)
    return ours, theirs, (2, c_in, *size), draw(st.integers(0, 2**16))


@settings(max_examples=40)
@given(layers=transpose_layers())
def test_transposed_layers_match_torch_over_random_geometries(layers):
    ours, theirs, x_shape, seed = layers
    check_layer(ours, theirs, x_shape, seed=seed)


@pytest.mark.parametrize("output_size", [(9, 11), (10, 12), [1, 3, 10, 11]])
def test_output_size_option_is_torchs(output_size):
    ours = nn.ConvTranspose2d(2, 3, 3, stride=(2, 3), padding=1, rng=0, **F64)
    theirs = T.ConvTranspose2d(2, 3, 3, stride=(2, 3), padding=1).double()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 4))
    expected = theirs(torch.tensor(x), output_size=output_size).detach().numpy()
    for y in (
        ours(x, output_size=output_size),
        ours.forward(x, output_size),
        ours.forward_with_context(x, output_size)[0],
    ):
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ArgumentError, match=r"requested an output size of \(13, 11\), but valid sizes range from"):
        ours(x, output_size=(13, 11))


@pytest.mark.parametrize(
    "make, weight_shape, fan_in",
    [
        (lambda: nn.Conv1d(4, 64, 5, rng=0), (64, 4, 5), 20),
        (lambda: nn.Conv3d(4, 16, 3, groups=2, rng=0), (16, 2, 3, 3, 3), 54),
        (lambda: nn.ConvTranspose2d(8, 32, 3, groups=4, rng=0), (8, 8, 3, 3), 72),  # torch: weight.shape[1]·K
        (lambda: nn.ConvTranspose1d(64, 6, 4, rng=0), (64, 6, 4), 24),
    ],
)
def test_default_initialisation_is_torchs_distribution(make, weight_shape, fan_in):
    """kaiming_uniform(a=√5) and uniform(±1/√fan_in) bias: both bounded by 1/√fan_in, fan_in as torch."""
    layer = make()
    bound = 1 / math.sqrt(fan_in)
    torch_layer = getattr(T, type(layer).__name__)(
        *(layer.config()[k] for k in ("in_channels", "out_channels")),
        layer.config()["kernel_size"],
        groups=layer.groups,
    )
    assert layer.weight.shape == weight_shape == tuple(torch_layer.weight.shape)
    assert torch_layer.weight.abs().max().item() <= bound
    for values in (layer.weight.data, layer.bias.data):
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.5 * bound
    assert layer.weight.data.dtype == np.float32


def _all_layers_model():
    return nn.Sequential(
        nn.Conv1d(2, 4, 3, padding=((1, 2),), rng=1),
        nn.BatchNorm1d(4),
        nn.MaxPool1d(2, ceil_mode=True),
        nn.AvgPool1d(2, padding=((1, 0),)),
        nn.ConvTranspose1d(4, 3, 3, stride=2, output_padding=1, rng=2),
        nn.AdaptiveAvgPool1d(5),
    )


def test_checkpoints_rebuild_the_new_layers(tmp_path):
    model = _all_layers_model()
    model(np.random.default_rng(0).standard_normal((4, 2, 11)).astype(np.float32))  # move the running statistics
    model.eval()
    x = np.random.default_rng(1).standard_normal((3, 2, 11)).astype(np.float32)
    path = convprop.save(model, tmp_path / "m.safetensors")
    loaded = convprop.load(path)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))
    assert [type(m).__name__ for m in loaded] == [type(m).__name__ for m in model]
    assert [m.config() for m in loaded] == [m.config() for m in model]

    volume = nn.Sequential(
        nn.Conv3d(1, 2, 3, padding=1, rng=3),
        nn.BatchNorm3d(2),
        nn.MaxPool3d(2),
        nn.AvgPool3d(1),
        nn.AdaptiveAvgPool3d(1),
        nn.ConvTranspose3d(2, 1, 2, rng=4),
    )
    v = np.random.default_rng(2).standard_normal((2, 1, 4, 4, 4)).astype(np.float32)
    volume.eval()
    loaded = convprop.load(convprop.save(volume, tmp_path / "v.safetensors"))
    np.testing.assert_array_equal(loaded.forward(v), volume.forward(v))


@pytest.mark.parametrize(
    "make, x_shape",
    [
        (lambda: nn.Conv1d(2, 3, 3, stride=2, padding=((0, 1),), **F64), (2, 2, 7)),
        (lambda: nn.Conv3d(2, 2, 2, groups=2, **F64), (1, 2, 3, 3, 3)),
        (lambda: nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1, **F64), (1, 2, 3, 3)),
        (lambda: nn.BatchNorm1d(3, **F64), (5, 3)),
    ],
)
def test_gradcheck_module(make, x_shape):
    x = np.random.default_rng(3).standard_normal(x_shape)
    assert convprop.gradcheck_module(make(), x).ok


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: nn.ConvTranspose2d(2, 2, 3, stride=2, output_padding=2),
            ArgumentError,
            r"output_padding \(=\(2, 2\)\) must be smaller than either stride \(=\(2, 2\)\) or dilation \(=\(1, 1\)\)",
        ),
        (
            lambda: nn.ConvTranspose2d(2, 2, 3, padding_mode="reflect"),
            ArgumentError,
            r'only "zeros" padding mode is supported for ConvTranspose2d',
        ),
        (lambda: nn.Conv3d(2, 2, (3, 3)), TypeError, r"kernel_size must be an int or 3 ints, got \(3, 3\)"),
        (
            lambda: nn.Conv1d(2, 2, 3, padding=((1, 1), (1, 1))),
            ArgumentError,
            r"per-side padding needs one \(before, after\) pair per spatial axis \(1\)",
        ),
        (
            lambda: nn.MaxPool3d(2, padding=((0, 2), (0, 0), (0, 0))),
            ArgumentError,
            r"padding \(=\(\(0, 2\), \(0, 0\), \(0, 0\)\)\) must be at most half of kernel_size",
        ),
        (
            lambda: nn.BatchNorm3d(2)(np.zeros((2, 2, 3, 3), np.float32)),
            ValueError,
            r"BatchNorm3d\(2\) expects \(N, 2, D, H, W\), got shape \(2, 2, 3, 3\)",
        ),
        (
            lambda: nn.Conv1d(2, 3, 3)(np.zeros((1, 2, 4, 4), np.float32)),
            ArgumentError,
            r"conv1d: x must be \(N, C_in, L\) or unbatched \(C_in, L\), got shape \(1, 2, 4, 4\)",
        ),
    ],
)
def test_bad_layer_arguments_are_refused(call, error, match):
    with pytest.raises(error, match=match):
        call()
