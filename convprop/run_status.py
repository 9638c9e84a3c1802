"""How a training run ends, besides finishing: the statuses metrics.json records, and divergence.

A run is ``"running"`` from the moment its directory exists (so a killed run never looks finished),
then ``"finished"``, ``"interrupted"`` (Ctrl-C) or ``"diverged"``: the loss or the weights stopped
being finite, which :class:`TrainingDivergedError` reports with the epoch and step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import checkpoint, nn
from .errors import ConfigError

if TYPE_CHECKING:
    from .train import Evaluation, TrainConfig

STATUSES = ("running", "finished", "interrupted", "diverged")  # metrics.json's "status"


class TrainingDivergedError(ConfigError):
    """The loss or the weights stopped being finite: the options (usually --lr) make training diverge.

    ``epoch`` and ``step`` (1-based, ``step`` within the epoch; None when the weights were found
    non-finite after the epoch's last step) say where; ``checkpoint`` is the last good one kept, or None.
    """

    def __init__(self, message: str, *, epoch: int, step: int | None, checkpoint: Path | None):
        super().__init__(message)
        self.epoch, self.step, self.checkpoint = epoch, step, checkpoint


class Diverged(Exception):
    """Raised inside an epoch; fit turns it into TrainingDivergedError once the files are in order."""

    def __init__(self, step: int | None, what: str):
        super().__init__(what)
        self.step, self.what = step, what


def saved_epoch(ckpt: Path) -> int:
    """The epoch recorded in a checkpoint this run wrote (0 if there is none, or it says none)."""
    if not ckpt.exists():
        return 0
    try:
        return int(checkpoint.metadata(ckpt).get("epoch", 0))
    except ValueError:
        return 0


def check_finite(model: nn.Module, test: Evaluation) -> None:
    """Raise Diverged (after the epoch's last step) if a weight or the test loss is not finite."""
    for name, p in model.named_parameters():
        if not np.isfinite(p.data).all():
            raise Diverged(None, f"parameter {name} holds {int((~np.isfinite(p.data)).sum())} non-finite value(s)")
    if not np.isfinite(test.loss):
        raise Diverged(None, f"the test loss is {test.loss}")


def diverged_error(config: TrainConfig, epoch: int, exc: Diverged, kept: Path | None) -> TrainingDivergedError:
    where = f"epoch {epoch}, step {exc.step}" if exc.step is not None else f"the end of epoch {epoch}"
    keeping = f"the checkpoint of epoch {epoch - 1} is kept in {kept}" if kept else "no checkpoint was written"
    return TrainingDivergedError(
        f"training diverged at {where}: {exc.what}; {keeping}. Try a smaller --lr (it was {config.lr:g})",
        epoch=epoch,
        step=exc.step,
        checkpoint=kept,
    )
