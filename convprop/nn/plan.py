"""Inputs through a ``Sequential`` as remembered steps: the inference path without its walk.

One image through resnet spent two thirds of its time in Python rather than in the kernels (on an
AMD EPYC, 3 December: 440 µs, of which the tiles' passes took about 120): walking the layers,
matching the fused runs, building each call's key, epilogue and batch-norm scale, looking up the
geometry. A batch of 64 paid the same per call, about 40 µs of each convolution's 150–550 (AMD EPYC
Zen 3, 4 December). With the same layers and the same input shape, every one of those decisions
comes out as before. So ``Sequential.forward`` traces the first call of each input shape and dtype
(a C-contiguous array, a single image or a batch): ``nn.fused.forward_fused`` runs as always and a
:class:`Recorder` notes each call it makes, as a *step*:

- a convolution on ``conv_rows``' tiles, with its bias, batch norm, ReLU, 2×2 max-pool or residual
  sum: a :class:`ConvStep`. Each call it reads the layers' arrays anew (in-place updates and a
  reassigned ``Parameter.data`` are seen), checks their shapes and dtypes and its input's against
  the traced ones, and makes one compiled call for a single image (``functional.conv_single.image``,
  which computes the batch norm's scale as the layer does) — for a batch, the epilogue's compiled
  call and then the tiles' pass with the images split between convprop's threads, as
  ``conv_rows.run_planned`` splits them. An array not as traced, or a NaN in a pooled window, sends
  the call to the one the trace made, which then decides (and raises) as always;
- a residual block and the ReLU after it, fused: a :class:`ResidualStep` (shortcut steps, body
  steps, then the last convolution with the sum);
- anything else: the call the trace made (``layer.forward``, ``nn.fused._run``), a plain nested
  ``Sequential``'s layers in line.

A batch's plan runs inside ``threads.batch_scope``, as the unplanned forward does. A plan is kept per
model (weakly: it goes with the model) and input (shape, dtype), and is used only
while ``module.structure_epoch()`` is unchanged: setting any module's attribute (a layer replaced, a
setting changed, ``train()``/``eval()``, ``astype``) makes every plan stale, and the next call traces
again. A forward that itself sets attributes is never kept. Outputs equal the unplanned forward's
bit for bit (``tests/test_plan.py``), and nothing is written to the layers: one eval-mode model
still serves many threads.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..functional import conv_single, winograd_tiles
from ..functional.compiled_jobs import publish_rows
from ..functional.conv_rows import Plan as RowsPlan
from ..functional.conv_rows_kernels import images
from ..functional.threads import ranges, split_compiled
from . import fused
from .module import Module, Sequential, structure_epoch

_image: Callable[..., bool] = conv_single.image  # (called with the step's arrays and constants unpacked)
_epilogue: Callable[..., np.ndarray] = conv_single.epilogue_of
_kernels: Callable[..., np.ndarray] = winograd_tiles.kernels
LIMIT = 16  # input shapes remembered per model (then forgotten all at once)
_PLANS: weakref.WeakKeyDictionary[Module, dict[tuple[Any, ...], tuple[int, Plan]]] = weakref.WeakKeyDictionary()


def takes(x: Any) -> bool:
    """Whether a plan may take ``x``: a C-contiguous ndarray of at least two axes, the first the batch's
    (one image, or one row, is a batch of one)."""
    return type(x) is np.ndarray and x.ndim >= 2 and x.shape[0] >= 1 and x.flags.c_contiguous


def forward(model: Sequential, x: np.ndarray) -> Any:
    """``forward_fused(list(model), x)`` for an input a plan takes (:func:`takes`): from the plan for x's
    shape and dtype, or traced into one. (The caller holds ``threads.batch_scope(x)``.)"""
    key = (x.shape, x.dtype)
    epoch = structure_epoch()
    plans = _PLANS.get(model)
    entry = plans.get(key) if plans is not None else None
    if entry is not None and entry[0] == epoch:
        return entry[1](x)
    rec = Recorder()
    y = fused.forward_fused(list(model), x, rec)
    if structure_epoch() == epoch:  # (else the forward set something: its trace may not hold)
        if plans is None or len(plans) >= LIMIT:
            plans = _PLANS[model] = {}
        for stale in [k for k, (made, _) in plans.items() if made != epoch]:
            del plans[stale]  # (their steps hold arrays the model may have dropped)
        plans[key] = (epoch, Plan(rec.steps))
    return y


def _run(steps: Sequence[Callable[[Any], Any]], x: Any) -> Any:
    for step in steps:
        x = step(x)
    return x


class Plan:
    """A traced forward: its steps in order."""

    __slots__ = ("steps",)

    def __init__(self, steps: Sequence[Callable[[Any], Any]]) -> None:
        self.steps = tuple(steps)

    def __call__(self, x: Any) -> Any:
        return _run(self.steps, x)


class Recorder:
    """What ``nn.fused`` calls while it traces: each call it makes, as a step."""

    __slots__ = ("steps",)

    def __init__(self) -> None:
        self.steps: list[Callable[..., Any]] = []

    def child(self) -> Recorder:
        return Recorder()

    def call(self, fn: Callable[..., Any]) -> None:
        self.steps.append(fn)

    def conv(
        self,
        conv: Any,
        norm: Any,
        options: dict[str, Any],
        x: Any,
        *,
        relu: bool,
        fallback: Callable[..., Any],
        pool: Any = None,
        affine: Any = None,
        skip: Any = None,
    ) -> None:
        """A fused convolution just made on x: a :class:`ConvStep` if it ran on the tiles, else ``fallback``."""
        bias = conv.bias.data if conv.bias is not None else None
        weight = conv.weight.data
        plan = conv_single.remembered(x, weight, bias, options, relu=relu, pool=pool, norm=affine, skip=skip)
        if plan is None or not ConvStep.applies(conv):
            self.steps.append(fallback)
        else:
            self.steps.append(ConvStep(conv, norm, plan, x, skip is not None, fallback))

    def residual(self, shortcut: Recorder | None, body: Recorder, tail: Recorder) -> None:
        self.steps.append(ResidualStep(None if shortcut is None else shortcut.steps, body.steps, tail.steps[0]))


class ResidualStep:
    """relu(body(x) + shortcut(x)) with the sum and ReLU in the body's last convolution (``tail``)."""

    __slots__ = ("body", "shortcut", "tail")

    def __init__(self, shortcut: Sequence[Any] | None, body: Sequence[Any], tail: Callable[[Any, Any], Any]) -> None:
        self.shortcut = None if shortcut is None else tuple(shortcut)
        self.body, self.tail = tuple(body), tail

    def __call__(self, x: Any) -> Any:
        skip = x if self.shortcut is None else _run(self.shortcut, x)  # the shortcut first, as traced
        return self.tail(_run(self.body, x), skip)


