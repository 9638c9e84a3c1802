"""Tensor plumbing as forward/backward pairs: broadcasting arithmetic, matmul, gemm, N-d padding,
global max pooling. These are the operators an imported ONNX graph routes data through between its layers.

Every backward is the adjoint of its forward:

- broadcasting copies a value along the broadcast axes, so its adjoint *sums* the gradient over them
  (:func:`unbroadcast`);
- ``C = A @ B`` has ``dA = dC @ Bᵀ`` and ``dB = Aᵀ @ dC`` (summed over broadcast batch axes);
- padding copies input entries into the border (reflect, edge, wrap) or writes constants, so its adjoint
  adds each border entry's gradient onto the entry it copied and crops the rest;
- a global max sends the whole gradient to the (first) maximum.

Shapes: any, as stated per function; float32 stays float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ArgumentError
from .validation import as_float_array, check_same_dtype

PAD_MODES = ("constant", "reflect", "edge", "wrap")  # ONNX's and NumPy's names


# --- broadcasting -----------------------------------------------------------------------------------


def broadcast_shape(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """NumPy's (and ONNX's multidirectional) broadcast shape, or an ArgumentError quoting the shapes."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ArgumentError(f"shapes {', '.join(map(str, shapes))} do not broadcast together") from None


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Adjoint of broadcasting an array of ``shape`` to ``grad.shape``: sum over the copied axes."""
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))  # leading axes that broadcasting added
    axes = tuple(a for a, n in enumerate(shape) if n == 1 and grad.shape[a] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)  # axes of length 1 that were stretched
    return grad.reshape(shape)


def binary(op: str, a: Any, b: Any) -> np.ndarray:
    """``a op b`` with broadcasting, for op in ``add sub mul div``."""
    a, b = as_float_array(a, "a"), as_float_array(b, "b")
    check_same_dtype(a=a, b=b)
    broadcast_shape(a.shape, b.shape)
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op == "div":
        return a / b
    raise ArgumentError(f"op must be one of add, sub, mul, div; got {op!r}")


def binary_backward(op: str, grad_output: Any, a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Gradients ``(da, db)`` of :func:`binary`:

    add: (δ, δ); sub: (δ, −δ); mul: (δ·b, δ·a); div: (δ/b, −δ·a/b²) — each summed back to its
    operand's shape (:func:`unbroadcast`).
    """
    a, b = as_float_array(a, "a"), as_float_array(b, "b")
    grad_output = as_float_array(grad_output, "grad_output")
    shape = broadcast_shape(a.shape, b.shape)
    if grad_output.shape != shape:
        raise ArgumentError(f"grad_output must have the broadcast shape {shape}, got {grad_output.shape}")
    if op == "add":
        da, db = grad_output, grad_output
    elif op == "sub":
        da, db = grad_output, -grad_output
    elif op == "mul":
        da, db = grad_output * b, grad_output * a
    elif op == "div":
        da = grad_output / b
        db = -da * a / b
    else:
        raise ArgumentError(f"op must be one of add, sub, mul, div; got {op!r}")
    return unbroadcast(da, a.shape), unbroadcast(db, b.shape)


# --- matmul and gemm --------------------------------------------------------------------------------


