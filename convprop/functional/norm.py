"""Batch normalisation and dropout, each with its backward pass. Pure: nothing is mutated.

``batch_norm`` returns the *new* running statistics instead of updating buffers in place, and
``dropout`` takes its mask as an argument (made by :func:`dropout_mask` from an explicit
``np.random.Generator``), so both are plain functions of their inputs. Layers own the state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ArgumentError, ArgumentTypeError
from . import norm_compiled
from .validation import as_float_array, check_at_least, check_probability, check_same_dtype


def _channel_vector(value: Any, name: str, C: int) -> np.ndarray | None:
    if value is None:
        return None
    value = as_float_array(value, name)
    if value.shape != (C,):
        raise ArgumentError(f"{name} must have shape (C,) = ({C},), got {value.shape}")
    return value


def _resolve_bn(
    x: Any, weight: Any, running_mean: Any, running_var: Any, training: bool, eps: float
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None, tuple[int, ...]]:
    """Validate; return (x, weight, running_mean, running_var, per-channel broadcast shape)."""
    x = as_float_array(x, "x")
    if x.ndim < 2 or x.shape[1] < 1:
        raise ArgumentError(f"x must be (N, C) or (N, C, H, W) with C >= 1, got shape {x.shape}")
    C = x.shape[1]
    weight = _channel_vector(weight, "weight", C)
    running_mean = _channel_vector(running_mean, "running_mean", C)
    running_var = _channel_vector(running_var, "running_var", C)
    check_same_dtype(x=x, weight=weight, running_mean=running_mean, running_var=running_var)
    if not isinstance(training, (bool, np.bool_)):
        raise ArgumentTypeError(f"training must be a bool, got {training!r}")
    if (running_mean is None) != (running_var is None):
        raise ArgumentError("running_mean and running_var must both be arrays or both be None")
    if not training and running_mean is None:
        raise ArgumentError("evaluation mode (training=False) needs running_mean and running_var, got None")
    check_at_least(eps, "eps", 0.0, strict=True)
    count = x.size // C  # values per channel: N·H·W
    if training and count <= 1:
        raise ArgumentError(f"expected more than 1 value per channel when training, got x of shape {x.shape}")
    return x, weight, running_mean, running_var, (1, C) + (1,) * (x.ndim - 2)


def batch_norm(
    x: ArrayLike,
    weight: ArrayLike | None,
    bias: ArrayLike | None,
    running_mean: ArrayLike | None,
    running_var: ArrayLike | None,
    *,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Batch normalisation, as ``torch.nn.functional.batch_norm`` but pure.

    Per channel c, over the N·H·W values M of that channel::

        training:  μ = mean(x),  σ² = mean((x - μ)²)  (biased)         eval:  μ = running_mean,  σ² = running_var
        x̂ = (x - μ) / √(σ² + eps)            y = weight · x̂ + bias

    In training the new running statistics are (PyTorch's momentum convention)::

        new_running_mean = (1 - momentum) · running_mean + momentum · μ
        new_running_var  = (1 - momentum) · running_var  + momentum · σ² · M / (M - 1)   (unbiased)

    and in eval mode the running statistics are returned unchanged (the same arrays).
    See :func:`batch_norm_backward`.

    Shapes:
        x: (N, C, H, W) or (N, C) (any (N, C, ...)); y like x
        weight, bias, running_mean, running_var: (C,)

    Args:
        weight, bias: the affine parameters, or None for none (weight 1, bias 0).
        running_mean, running_var: required when ``training=False``; in training they may both be
            None (PyTorch's ``track_running_stats=False``), and then None is returned for them.
        training: keyword-only, no default: batch statistics (True) or running statistics (False).
        momentum: in [0, 1]. PyTorch's cumulative average (its ``momentum=None``) is this function
            with ``momentum = 1 / t`` at the t-th batch, which ``nn.BatchNorm2d(momentum=None)`` passes.
        eps: > 0, added to the variance.

    Returns:
        ``(y, new_running_mean, new_running_var)``.
    """
    y, new_mean, new_var, _ = batch_norm_with_stats(
        x, weight, bias, running_mean, running_var, training=training, momentum=momentum, eps=eps
    )
    return y, new_mean, new_var


