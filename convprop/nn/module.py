"""Parameter, Module and Sequential: the state side of the library.

Three kinds of state stay apart (STYLE rule 7): *parameters* (``Parameter``: ``data`` and ``grad``),
*buffers* (arrays such as running statistics, saved but not trained), and *settings* (plain
attributes given to the constructor, recorded by ``config()`` so a checkpoint can rebuild the layer).
Layers hold state, never math: ``forward`` and ``backward`` call ``convprop.functional``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

LAYERS: dict[str, type[Module]] = {}  # class name → class, for rebuilding models from checkpoints


class Parameter:
    """A trainable array: ``data`` is updated in place by optimizers, ``grad`` accumulates in backward."""

    __slots__ = ("data", "grad")

    def __init__(self, data: np.ndarray):
        self.data = np.ascontiguousarray(data)
        self.grad: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def accumulate(self, grad: np.ndarray) -> None:
        """``grad += g`` as PyTorch does, so several backward passes add up until ``zero_grad``."""
        if self.grad is None:
            self.grad = np.array(grad, dtype=self.data.dtype, copy=True)
        else:
            self.grad += grad

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class: ``forward(x)``, ``backward(grad_output) -> grad_input``, parameters, buffers, modes.

    ``backward`` uses what the last ``forward`` cached, and *adds* into each parameter's ``grad``.
    Subclasses list their constructor arguments in ``config()`` so checkpoints can rebuild them.
    """

    registered: ClassVar[bool] = True  # set False in a class body for an abstract helper base

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("registered", True):  # not inherited: subclasses of a helper base register
            LAYERS[cls.__name__] = cls

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() before setting {name!r}")
        if name in self._buffers and not isinstance(value, (Parameter, Module)):
            object.__setattr__(self, name, value)  # a buffer keeps its registration when replaced
            return
        for table in (self._parameters, self._modules, self._buffers):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, value: np.ndarray) -> None:
        """A saved, untrained array (e.g. running statistics)."""
        setattr(self, name, value)
        self._buffers[name] = True

    # --- computation -------------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def backward_params(self, grad_output: np.ndarray) -> None:
        """Accumulate the parameters' gradients only, skipping the input's gradient: for a model's
        first layer, whose input is data (PyTorch likewise skips inputs that do not require grad).
        The default runs :meth:`backward` and drops its result; layers override it to save work."""
        self.backward(grad_output)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

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
        """Every parameter, in registration order (the order PyTorch's ``parameters()`` gives)."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for name in self._buffers:
            yield prefix + name, getattr(self, name)
        for name, child in self._modules.items():
            yield from child.named_buffers(f"{prefix}{name}.")

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
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

    def astype(self, dtype) -> Module:
        """Convert every parameter and floating-point buffer to ``dtype`` (float32 or float64), in place."""
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
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

    def __init__(self, *layers: Module):
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

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self:
            x = layer(x)
        return x

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        for layer in reversed(list(self)):
            grad_output = layer.backward(grad_output)
        return grad_output

    def backward_params(self, grad_output: np.ndarray) -> None:
        """Backward through every layer, but the first computes no input gradient (see Module)."""
        layers = list(self)
        for layer in reversed(layers[1:]):
            grad_output = layer.backward(grad_output)
        if layers:
            layers[0].backward_params(grad_output)
