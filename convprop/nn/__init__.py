"""Stateful layers with PyTorch's names; each ``forward``/``backward`` calls ``convprop.functional``."""

from .activation import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .containers import Concat, Residual
from .conv import Conv2d
from .graph import Add, Cat, Graph, Mul
from .linear import Flatten, Linear
from .loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
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
    "Add",
    "AvgPool2d",
    "BCELoss",
    "BCEWithLogitsLoss",
    "BatchNorm2d",
    "Cat",
    "Concat",
    "Constant",
    "Conv2d",
    "CrossEntropyLoss",
    "Div",
    "Dropout",
    "Flatten",
    "Gemm",
    "GlobalMaxPool",
    "Graph",
    "Identity",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MSELoss",
    "MatMul",
    "MaxPool2d",
    "Module",
    "Mul",
    "Pad",
    "Parameter",
    "ReLU",
    "Reshape",
    "Residual",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Sub",
    "Tanh",
    "Transpose",
    "summary",
]