class ConvStep:
    """A convolution on the tiles with its epilogue, as traced on an input of ``shape``: one compiled
    call (``conv_single.image``) on the layers' arrays, their values read at each call (the arrays
    themselves are the traced ones while the plan stands: replacing one changes the structure epoch);
    ``fallback``, the call the trace made, for any other input or a NaN in a pooled window."""

    __slots__ = ("arrays", "dtype", "fallback", "layout", "out_shape", "parts", "residual", "shape", "tail", "unused",
                 "winograd")  # fmt: skip

    def __init__(self, conv: Any, norm: Any, plan: RowsPlan, x: np.ndarray, residual: bool, fallback: Any) -> None:
        self.shape, self.dtype = x.shape, x.dtype
        weight = conv.weight.data
        O = weight.shape[0]
        absent = np.zeros(0, dtype=x.dtype)
        bias = conv.bias.data if conv.bias is not None else absent
        mean = var = gamma = beta = absent
        eps = 0.0
        if norm is not None:
            mean, var, eps = norm.running_mean, norm.running_var, float(norm.eps)
            gamma = norm.weight.data if norm.weight is not None else absent
            beta = norm.bias.data if norm.bias is not None else absent
        view = weight.reshape(O, -1)  # (O, C·KH·KW): a view (C order)
        self.arrays: tuple[Any, ...] = (view, bias, mean, var, gamma, beta)
        self.unused = np.zeros((1, 1, 1, 1), dtype=x.dtype)  # the skip of a step without one
        self.out_shape = (x.shape[0], O, *plan.out_size)
        (ph, pw), (sh, sw) = plan.pads, plan.stride
        constants = np.array([eps, 1.0], dtype=x.dtype)  # ε and 1 in the data's dtype
        self.tail: tuple[Any, ...] = (constants, plan.offs, plan.phases, ph, pw, sh, sw, plan.Wq, plan.S, plan.L,
                                      plan.pool, plan.normalise, plan.relu, residual)  # fmt: skip
        # a batch: its threads' ranges of images (as conv_rows.run_planned's), and images' layout arguments
        self.parts = ranges(x.shape[0]) if x.shape[0] > 1 else None
        self.layout = (plan.offs, plan.phases, ph, pw, sh, sw, plan.Wq, plan.S, plan.L, plan.pool, plan.normalise,
                       plan.relu)  # fmt: skip
        self.residual, self.fallback = residual, fallback
        # a Winograd plan (batches only): the 4-D weight, whose transform each call makes, and a zero of the dtype
        self.winograd = (weight, np.zeros((), dtype=x.dtype)[()]) if plan.direct is not None else None

    @staticmethod
    def applies(conv: Any) -> bool:
        """Whether the step may hold the weight as its (O, C·KH·KW) view: the array is C-contiguous."""
        return bool(conv.weight.data.flags.c_contiguous)

    def __call__(self, x: Any, skip: Any = None) -> Any:
        if not (type(x) is np.ndarray and x.shape == self.shape and x.dtype == self.dtype and x.flags.c_contiguous):
            return self.fallback(x) if skip is None else self.fallback(x, skip)
        if not self.residual:
            skip = self.unused
        elif not (type(skip) is np.ndarray and skip.shape == self.out_shape and skip.dtype == self.dtype
                  and skip.flags.c_contiguous):  # fmt: skip
            return self.fallback(x, skip)
        out = np.empty(self.out_shape, dtype=self.dtype)
        if self.parts is None:
            saw_nan = _image(x, *self.arrays, skip, out, *self.tail)
        else:  # the epilogue, then each thread's images (the workers' as compiled jobs)
            constants, normalise = self.tail[0], self.layout[10]  # (ε and 1; whether a batch norm joins)
            epilogue = _epilogue(*self.arrays, constants, normalise)
            w = self.arrays[0] if self.winograd is None else _kernels(*self.winograd)
            args = (x, w, *self.layout, epilogue, self.residual, skip)
            saw_nan = any(split_compiled(images, publish_rows, args, self.parts, out))
        if saw_nan:  # a NaN in a pooled window (or Winograd declined the images): the traced call decides
            return self.fallback(x) if not self.residual else self.fallback(x, skip)
        return out
