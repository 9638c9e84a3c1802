"""convprop: convolutional networks from first principles, in NumPy, checked against PyTorch."""

__version__ = "0.1.0"

from . import data, errors, functional, nn, optim
from .checkpoint import load, save
from .errors import CheckpointError, ConvpropError
from .gradcheck import GradcheckError, GradcheckResult, gradcheck, gradcheck_module
from .heap import keep_freed_memory
from .nn.grad_mode import is_grad_enabled, no_grad

keep_freed_memory()  # large freed arrays stay with malloc for the next step: see convprop/heap.py

__all__ = [
    "CheckpointError",
    "ConvpropError",
    "GradcheckError",
    "GradcheckResult",
    "__version__",
    "data",
    "errors",
    "functional",
    "gradcheck",
    "gradcheck_module",
    "is_grad_enabled",
    "load",
    "nn",
    "no_grad",
    "optim",
    "save",
]
