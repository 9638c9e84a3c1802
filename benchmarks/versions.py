"""One convprop checkout's lenet training epoch against PyTorch: compare two versions of convprop.

Run it once per checkout, alternating the checkouts, several times (one run's ratio moves by ±0.15 on
a shared machine):

    git worktree add /tmp/v01 7809290                  # convprop 0.1
    for i in 1 2 3 4; do python benchmarks/versions.py /tmp/v01; python benchmarks/versions.py .; done

The loop and the torch twin are the same for every version; only convprop's calls differ (0.1's
``forward``/``backward_params``, the context protocol since). Epochs alternate (convprop, torch, ...)
after one warm-up epoch each; the line printed gives each side's fastest epoch and their ratio, and the
median of the per-epoch ratios. Adam, lr 1e-3, batches of 64 with the ±2 px shifts of 0.1's default.
convprop imported from a checkout tunes malloc as that checkout does; to give 0.1 the same allocator,
set ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824`` (see ``convprop/heap.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def torch_twin(model, masks):
    """lenet in PyTorch with ``model``'s weights and a dropout that replays convprop's ``masks``.

    Not ``twins.torch_twin``: that one reads ``Module.config()`` and the graph containers, which 0.1 lacks;
    this reads only the layer attributes every version has."""
    import torch

    class ReplayDropout(torch.nn.Module):
        def __init__(self, p):
            super().__init__()
            self.p = p

        def forward(self, x):
            return x * torch.from_numpy(masks.pop(0)) / (1 - self.p) if self.training else x

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
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    return twin


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", help="a directory holding the convprop package to measure")
    parser.add_argument("--epochs", type=int, default=6, help="timed epochs (after one warm-up)")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.abspath(args.checkout))
    import torch
    from threadpoolctl import threadpool_limits

    from convprop import data, optim
    from convprop.functional.loss import cross_entropy
    from convprop.models import build_model

    torch.set_num_threads(2)
    dataset = data.load_dataset("mnist-5k", seed=0)
    norm = data.Normalization.fit(dataset.train_images)
    x_train, y_train = norm(dataset.train_images), dataset.train_labels
    model = build_model("lenet", 1, dataset.image_size, dataset.num_classes, rng=0)
    layers = list(model)
    dropout = next(m for m in layers if type(m).__name__ == "Dropout")
    masks: list[np.ndarray] = []
    twin = torch_twin(model, masks)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    topt = torch.optim.Adam(twin.parameters(), lr=1e-3)
    contexts = hasattr(model, "forward_with_context")  # the protocol since issue 11; 0.1 kept state on layers

    def batches(epoch):
        rng = np.random.default_rng(epoch)
        for xb, yb in data.iterate_batches(x_train, y_train, 64, shuffle=True, rng=rng):
            yield data.random_shift(xb, 2, rng), yb

    def convprop_epoch(epoch):
        for xb, yb in batches(epoch):
            opt.zero_grad()
            if contexts:
                logits, context = model.forward_with_context(xb)
                masks.append(context[layers.index(dropout)])
                _, grad = cross_entropy(logits, yb)
                model.backward_with_context(context, grad, input_grad=False)
            else:
                logits = model(xb)
                masks.append(dropout._mask)
                _, grad = cross_entropy(logits, yb)
                model.backward_params(grad)
            opt.step()

    def torch_epoch(epoch):
        for xb, yb in batches(epoch):
            topt.zero_grad()
            torch.nn.functional.cross_entropy(twin(torch.from_numpy(xb)), torch.from_numpy(yb)).backward()
            topt.step()

    ours, theirs = [], []
    with threadpool_limits(2):
        model.train()
        twin.train()
        for epoch in range(args.epochs + 1):
            t0 = time.perf_counter()
            convprop_epoch(epoch)
            t1 = time.perf_counter()
            torch_epoch(epoch)
            t2 = time.perf_counter()
            if epoch:  # epoch 0 warms caches and compiled kernels
                ours.append(t1 - t0)
                theirs.append(t2 - t1)
    ours_a, theirs_a = np.array(ours), np.array(theirs)
    print(
        f"{args.checkout}: fastest convprop {ours_a.min():.3f} s torch {theirs_a.min():.3f} s "
        f"ratio {ours_a.min() / theirs_a.min():.3f} | median epoch ratio {np.median(ours_a / theirs_a):.3f}"
    )


if __name__ == "__main__":
    main()
