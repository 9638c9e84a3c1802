"""Finite-difference gradient checking, public so users can verify their own layers.

For a function ``f`` with analytic gradients, pick a random direction ``r`` for the output and look
at the scalar ``L(inputs) = Σ r · f(inputs)``. Its gradient with respect to each input is exactly
what a backward pass returns when given ``grad_output = r``. Central differences estimate the same
gradient entry by entry::

    ∂L/∂u_k ≈ (L(u + ε e_k) − L(u − ε e_k)) / (2ε)       (error O(ε²))

and the two must agree to within the tolerances. Use float64: in float32 the rounding error of
``L`` swamps the difference quotient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ArgumentError, ArgumentTypeError

if TYPE_CHECKING:  # gradcheck itself needs no layers; only gradcheck_module is handed one
    from .nn.module import Module


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with its finite-difference estimate."""


@dataclass
class GradcheckResult:
    """Per-input worst errors; ``ok`` is True when every input is within tolerance.

    A NaN or infinite analytic or numeric gradient is a failure (``NaN > tol`` is False, so a plain
    comparison would pass it); its error is reported as ``inf`` and ``failures`` says which it was.
    """

    names: list[str]
    max_abs_error: list[float]
    max_rel_error: list[float]
    ok: bool
    failures: list[str] = field(default_factory=list)


