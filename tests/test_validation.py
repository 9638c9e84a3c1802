"""The shared argument checks (convprop/functional/validation.py): one check, one message and one exception
class, whether a layer's constructor, a functional operation, an optimizer, the data code or the training
config calls it."""

import numpy as np
import pytest

from convprop import nn, optim
from convprop.data import iterate_batches
from convprop.errors import ArgumentError, ArgumentTypeError, ConfigError
from convprop.functional import avg_pool2d, batch_norm, conv2d
from convprop.functional.validation import (
    check_at_least,
    check_divisor_override,
    check_dtype,
    check_nonzero_int,
    check_positive_int,
    check_probability,
    check_real,
)
from convprop.train import TrainConfig

X = np.zeros((1, 1, 4, 4))


@pytest.mark.parametrize(
    "check, value, error, message",
    [
        (lambda v: check_positive_int(v, "n"), 0, ArgumentError, "n must be >= 1, got 0"),
        (lambda v: check_positive_int(v, "n"), True, ArgumentTypeError, "n must be an int, got True of type bool"),
        (lambda v: check_positive_int(v, "n"), 2.0, ArgumentTypeError, "n must be an int, got 2.0 of type float"),
        (lambda v: check_nonzero_int(v, "n"), 0, ArgumentError, "n must be a non-zero int, got 0"),
        (lambda v: check_real(v, "r"), float("inf"), ArgumentError, "r must be finite, got inf"),
        (lambda v: check_real(v, "r"), "1", ArgumentTypeError, "r must be a real number, got '1' of type str"),
        (lambda v: check_at_least(v, "a", 0.0, strict=True), 0, ArgumentError, "a must be > 0.0, got 0"),
        (lambda v: check_at_least(v, "a", 1.0), 0.5, ArgumentError, "a must be >= 1.0, got 0.5"),
        (lambda v: check_probability(v, "p"), 1.0, ArgumentError, "p must be in [0, 1), got 1.0"),
        (lambda v: check_probability(v, "p", allow_one=True), -0.1, ArgumentError, "p must be in [0, 1], got -0.1"),
        (lambda v: check_dtype(v), np.int32, ArgumentTypeError, "dtype must be float32 or float64, got int32"),
        (check_divisor_override, 0, ArgumentError, "divisor_override must be None or a non-zero int, got 0"),
    ],
)
def test_each_check_raises_its_class_with_the_value(check, value, error, message):
    with pytest.raises(error) as info:
        check(value)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "check, value, expected",
    [
        (lambda v: check_positive_int(v, "n"), np.int64(3), 3),
        (lambda v: check_nonzero_int(v, "n"), -2, -2),
        (lambda v: check_real(v, "r"), np.float32(0.5), 0.5),
        (lambda v: check_probability(v, "p", allow_one=True), 1, 1.0),
        (check_divisor_override, None, None),
        (check_divisor_override, -1, -1),
    ],
)
def test_each_check_returns_the_canonical_value(check, value, expected):
    result = check(value)
    assert result == expected and type(result) is type(expected)


# The same mistake made through different doors: identical exception class and message.
SAME_MISTAKE = [
    (  # divisor_override: the layer and the function used to disagree about -1 and about the message
        lambda: nn.AvgPool2d(2, divisor_override=0),
        lambda: avg_pool2d(X, 2, divisor_override=0),
        ArgumentError,
        "divisor_override must be None or a non-zero int, got 0",
    ),
    (
        lambda: nn.AvgPool2d(2, divisor_override=1.5),
        lambda: avg_pool2d(X, 2, divisor_override=1.5),
        ArgumentTypeError,
        "divisor_override must be None or a non-zero int, got 1.5 of type float",
    ),
    (
        lambda: nn.Conv2d(2, 2, 1, groups=0),
        lambda: conv2d(np.zeros((1, 2, 3, 3)), np.zeros((2, 2, 1, 1)), groups=0),
        ArgumentError,
        "groups must be >= 1, got 0",
    ),
    (
        lambda: nn.BatchNorm2d(1, eps=0.0),
        lambda: batch_norm(X, None, None, None, None, training=True, eps=0.0),
        ArgumentError,
        "eps must be > 0.0, got 0.0",
    ),
    (
        lambda: nn.BatchNorm2d(1, momentum=1.5),
        lambda: batch_norm(X, None, None, np.zeros(1), np.ones(1), training=True, momentum=1.5),
        ArgumentError,
        "momentum must be in [0, 1], got 1.5",
    ),
    (
        lambda: optim.SGD([nn.Parameter(np.zeros(2))], lr=0.1, weight_decay=-1.0),
        lambda: TrainConfig(weight_decay=-1.0).validate(),
        ArgumentError,
        "weight_decay must be >= 0.0, got -1.0",
    ),
    (
        lambda: iterate_batches(np.zeros((3, 1)), np.zeros(3), 2.5),
        lambda: TrainConfig(batch_size=2.5).validate(),
        ArgumentTypeError,
        "batch_size must be an int, got 2.5 of type float",
    ),
]


@pytest.mark.parametrize("first, second, error, message", SAME_MISTAKE)
def test_one_check_one_message_wherever_it_is_called(first, second, error, message):
    for call in (first, second):
        with pytest.raises(error) as info:
            call()
        assert str(info.value) == message


def test_divisor_override_may_be_negative_in_both_as_in_pytorch():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    layer = nn.AvgPool2d(2, divisor_override=-1)
    np.testing.assert_array_equal(layer(x), avg_pool2d(x, 2, divisor_override=-1))
    np.testing.assert_array_equal(avg_pool2d(x, 2, divisor_override=-1), -4 * avg_pool2d(x, 2))


def test_train_config_reports_the_shared_check_as_a_config_error():
    with pytest.raises(ConfigError, match=r"^epochs must be >= 1, got 0$"):
        TrainConfig(epochs=0).validate()
    with pytest.raises(ConfigError, match=r"^lr must be > 0\.0, got 0$"):
        TrainConfig(lr=0).validate()
