"""convprop: convolutional networks from first principles, in NumPy, checked against PyTorch."""

__version__ = "0.1.0"

from . import data, functional, nn, optim
from .checkpoint import CheckpointError, load, save
from .gradcheck import GradcheckError, GradcheckResult, gradcheck, gradcheck_module

__all__ = [
    "CheckpointError",
    "GradcheckError",
    "GradcheckResult",
    "__version__",
    "data",
    "functional",
    "gradcheck",
    "gradcheck_module",
    "load",
    "nn",
    "optim",
    "save",
]
