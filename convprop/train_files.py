"""What a training run writes into its run directory: the file names, the check of an ``--out-dir``,
``metrics.json`` and the five plots.

:func:`check_run_dir` refuses an ``--out-dir`` without creating anything (``convprop.train.prepare_run_dir``
then creates it). ``metrics.json`` is strict JSON (a NaN or infinite number is written as ``null``), written
atomically; the plots are drawn by :mod:`convprop.plots` (matplotlib, imported only when a run draws them).
The checkpoint itself is written by :mod:`convprop.checkpoint`.
"""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__, nn
from .errors import ConfigError
from .fileio import write_json_atomic
from .models import feature_maps
from .train_config import TrainConfig

if TYPE_CHECKING:
    from .train import Evaluation

CHECKPOINT_NAME = "model.safetensors"
PLOT_NAMES = ("learning_curves.png", "confusion_matrix.png", "filters.png", "feature_maps.png", "worst.png")
METRICS_NAME = "metrics.json"


def check_run_dir(config: TrainConfig) -> None:
    """Refuse an --out-dir that cannot be used, without creating anything: not a directory, or has files."""
    if not config.out_dir:
        return
    run_dir = Path(config.out_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"output path {str(run_dir)!r} exists and is not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not config.force:
        raise ConfigError(f"run directory {str(run_dir)!r} already has files; choose another --out-dir or pass --force")


def versions() -> dict[str, str]:
    import scipy

    return {
        "convprop": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
    }


def write_metrics(
    run_dir: Path,
    config: TrainConfig,
    history: list[dict[str, Any]],
    test: Evaluation | None,
    classes: Sequence[str],
    status: str,
) -> Path:
    """metrics.json, strict JSON (non-finite numbers as null), with ``status`` one of STATUSES."""
    report: dict[str, Any] = {
        "status": status,
        "config": dataclasses.asdict(config),
        "versions": versions(),
        "epochs": history,
        "interrupted": status == "interrupted",
        "test": None,
        "total_train_seconds": sum(h["seconds"] for h in history),
    }
    if test is not None:
        precision, recall = test.per_class()
        report["test"] = {
            "loss": test.loss,
            "accuracy": test.accuracy,
            "per_class": {
                c: {"precision": float(p), "recall": float(r)}
                for c, p, r in zip(classes, precision, recall, strict=True)
            },
            "confusion_matrix": test.confusion.tolist(),
        }
    return write_json_atomic(run_dir / METRICS_NAME, report)


def write_plots(
    run_dir: Path,
    model: nn.Module,
    history: list[dict[str, Any]],
    test: Evaluation,
    x_test: np.ndarray,
    raw_test_images: np.ndarray,
    y_test: np.ndarray,
    classes: Sequence[str],
) -> list[Path]:
    """The five pictures of a run (see the module docstring)."""
    from . import plots

    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    true_prob = test.probabilities[np.arange(len(y_test)), y_test]
    worst = np.argsort(true_prob)[:16]  # lowest probability given to the right answer
    sample = int(np.argmax(test.predictions == y_test))  # a correctly classified test digit
    maps = feature_maps(model, x_test[sample])
    return [
        plots.plot_learning_curves(history, run_dir / "learning_curves.png"),
        plots.plot_confusion_matrix(test.confusion, classes, run_dir / "confusion_matrix.png"),
        *([plots.plot_filters(first_conv.weight.data, run_dir / "filters.png")] if first_conv else []),
        plots.plot_feature_maps(raw_test_images[sample, 0], maps, run_dir / "feature_maps.png"),
        plots.plot_worst(
            raw_test_images[worst],
            y_test[worst],
            test.predictions[worst],
            test.probabilities[worst, test.predictions[worst]],
            classes,
            run_dir / "worst.png",
        ),
    ]
