"""Training and evaluation of the digit recogniser: one config dataclass, ``fit`` and ``evaluate``.

The config and what its options build are in :mod:`convprop.train_config`, the files of a run directory
(metrics, plots) in :mod:`convprop.train_files`; their names are imported from here as before.

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

import json
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, checkpoint, data, distributed, nn, optim
from .ema import WeightAverage
from .errors import ConfigError
from .functional import threads
from .functional.activation import softmax
from .functional.loss import cross_entropy
from .metrics import confusion_matrix, precision_recall
from .models import build_model
from .run_status import Diverged, TrainingDivergedError, check_finite, diverged_error, saved_epoch

# `name as name`: re-exported, since code imported them from here before they moved (train_config, train_files)
from .train_config import OPTIMIZERS as OPTIMIZERS
from .train_config import SCHEDULES as SCHEDULES
from .train_config import TrainConfig, distort, make_optimizer, make_schedule
from .train_config import option as option
from .train_files import CHECKPOINT_NAME, METRICS_NAME, PLOT_NAMES, check_run_dir, write_metrics, write_plots
from .train_files import versions as versions


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
    progress = _progress(len(x), desc, config.progress and world.rank == 0)
    # BLAS on one thread for the whole epoch, not only inside the model's passes: the distortions'
    # smoothing products would otherwise leave a BLAS thread spinning on the core the next step's
    # passes split onto (functional/threads.py)
    with progress as bar, threads.blas_single_threaded():
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
        write_metrics(run_dir, config, history, None, dataset.classes, status)  # a killed run says "running"
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
                write_metrics(run_dir, config, history, test, dataset.classes, status)
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
    files.append(write_metrics(run_dir, config, history, test, dataset.classes, status))
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