def normalisation_affine(
    var: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) with y = (x − μ)·scale + shift: scale = γ/√(σ² + eps), shift = β (0 without affine),
    in var's dtype. The one place they are computed, so the fused inference block's batch norm
    (``functional.fused``) gives the same bits as the layer's."""
    scale = 1 / np.sqrt(var + np.asarray(float(eps), var.dtype))  # 1/σ, (C,)
    if weight is not None:
        scale = scale * weight
    shift = bias if bias is not None else np.zeros_like(scale)
    return scale, shift


def batch_norm_with_stats(
    x: ArrayLike,
    weight: ArrayLike | None,
    bias: ArrayLike | None,
    running_mean: ArrayLike | None,
    running_var: ArrayLike | None,
    *,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, tuple[np.ndarray, np.ndarray]]:
    """:func:`batch_norm`, also returning the (mean, biased variance) it normalised with — the batch's in
    training — for :func:`batch_norm_backward`'s ``batch_stats`` (a layer keeps them: no second pass)."""
    x, weight, running_mean, running_var, _ = _resolve_bn(x, weight, running_mean, running_var, training, eps)
    eps = float(eps)  # a NumPy float64 eps must not promote float32 data
    bias = _channel_vector(bias, "bias", x.shape[1])
    check_same_dtype(x=x, bias=bias)
    momentum = check_probability(momentum, "momentum", allow_one=True)
    x3 = _channels(x)  # (N, C, S)
    if training:
        mean, var = (v.astype(x.dtype) for v in norm_compiled.channel_stats(x3))  # (C,), (C,) biased
    else:
        assert running_mean is not None and running_var is not None  # _resolve_bn refused eval mode without them
        mean, var = running_mean, running_var
    scale, shift = normalisation_affine(var, weight, bias, eps)
    y = np.empty_like(x3)
    norm_compiled.normalise(x3, mean, scale, shift, y)  # (x − μ)·(γ/σ) + β
    y = y.reshape(x.shape)
    if training and running_mean is not None and running_var is not None:
        count = x.size // x.shape[1]
        new_mean = (1 - momentum) * running_mean + momentum * mean
        new_var = (1 - momentum) * running_var + momentum * (var * (count / (count - 1)))
        return y, new_mean, new_var, (mean, var)
    return y, running_mean, running_var, (mean, var)  # eval mode: the same arrays; None when not tracked


