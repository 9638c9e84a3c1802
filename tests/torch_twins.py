"""Torch twins of convprop models with the same module structure, so state_dict names agree."""

from __future__ import annotations

import torch

from convprop import nn


class TResidual(torch.nn.Module):
    def __init__(self, body, shortcut):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x):
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


class TConcat(torch.nn.Module):
    def __init__(self, branches, dim):
        super().__init__()
        for i, b in enumerate(branches):
            self.add_module(str(i), b)
        self.dim = dim

    def forward(self, x):
        return torch.cat([b(x) for b in self.children()], dim=self.dim)


def twin(module: nn.Module) -> torch.nn.Module:
    """The torch module with convprop ``module``'s structure and (float64) weights."""
    t = _twin(module).double()
    t.load_state_dict({k: torch.tensor(v) for k, v in module.state_dict().items()}, strict=True)
    return t


def _twin(m: nn.Module) -> torch.nn.Module:
    c = m.config()
    if isinstance(m, nn.Sequential):
        return torch.nn.Sequential(*(_twin(layer) for layer in m))
    if isinstance(m, nn.Residual):
        return TResidual(_twin(m.body), None if m.shortcut is None else _twin(m.shortcut))
    if isinstance(m, nn.Concat):
        return TConcat([_twin(b) for b in m], m.dim)
    if isinstance(m, nn.Conv2d):
        return torch.nn.Conv2d(
            c["in_channels"], c["out_channels"], c["kernel_size"], c["stride"], c["padding"], c["dilation"],
            c["groups"], c["bias"],
        )  # fmt: skip
    if isinstance(m, nn.Linear):
        return torch.nn.Linear(c["in_features"], c["out_features"], c["bias"])
    if isinstance(m, nn.BatchNorm2d):
        return torch.nn.BatchNorm2d(m.num_features, m.eps, m.momentum)
    simple = {
        nn.ReLU: torch.nn.ReLU,
        nn.Tanh: torch.nn.Tanh,
        nn.Flatten: torch.nn.Flatten,
        nn.MaxPool2d: lambda: torch.nn.MaxPool2d(m.kernel_size, m.stride, m.padding),
        nn.AvgPool2d: lambda: torch.nn.AvgPool2d(m.kernel_size, m.stride, m.padding),
        nn.AdaptiveAvgPool2d: lambda: torch.nn.AdaptiveAvgPool2d(m.output_size),
    }
    return simple[type(m)]()
