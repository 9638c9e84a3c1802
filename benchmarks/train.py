"""One training epoch of the default `convprop train` model on mnist-5k: convprop vs PyTorch.

Both sides get the same model, initial weights, batch order, augmentation shifts *and dropout
masks* (the PyTorch model applies convprop's masks), so their runs differ only by floating-point
rounding. Epochs are interleaved (convprop epoch k, torch epoch k, ...) and each side's fastest epoch
is reported, with the ratio convprop / torch and both test accuracies after the last epoch.
Targets (issue 5): epoch time ratio <= 1.3; accuracies within 0.5 points after 5 epochs.

    python benchmarks/train.py            # 5 epochs
    python benchmarks/train.py --epochs 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import limited_threads, print_environment


def torch_twin(model, masks):
    """The same network in PyTorch, with convprop's weights and a dropout that replays ``masks``."""
    import torch

    class ReplayDropout(torch.nn.Module):
        def __init__(self, p):
            super().__init__()
            self.p = p

        def forward(self, x):
            if not self.training:
                return x
            return x * torch.from_numpy(masks.pop(0)) / (1 - self.p)

    layers = []
    for layer in model:
        name = type(layer).__name__
        if name == "Conv2d":
            layers.append(
                torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, padding=layer.padding)
            )
        elif name == "Linear":
            layers.append(torch.nn.Linear(layer.in_features, layer.out_features))
        elif name == "MaxPool2d":
            layers.append(torch.nn.MaxPool2d(layer.kernel_size))
        elif name == "Dropout":
            layers.append(ReplayDropout(layer.p))
        else:
            layers.append(getattr(torch.nn, name)())
    twin = torch.nn.Sequential(*layers)
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
    return twin


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)

    import torch

    from convprop import data, optim
    from convprop.functional.loss import cross_entropy
    from convprop.models import build_model
    from convprop.train import TrainConfig, evaluate

    config = TrainConfig(epochs=args.epochs)
    dataset = data.load_dataset(config.dataset, seed=config.seed)
    norm = data.Normalization.fit(dataset.train_images)
    x_train, x_test = norm(dataset.train_images), norm(dataset.test_images)
    y_train, y_test = dataset.train_labels, dataset.test_labels
    model = build_model(config.model, 1, dataset.image_size, dataset.num_classes, rng=0)
    dropout_index = next(i for i, m in enumerate(model) if type(m).__name__ == "Dropout")
    masks: list[np.ndarray] = []
    twin = torch_twin(model, masks)

    opt = optim.Adam(model.parameters(), lr=config.lr)
    schedule = optim.CosineAnnealingLR(opt, T_max=config.epochs)
    topt = torch.optim.Adam(twin.parameters(), lr=config.lr)
    tschedule = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=config.epochs)

    def batches(seed):
        rng = np.random.default_rng(seed)
        for xb, yb in data.iterate_batches(x_train, y_train, config.batch_size, shuffle=True, rng=rng):
            yield data.random_shift(xb, config.augment, rng), yb

    def convprop_epoch(epoch):
        model.train()
        for xb, yb in batches(epoch):
            opt.zero_grad()
            logits, context = model.forward_with_context(xb)  # a Sequential's context: one per layer
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

    with limited_threads():
        print_environment()
        print(
            f"\n{config.model} on {config.dataset}: {len(x_train)} train / {len(x_test)} test images, batch "
            f"{config.batch_size}, Adam lr {config.lr} cosine, {args.epochs} epochs interleaved\n"
        )
        print(f"{'epoch':>5} {'convprop s':>11} {'torch s':>8} {'ratio':>6} {'convprop acc':>13} {'torch acc':>10}")
        best = {"convprop": float("inf"), "torch": float("inf")}
        for epoch in range(1, args.epochs + 1):
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
            f"(target <= 1.3)"
        )
        print(
            f"test accuracy after {args.epochs} epochs: convprop {100 * acc:.2f}%, torch {100 * tacc:.2f}%, "
            f"difference {100 * abs(acc - tacc):.2f} points (target <= 0.5)"
        )


if __name__ == "__main__":
    main()