def matmul(a: Any, b: Any) -> np.ndarray:
    """``numpy.matmul`` (= ONNX MatMul = ``torch.matmul``): 1-D operands promoted, batch axes broadcast.

    Shapes: a (..., M, K) or (K,); b (..., K, N) or (K,); y (..., M, N) without the promoted axes.
    """
    a, b = as_float_array(a, "a"), as_float_array(b, "b")
    check_same_dtype(a=a, b=b)
    if a.ndim == 0 or b.ndim == 0:
        raise ArgumentError(f"matmul needs operands of at least 1 axis, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ArgumentError(f"matmul: a's last axis ({a.shape}) must match b's contracted axis ({b.shape})")
    broadcast_shape(a.shape[:-2], b.shape[:-2])
    return np.matmul(a, b)


def matmul_backward(grad_output: Any, a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """``dA = δ Bᵀ``, ``dB = Aᵀ δ``, with 1-D operands promoted as in the forward and the batch axes
    summed back to each operand's own (:func:`unbroadcast`)."""
    a, b = as_float_array(a, "a"), as_float_array(b, "b")
    grad_output = as_float_array(grad_output, "grad_output")
    a2 = a[None, :] if a.ndim == 1 else a  # (1, K)
    b2 = b[:, None] if b.ndim == 1 else b  # (K, 1)
    shape = np.matmul(a2, b2).shape
    g = grad_output.reshape(shape)  # the promoted axes back: (..., M, N)
    da = np.matmul(g, np.swapaxes(b2, -1, -2))  # (..., M, K)
    db = np.matmul(np.swapaxes(a2, -1, -2), g)  # (..., K, N)
    return unbroadcast(da, a2.shape).reshape(a.shape), unbroadcast(db, b2.shape).reshape(b.shape)


def gemm(
    a: Any, b: Any, c: Any = None, alpha: float = 1.0, beta: float = 1.0, trans_a: bool = False, trans_b: bool = False
) -> np.ndarray:
    """ONNX Gemm: ``y = alpha · A' B' + beta · C`` with ``A' = Aᵀ if trans_a``, ``B' = Bᵀ if trans_b``,
    C broadcast to (M, N).

    Shapes: a (M, K) or (K, M); b (K, N) or (N, K); c broadcastable to (M, N); y (M, N).
    """
    a, b = as_float_array(a, "a"), as_float_array(b, "b")
    if a.ndim != 2 or b.ndim != 2:
        raise ArgumentError(f"gemm needs 2-D a and b, got shapes {a.shape} and {b.shape}")
    a_, b_ = (a.T if trans_a else a), (b.T if trans_b else b)
    if a_.shape[1] != b_.shape[0]:
        raise ArgumentError(f"gemm: A' {a_.shape} and B' {b_.shape} do not fit (trans_a={trans_a}, trans_b={trans_b})")
    y = np.matmul(a_, b_)  # (M, N)
    if alpha != 1.0:
        y *= a.dtype.type(alpha)
    if c is not None:
        c = as_float_array(c, "c")
        check_same_dtype(a=a, b=b, c=c)
        if broadcast_shape(c.shape, y.shape) != y.shape:
            raise ArgumentError(f"gemm: C of shape {c.shape} does not broadcast to the output {y.shape}")
        y += c * a.dtype.type(beta) if beta != 1.0 else c
    return y


def gemm_backward(
    grad_output: Any,
    a: Any,
    b: Any,
    c: Any = None,
    alpha: float = 1.0,
    beta: float = 1.0,
    trans_a: bool = False,
    trans_b: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(dA, dB, dC)`` of :func:`gemm`: ``dA' = alpha δ B'ᵀ``, ``dB' = alpha A'ᵀ δ`` (transposed back
    when the operand was), ``dC = beta · δ`` summed to C's shape (None without C)."""
    a, b = as_float_array(a, "a"), as_float_array(b, "b")
    grad_output = as_float_array(grad_output, "grad_output")
    a_, b_ = (a.T if trans_a else a), (b.T if trans_b else b)
    g = grad_output * a.dtype.type(alpha) if alpha != 1.0 else grad_output
    da_ = g @ b_.T  # (M, K)
    db_ = a_.T @ g  # (K, N)
    dc = None
    if c is not None:
        dc = unbroadcast(grad_output * a.dtype.type(beta) if beta != 1.0 else grad_output, np.shape(c))
    return (da_.T if trans_a else da_), (db_.T if trans_b else db_), dc


# --- N-d padding ------------------------------------------------------------------------------------


def check_pad_widths(widths: Sequence[tuple[int, int]], shape: tuple[int, ...], mode: str) -> None:
    """Pads fit the array: one (before, after) per axis, negative (crop) only in constant mode, and
    reflect needing pad < size, edge a non-empty axis, wrap pad <= size (so each border copies once)."""
    if mode not in PAD_MODES:
        raise ArgumentError(f"pad mode must be one of {PAD_MODES}, got {mode!r}")
    if len(widths) != len(shape):
        raise ArgumentError(f"pads need one (before, after) pair per axis of {shape}, got {len(widths)} pairs")
    for axis, ((before, after), n) in enumerate(zip(widths, shape, strict=True)):
        if mode == "constant":
            if n + before + after < 0 or n + min(before, 0) < 0 or n + min(after, 0) < 0:
                raise ArgumentError(f"pads ({before}, {after}) crop more than axis {axis} of {shape} has")
            continue
        if before < 0 or after < 0:
            raise ArgumentError(f"negative pads (crops) need mode 'constant'; got ({before}, {after}) in {mode!r}")
        limit = n - 1 if mode == "reflect" else n
        if (before or after) and max(before, after) > limit:
            raise ArgumentError(
                f"{mode!r} padding needs each pad at most {limit} on axis {axis} of size {n}, got ({before}, {after})"
            )


def _crop_slices(widths: Sequence[tuple[int, int]], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Slices that remove negative pads (crops) from an array of ``shape``."""
    return tuple(slice(-min(b, 0), n + min(a, 0)) for (b, a), n in zip(widths, shape, strict=True))


def pad_nd(x: Any, widths: Sequence[tuple[int, int]], mode: str = "constant", value: float = 0.0) -> np.ndarray:
    """ONNX Pad / ``numpy.pad``: ``widths[i] = (before, after)`` for axis i; negative widths crop.

    Shapes: x (d0, d1, ...); y (d0 + b0 + a0, d1 + b1 + a1, ...).
    """
    x = as_float_array(x, "x")
    widths = [(int(b), int(a)) for b, a in widths]
    check_pad_widths(widths, x.shape, mode)
    x = x[_crop_slices(widths, x.shape)]
    positive = [(max(b, 0), max(a, 0)) for b, a in widths]
    if mode == "constant":
        return np.pad(x, positive, mode="constant", constant_values=x.dtype.type(value))
    return np.pad(x, positive, mode=mode)  # type: ignore[call-overload]  # mode: one of PAD_MODES, checked


def pad_nd_backward(
    grad_output: Any, x_shape: tuple[int, ...], widths: Sequence[tuple[int, int]], mode: str = "constant"
) -> np.ndarray:
    """Adjoint of :func:`pad_nd`: each input entry gets its own gradient plus that of every border entry
    that copied it (none in constant mode); cropped entries get zero.

    Shapes: grad_output (the padded shape) → (the input shape ``x_shape``).
    """
    grad_output = as_float_array(grad_output, "grad_output")
    widths = [(int(b), int(a)) for b, a in widths]
    check_pad_widths(widths, tuple(x_shape), mode)
    crops = _crop_slices(widths, tuple(x_shape))
    kept = tuple(s.stop - s.start for s in crops)
    g = grad_output
    for axis, ((before, after), n) in enumerate(zip(widths, kept, strict=True)):
        before, after = max(before, 0), max(after, 0)
        if mode == "constant":
            g = g[(slice(None),) * axis + (slice(before, before + n),)]  # the border was constant: crop
            continue
        source = np.pad(np.arange(n), (before, after), mode=mode)  # type: ignore[call-overload]  # (as above)  # padded position → input position
        moved = np.moveaxis(g, axis, 0)  # (padded_n, ...)
        folded = np.zeros((n, *moved.shape[1:]), dtype=g.dtype)  # (n, ...)
        np.add.at(folded, source, moved)  # sum the gradients of every copy of each entry
        g = np.moveaxis(folded, 0, axis)
    dx = np.zeros(tuple(x_shape), dtype=grad_output.dtype)
    dx[crops] = g
    return dx


# --- global pooling ---------------------------------------------------------------------------------


def _spatial_axes(x: np.ndarray) -> tuple[int, ...]:
    if x.ndim < 3:
        raise ArgumentError(f"global pooling needs (N, C, D1, ...) with at least one spatial axis, got {x.shape}")
    return tuple(range(2, x.ndim))


def global_max_pool(x: Any) -> np.ndarray:
    """``y[n, c, 1, ..., 1] = max over every spatial position of x[n, c]``.

    Shapes: x (N, C, D1, ..., Dk); y (N, C, 1, ..., 1).
    """
    x = as_float_array(x, "x")
    return x.max(axis=_spatial_axes(x), keepdims=True)


def global_max_pool_backward(grad_output: Any, x: Any) -> np.ndarray:
    """The whole gradient goes to the first maximum of each (n, c) plane — one index, as max pooling
    (``torch.nn.functional.adaptive_max_pool2d(x, 1)``) picks; ``torch.amax`` would split it among ties."""
    x = as_float_array(x, "x")
    N, C = x.shape[:2]
    flat = x.reshape(N, C, -1)  # (N, C, D1·...·Dk)
    first = flat.argmax(axis=2)  # (N, C)
    dx = np.zeros_like(flat)
    np.put_along_axis(dx, first[..., None], np.reshape(grad_output, (N, C, 1)), axis=2)
    return dx.reshape(x.shape)
