"""An exponential moving average of a model's weights (``convprop train --ema DECAY``).

After every optimizer step each parameter's average moves towards the new weights::

    avg ← d_t · avg + (1 − d_t) · w,    d_t = d · (1 − d^(t−1)) / (1 − d^t)

which is the plain average ``m ← d·m + (1 − d)·w`` started from zero and divided by ``1 − d^t``
(Adam's bias correction): the weights of step k count with (1 − d)·d^(t−k) / (1 − d^t), they add up
to one, and the initial random weights count not at all (d_1 = 0: after the first step the average
is that step's weights). An average started from the initial weights instead (PyTorch's
``AveragedModel`` copies the first weights it sees) would, at d = 0.999 and the default run's
1,260 steps, still give the random initialisation 0.999^1260 ≈ 28% of the final weights.

Only parameters are averaged; buffers (batch-norm statistics) stay the model's own. Under MPI every
rank steps the same allreduced weights, so every rank computes the same average with nothing to
communicate.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from . import nn
from .errors import ArgumentError


class WeightAverage:
    """The bias-corrected exponential moving average of ``params``, with ``decay`` in (0, 1)."""

    def __init__(self, params: list[nn.Parameter], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ArgumentError(f"decay must be between 0 and 1 (exclusive), got {decay!r}")
        self.params = params
        self.decay = float(decay)
        self.steps = 0
        self.average = [p.data.copy() for p in params]  # same dtype as each parameter; overwritten at step 1

    def update(self) -> None:
        """Fold the parameters' current values into the average (call after each optimizer step)."""
        self.steps += 1
        d, t = self.decay, self.steps
        keep = d * (1.0 - d ** (t - 1)) / (1.0 - d**t)  # d_t above: 0 at the first step
        for avg, p in zip(self.average, self.params, strict=True):
            avg *= keep
            avg += (1.0 - keep) * p.data

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model for the block (evaluation, saving), the trained ones after."""
        trained = [p.data.copy() for p in self.params]
        self.copy_to_model()
        try:
            yield
        finally:
            for p, w in zip(self.params, trained, strict=True):
                np.copyto(p.data, w)

    def copy_to_model(self) -> None:
        """Write the averaged weights into the parameters, in place (for good: the end of a run)."""
        if self.steps:
            for p, avg in zip(self.params, self.average, strict=True):
                np.copyto(p.data, avg)
