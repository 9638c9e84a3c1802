"""nn layers reject bad input with a clear error that quotes what they received (STYLE rule 8).

Each table row is: a call that must fail, the exception type, and a regular expression the message
must match (always including the received value or shape). A row the library does not yet satisfy
can be marked with ``bug="..."``: it then runs as ``xfail(strict=True)`` and turns red once fixed.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from convprop import functional as F
from convprop import nn
from convprop.errors import ContextError


def z(*shape, dtype=np.float32):
    return np.zeros(shape, dtype)


def row(name, call, error, match, *, bug=None):
    marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
    return pytest.param(call, error, match, id=name, marks=marks)


# ---------------------------------------------------------------------------------------------- constructors

CONSTRUCTORS = [
    # Conv2d
    row("conv-in-channels-0", lambda: nn.Conv2d(0, 4, 3), ValueError, r"in_channels.*got 0"),
    row("conv-in-channels-negative", lambda: nn.Conv2d(-2, 4, 3), ValueError, r"in_channels.*got -2"),
    row("conv-in-channels-float", lambda: nn.Conv2d(2.0, 4, 3), TypeError, r"in_channels.*got 2\.0"),
    row("conv-out-channels-0", lambda: nn.Conv2d(3, 0, 3), ValueError, r"out_channels.*got 0"),
    row("conv-groups-0", lambda: nn.Conv2d(4, 4, 3, groups=0), ValueError, r"groups.*got 0"),
    row(
        "conv-groups-not-dividing-in",
        lambda: nn.Conv2d(3, 4, 3, groups=2),
        ValueError,
        r"in_channels \(=3\).*groups \(=2\)",
    ),
    row(
        "conv-groups-not-dividing-out",
        lambda: nn.Conv2d(4, 6, 3, groups=4),
        ValueError,
        r"out_channels \(=6\).*groups \(=4\)",
    ),
    row("conv-kernel-0", lambda: nn.Conv2d(3, 4, 0), ValueError, r"kernel_size.*got 0"),
    row("conv-kernel-pair-with-0", lambda: nn.Conv2d(3, 4, (3, 0)), ValueError, r"kernel_size.*got \(3, 0\)"),
    row("conv-kernel-string", lambda: nn.Conv2d(3, 4, "3"), TypeError, r"kernel_size.*got '3'"),
    row("conv-kernel-triple", lambda: nn.Conv2d(3, 4, (3, 3, 3)), TypeError, r"kernel_size.*got \(3, 3, 3\)"),
    row("conv-stride-0", lambda: nn.Conv2d(3, 4, 3, stride=0), ValueError, r"stride.*got 0"),
    row("conv-dilation-0", lambda: nn.Conv2d(3, 4, 3, dilation=0), ValueError, r"dilation.*got 0"),
    row("conv-padding-negative", lambda: nn.Conv2d(3, 4, 3, padding=-1), ValueError, r"padding.*got -1"),
    row(
        "conv-padding-pair-negative", lambda: nn.Conv2d(3, 4, 3, padding=(1, -1)), ValueError, r"padding.*got \(1, -1\)"
    ),
    row(
        "conv-padding-word",
        lambda: nn.Conv2d(3, 4, 3, padding="full"),
        ValueError,
        r"padding.*'same'.*'valid'.*got 'full'",
    ),
    row("conv-padding-word-case", lambda: nn.Conv2d(3, 4, 3, padding="SAME"), ValueError, r"padding.*got 'SAME'"),
    row(
        "conv-padding-mode",
        lambda: nn.Conv2d(3, 4, 3, padding_mode="mirror"),
        ValueError,
        r"padding_mode.*reflect.*got 'mirror'",
    ),
    row(
        "conv-bias-sometimes",
        lambda: nn.Conv2d(3, 4, 3, bias="sometimes"),
        ValueError,
        r"bias.*'untied'.*got 'sometimes'",
    ),
    row("conv-bias-int-1", lambda: nn.Conv2d(3, 4, 3, bias=1), (TypeError, ValueError), r"bias.*got 1"),
    row("conv-bias-float", lambda: nn.Conv2d(3, 4, 3, bias=1.0), (TypeError, ValueError), r"bias.*got 1\.0"),
    row("conv-untied-without-input-size", lambda: nn.Conv2d(3, 4, 3, bias="untied"), ValueError, r"untied.*input_size"),
    row(
        "conv-untied-input-too-small",
        lambda: nn.Conv2d(3, 4, 3, bias="untied", input_size=(2, 2)),
        ValueError,
        r"input_size \(2, 2\) is too small",
    ),
    row(
        "conv-untied-input-too-small-stride",
        lambda: nn.Conv2d(3, 4, 5, stride=2, bias="untied", input_size=(4, 9)),
        ValueError,
        r"input_size \(4, 9\)",
    ),
    row(
        "conv-input-size-0",
        lambda: nn.Conv2d(3, 4, 3, bias="untied", input_size=(0, 5)),
        ValueError,
        r"input_size.*got \(0, 5\)",
    ),
    row(
        "conv-input-size-string",
        lambda: nn.Conv2d(3, 4, 3, bias="untied", input_size="5"),
        TypeError,
        r"input_size.*got '5'",
    ),
    row("conv-algorithm", lambda: nn.Conv2d(3, 4, 3, algorithm="fft"), ValueError, r"algorithm.*got 'fft'"),
    row("conv-dtype-int32", lambda: nn.Conv2d(3, 4, 3, dtype=np.int32), TypeError, r"float32 or float64.*got int32"),
    row(
        "conv-dtype-float16",
        lambda: nn.Conv2d(3, 4, 3, dtype=np.float16),
        TypeError,
        r"float32 or float64.*got float16",
    ),
    row("conv-dtype-nonsense", lambda: nn.Conv2d(3, 4, 3, dtype="banana"), TypeError, r"dtype.*got 'banana'"),
    row("conv-rng-string", lambda: nn.Conv2d(3, 4, 3, rng="seed"), TypeError, r"rng must be.*got 'seed' \(str\)"),
    # Linear
    row("linear-in-0", lambda: nn.Linear(0, 4), ValueError, r"in_features.*got 0"),
    row("linear-out-negative", lambda: nn.Linear(3, -1), ValueError, r"out_features.*got -1"),
    row("linear-in-float", lambda: nn.Linear(2.5, 3), TypeError, r"in_features.*got 2\.5"),
    row("linear-bias-int", lambda: nn.Linear(3, 4, bias=1), TypeError, r"bias.*got 1"),
    row("linear-bias-string", lambda: nn.Linear(3, 4, bias="yes"), TypeError, r"bias.*got 'yes'"),
    row("linear-dtype-int32", lambda: nn.Linear(3, 4, dtype=np.int32), TypeError, r"float32 or float64.*got int32"),
    row("linear-dtype-int64", lambda: nn.Linear(3, 4, dtype=np.int64), TypeError, r"float32 or float64.*got int64"),
    row("linear-rng-float", lambda: nn.Linear(3, 4, rng=1.5), TypeError, r"rng must be.*got 1\.5 \(float\)"),
    # pooling
    row("maxpool-kernel-0", lambda: nn.MaxPool2d(0), ValueError, r"kernel_size.*got 0"),
    row("maxpool-stride-0", lambda: nn.MaxPool2d(2, stride=0), ValueError, r"stride.*got 0"),
    row("maxpool-dilation-0", lambda: nn.MaxPool2d(2, dilation=0), ValueError, r"dilation.*got 0"),
    row("maxpool-padding-negative", lambda: nn.MaxPool2d(2, padding=-1), ValueError, r"padding.*got -1"),
    row(
        "maxpool-padding-over-half",
        lambda: nn.MaxPool2d(3, padding=2),
        ValueError,
        r"padding \(=\(2, 2\)\).*half.*\(3, 3\)",
    ),
    row(
        "maxpool-padding-over-half-pair",
        lambda: nn.MaxPool2d((4, 2), padding=(2, 2)),
        ValueError,
        r"padding \(=\(2, 2\)\).*\(4, 2\)",
    ),
    row("maxpool-kernel-string", lambda: nn.MaxPool2d("2"), TypeError, r"kernel_size.*got '2'"),
    row("avgpool-kernel-0", lambda: nn.AvgPool2d(0), ValueError, r"kernel_size.*got 0"),
    row("avgpool-padding-over-half", lambda: nn.AvgPool2d(2, padding=2), ValueError, r"padding \(=\(2, 2\)\).*half"),
    row("avgpool-divisor-0", lambda: nn.AvgPool2d(2, divisor_override=0), ValueError, r"divisor_override.*got 0"),
    row(
        "avgpool-divisor-float",
        lambda: nn.AvgPool2d(2, divisor_override=1.5),
        TypeError,
        r"divisor_override must be None or a non-zero int, got 1\.5",
    ),
    row(
        "avgpool-divisor-string",
        lambda: nn.AvgPool2d(2, divisor_override="2"),
        TypeError,
        r"divisor_override must be None or a non-zero int, got '2'",
    ),
    row("adaptive-0", lambda: nn.AdaptiveAvgPool2d(0), ValueError, r"output_size.*got 0"),
    row("adaptive-pair-with-0", lambda: nn.AdaptiveAvgPool2d((2, 0)), ValueError, r"output_size.*got \(2, 0\)"),
    row("adaptive-string", lambda: nn.AdaptiveAvgPool2d("2"), TypeError, r"output_size.*got '2'"),
    # activations
    row("leaky-relu-slope-string", lambda: nn.LeakyReLU(negative_slope="x"), TypeError, r"negative_slope.*got 'x'"),
    row("leaky-relu-slope-none", lambda: nn.LeakyReLU(None), TypeError, r"negative_slope.*got None"),
    row("gelu-fast", lambda: nn.GELU(approximate="fast"), ValueError, r"approximate.*'tanh'.*got 'fast'"),
    row("softmax-dim-float", lambda: nn.Softmax(dim=1.5), TypeError, r"dim.*got 1\.5"),
    row("softmax-dim-string", lambda: nn.Softmax(dim="1"), TypeError, r"dim.*got '1'"),
    row("log-softmax-dim-float", lambda: nn.LogSoftmax(dim=1.5), TypeError, r"dim.*got 1\.5"),
    # BatchNorm2d, Dropout
    row("bn-features-0", lambda: nn.BatchNorm2d(0), ValueError, r"num_features.*got 0"),
    row("bn-features-float", lambda: nn.BatchNorm2d(2.0), TypeError, r"num_features.*got 2\.0"),
    row("bn-eps-0", lambda: nn.BatchNorm2d(3, eps=0), ValueError, r"eps must be > 0\.0, got 0"),
    row("bn-eps-negative", lambda: nn.BatchNorm2d(3, eps=-1e-5), ValueError, r"eps.*got -1e-05"),
    row("bn-eps-bool", lambda: nn.BatchNorm2d(3, eps=True), (TypeError, ValueError), r"eps.*got True"),
    row("bn-momentum-over-1", lambda: nn.BatchNorm2d(3, momentum=1.5), ValueError, r"momentum.*\[0, 1\].*got 1\.5"),
    row("bn-momentum-negative", lambda: nn.BatchNorm2d(3, momentum=-0.1), ValueError, r"momentum.*got -0\.1"),
    row("bn-dtype-int32", lambda: nn.BatchNorm2d(3, dtype=np.int32), TypeError, r"float32 or float64.*got int32"),
    row("dropout-p-negative", lambda: nn.Dropout(p=-0.1), ValueError, r"p must be.*\[0, 1\].*got -0\.1"),
    row("dropout-p-over-1", lambda: nn.Dropout(p=1.5), ValueError, r"p must be.*got 1\.5"),
    row("dropout-p-string", lambda: nn.Dropout(p="0.5"), TypeError, r"p must be.*got '0\.5'"),
    row(
        "dropout-rng-string",
        lambda: nn.Dropout(rng="seed"),
        TypeError,
        r"rng must be None, an int seed or a numpy\.random\.Generator",
    ),
    row("dropout-rng-string-quoted", lambda: nn.Dropout(rng="seed"), TypeError, r"got 'seed'"),
    # containers
    row("sequential-int", lambda: nn.Sequential(3), TypeError, r"Module.*argument 0 is int"),
    row("sequential-second-arg", lambda: nn.Sequential(nn.ReLU(), "relu"), TypeError, r"argument 1 is str"),
    row("sequential-class-not-instance", lambda: nn.Sequential(nn.ReLU), TypeError, r"argument 0 is type"),
    row("flatten-start-string", lambda: nn.Flatten(start_dim="a"), TypeError, r"start_dim.*got 'a'"),
    row("flatten-end-float", lambda: nn.Flatten(1, 2.0), TypeError, r"end_dim.*got 2\.0"),
    row("flatten-start-bool", lambda: nn.Flatten(True), TypeError, r"start_dim.*got True"),
]


@pytest.mark.parametrize("call, error, match", CONSTRUCTORS)
def test_constructor_rejects_bad_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------------------------------- forward with a bad input

FORWARD = [
    row("conv-wrong-channels", lambda: nn.Conv2d(3, 4, 3)(z(1, 2, 5, 5)), ValueError, r"in_channels.*\(1, 2, 5, 5\)"),
    row("conv-5d-input", lambda: nn.Conv2d(2, 3, 3)(z(2, 2, 5, 5, 5)), ValueError, r"\(2, 2, 5, 5, 5\)"),
    row("conv-2d-input", lambda: nn.Conv2d(2, 3, 3)(z(2, 5)), ValueError, r"\(2, 5\)"),
    row(
        "conv-input-smaller-than-kernel",
        lambda: nn.Conv2d(2, 3, 5)(z(1, 2, 3, 3)),
        ValueError,
        r"larger than the padded input.*\(1, 2, 3, 3\)",
    ),
    row(
        "conv-dtype-mismatch",
        lambda: nn.Conv2d(2, 3, 3)(z(1, 2, 5, 5, dtype=np.float64)),
        TypeError,
        r"x=float64, weight=float32",
    ),
    row(
        "conv-untied-wrong-size",
        lambda: nn.Conv2d(2, 3, 3, bias="untied", input_size=(5, 5))(z(1, 2, 6, 6)),
        ValueError,
        r"input_size=\(5, 5\).*\(1, 2, 6, 6\)",
    ),
    row(
        "conv-reflect-pad-too-large",
        lambda: nn.Conv2d(1, 1, 3, padding=2, padding_mode="reflect")(z(1, 1, 2, 2)),
        ValueError,
        r"reflect.*input size \(2, 2\)",
    ),
    row("linear-wrong-features", lambda: nn.Linear(3, 2)(z(4, 5)), ValueError, r"in_features=3.*\(4, 5\)"),
    row("linear-1d-wrong-features", lambda: nn.Linear(3, 2)(z(4)), ValueError, r"in_features=3.*\(4,\)"),
    row("linear-dtype-mismatch", lambda: nn.Linear(3, 2)(z(4, 3, dtype=np.float64)), TypeError, r"float64.*float32"),
    row(
        "bn-3d-input",
        lambda: nn.BatchNorm2d(3)(z(2, 3, 5)),
        ValueError,
        r"BatchNorm2d\(3\) expects \(N, 3, H, W\), got shape \(2, 3, 5\)",
    ),
    row("bn-2d-input", lambda: nn.BatchNorm2d(3)(z(2, 3)), ValueError, r"\(2, 3\)"),
    row("bn-wrong-channels", lambda: nn.BatchNorm2d(3)(z(2, 4, 5, 5)), ValueError, r"\(2, 4, 5, 5\)"),
    row(
        "bn-batch-of-one-1x1",
        lambda: nn.BatchNorm2d(3)(z(1, 3, 1, 1)),
        ValueError,
        r"more than 1 value per channel.*\(1, 3, 1, 1\)",
    ),
    row("maxpool-2d-input", lambda: nn.MaxPool2d(2)(z(2, 5)), ValueError, r"\(2, 5\)"),
    row(
        "maxpool-input-too-small",
        lambda: nn.MaxPool2d(3)(z(1, 1, 2, 2)),
        ValueError,
        r"spatial size \(2, 2\) is too small",
    ),
    row("avgpool-5d-input", lambda: nn.AvgPool2d(2)(z(1, 2, 3, 4, 5)), ValueError, r"\(1, 2, 3, 4, 5\)"),
    row("adaptive-2d-input", lambda: nn.AdaptiveAvgPool2d(2)(z(2, 5)), ValueError, r"\(2, 5\)"),
    row("softmax-dim-out-of-range", lambda: nn.Softmax(3)(z(2, 5)), ValueError, r"axis 3.*\(2, 5\)"),
    row("log-softmax-dim-out-of-range", lambda: nn.LogSoftmax(-3)(z(2, 5)), ValueError, r"axis -3.*\(2, 5\)"),
    row(
        "flatten-empty-range", lambda: nn.Flatten(2, 1)(z(2, 3, 4)), ValueError, r"start_dim=2, end_dim=1.*\(2, 3, 4\)"
    ),
    row("relu-string-input", lambda: nn.ReLU()("abc"), TypeError, r"x must"),
    row(
        "sequential-mismatch-inside",
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(10, 2))(z(1, 3, 5, 5)),
        ValueError,
        r"in_features=10.*\(1, 36\)",
    ),
]


@pytest.mark.parametrize("call, error, match", FORWARD)
def test_forward_rejects_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------------------------- backward


BEFORE_FORWARD = [
    pytest.param(lambda: nn.Conv2d(3, 3, 1), id="Conv2d"),
    pytest.param(lambda: nn.Conv2d(3, 3, 1, bias="untied", input_size=(4, 4)), id="Conv2d-untied"),
    pytest.param(lambda: nn.Linear(4, 4), id="Linear"),
    pytest.param(lambda: nn.MaxPool2d(2), id="MaxPool2d"),
    pytest.param(lambda: nn.AvgPool2d(2), id="AvgPool2d"),
    pytest.param(lambda: nn.AdaptiveAvgPool2d(2), id="AdaptiveAvgPool2d"),
    pytest.param(lambda: nn.ReLU(), id="ReLU"),
    pytest.param(lambda: nn.LeakyReLU(), id="LeakyReLU"),
    pytest.param(lambda: nn.Sigmoid(), id="Sigmoid"),
    pytest.param(lambda: nn.Tanh(), id="Tanh"),
    pytest.param(lambda: nn.GELU(), id="GELU"),
    pytest.param(lambda: nn.Softmax(), id="Softmax"),
    pytest.param(lambda: nn.LogSoftmax(), id="LogSoftmax"),
    pytest.param(lambda: nn.BatchNorm2d(3), id="BatchNorm2d"),
    pytest.param(lambda: nn.Sequential(nn.ReLU(), nn.Linear(4, 4)), id="Sequential"),
    pytest.param(lambda: nn.Flatten(), id="Flatten"),
    pytest.param(lambda: nn.Dropout(0.5), id="Dropout-train"),
]


@pytest.mark.parametrize("make", BEFORE_FORWARD)
def test_backward_before_forward_raises(make):
    layer = make()
    with pytest.raises(ContextError, match=r"backward called before forward: no context is kept"):
        layer.backward(z(2, 4, 4, 4))


@pytest.mark.parametrize(
    "make, x_shape, bad_grad_shape",
    [
        pytest.param(lambda: nn.Conv2d(2, 3, 3), (1, 2, 5, 5), (1, 3, 2, 2), id="Conv2d"),
        pytest.param(lambda: nn.Linear(3, 2), (4, 3), (4, 3), id="Linear"),
        pytest.param(lambda: nn.MaxPool2d(2), (1, 2, 4, 4), (1, 2, 4, 4), id="MaxPool2d"),
        pytest.param(lambda: nn.AvgPool2d(2), (1, 2, 4, 4), (1, 2, 3, 3), id="AvgPool2d"),
        pytest.param(lambda: nn.AdaptiveAvgPool2d(2), (1, 2, 4, 4), (1, 2, 3, 3), id="AdaptiveAvgPool2d"),
        pytest.param(lambda: nn.ReLU(), (2, 3), (3, 2), id="ReLU"),
        pytest.param(lambda: nn.Softmax(), (2, 3), (2, 4), id="Softmax"),
        pytest.param(lambda: nn.BatchNorm2d(2), (2, 2, 3, 3), (2, 2, 3, 4), id="BatchNorm2d"),
    ],
)
def test_backward_rejects_grad_output_of_the_wrong_shape(make, x_shape, bad_grad_shape):
    layer = make()
    layer(z(*x_shape))
    with pytest.raises(ValueError, match=rf"got {re.escape(str(bad_grad_shape))}"):  # quotes what it was given
        layer.backward(z(*bad_grad_shape))


# ---------------------------------------------------------------------------------------------- state dicts, dtypes


def model():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))


def test_load_state_dict_missing_key_is_named():
    m = model()
    state = {k: v for k, v in m.state_dict().items() if k != "1.running_var"}
    with pytest.raises(ValueError, match=r"missing keys \['1\.running_var'\]"):
        m.load_state_dict(state)


def test_load_state_dict_unexpected_key_is_named():
    m = model()
    with pytest.raises(ValueError, match=r"unexpected keys \['5\.weight'\]"):
        m.load_state_dict({**m.state_dict(), "5.weight": np.zeros(2)})


@pytest.mark.parametrize(
    "key, shape",
    [
        ("0.weight", (4, 3, 3, 2)),
        ("0.bias", (5,)),
        ("1.running_mean", (3,)),
        ("4.weight", (4, 2)),
        ("1.num_batches_tracked", (1,)),
    ],
)
def test_load_state_dict_wrong_shape_names_key_and_both_shapes(key, shape):
    m = model()
    expected = np.shape(m.state_dict()[key])
    with pytest.raises(
        ValueError, match=re.escape(f"state_dict[{key!r}] has shape {shape}, the model expects {expected}")
    ):
        m.load_state_dict({**m.state_dict(), key: np.zeros(shape)})


def test_load_state_dict_non_strict_ignores_names_but_still_checks_shapes():
    m = model()
    m.load_state_dict({"0.bias": np.full(4, 2.0), "extra": np.zeros(1)}, strict=False)
    np.testing.assert_array_equal(m[0].bias.data, np.full(4, 2.0, np.float32))
    with pytest.raises(ValueError, match=r"'0\.bias'"):
        m.load_state_dict({"0.bias": np.zeros(3)}, strict=False)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float16, "int32", bool])
def test_astype_rejects_non_float_dtypes(dtype):
    m = model()
    with pytest.raises(TypeError, match=r"float32 or float64.*got " + re.escape(str(np.dtype(dtype)))):
        m.astype(dtype)
    assert all(p.data.dtype == np.float32 for p in m.parameters()), "a refused astype changes nothing"


def test_summary_rejects_bad_arguments():
    with pytest.raises(TypeError, match=r"got int"):
        nn.summary(3, (3, 8, 8))
    with pytest.raises(ValueError, match=re.escape("got (3, 0, 8)")):
        nn.summary(model(), (3, 0, 8))


def test_linear_param_grads_check_grad_output():
    layer = nn.Linear(4, 2, rng=0, dtype=np.float64)
    layer(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 2\), got \(3, 2\)"):
        layer.backward(np.ones((3, 2)), input_grad=False)
    with pytest.raises(TypeError, match="grad_output=float32, x=float64"):
        F.linear_backward(np.ones((2, 2), np.float32), np.ones((2, 4)), np.ones((2, 4)))
