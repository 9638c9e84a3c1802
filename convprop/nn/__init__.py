"""Stateful layers with PyTorch's names; each ``forward``/``backward`` calls ``convprop.functional``."""

from .activation import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .conv import Conv2d
from .linear import Flatten, Linear
from .module import LAYERS, Module, Parameter, Sequential
from .norm import BatchNorm2d, Dropout
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .summary import summary
from .tensor_ops import (
    Constant,
    Div,
    Gemm,
    GlobalMaxPool,
    Identity,
    MatMul,
    Pad,
    Reshape,
    Sub,
    Transpose,
)

__all__ = [
    "GELU",
    "LAYERS",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BatchNorm2d",
    "Constant",
    "Conv2d",
    "Div",
    "Dropout",
    "Flatten",
    "Gemm",
    "GlobalMaxPool",
    "Identity",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MatMul",
    "MaxPool2d",
    "Module",
    "Pad",
    "Parameter",
    "ReLU",
    "Reshape",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Sub",
    "Tanh",
    "Transpose",
    "summary",
]
