"""One helper that checks an op against PyTorch: forward and every gradient, in float64; and the one
definition of relative error (:func:`rel_error`) that every comparison in the tests uses.

An op is given the way ``convprop.gradcheck`` takes it — ``forward(*inputs) -> y`` and
``backward(grad_output, *inputs) -> grads`` (one per input, ``None`` to skip) — plus the same
computation written with ``torch``. So one pair of lambdas serves both the finite-difference
check and the comparison with PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

RTOL = 1e-9


def rel_error(ours, reference) -> float:
    """max |ours - reference| / max(max |reference|, 1e-300)."""
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != reference shape {b.shape}"
    if a.size == 0:
        return 0.0
    same_inf = np.isinf(a) & (a == b)  # e.g. -inf from an all -inf max-pool window
    a, b = np.where(same_inf, 0, a), np.where(same_inf, 0, b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def assert_close(ours, reference, what: str, rtol: float = RTOL, *, atol: float = 0.0) -> None:
    """:func:`rel_error` below ``rtol``, or (only if ``atol`` is given) every entry within ``atol``: the
    floor for values that are zero in exact arithmetic, where both sides hold only rounding noise."""
    err = rel_error(ours, reference)
    if err < rtol:
        return
    abs_err = float(np.abs(np.asarray(ours, np.float64) - np.asarray(reference, np.float64)).max(initial=0.0))
    assert abs_err < atol, f"{what}: relative error {err:.3e} >= {rtol:.0e} (absolute {abs_err:.3e}, atol {atol:.0e})"


def check_against_torch(
    forward: Callable[..., np.ndarray],
    backward: Callable[..., Sequence[np.ndarray | None]],
    torch_forward: Callable[..., torch.Tensor],
    inputs: Sequence[np.ndarray],
    *,
    names: Sequence[str] | None = None,
    seed: int = 0,
    rtol: float = RTOL,
) -> np.ndarray:
    """Assert ``forward`` and every gradient of ``backward`` match torch within ``rtol``; return y.

    Float inputs become leaf tensors with ``requires_grad``; other inputs (integer targets)
    are passed as plain tensors. The output gradient is a fixed random array.
    """
    names = list(names) if names is not None else [f"input{i}" for i in range(len(inputs))]
    tensors = [torch.tensor(a, requires_grad=np.asarray(a).dtype.kind == "f") for a in inputs]
    y_ref = torch_forward(*tensors)
    y = forward(*inputs)
    assert_close(y, y_ref.detach().numpy(), "forward", rtol)
    assert np.asarray(y).dtype == y_ref.detach().numpy().dtype, f"dtype {np.asarray(y).dtype} != torch's {y_ref.dtype}"
    grad_output = np.random.default_rng(seed).standard_normal(np.shape(y)).astype(np.asarray(y).dtype)
    y_ref.backward(torch.tensor(grad_output))
    grads = backward(grad_output, *inputs)
    assert len(grads) == len(inputs), f"backward returned {len(grads)} gradients for {len(inputs)} inputs"
    for name, tensor, grad in zip(names, tensors, grads, strict=True):
        if grad is None:
            continue
        ref = tensor.grad.numpy() if tensor.grad is not None else np.zeros(tensor.shape)
        assert_close(grad, ref, f"gradient of {name}", rtol)
    return y


def conv_layer_against_direct(x, weight, bias, rng, *, ndim, dtype, rtol, what, **options):
    """A convolution layer's training pass in ``dtype`` — forward keeping its context, backward from it
    — against ``algorithm="direct"`` in float64 on the very same values (x, weight, bias and δ rounded
    to ``dtype`` first); every result must come back in ``dtype``. Returns the layer's context."""
    from convprop.functional.conv import conv_backward_from_context, conv_with_context

    x, weight, bias = (np.asarray(a).astype(dtype) for a in (x, weight, bias))
    y, ctx = conv_with_context(x, weight, bias, **options, ndim=ndim)
    dy = rng.standard_normal(y.shape).astype(dtype)
    ours = (y, *conv_backward_from_context(dy, ctx))
    x64, w64, b64, dy64 = (a.astype(np.float64) for a in (x, weight, bias, dy))
    y_ref, ctx_ref = conv_with_context(x64, w64, b64, **options, ndim=ndim, algorithm="direct")
    reference = (y_ref, *conv_backward_from_context(dy64, ctx_ref))
    for name, got, want in zip(("y", "dx", "dw", "db"), ours, reference, strict=True):
        assert got.dtype == dtype, f"{what} {name}: {got.dtype}, expected {np.dtype(dtype)}"
        assert_close(got, want, f"{what} {name} {np.dtype(dtype).name}", rtol=rtol)
    return ctx
