"""Calls on ``conv_rows``' tiles from remembered plans, and one compiled call from a plan.

A call of one image is mostly Python — the checks, the geometry, the choice of kernel — and a batch's
pays the same 20–25 µs. Two levels of remembering skip it:

- ``functional.fused``'s calls keep their ``conv_rows.Plan`` in :data:`REMEMBERED`, keyed by shapes
  (the batch's size among them), dtypes and options (:func:`call_key`): a second call with the same
  key skips the checks and choices, which would all come out the same, and reads only the arrays'
  values again;
- ``nn.plan`` runs an input through a whole model as remembered steps; each of its convolutions on
  the tiles is one call of :func:`image` for a single image, or of :func:`epilogue_of` and then
  ``conv_rows_kernels.images`` on each thread's images for a batch; both work out the epilogue — the
  bias; an eval-mode batch norm's running mean, scale = γ/√(σ² + ε) and shift = β — from the
  layers' own arrays. The scale is ``norm.normalisation_affine``'s arithmetic in its order and dtype
  (σ² + ε rounded to the data's dtype, its square root, 1 divided by it, times γ), so the output
  equals ``functional.fused``'s call bit for bit (``tests/test_plan.py``).

Shapes (:func:`image`): x (1, C, H, W) C-contiguous; w (O, C·KH·KW); bias, mean, var, gamma, beta
(O,), or length 0 where absent; skip (1, O, OH, OW), or (1, 1, 1, 1) unused; out (1, O, OH, OW),
pooled (1, O, OH/2, OW/2) with ``pool``; constants (2,): ε and 1 in the data's dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from . import conv_rows
from .conv_rows_kernels import images


@njit(cache=True, nogil=True)
def image(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    skip: np.ndarray,
    out: np.ndarray,
    constants: np.ndarray,
    offs: np.ndarray,
    phases: np.ndarray,
    ph: int,
    pw: int,
    sh: int,
    sw: int,
    Wq: int,
    S: int,
    L: int,
    pool: bool,
    normalise: bool,
    relu: bool,
    residual: bool,
) -> bool:  # pragma: no cover - compiled
    """conv_rows' pass of the images in x into out with the epilogue from the arrays, on this thread;
    returns whether a pooled window saw a NaN (then ``out`` is not valid: the caller runs the general
    kernels)."""
    epilogue = epilogue_of(w, bias, mean, var, gamma, beta, constants, normalise)
    return images(x, w, offs, phases, ph, pw, sh, sw, Wq, S, L, pool, normalise, relu, epilogue, residual, skip,
                   0, x.shape[0], out)  # fmt: skip


@njit(cache=True, nogil=True)
def epilogue_of(
    w: np.ndarray,
    bias: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    constants: np.ndarray,
    normalise: bool,
) -> np.ndarray:  # pragma: no cover - compiled
    """The (4, O) epilogue ``conv_rows_kernels.store`` takes — bias, mean, scale, shift — from the
    layers' arrays (module docstring), in the data's dtype (``constants``')."""
    O = w.shape[0]
    epilogue = np.zeros((4, O), dtype=constants.dtype)
    eps, one = constants[0], constants[1]
    for o in range(O):
        if bias.shape[0]:
            epilogue[0, o] = bias[o]
        if normalise:
            scale = one / np.sqrt(var[o] + eps)  # 1/σ in the data's dtype, as normalisation_affine
            if gamma.shape[0]:
                scale = scale * gamma[o]
            epilogue[1, o] = mean[o]
            epilogue[2, o] = scale
            epilogue[3, o] = beta[o] if beta.shape[0] else 0.0
    return epilogue


# Fused calls on the tiles, remembered: (shapes, dtypes, options) → conv_rows.Plan (resnet's one-image
# forward spent 62 µs of its 258 in the tile kernels, 3 December; a batch of 64's calls 20–25 µs each
# in the checks and choices, 4 December). Keys of unhashable options or other array types are not
# remembered.
REMEMBERED: dict[tuple[Any, ...], conv_rows.Plan] = {}
REMEMBERED_LIMIT = 512


def batch_key(x: Any, weight: Any, bias: Any, conv: dict[str, Any], *extra: Any) -> tuple[Any, ...] | None:
    """The key of a call on a C-contiguous (N, C, H, W) batch, or None. ``extra``: the epilogue's
    options and arrays."""
    if type(x) is not np.ndarray or x.ndim != 4 or not x.flags.c_contiguous:
        return None
    values = (x, weight, bias, *extra)
    if type(weight) is not np.ndarray or any(isinstance(a, np.ndarray) and type(a) is not np.ndarray for a in values):
        return None
    parts = [(a.shape, a.dtype) if isinstance(a, np.ndarray) else a for a in values]
    key = (*parts, *conv.items())
    try:
        hash(key)
    except TypeError:  # a list among the options
        return None
    return key


def call_key(
    x: Any,
    weight: Any,
    bias: Any,
    conv: dict[str, Any],
    *,
    relu: bool,
    pool: Any = None,
    norm: Any = None,
    skip: Any = None,
) -> tuple[Any, ...] | None:
    """The key of a call of ``fused.conv2d_relu_pool`` (``norm`` None) or of ``fused.conv2d_norm_relu``
    with these arguments, or None (not one to remember)."""
    extra = (relu, None if pool is None else tuple(pool.items())) if norm is None else (relu, *norm, skip)
    return batch_key(x, weight, bias, conv, *extra)


def remembered(x: Any, weight: Any, bias: Any, conv: dict[str, Any], **epilogue: Any) -> conv_rows.Plan | None:
    """The plan a call with these arguments (:func:`call_key`) left behind, or None: it ran elsewhere
    than the tiles (``nn.plan``)."""
    key = call_key(x, weight, bias, conv, **epilogue)
    return None if key is None else REMEMBERED.get(key)


def remember(key: tuple[Any, ...] | None, geo: Any, dtype: Any, mode: int, batch: int) -> None:
    if key is not None:
        if len(REMEMBERED) >= REMEMBERED_LIMIT:
            REMEMBERED.clear()
        REMEMBERED[key] = conv_rows.plan(geo, dtype, mode, conv_rows.uses_winograd(geo, batch))
