"""Stateful layers with PyTorch's names; each ``forward``/``backward`` calls ``convprop.functional``."""

from .activation import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .containers import Concat, Residual
from .conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .graph import Add, Cat, Graph, Mul
from .linear import Flatten, Linear
from .loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from .module import LAYERS, Module, Parameter, Sequential
from .norm import BatchNorm1d, BatchNorm2d, BatchNorm3d, Dropout
from .pooling import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
)
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
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "Add",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "BCELoss",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "Cat",
    "Concat",
    "Constant",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
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
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
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
