"""Choose the default training recipe on a validation split: never on the test set.

The 4,000 training digits of mnist-5k (split seed 0, as `convprop train` uses) are split again,
stratified, into 3,200 for training and 800 for validation (split seed 2024, the same for every
candidate). Each candidate is a set of TrainConfig overrides (plus, optionally, options of lenet itself);
it is trained on the 3,200 with the same code `convprop train` runs (`train.train_epoch`, the
optimizer and schedule factories) and scored by its validation accuracy after the last epoch (and,
since the stroke candidate, also on the validation digits thickened and thinned by one pixel). With
``ema`` the averaged weights are scored, as `convprop train --ema` evaluates and saves them.

Run one candidate at a time (the machine is shared; a candidate is one training run):

    python benchmarks/recipe.py --list
    python benchmarks/recipe.py baseline                  # prints one JSON line
    python benchmarks/recipe.py affine --seed 1 >> recipe.jsonl

Seconds are wall time of the training epochs on 3,200 images on whatever else the machine was doing:
a rough guide to the cost of a candidate, not a benchmark.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import numpy as np
from scipy import ndimage

from convprop import data
from convprop.data.augment import CROSS
from convprop.ema import WeightAverage
from convprop.models import lenet
from convprop.train import TrainConfig, evaluate, make_optimizer, make_schedule, train_epoch

VALIDATION_FRACTION = 0.2  # of each class of the 4,000 training digits: 800 for validation
VALIDATION_SEED = 2024
FOLDS = 5  # --fold: 5-fold cross-validation, 800 validation digits per fold, all 4,000 over the five

# Every candidate is given as changes to 0.1's recipe and 0.1's lenet, so that it runs the same whatever
# convprop train's defaults have since become (they are the chosen candidate: tests/test_train.py).
RECIPE_01 = dict(
    epochs=10, batch_size=64, lr=1e-3, augment=1, rotation=0.0, scale=0.0, shear=0.0, elastic_alpha=0.0, stroke=0.0
)
LENET_01 = dict(hidden=128, dropout=0.25)
AFFINE = dict(rotation=12.0, scale=0.12, shear=12.0)
ELASTIC = dict(elastic_alpha=34.0, elastic_sigma=4.0)
DEFAULT = dict(epochs=20, lr=3e-3, stroke=0.5, **AFFINE, **ELASTIC)  # convprop train's, since the stroke round
CANDIDATES: dict[str, dict] = {
    "baseline": dict(epochs=10),  # the 0.1 default: shifts of 1 px, 10 epochs, Adam 1e-3, cosine
    "affine+elastic": dict(epochs=10, **AFFINE, **ELASTIC),
    "affine+elastic-20": dict(epochs=20, **AFFINE, **ELASTIC),
    "affine+elastic-20-lr3e-3": dict(epochs=20, lr=3e-3, **AFFINE, **ELASTIC),
    "bn-affine+elastic-20-lr3e-3": dict(epochs=20, lr=3e-3, lenet=dict(batch_norm=True), **AFFINE, **ELASTIC),
    "affine+elastic-30-lr3e-3": dict(epochs=30, lr=3e-3, **AFFINE, **ELASTIC),
    "affine+elastic-20-lr5e-3": dict(epochs=20, lr=5e-3, **AFFINE, **ELASTIC),
    "affine+elastic-20-lr3e-3-w24": dict(epochs=20, lr=3e-3, lenet=dict(width=(24, 48)), **AFFINE, **ELASTIC),
    "affine+elastic-20-lr3e-3-stroke": dict(epochs=20, lr=3e-3, stroke=0.5, **AFFINE, **ELASTIC),
    # issue 14, after training got faster (docs/training.md): variations on the stroke default, seeds 0 and 1
    "stroke-20-lr3e-3-p0.3": dict(epochs=20, lr=3e-3, stroke=0.3, **AFFINE, **ELASTIC),
    "stroke-20-lr5e-3": dict(epochs=20, lr=5e-3, stroke=0.5, **AFFINE, **ELASTIC),
    "stroke-25-lr3e-3": dict(epochs=25, lr=3e-3, stroke=0.5, **AFFINE, **ELASTIC),
    "stroke-20-lr3e-3-w20": dict(epochs=20, lr=3e-3, stroke=0.5, lenet=dict(width=(20, 40)), **AFFINE, **ELASTIC),
    # issue 14, third round: the default with an exponential moving average of the weights (--ema), seeds 0 and 1
    "stroke-20-lr3e-3-ema0.999": dict(epochs=20, lr=3e-3, stroke=0.5, ema=0.999, **AFFINE, **ELASTIC),
    "stroke-20-lr3e-3-ema0.995": dict(epochs=20, lr=3e-3, stroke=0.5, ema=0.995, **AFFINE, **ELASTIC),
    # issue 14, fourth round: 5-fold cross-validation (--fold F --seed F, F = 0..4), variations of the default
    **{
        f"cv-{suffix}": DEFAULT | change
        for suffix, change in {
            "default": {},
            "ls0.1": dict(label_smoothing=0.1),
            "drop0": dict(lenet=dict(dropout=0.0)),
            "drop0.5": dict(lenet=dict(dropout=0.5)),
            "h256": dict(lenet=dict(hidden=256)),
            "mild": dict(rotation=8.0, scale=0.08, shear=8.0),
            "bs32-lr2e-3": dict(batch_size=32, lr=2e-3),
            "w24-e14": dict(epochs=14, lenet=dict(width=(24, 48))),
            # the fourth round's second half: the two that gained, together and further
            "h256-bs32-lr2e-3": dict(batch_size=32, lr=2e-3, lenet=dict(hidden=256)),
            "h256-bs32-lr2e-3-drop0": dict(batch_size=32, lr=2e-3, lenet=dict(hidden=256, dropout=0.0)),
            "h512-bs32-lr2e-3": dict(batch_size=32, lr=2e-3, lenet=dict(hidden=512)),
            "h256-bs32-lr3e-3": dict(batch_size=32, lr=3e-3, lenet=dict(hidden=256)),
            "h256-bs32-lr2e-3-w24": dict(batch_size=32, lr=2e-3, lenet=dict(hidden=256, width=(24, 48))),
            "h256-bs16-lr1e-3": dict(batch_size=16, lr=1e-3, lenet=dict(hidden=256)),
            # third part: the best of the second (hidden 256, batch 32, no dropout) in fewer epochs, and its parts
            **{
                f"h256-bs32-lr2e-3-drop0-e{epochs}": dict(
                    epochs=epochs, batch_size=32, lr=2e-3, lenet=dict(hidden=256, dropout=0.0)
                )
                for epochs in (14, 16, 18)
            },
            "bs32-lr2e-3-drop0": dict(batch_size=32, lr=2e-3, lenet=dict(dropout=0.0)),
            "h256-drop0": dict(lenet=dict(hidden=256, dropout=0.0)),
        }.items()
    },
}


CHOSEN = "cv-h256-bs32-lr2e-3-drop0"  # convprop train's default since the fourth round (docs/training.md)


def fold_split(labels: np.ndarray, fold: int, folds: int = FOLDS) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation): validation is fold ``fold`` of a stratified ``folds``-way partition.

    Each class's members are permuted once (VALIDATION_SEED) and dealt into ``folds`` nearly equal parts, so
    the folds are disjoint, cover every digit, and hold each class in proportion.
    """
    gen = np.random.default_rng(VALIDATION_SEED)
    parts: list[list[np.ndarray]] = [[] for _ in range(folds)]
    for label in np.unique(labels):
        members = gen.permutation(np.flatnonzero(labels == label))
        for k, part in enumerate(np.array_split(members, folds)):
            parts[k].append(part)
    val = np.concatenate(parts[fold])
    train = np.concatenate([np.concatenate(p) for k, p in enumerate(parts) if k != fold])
    return gen.permutation(train), gen.permutation(val)


