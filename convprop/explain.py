"""Why did the network say that? Saliency, gradient × input, Grad-CAM and every convolution's gradient
maps, computed with the library's own hand-derived backward pass (docs/explain.md).

One forward pass with contexts and one backward pass of ``E = logit[target]`` (the target class's
score before the softmax, for each image) give everything:

    saliency            dE/dx, the gradient at the input (Simonyan et al., 2014), shape of x
    gradient × input    x · dE/dx, element-wise (Shrikumar et al., 2016), shape of x
    layer gradients     dE/dy_l for the output y_l of every convolution l, labelled by path
    Grad-CAM            ReLU(Σ_k α_k A_k) with α_k = mean_{i,j} dE/dA_k[i, j] for the feature maps A
                        of one layer (default: the last convolution), upsampled bilinearly to the
                        input's size (Selvaraju et al., 2017)

How the model is reached (any model: Sequential, Residual, Concat, Graph or a container of them):
every call builds a *shadow* of the model — a shallow copy of each module with the same weight
arrays but its own fresh ``Parameter`` objects (so the backward's parameter gradients land in the
shadow's ``.grad``, never in the model's), in eval mode (BatchNorm uses its running statistics,
Dropout is the identity), with each convolution (and the Grad-CAM layer) wrapped in a probe that
records its output on the way forward and the gradient reaching it on the way back. The containers'
own ``forward_with_context``/``backward_with_context`` do the routing. Nothing is written to the
model — not its parameters' ``.grad``, not its mode, not its running statistics — so this is safe
from many threads on one model. Paths are those of ``named_parameters`` (``"3"``, ``"0.body.0"``;
in an ``nn.Graph`` the node's name, one path per node using a shared module).

A container must reach its children through its registered attributes (``self.body``, the
``_modules`` table) or, for ``nn.Graph``, its nodes, as every container in ``convprop.nn`` does.

The shadow and its probes are in :mod:`convprop.explain_shadow`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .data import Normalization
from .errors import ArgumentError, ArgumentTypeError
from .explain_shadow import _Recorder, _shadow, conv_paths, module_paths
from .nn import Module

__all__ = [
    "Explanation",
    "bilinear_resize",
    "conv_paths",
    "explain",
    "grad_cam",
    "gradient_x_input",
    "layer_gradients",
    "module_paths",
    "saliency",
]


# --- checking the arguments -------------------------------------------------------------------------


def _check_model(model: Any) -> Module:
    if not isinstance(model, Module):
        raise ArgumentTypeError(f"model must be a convprop Module, got {type(model).__name__}")
    return model


def _check_images(x: Any) -> tuple[np.ndarray, bool]:
    """x as (N, C, H, W) and whether it was one image (C, H, W)."""
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "fiu":
        raise ArgumentTypeError(f"x must be a numeric NumPy array, got {type(x).__name__}")
    if x.ndim not in (3, 4) or 0 in x.shape:
        raise ArgumentError(f"x must be one image (C, H, W) or a batch (N, C, H, W), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ArgumentError("x contains a NaN or an infinite value")
    return (x[None], True) if x.ndim == 3 else (x, False)


def _check_targets(target: Any, logits: np.ndarray, single: bool) -> np.ndarray:
    """One class index per image: ``target`` is None (each image's predicted class), one int for
    every image, or one int per image."""
    n, k = logits.shape
    if target is None:
        return logits.argmax(axis=1)
    if isinstance(target, (bool, np.bool_)):
        raise ArgumentTypeError(f"target must be a class index (int) or one per image, got {target!r}")
    if isinstance(target, (int, np.integer)):
        targets = np.full(n, int(target))
    else:
        if isinstance(target, (str, bytes)) or not isinstance(target, (Sequence, np.ndarray)):
            raise ArgumentTypeError(f"target must be a class index (int) or one per image, got {target!r:.80}")
        values = list(np.asarray(target).reshape(-1)) if isinstance(target, np.ndarray) else list(target)
        if any(isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)) for t in values):
            raise ArgumentTypeError(f"target must hold class indices (ints), got {target!r:.80}")
        if len(values) != n:
            what = "one image" if single else f"{n} images"
            raise ArgumentError(f"target gives {len(values)} class indices for {what}; give one, or one per image")
        targets = np.array([int(t) for t in values], dtype=np.int64)
    bad = targets[(targets < 0) | (targets >= k)]
    if bad.size:
        raise ArgumentError(f"target {int(bad[0])} is out of range: the model has {k} classes (0..{k - 1})")
    return targets


def _resolve_layer(model: Module, layer: Any) -> str | None:
    """The Grad-CAM layer's path: given as a path or a module of the model; None → the last convolution."""
    paths = module_paths(model)
    if layer is None:
        return None
    if isinstance(layer, Module):
        for path, module in paths:
            if module is layer:
                return path
        raise ArgumentError(f"layer {type(layer).__name__} is not a module of this model")
    if not isinstance(layer, str):
        raise ArgumentTypeError(f"layer must be a path (str) or a module of the model, got {type(layer).__name__}")
    if layer not in dict(paths):
        raise ArgumentError(f"no layer at path {layer!r}; the convolutions are at {conv_paths(model)}")
    return layer


# --- one forward and one backward pass --------------------------------------------------------------


@dataclass(frozen=True)
class Explanation:
    """Everything one backward pass of ``E = logit[target]`` shows, for N images (or one: no N axis).

    Shapes:
        logits: (N, K); target: (N,) int
        saliency, gradient_x_input: the shape of x, (N, C, H, W) or (C, H, W)
        grad_cam: (N, H, W) or (H, W); None for a model without a convolution and no ``layer``
        feature_maps, layer_gradients: path → (N, O, OH, OW) or (O, OH, OW), each convolution in
            execution order (the output y_l and dE/dy_l)
    """

    logits: np.ndarray
    target: np.ndarray
    saliency: np.ndarray
    gradient_x_input: np.ndarray
    grad_cam: np.ndarray | None
    grad_cam_layer: str | None
    feature_maps: dict[str, np.ndarray]
    layer_gradients: dict[str, np.ndarray]


def explain(
    model: Module, x: np.ndarray, target: Any = None, *, layer: Any = None, normalization: Normalization | None = None
) -> Explanation:
    """Saliency, gradient × input, Grad-CAM and every convolution's gradient, from one backward pass.

    Args:
        model: any convprop model giving (N, K) logits; not written to.
        x: (N, C, H, W) or one image (C, H, W); cast to the model's parameter dtype.
        target: None (each image's predicted class), one class index, or one per image.
        layer: the Grad-CAM layer, a path or a module of the model; None → the last convolution.
        normalization: if given, x is in pixel units and the model sees ``normalization(x)``; the
            gradients are then with respect to x (dE/dx = dE/dx_normalized / std, per channel).
    """
    return _run(model, x, target, layer=layer, normalization=normalization)[0]


def _run(
    model: Module,
    x: np.ndarray,
    target: Any = None,
    *,
    layer: Any = None,
    normalization: Normalization | None = None,
    keep_inputs: frozenset[str] = frozenset(),
) -> tuple[Explanation, _Recorder]:
    """:func:`explain`, and what the probes recorded (each convolution's output and gradient, and the
    inputs of the convolutions in ``keep_inputs``)."""
    model = _check_model(model)
    x4, single = _check_images(x)
    params = model.parameters()
    dtype = params[0].data.dtype if params else np.dtype(np.float64)
    x4 = x4.astype(dtype, copy=False)
    cam_path = _resolve_layer(model, layer)
    convs = conv_paths(model)
    recorder = _Recorder(keep_inputs=keep_inputs)
    probed = set(convs) | ({cam_path} if cam_path else set())
    shadow = _shadow(model, "", probed, recorder)
    seen = x4.copy() if normalization is None else normalization(x4)  # an in-place first layer overwrites it
    logits, context = shadow.forward_with_context(seen)
    if not (isinstance(logits, np.ndarray) and logits.ndim == 2 and logits.shape[0] == x4.shape[0]):
        raise ArgumentError(
            f"the model must give (N, K) logits for {x4.shape[0]} image(s), "
            f"got {getattr(logits, 'shape', logits)!r:.80}"
        )
    targets = _check_targets(target, logits, single)
    seed = np.zeros_like(logits)  # dE/dlogits: one at each image's target class
    seed[np.arange(len(targets)), targets] = 1
    grad = shadow.backward_with_context(context, seed)
    if normalization is not None:
        std = np.asarray(normalization.std, dtype=dtype).reshape(1, -1, 1, 1)  # (1, C or 1, 1, 1)
        grad = grad / std
    order = [p for p in recorder.outputs if p in set(convs)]  # execution order
    maps = {p: recorder.outputs[p] for p in order}
    grads = {p: recorder.grads.get(p, np.zeros_like(recorder.outputs[p])) for p in order}  # none: unused output
    cam_path = cam_path or (order[-1] if order else None)
    cam = None
    if cam_path is not None:
        if cam_path not in recorder.outputs:
            raise ArgumentError(f"the layer at {cam_path!r} does not run in the model's forward pass")
        a = recorder.outputs[cam_path]
        g = recorder.grads.get(cam_path, np.zeros_like(a))
        if np.ndim(a) != 4:
            raise ArgumentError(
                f"Grad-CAM needs feature maps (N, C, h, w); the layer at {cam_path!r} gives shape {np.shape(a)}"
            )
        cam = _grad_cam_maps(a, g, x4.shape[2:])

    def one(a: np.ndarray) -> np.ndarray:
        return a[0] if single else a

    result = Explanation(
        logits=logits,
        target=targets,
        saliency=one(grad),
        gradient_x_input=one(x4 * grad),
        grad_cam=None if cam is None else one(cam),
        grad_cam_layer=cam_path,
        feature_maps={p: one(m) for p, m in maps.items()},
        layer_gradients={p: one(g) for p, g in grads.items()},
    )
    return result, recorder


def _grad_cam_maps(a: np.ndarray, g: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """ReLU(Σ_k α_k A_k), α_k = mean_{i,j} G_k[i, j], upsampled to ``size``.

    Shapes:
        a, g: (N, K, h, w); returns (N, H, W)
    """
    alpha = g.mean(axis=(2, 3))  # (N, K)
    cam = np.maximum(np.einsum("nk,nkhw->nhw", alpha, a), 0)  # (N, h, w)
    return bilinear_resize(cam, (int(size[0]), int(size[1])))


def bilinear_resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling with half-pixel centres, as ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False)`` (and OpenCV's ``resize``): output pixel i samples the input at
    ``(i + 0.5) · h / H − 0.5``, clamped to the first pixel, between its two neighbours.

    Shapes:
        maps: (..., h, w); returns (..., H, W)
    """

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)  # (n_out,)
        lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(maps.dtype)

    h, w = maps.shape[-2:]
    r0, r1, fr = axis(h, size[0])
    c0, c1, fc = axis(w, size[1])
    rows = maps[..., r0, :] * (1 - fr)[:, None] + maps[..., r1, :] * fr[:, None]  # (..., H, w)
    return rows[..., c0] * (1 - fc) + rows[..., c1] * fc  # (..., H, W)


# --- the four maps, one at a time -------------------------------------------------------------------


def saliency(model: Module, x: np.ndarray, target: Any = None) -> np.ndarray:
    """dE/dx for E = the target class's logit: which input values the score is most sensitive to.

    Shapes:
        x: (N, C, H, W) or (C, H, W); returns the shape of x
    """
    return explain(model, x, target).saliency


def gradient_x_input(model: Module, x: np.ndarray, target: Any = None) -> np.ndarray:
    """x · dE/dx: the first-order (Taylor) share of each input value in the target logit.

    Shapes:
        x: (N, C, H, W) or (C, H, W); returns the shape of x
    """
    return explain(model, x, target).gradient_x_input


def grad_cam(model: Module, x: np.ndarray, target: Any = None, layer: Any = None) -> np.ndarray:
    """Grad-CAM (Selvaraju et al., 2017) of ``layer`` (default: the last convolution), upsampled to x.

    ``ReLU(Σ_k α_k A_k)`` with A the layer's output and α_k the spatial mean of dE/dA_k; upsampled to
    (H, W) by :func:`bilinear_resize` (half-pixel centres). Not normalised: divide by its maximum to show it.

    Shapes:
        x: (N, C, H, W) or (C, H, W); returns (N, H, W) or (H, W)
    """
    result = explain(model, x, target, layer=layer)
    if result.grad_cam is None:
        raise ArgumentError(
            f"grad_cam needs a convolution (or a layer= giving feature maps); {type(model).__name__} has none"
        )
    return result.grad_cam


def layer_gradients(model: Module, x: np.ndarray, target: Any = None) -> dict[str, np.ndarray]:
    """dE/dy for the output y of every convolution, by path, in execution order.

    Shapes:
        x: (N, C, H, W) or (C, H, W); each value (N, O, OH, OW) or (O, OH, OW)
    """
    return explain(model, x, target).layer_gradients
