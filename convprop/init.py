"""Weight initialisers. Each takes an explicit ``np.random.Generator``: no global random state.

PyTorch's default for ``nn.Conv2d`` and ``nn.Linear`` is ``kaiming_uniform_(a=√5)`` for the weight,
which works out to U(−1/√fan_in, 1/√fan_in), and the same bound for the bias.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import DTypeLike

from .errors import ArgumentTypeError

RngLike = np.random.Generator | int | None


def as_generator(rng: RngLike, name: str = "rng") -> np.random.Generator:
    """``rng`` as a Generator: a Generator is used as is, an int seeds a new one, ``None`` draws fresh
    OS entropy (unreproducible, like PyTorch's unseeded default). Pass an int for a repeatable run."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise ArgumentTypeError(
        f"{name} must be None, an int seed or a numpy.random.Generator, got {rng!r} ({type(rng).__name__})"
    )


def fan_in(shape: tuple[int, ...]) -> int:
    """Inputs feeding one output: ``shape[1] * prod(shape[2:])`` for (O, I, ...) weights."""
    return int(shape[1] * np.prod(shape[2:], dtype=np.int64)) if len(shape) > 1 else int(shape[0])


def uniform(
    shape: tuple[int, ...], bound: float, rng: np.random.Generator, dtype: DTypeLike = np.float32
) -> np.ndarray:
    """U(−bound, bound)."""
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def kaiming_uniform(
    shape: tuple[int, ...], rng: np.random.Generator, a: float = math.sqrt(5), dtype: DTypeLike = np.float32
) -> np.ndarray:
    """He/Kaiming uniform: bound = gain·√(3 / fan_in), gain = √(2 / (1 + a²)) (leaky-ReLU slope a)."""
    gain = math.sqrt(2.0 / (1 + a * a))
    return uniform(shape, gain * math.sqrt(3.0 / fan_in(shape)), rng, dtype)


def torch_default(
    weight_shape: tuple[int, ...],
    bias_shape: tuple[int, ...] | None,
    rng: np.random.Generator,
    dtype: DTypeLike = np.float32,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(weight, bias) as ``torch.nn.Conv2d``/``nn.Linear.reset_parameters`` draw them (distribution, not stream)."""
    weight = kaiming_uniform(weight_shape, rng, dtype=dtype)
    bias = uniform(bias_shape, 1.0 / math.sqrt(fan_in(weight_shape)), rng, dtype) if bias_shape is not None else None
    return weight, bias