def numerical_gradient(loss: Callable[[], float], array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of ``loss()`` with respect to ``array``, perturbed in place."""
    grad = np.zeros_like(array)
    flat, gflat = array.reshape(-1), grad.reshape(-1)
    if not np.shares_memory(flat, array):
        raise ArgumentError("array must be contiguous so it can be perturbed in place")
    for k in range(flat.size):
        orig = flat[k]
        flat[k] = orig + eps
        plus = loss()
        flat[k] = orig - eps
        minus = loss()
        flat[k] = orig
        gflat[k] = (plus - minus) / (2 * eps)
    return grad


def gradcheck(
    forward: Callable[..., np.ndarray],
    backward: Callable[..., Sequence[np.ndarray | None]],
    inputs: Sequence[np.ndarray],
    *,
    names: Sequence[str] | None = None,
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    seed: int = 0,
    raise_on_failure: bool = True,
) -> GradcheckResult:
    """Check ``backward`` against central differences of ``forward``.

    Args:
        forward: ``forward(*inputs) -> output`` (any shape).
        backward: ``backward(grad_output, *inputs) -> grads``, one gradient per input, in order;
            ``None`` for an input that has no gradient (it is skipped).
        inputs: float64 arrays; they are perturbed in place and restored.
        names: labels for the report (default ``input0``, ``input1``, ...).
        eps, atol, rtol: step size and tolerances; an entry passes when
            ``|analytic - numeric| <= atol + rtol * |numeric|``.
        seed: seeds the random output direction.
        raise_on_failure: raise :class:`GradcheckError` instead of returning a failing result.

    Returns:
        A :class:`GradcheckResult` with the worst absolute and relative error per input.
    """
    arrays = [np.ascontiguousarray(a) for a in inputs]
    for i, a in enumerate(arrays):
        if not isinstance(a, np.ndarray) or a.dtype != np.float64:
            raise ArgumentTypeError(
                f"gradcheck needs float64 arrays; input {i} has dtype {getattr(a, 'dtype', type(a).__name__)}"
            )
    names = list(names) if names is not None else [f"input{i}" for i in range(len(arrays))]
    if len(names) != len(arrays):
        raise ArgumentError(f"got {len(names)} names for {len(arrays)} inputs")
    for label, value, low in (("eps", eps, 0.0), ("atol", atol, 0.0), ("rtol", rtol, 0.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ArgumentTypeError(f"{label} must be a number, got {value!r}")
        if not np.isfinite(value) or value < low or (label == "eps" and value == 0):
            expected = "a finite number > 0" if label == "eps" else "a finite number >= 0"
            raise ArgumentError(f"{label} must be {expected}, got {value!r}")
    for name, a in zip(names, arrays, strict=True):
        if not np.isfinite(a).all():
            raise ArgumentError(f"gradcheck needs finite inputs; {name} holds {_count_nonfinite(a)}")
    direction = np.random.default_rng(seed).standard_normal(np.shape(forward(*arrays)))
    analytic = list(backward(direction, *arrays))
    if len(analytic) != len(arrays):
        raise ArgumentError(f"backward returned {len(analytic)} gradients for {len(arrays)} inputs")

    def loss() -> float:
        return float(np.sum(direction * forward(*arrays)))

    abs_errs, rel_errs, failures = [], [], []
    for name, array, grad in zip(names, arrays, analytic, strict=True):
        if grad is None:
            abs_errs.append(0.0)
            rel_errs.append(0.0)
            continue
        if np.shape(grad) != array.shape:
            raise ArgumentError(f"gradient for {name} has shape {np.shape(grad)}, expected {array.shape}")
        numeric = numerical_gradient(loss, array, eps)
        grad = np.asarray(grad, dtype=np.float64)
        nonfinite = [(what, g) for what, g in (("analytic", grad), ("numeric", numeric)) if not np.isfinite(g).all()]
        if nonfinite:  # NaN compares False with everything: it must fail here, not pass below
            abs_errs.append(float("inf"))
            rel_errs.append(float("inf"))
            held = (f"{what} gradient holds {_count_nonfinite(g)}" for what, g in nonfinite)
            failures.append(f"{name}: the {' and the '.join(held)}")
            continue
        diff = np.abs(grad - numeric)
        abs_errs.append(float(diff.max(initial=0.0)))
        rel_errs.append(float((diff / np.maximum(np.abs(numeric), 1e-12)).max(initial=0.0)))
        bad = ~(diff <= atol + rtol * np.abs(numeric))  # written so that a NaN would count as bad
        if bad.any():
            k = np.unravel_index(np.argmax(diff), diff.shape)
            failures.append(
                f"{name}: {int(bad.sum())} of {bad.size} entries off; worst at {tuple(map(int, k))}: "
                f"analytic {grad[k]:.10g} vs numeric {numeric[k]:.10g}"
            )
    result = GradcheckResult(names, abs_errs, rel_errs, not failures, failures)
    if failures and raise_on_failure:
        raise GradcheckError("gradient check failed:\n  " + "\n  ".join(failures))
    return result


def _count_nonfinite(a: np.ndarray) -> str:
    """``"2 NaN and 1 infinite value(s) of 12, first at (0, 3)"``: what a non-finite array holds."""
    nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
    first = tuple(int(i) for i in np.unravel_index(np.argmax(~np.isfinite(a)), a.shape))
    return f"{nan} NaN and {inf} infinite value(s) of {a.size}, first at {first}"


def gradcheck_module(module: Module, x: np.ndarray, **options: Any) -> GradcheckResult:
    """:func:`gradcheck` for a layer: its input and every parameter, through ``forward_with_context``
    and ``backward_with_context`` (so it works in eval mode too).

    The parameters' arrays are perturbed in place (and restored). The layer must be deterministic
    from call to call (for ``Dropout``, reseed its generator in a wrapper). ``options`` are
    :func:`gradcheck`'s keyword arguments.
    """
    params = module.parameters()
    names = ["input", *(name for name, _ in module.named_parameters())]

    def forward(x: np.ndarray, *_: np.ndarray) -> np.ndarray:
        return module.forward_with_context(x.copy())[0]  # (a copy: in-place layers must not clobber the input)

    def backward(grad_output: np.ndarray, x: np.ndarray, *_: np.ndarray) -> list[np.ndarray | None]:
        module.zero_grad()
        _, context = module.forward_with_context(x.copy())
        dx = module.backward_with_context(context, grad_output)
        return [dx, *(p.grad for p in params)]

    for p in params:
        if not p.data.flags.c_contiguous:
            p.data = np.ascontiguousarray(p.data)
    return gradcheck(forward, backward, [x, *(p.data for p in params)], names=names, **options)
