"""Parameter, Module and Sequential: the state side of the library.

Three kinds of state stay apart (STYLE rule 7): *parameters* (``Parameter``: ``data`` and ``grad``),
*buffers* (arrays such as running statistics, saved but not trained), and *settings* (plain
attributes given to the constructor, recorded by ``config()`` so a checkpoint can rebuild the layer).
Layers hold state, never math: their forward and backward call ``convprop.functional``. State per call,
not per layer (STYLE rule 14): what a backward needs travels in a *context* returned by
``forward_with_context``, so one layer may be used twice in a graph and an eval-mode model may serve
many threads at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
from numpy.typing import DTypeLike

from ..errors import ArgumentError, ContextError
from ..functional.threads import batch_scope
from .grad_mode import is_grad_enabled

LAYERS: dict[str, type[Module]] = {}  # class name → class, for rebuilding models from checkpoints
_EPOCH = [0]  # bumped whenever any module's attribute or mode is set (nn.plan's remembered forwards)


def structure_epoch() -> int:
    """A number that changes whenever any module's attribute is set (a layer, a setting, a buffer, a
    parameter), a parameter's ``data`` is replaced by another array, or a mode or dtype changes:
    ``nn.plan`` keeps a plan only while it stays the same."""
    return _EPOCH[0]


class Parameter:
    """A trainable array: ``data`` is updated in place by optimizers, ``grad`` accumulates in backward.
    Assigning a new ``data`` array counts as a change of structure (:func:`structure_epoch`)."""

    __slots__ = ("_data", "grad")

    def __init__(self, data: np.ndarray) -> None:
        self._data = np.ascontiguousarray(data)
        self.grad: np.ndarray | None = None

    @property
    def data(self) -> np.ndarray:
        return self._data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        _EPOCH[0] += 1
        self._data = value

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def accumulate(self, grad: np.ndarray, *, owned: bool = False) -> None:
        """``grad += g`` as PyTorch does, so several backward passes add up until ``zero_grad``.

        The first gradient is copied, unless ``owned``: a layer passing an array it has just computed
        and keeps no other reference to may hand it over as it is (no copy of a 1.6 MB weight
        gradient every step), provided it already has the parameter's dtype, shape and C order.
        """
        if self.grad is None:
            keep = (
                owned
                and isinstance(grad, np.ndarray)
                and grad.dtype == self.data.dtype
                and grad.shape == self.data.shape
                and grad.flags.c_contiguous
                and grad.flags.writeable
            )
            self.grad = grad if keep else np.array(grad, dtype=self.data.dtype, order="C", copy=True)
        else:
            self.grad += grad

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class: the forward/backward protocol, parameters, buffers, modes.

    A layer implements ``forward_with_context`` (output and a per-call context) and
    ``backward_with_context`` (gradients from that context; *adds* into each parameter's ``grad``),
    and may override ``forward`` (output only). ``layer(x)`` then ``layer.backward(dy)`` is the
    seeds' style on top: the call keeps its context on the layer in training mode only.
    Subclasses list their constructor arguments in ``config()`` so checkpoints can rebuild them.
    """

    registered: ClassVar[bool] = True  # set False in a class body for an abstract helper base
    # instance state, set in __init__ with object.__setattr__ (declared here for type checkers)
    _parameters: dict[str, Parameter]
    _buffers: dict[str, bool]
    _modules: dict[str, Module]
    training: bool
    _last_context: tuple[Any] | None  # (context,) kept by a training-mode call, boxed: a context may be None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("registered", True):  # not inherited: subclasses of a helper base register
            LAYERS[cls.__name__] = cls

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_last_context", None)  # kept by __call__ in training mode only

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() before setting {name!r}")
        _EPOCH[0] += 1
        if name in self._buffers and not isinstance(value, (Parameter, Module)):
            object.__setattr__(self, name, value)  # a buffer keeps its registration when replaced
            return
        target = (
            self._parameters if isinstance(value, Parameter) else self._modules if isinstance(value, Module) else None
        )
        for table in (self._parameters, self._modules, self._buffers):
            if table is not target:
                table.pop(name, None)
        if target is not None:
            target[name] = value  # a replaced child keeps its place (a Sequential's order), as in PyTorch
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, value: np.ndarray) -> None:
        """A saved, untrained array (e.g. running statistics)."""
        setattr(self, name, value)
        self._buffers[name] = True

    # --- computation -------------------------------------------------------------------------------
    # The protocol every layer implements (docs/graphs.md, "What a context holds"):
    #   y, ctx = forward_with_context(*inputs)      pure: the output and what backward needs
    #   dx = backward_with_context(ctx, dy, input_grad=True)   adds into .grad; dx, or None
    #   y = forward(*inputs)                        inference: nothing kept for backward
    # and the seeds' style on top: y = layer(x) keeps the context in training mode; layer.backward(dy).
    def forward_with_context(self, *inputs: Any) -> tuple[Any, Any]:
        """``(output, context)``: the output and whatever :meth:`backward_with_context` needs for this
        one call. Writes nothing to the layer (BatchNorm's running statistics in training mode and
        Dropout's random stream excepted, as in PyTorch); works in any mode, so an eval-mode model can
        still be differentiated (e.g. for a saliency map)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward_with_context")

    def backward_with_context(self, context: Any, grad_output: Any, *, input_grad: bool = True) -> Any:
        """Gradients of the call that produced ``context``: *adds* each parameter's gradient into its
        ``grad`` and returns d loss / d input (a tuple for several inputs), or None with
        ``input_grad=False`` (the one way to skip the input's gradient: a model's first layer, whose
        input is data). The context is not consumed: the same context may be used again."""
        raise NotImplementedError(f"{type(self).__name__} does not implement backward_with_context")

    def forward(self, *inputs: Any) -> Any:
        """The output only, keeping nothing for backward (the inference path, safe to call from many
        threads on one eval-mode model). This default drops :meth:`forward_with_context`'s context;
        layers whose context costs memory (convolution, linear, pooling) override it."""
        return self.forward_with_context(*inputs)[0]

    def __call__(self, *inputs: Any) -> Any:
        """``forward``, keeping the context for :meth:`backward` only in training mode with gradients
        enabled (not inside ``convprop.no_grad()``); otherwise nothing is kept, and a previously kept
        context is dropped so that a later ``backward`` cannot silently use a stale one."""
        if self.training and is_grad_enabled():
            y, context = self.forward_with_context(*inputs)
            object.__setattr__(self, "_last_context", (context,))  # boxed: a context may itself be None
            return y
        if self.__dict__.get("_last_context") is not None:
            object.__setattr__(self, "_last_context", None)  # the only write; never made twice
        return self.forward(*inputs)

    def backward(self, grad_output: Any, *, input_grad: bool = True) -> Any:
        """:meth:`backward_with_context` with the context that the last training-mode call kept.

        A second ``backward`` after one forward uses the same context again: it returns the same
        input gradient and adds the parameters' gradients a second time (PyTorch's
        ``retain_graph=True``). Raises :class:`ContextError` when no context is kept.
        """
        kept = self.__dict__.get("_last_context")
        if kept is None:
            raise ContextError(
                f"{type(self).__name__}.backward called before forward: no context is kept. Call the layer in "
                "training mode outside convprop.no_grad() first (y = layer(x)), or use "
                "y, ctx = layer.forward_with_context(x) and layer.backward_with_context(ctx, dy)"
            )
        return self.backward_with_context(kept[0], grad_output, input_grad=input_grad)

    # --- traversal ---------------------------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, Module]]:
        yield from self._modules.items()

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, p in self._parameters.items():
            yield prefix + name, p
        for name, child in self._modules.items():
            yield from child.named_parameters(f"{prefix}{name}.")

    def parameters(self) -> list[Parameter]:
        """Every parameter once, in registration order (the order PyTorch's ``parameters()`` gives): a
        module instance used in two places (shared weights) contributes its parameters once."""
        seen: set[int] = set()
        unique = []
        for _, p in self.named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        return unique

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for name in self._buffers:
            yield prefix + name, getattr(self, name)
        for name, child in self._modules.items():
            yield from child.named_buffers(f"{prefix}{name}.")

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
        _EPOCH[0] += 1
        object.__setattr__(self, "training", bool(mode))
        for child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    # --- state -------------------------------------------------------------------------------------
    def state_dict(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Parameters and buffers under PyTorch's names and order (``"0.weight"``, ``"1.running_mean"``...)."""
        state = {prefix + name: p.data for name, p in self._parameters.items()}
        state.update((prefix + name, getattr(self, name)) for name in self._buffers)
        for name, child in self._modules.items():
            state.update(child.state_dict(f"{prefix}{name}."))
        return state

    def astype(self, dtype: DTypeLike) -> Module:
        """Convert every parameter and floating-point buffer to ``dtype`` (float32 or float64), in place."""
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        _EPOCH[0] += 1
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = None
        for module in self.modules():
            for name in module._buffers:
                value = getattr(module, name)
                if value.dtype.kind == "f":
                    object.__setattr__(module, name, value.astype(dtype))
        return self

    def modules(self) -> Iterator[Module]:
        """This module and every module below it, depth first."""
        yield self
        for child in self.children():
            yield from child.modules()

    def load_state_dict(self, state: dict[str, np.ndarray], strict: bool = True) -> None:
        """Copy arrays into this model's parameters and buffers, checking names and shapes."""
        own_params = dict(self.named_parameters())
        own_buffers = dict(self.named_buffers())
        own = set(own_params) | set(own_buffers)
        missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if strict and (missing or unexpected):
            raise ValueError(f"state_dict does not fit the model: missing keys {missing}, unexpected keys {unexpected}")
        checked = {}
        for name, value in state.items():  # check everything first: a bad file leaves the model untouched
            if name not in own:
                continue
            value = np.asarray(value)
            target = own_params[name].data if name in own_params else own_buffers[name]
            if value.shape != target.shape:
                raise ValueError(f"state_dict[{name!r}] has shape {value.shape}, the model expects {target.shape}")
            checked[name] = value
        for name, value in checked.items():
            if name in own_params:
                own_params[name].data[...] = value  # cast to the model's dtype, as PyTorch does
            else:
                own_buffers[name][...] = value

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable) that rebuild this layer; ``{}`` when there are none."""
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items())

    def __repr__(self) -> str:
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse. Children are named "0", "1", ..."""

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential takes Module instances; argument {i} is {type(layer).__name__}")
            setattr(self, str(i), layer)

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, list[Any]]:
        """Context: the list of the layers' contexts, in order. Runs inside ``batch_scope`` as
        :meth:`forward` does: BLAS on one thread, convprop's threads splitting the passes."""
        with batch_scope(x):
            return self._forward_with_context(x)

    def _forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, list[Any]]:
        from .fused import FUSED_WITH_NEXT, relu_pool_with_context  # (fused.py imports the layers)

        layers, contexts = list(self), []
        i = 0
        while i < len(layers):
            fused = relu_pool_with_context(layers, i, x)  # ReLU → 2×2 max-pool as one pass, else None
            if fused is not None:
                x, context = fused
                contexts += [FUSED_WITH_NEXT, context]
                i += 2
                continue
            x, context = layers[i].forward_with_context(x)
            contexts.append(context)
            i += 1
        return x, contexts

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Each layer's ``forward`` in turn, runs of conv → (BN) → ReLU → (max-pool) fused (``nn/fused.py``),
        with BLAS on one thread and the products split between convprop's threads (``functional/threads.py``);
        an array, a single image or a batch, from a plan traced by the first call of its shape (``nn/plan.py``)."""
        from . import plan  # here, not at the top: plan.py and fused.py import the layers, which import this module
        from .fused import forward_fused

        with batch_scope(x):
            if plan.takes(x):  # an array: its remembered plan (nn/plan.py), or traced into one
                return plan.forward(self, x)
            return forward_fused(list(self), x)

    def backward_with_context(
        self, context: list[Any], grad_output: np.ndarray, *, input_grad: bool = True
    ) -> np.ndarray | None:
        """Backward through the layers in reverse; ``input_grad=False`` reaches the first layer only.
        Inside ``batch_scope``, as the forward."""
        with batch_scope(grad_output):
            return self._backward_with_context(context, grad_output, input_grad)

    def _backward_with_context(
        self, context: list[Any], grad_output: np.ndarray, input_grad: bool
    ) -> np.ndarray | None:
        layers = list(self)
        if len(context) != len(layers):
            raise ArgumentError(f"Sequential of {len(layers)} layers got a context of {len(context)} entries")
        if not layers:
            return grad_output if input_grad else None
        from .fused import ReluPoolContext, relu_pool_backward

        i = len(layers) - 1
        while i >= 0:
            ctx = context[i]
            if isinstance(ctx, ReluPoolContext):  # layers i - 1 and i ran as one pass (forward_with_context)
                if i == 1 and not input_grad:
                    return None
                grad_output = relu_pool_backward(ctx, grad_output)
                i -= 2
                continue
            grad_output = layers[i].backward_with_context(ctx, grad_output, input_grad=input_grad or i > 0)
            i -= 1
        return grad_output if input_grad else None
