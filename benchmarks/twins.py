"""PyTorch twins of convprop models: the same module structure, so state_dict names and weights agree.

Used by ``train.py`` and ``inference.py`` (benchmarks only; convprop never imports torch). Dropout may
be replaced by a module that replays convprop's masks, so both sides of a training run draw the same.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from convprop import nn


class TResidual(torch.nn.Module):
    def __init__(self, body: torch.nn.Module, shortcut: torch.nn.Module | None):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x):
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


def torch_twin(model: nn.Module, dropout: Callable[[float], torch.nn.Module] | None = None) -> torch.nn.Module:
    """The torch module with ``model``'s structure and weights (in the weights' dtype)."""
    twin = _twin(model, dropout or torch.nn.Dropout)
    state = model.state_dict()
    dtype = next(iter(state.values())).dtype if state else np.float32
    twin = twin.double() if dtype == np.float64 else twin.float()
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
    return twin


def _twin(m: nn.Module, dropout: Callable[[float], torch.nn.Module]) -> torch.nn.Module:
    if isinstance(m, nn.Sequential):
        return torch.nn.Sequential(*(_twin(layer, dropout) for layer in m))
    if isinstance(m, nn.Residual):
        return TResidual(_twin(m.body, dropout), None if m.shortcut is None else _twin(m.shortcut, dropout))
    c = m.config()
    if isinstance(m, nn.Conv2d):
        return torch.nn.Conv2d(c["in_channels"], c["out_channels"], c["kernel_size"], c["stride"], c["padding"],
                               c["dilation"], c["groups"], c["bias"])  # fmt: skip
    if isinstance(m, nn.Linear):
        return torch.nn.Linear(c["in_features"], c["out_features"], c["bias"])
    if isinstance(m, nn.BatchNorm2d):
        return torch.nn.BatchNorm2d(m.num_features, m.eps, m.momentum)
    if isinstance(m, nn.Dropout):
        return dropout(m.p)
    simple = {
        nn.ReLU: torch.nn.ReLU,
        nn.Flatten: torch.nn.Flatten,
        nn.MaxPool2d: lambda: torch.nn.MaxPool2d(m.kernel_size, m.stride, m.padding),
        nn.AdaptiveAvgPool2d: lambda: torch.nn.AdaptiveAvgPool2d(m.output_size),
    }
    return simple[type(m)]()