def run(name: str, seed: int, fold: int | None = None) -> dict:
    overrides = dict(CANDIDATES[name])
    options = LENET_01 | overrides.pop("lenet", {})  # lenet's own options (width, hidden, dropout, batch_norm)
    config = TrainConfig(**(RECIPE_01 | overrides), seed=seed, progress=False)
    config.validate()
    rng = np.random.default_rng(config.seed)  # as fit() does: one Generator for weights, order, distortions
    dataset = data.load_dataset(config.dataset, seed=config.seed)
    if fold is None:
        train, val = data.stratified_split(dataset.train_labels, VALIDATION_FRACTION, VALIDATION_SEED)
    else:
        train, val = fold_split(dataset.train_labels, fold)
    norm = data.Normalization.fit(dataset.train_images[train])
    raw_val = dataset.train_images[val]
    x_train, x_val = norm(dataset.train_images[train]), norm(raw_val)
    y_train, y_val = dataset.train_labels[train], dataset.train_labels[val]
    background = -norm.mean[0] / norm.std[0]
    model = lenet(1, dataset.image_size, dataset.num_classes, rng=int(rng.integers(2**31)), **options)
    opt = make_optimizer(config, model.parameters())
    schedule = make_schedule(config, opt)
    average = WeightAverage(model.parameters(), config.ema) if config.ema else None  # as fit() does
    seconds, curve = 0.0, []
    for epoch in range(config.epochs):
        _, _, s = train_epoch(
            model, opt, x_train, y_train, config, rng, f"epoch {epoch + 1}", fill=background, average=average
        )
        seconds += s
        if average is not None:
            with average.applied():  # the averaged weights are scored, the trained ones train on
                curve.append(round(evaluate(model, x_val, y_val).accuracy, 4))
        else:
            curve.append(round(evaluate(model, x_val, y_val).accuracy, 4))
        if schedule is not None:
            schedule.step()
    if average is not None:
        average.copy_to_model()  # the thickened and thinned digits too: the weights fit() would save
    pen = {  # the validation digits drawn with a pen one pixel wider / finer (robustness's "cross" rows)
        f"validation_{kind}": round(evaluate(model, norm(change(raw_val, footprint=CROSS)), y_val).accuracy, 4)
        for kind, change in (("thickened", ndimage.grey_dilation), ("thinned", ndimage.grey_erosion))
    }
    return {
        "candidate": name,
        "seed": seed,
        "fold": fold,
        "validation_accuracy": curve[-1],
        **pen,
        "validation_curve": curve,
        "train_seconds": round(seconds, 1),
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k in RECIPE_01 | overrides}
        | {"lenet": options},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidate", nargs="?", choices=sorted(CANDIDATES))
    parser.add_argument("--seed", type=int, default=0, help="weights, batch order and distortions (default: 0)")
    parser.add_argument(
        "--fold", type=int, choices=range(FOLDS), help=f"validate on this fold of a stratified {FOLDS}-way partition"
    )
    parser.add_argument("--list", action="store_true", help="print the candidates and exit")
    args = parser.parse_args(argv)
    if args.list or args.candidate is None:
        for name, overrides in CANDIDATES.items():
            print(f"{name:28s} {overrides}")
        return 0
    start = time.perf_counter()
    result = run(args.candidate, args.seed, args.fold)
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
