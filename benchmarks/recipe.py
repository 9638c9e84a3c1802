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

AFFINE = dict(rotation=12.0, scale=0.12, shear=12.0)
ELASTIC = dict(elastic_alpha=34.0, elastic_sigma=4.0)
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
}


def run(name: str, seed: int) -> dict:
    overrides = dict(CANDIDATES[name])
    options = overrides.pop("lenet", {})  # lenet's own options (width, hidden, batch_norm), else its defaults
    config = TrainConfig(**overrides, seed=seed, progress=False)
    config.validate()
    rng = np.random.default_rng(config.seed)  # as fit() does: one Generator for weights, order, distortions
    dataset = data.load_dataset(config.dataset, seed=config.seed)
    train, val = data.stratified_split(dataset.train_labels, VALIDATION_FRACTION, VALIDATION_SEED)
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
        "validation_accuracy": curve[-1],
        **pen,
        "validation_curve": curve,
        "train_seconds": round(seconds, 1),
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k in overrides} | {"lenet": options},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidate", nargs="?", choices=sorted(CANDIDATES))
    parser.add_argument("--seed", type=int, default=0, help="weights, batch order and distortions (default: 0)")
    parser.add_argument("--list", action="store_true", help="print the candidates and exit")
    args = parser.parse_args(argv)
    if args.list or args.candidate is None:
        for name, overrides in CANDIDATES.items():
            print(f"{name:28s} {overrides}")
        return 0
    start = time.perf_counter()
    result = run(args.candidate, args.seed)
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
