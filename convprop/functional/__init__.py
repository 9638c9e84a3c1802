"""Pure array functions: every operation as a forward/backward pair. No state, no I/O."""

from .conv import ALGORITHMS, conv2d, conv2d_backward

__all__ = ["ALGORITHMS", "conv2d", "conv2d_backward"]