def batch_norm_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike | None,
    running_mean: ArrayLike | None,
    running_var: ArrayLike | None,
    *,
    training: bool,
    eps: float = 1e-5,
    batch_stats: tuple[ArrayLike, ArrayLike] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`batch_norm` with respect to x, weight and bias.

    With δ = grad_output, per channel over its M values, and ĝ = weight · δ::

        dbias = Σ δ          dweight = Σ δ · x̂
        training:  dx = (1 / (M·√(σ² + eps))) · (M·ĝ - Σ ĝ - x̂ · Σ ĝ·x̂)
        eval:      dx = ĝ / √(running_var + eps)

    (In training μ and σ² depend on x, which gives the two subtracted terms: ĝ's mean, and its
    projection on x̂.)

    Shapes:
        grad_output: like x; returns (dx like x, dweight (C,), dbias (C,))

    Args:
        as :func:`batch_norm` (the running statistics are only read in eval mode).
        batch_stats: in training, the batch's (mean, biased variance) if the caller kept them from
            :func:`batch_norm_with_stats`; None computes them from x again.

    Returns:
        ``(dx, dweight, dbias)``, always three arrays: when the forward had no weight (None),
        dweight is the gradient a weight of ones would get, and dbias likewise; ignore them.
    """
    x, weight, running_mean, running_var, bshape = _resolve_bn(x, weight, running_mean, running_var, training, eps)
    eps = float(eps)  # a NumPy float64 eps must not promote float32 data
    grad_output = as_float_array(grad_output, "grad_output")
    if grad_output.shape != x.shape:
        raise ArgumentError(f"grad_output must have x's shape {x.shape}, got {grad_output.shape}")
    check_same_dtype(grad_output=grad_output, x=x)
    x3, dy3 = _channels(x), _channels(grad_output)  # (N, C, S)
    mean: np.ndarray | None
    var: np.ndarray | None
    if training and batch_stats is not None:
        mean = _channel_vector(batch_stats[0], "batch_stats[0] (the mean)", x.shape[1])
        var = _channel_vector(batch_stats[1], "batch_stats[1] (the variance)", x.shape[1])
        check_same_dtype(x=x, batch_mean=mean, batch_var=var)
    elif training:
        mean, var = (v.astype(x.dtype) for v in norm_compiled.channel_stats(x3))  # (C,), (C,)
    else:
        assert running_mean is not None and running_var is not None  # _resolve_bn refused eval mode without them
        mean, var = running_mean, running_var
    assert mean is not None and var is not None  # (batch_stats are two arrays when given)
    invstd = 1 / np.sqrt(var + np.asarray(eps, x.dtype))  # (C,)
    sum_g, sum_gx = norm_compiled.grad_sums(dy3, x3, mean)  # Σ δ, Σ δ·(x − μ): (C,) float64
    dbias = sum_g.astype(x.dtype)  # (C,)
    dweight = (sum_gx * invstd).astype(x.dtype)  # Σ δ·x̂, (C,)
    scale = invstd if weight is None else weight * invstd  # (C,)
    if training:
        count = x.size // x.shape[1]
        # Σ ĝ = weight·dbias and Σ ĝ·x̂ = weight·dweight, so only the scale differs.
        mean_g, mean_gx = dbias / count, dweight / count  # (C,)
        dx = np.empty_like(dy3)
        norm_compiled.grad_input(dy3, x3, mean, mean_g, mean_gx * invstd, scale, dx)  # (δ − m_g − x̂·m_gx)·scale
        dx = dx.reshape(x.shape)
    else:
        dx = grad_output * scale.reshape(bshape)  # (N, C, H, W)
    return dx, dweight, dbias


def _channels(a: np.ndarray) -> np.ndarray:
    """a (N, C, ...) as a contiguous (N, C, S) array, S the positions of one map (1 for (N, C))."""
    return np.ascontiguousarray(a).reshape(a.shape[0], a.shape[1], -1)


# ---------------------------------------------------------------------------------------------- dropout


def _check_p(p: float) -> float:
    return check_probability(p, "p", allow_one=True)


def dropout_mask(shape: tuple[int, ...], p: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean keep-mask: each entry True (kept) with probability ``1 - p``.

    Args:
        shape: the shape of the array to drop from. p: drop probability in [0, 1].
        rng: a ``np.random.Generator`` (the only source of randomness).
    """
    p = _check_p(p)
    if not isinstance(rng, np.random.Generator):
        raise ArgumentTypeError(
            f"rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed)), got {type(rng).__name__}"
        )
    return rng.random(shape) >= p  # uniform in [0, 1): p = 0 keeps all, p = 1 drops all


def _apply_mask(values: np.ndarray, p: float, mask: Any, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != np.bool_ or mask.shape != values.shape:
        raise ArgumentError(
            f"mask must be a bool array of {name}'s shape {values.shape}, got {mask.dtype} array of shape {mask.shape}"
        )
    if p == 1.0:
        return np.zeros_like(values)  # everything dropped, as PyTorch
    return np.where(mask, values * (1 / (1 - p)), 0).astype(values.dtype, copy=False)


def dropout(x: ArrayLike, p: float, mask: ArrayLike) -> np.ndarray:
    """Inverted dropout (training mode): ``y = x · mask / (1 - p)``, so E[y] = x.

    At evaluation time dropout is the identity: the layer simply does not call this.
    ``p = 1`` gives all zeros, as PyTorch.

    Shapes:
        x: any shape; mask: bool, x's shape (from :func:`dropout_mask`); y like x
    """
    x = as_float_array(x, "x")
    return _apply_mask(x, _check_p(p), mask, "x")


def dropout_backward(grad_output: ArrayLike, p: float, mask: ArrayLike) -> np.ndarray:
    """``dx = δ · mask / (1 - p)``: the same linear map as the forward.

    Shapes:
        grad_output: any shape; mask: bool, of the same shape; returns dx like grad_output
    """
    grad_output = as_float_array(grad_output, "grad_output")
    return _apply_mask(grad_output, _check_p(p), mask, "grad_output")
