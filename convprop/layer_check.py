"""Finite-difference checks of every layer type, as run by ``convprop gradcheck``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import nn
from .gradcheck import gradcheck_module


@dataclass
class LayerCheck:
    layer: str
    tensors: int  # input + parameters checked
    max_abs: float
    max_rel: float
    ok: bool


def _cases() -> list[tuple[str, Callable[[], nn.Module], tuple[int, ...]]]:
    return [
        ("Conv2d", lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1, rng=0, dtype=np.float64), (2, 2, 7, 6)),
        (
            "Conv2d (groups, dilation, reflect)",
            lambda: nn.Conv2d(
                4, 4, 3, dilation=2, groups=2, padding=2, padding_mode="reflect", rng=1, dtype=np.float64
            ),
            (1, 4, 7, 7),
        ),
        (
            "Conv2d (untied bias, seed 000)",
            lambda: nn.Conv2d(2, 2, 3, bias="untied", input_size=(6, 5), rng=2, dtype=np.float64),
            (2, 2, 6, 5),
        ),
        ("Linear", lambda: nn.Linear(5, 3, rng=3, dtype=np.float64), (4, 5)),
        ("MaxPool2d", lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 2, 7, 7)),
        ("AvgPool2d", lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (2, 2, 7, 7)),
        ("AdaptiveAvgPool2d", lambda: nn.AdaptiveAvgPool2d((3, 2)), (2, 2, 7, 5)),
        ("BatchNorm2d (train)", lambda: nn.BatchNorm2d(3, dtype=np.float64), (4, 3, 3, 3)),
        ("BatchNorm2d (eval)", lambda: nn.BatchNorm2d(3, dtype=np.float64).eval(), (4, 3, 3, 3)),
        ("ReLU", nn.ReLU, (3, 7)),
        ("LeakyReLU", lambda: nn.LeakyReLU(0.1), (3, 7)),
        ("Sigmoid", nn.Sigmoid, (3, 7)),
        ("Tanh", nn.Tanh, (3, 7)),
        ("GELU", nn.GELU, (3, 7)),
        ("Softmax", nn.Softmax, (3, 7)),
        ("LogSoftmax", nn.LogSoftmax, (3, 7)),
        ("Flatten", nn.Flatten, (2, 3, 2, 2)),
        ("Dropout (fixed mask)", lambda: _ReseededDropout(0.3), (4, 6)),
    ]


class _ReseededDropout(nn.Dropout):
    """Dropout whose mask is the same on every call, so finite differences see one fixed function."""

    registered = False

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        self.rng = np.random.default_rng(0)
        return super().forward_with_context(x)


def check_all_layers(seed: int = 0) -> list[LayerCheck]:
    """Run ``gradcheck_module`` on one instance of every layer type, in float64."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, make, shape in _cases():
        layer = make()
        x = rng.standard_normal(shape)
        if isinstance(layer, (nn.ReLU, nn.LeakyReLU)):
            x = np.where(np.abs(x) < 1e-3, 0.5, x)  # keep away from the kink at 0
        result = gradcheck_module(layer, x, raise_on_failure=False, seed=seed)
        rows.append(
            LayerCheck(name, len(result.names), max(result.max_abs_error), max(result.max_rel_error), result.ok)
        )
    return rows
