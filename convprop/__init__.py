"""convprop: convolutional networks from first principles, in NumPy, checked against PyTorch."""

__version__ = "0.1.0"

from . import functional
from .gradcheck import GradcheckError, GradcheckResult, gradcheck

__all__ = ["GradcheckError", "GradcheckResult", "__version__", "functional", "gradcheck"]
