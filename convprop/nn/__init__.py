"""Stateful layers with PyTorch's names; each ``forward``/``backward`` calls ``convprop.functional``."""

from .activation import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .conv import Conv2d
from .linear import Flatten, Linear
from .module import LAYERS, Module, Parameter, Sequential
from .norm import BatchNorm2d, Dropout
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .summary import summary

__all__ = [
    "GELU",
    "LAYERS",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BatchNorm2d",
    "Conv2d",
    "Dropout",
    "Flatten",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MaxPool2d",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "summary",
]
