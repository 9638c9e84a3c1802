"""Training epochs of the default `convprop train` model (lenet) and resnet on mnist-5k: convprop vs PyTorch.

Both sides get the same model, initial weights, batch order, augmentation shifts *and dropout
masks* (the PyTorch model applies convprop's masks), so their runs differ only by floating-point
rounding. Epochs are interleaved (convprop epoch k, torch epoch k, ...) and each side's fastest epoch
is reported, with the ratio convprop / torch and both test accuracies after the last epoch.
Targets (issue 15): epoch time ratio <= 0.9 for lenet, <= 1.0 for resnet; accuracies within 0.3 points.

    python benchmarks/train.py                      # both models, 5 epochs each
    python benchmarks/train.py --models lenet --epochs 2
    python benchmarks/train.py --seeds 0-7          # eight seeds each: the accuracies' mean difference

One run's difference is noise more than anything: 1,000 test images near 96% accuracy give each run a
standard error of about 0.6 points, and two runs that share every input but the rounding part ways
within an epoch (resnet at seed 0 after 5 epochs: +0.6, at seeds 1–3: −0.4, −0.5, −0.1 points).
``--seeds`` reads the accuracy target on the mean over several seeds, each seed's difference listed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import limited_threads, print_environment
from twins import torch_twin


def replaying_twin(model, masks):
    """The same network in PyTorch (``twins.torch_twin``), with a dropout that replays ``masks``."""
    import torch

    class ReplayDropout(torch.nn.Module):
        def __init__(self, p):
            super().__init__()
            self.p = p

        def forward(self, x):
            if not self.training:
                return x
            return x * torch.from_numpy(masks.pop(0)) / (1 - self.p)

    return torch_twin(model, dropout=ReplayDropout)


TARGETS = {"lenet": 0.9, "resnet": 1.0}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--models", default="lenet,resnet", help="comma-separated model names")
    parser.add_argument(
        "--seed", type=int, default=0, help="initial weights and batch order (0: the figures in the README)"
    )
    parser.add_argument("--seeds", default=None, help="several seeds, e.g. 0-7 or 0,3,5: their mean difference")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seeds is None else parse_seeds(args.seeds)
    with limited_threads():
        print_environment()
        for name in args.models.split(","):
            results = [run(name, args.epochs, seed) for seed in seeds]
            if len(results) > 1:
                summarise(name, seeds, results)


def parse_seeds(text: str) -> list[int]:
    """``0-7`` or ``0,3,5`` as a list of seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        seeds.extend(range(int(first), int(last or first) + 1))
    return seeds


def summarise(name: str, seeds: list[int], results: list[tuple[float, float, float]]) -> None:
    """The epoch ratios' spread and the accuracies' mean difference over the seeds."""
    ratios, ours, theirs = (np.array(column) for column in zip(*results, strict=True))
    differences = 100 * (ours - theirs)
    listed = ", ".join(f"{seed}: {d:+.2f}" for seed, d in zip(seeds, differences, strict=True))
    print(
        f"\n{name} over seeds {seeds}: fastest-epoch ratio {ratios.min():.2f}–{ratios.max():.2f} "
        f"(target <= {TARGETS.get(name, 1.0)}); mean test accuracy convprop {100 * ours.mean():.2f}%, "
        f"torch {100 * theirs.mean():.2f}%, difference {abs(differences.mean()):.2f} points (target <= 0.3; "
        f"convprop − torch per seed {listed}; their standard deviation {differences.std(ddof=1):.2f})"
    )


def run(model_name: str, epochs: int, seed: int = 0) -> tuple[float, float, float]:
    """Interleaved epochs of one model on both sides; prints each epoch and the fastest of each.
    Returns (fastest-epoch ratio, convprop's test accuracy, PyTorch's) after the last epoch."""
    import torch

    from convprop import data, optim
    from convprop.functional.loss import cross_entropy
    from convprop.models import build_model
    from convprop.train import TrainConfig, evaluate

    config = TrainConfig(epochs=epochs, model=model_name)
    dataset = data.load_dataset(config.dataset, seed=config.seed)
    norm = data.Normalization.fit(dataset.train_images)
    x_train, x_test = norm(dataset.train_images), norm(dataset.test_images)
    y_train, y_test = dataset.train_labels, dataset.test_labels
    model = build_model(config.model, 1, dataset.image_size, dataset.num_classes, rng=seed)
    dropout_index = next((i for i, m in enumerate(model) if type(m).__name__ == "Dropout"), None)
    masks: list[np.ndarray] = []
    twin = replaying_twin(model, masks)

    opt = optim.Adam(model.parameters(), lr=config.lr)
    schedule = optim.CosineAnnealingLR(opt, T_max=config.epochs)
    topt = torch.optim.Adam(twin.parameters(), lr=config.lr)
    tschedule = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=config.epochs)

    def batches(epoch):
        rng = np.random.default_rng(1000 * seed + epoch)  # (seed 0: the epoch number, as before)
        for xb, yb in data.iterate_batches(x_train, y_train, config.batch_size, shuffle=True, rng=rng):
            yield data.random_shift(xb, config.augment, rng), yb

    def convprop_epoch(epoch):
        model.train()
        for xb, yb in batches(epoch):
            opt.zero_grad()
            logits, context = model.forward_with_context(xb)  # a Sequential's context: one per layer
            if dropout_index is not None:
                masks.append(context[dropout_index])  # the mask this call drew, replayed by the torch twin
            _, grad = cross_entropy(logits, yb)
            model.backward_with_context(context, grad, input_grad=False)
            opt.step()
        schedule.step()

    def torch_epoch(epoch):
        twin.train()
        for xb, yb in batches(epoch):
            topt.zero_grad()
            loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(xb)), torch.from_numpy(yb))
            loss.backward()
            topt.step()
        tschedule.step()

    def torch_accuracy():
        twin.eval()
        with torch.no_grad():
            return float((twin(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())

    print(
        f"\n{config.model} on {config.dataset}: {len(x_train)} train / {len(x_test)} test images, batch "
        f"{config.batch_size}, Adam lr {config.lr} cosine, {epochs} epochs interleaved, seed {seed}\n"
    )
    print(f"{'epoch':>5} {'convprop s':>11} {'torch s':>8} {'ratio':>6} {'convprop acc':>13} {'torch acc':>10}")
    best = {"convprop": float("inf"), "torch": float("inf")}
    for epoch in range(1, epochs + 1):
        times = {}
        for name, fn in (("convprop", convprop_epoch), ("torch", torch_epoch)):
            t0 = time.perf_counter()
            fn(epoch)
            times[name] = time.perf_counter() - t0
            best[name] = min(best[name], times[name])
        acc, tacc = evaluate(model, x_test, y_test).accuracy, torch_accuracy()
        print(
            f"{epoch:5d} {times['convprop']:11.2f} {times['torch']:8.2f} {times['convprop'] / times['torch']:6.2f} "
            f"{100 * acc:12.2f}% {100 * tacc:9.2f}%",
            flush=True,
        )
    ratio = best["convprop"] / best["torch"]
    print(
        f"\nfastest epoch: convprop {best['convprop']:.2f} s, torch {best['torch']:.2f} s, ratio {ratio:.2f} "
        f"(target <= {TARGETS.get(model_name, 1.0)})"
    )
    print(
        f"test accuracy after {epochs} epochs: convprop {100 * acc:.2f}%, torch {100 * tacc:.2f}%, "
        f"difference {100 * abs(acc - tacc):.2f} points (target <= 0.3)"
    )
    return ratio, acc, tacc


if __name__ == "__main__":
    main()
