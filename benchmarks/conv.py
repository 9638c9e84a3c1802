"""Convolution forward + all three gradients, convprop (algorithm="auto") vs PyTorch, fp32.

Run ``python benchmarks/conv.py`` (``--quick`` for fewer repetitions, ``--only a,b`` for some shapes,
``--algorithm NAME`` to force one convprop algorithm where it applies: the evidence for ``auto``'s
rules, ``--stateless`` for the plain ``conv2d`` + ``conv2d_backward`` pair). convprop's side is what a
layer runs — the forward that keeps a context (the padded input, and the unfolded columns where they
fit) and the backward from it — as PyTorch's side is ``F.conv2d`` with autograd, which keeps its own
saved tensors; the stateless pair unfolds the input a second time in the backward. One row per shape:
the minimum time of each side over interleaved repetitions and their ratio (convprop / torch; below 1
means convprop is faster); last, the geometric-mean ratio and the worst.
2-D shapes from the digit models and CNN classics, LeNet-5's 6 → 16 5×5 layer, a 1-D, a 3-D and a
transposed 2-D shape. Targets (issue 15): geometric mean <= 0.85, no shape worse than 1.3.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import geomean, interleaved_min, limited_threads, print_environment

from convprop.errors import ArgumentError


@dataclass(frozen=True)
class Shape:
    name: str
    N: int
    C: int
    size: tuple[int, ...]  # spatial input size; its length is the dimension (1, 2 or 3)
    O: int
    K: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    transposed: bool = False  # conv_transposeNd: weight (C, O/groups, *kernel)


SHAPES = [
    Shape("mnist-1", 64, 1, (28, 28), 32, 3, 1, 1),
    Shape("mnist-2", 64, 32, (14, 14), 64, 3, 1, 1),
    Shape("lenet5-2", 64, 6, (14, 14), 16, 5),  # LeNet-5's second layer
    Shape("cifar", 32, 64, (32, 32), 128, 3, 1, 1),
    Shape("strided", 16, 64, (56, 56), 64, 3, 2, 1),
    Shape("pointwise", 32, 256, (28, 28), 64, 1, 1, 0),
    Shape("depthwise", 32, 64, (56, 56), 64, 3, 1, 1, 64),
    Shape("conv1d", 32, 64, (1000,), 64, 9, 1, 4),
    Shape("conv3d", 8, 16, (16, 16, 16), 32, 3, 1, 1),
    Shape("transposed", 32, 64, (14, 14), 32, 4, 2, 1, transposed=True),
]


def functions(s: Shape):
    """(convprop forward, convprop backward, torch forward) for the shape's dimension and kind."""
    import torch.nn.functional as F

    import convprop.functional as cf

    d = len(s.size)
    kind = "conv_transpose" if s.transposed else "conv"
    return getattr(cf, f"{kind}{d}d"), getattr(cf, f"{kind}{d}d_backward"), getattr(F, f"{kind}{d}d")


def describe(s: Shape) -> str:
    size = "x".join(map(str, s.size))
    kernel = "x".join([str(s.K)] * len(s.size))
    t = "T" if s.transposed else ""
    return f"{s.N},{s.C},{size} -> {s.O}, {kernel}{t}, s{s.stride}, p{s.padding}, g{s.groups}"


def layer_functions(s: Shape):
    """(forward keeping a context, backward from it): what ``nn.Conv{1,2,3}d`` and ``nn.ConvTranspose*d`` call."""
    from convprop.functional import conv as fc
    from convprop.functional import conv_transpose as ft

    d = len(s.size)
    if s.transposed:
        return (lambda x, w, b, **kw: ft.conv_transpose_with_context(x, w, b, **kw, ndim=d)), (
            ft.conv_transpose_backward_from_context
        )
    return (lambda x, w, b, **kw: fc.conv_with_context(x, w, b, **kw, ndim=d)), fc.conv_backward_from_context


def make_runners(s: Shape, rng: np.random.Generator, algorithm: str = "auto", stateless: bool = False):
    import torch

    forward, backward, torch_forward = functions(s)
    x = rng.standard_normal((s.N, s.C, *s.size), dtype=np.float32)
    k = (s.K,) * len(s.size)
    fan_in = s.C // s.groups * s.K ** len(s.size)
    w_shape = (s.C, s.O // s.groups, *k) if s.transposed else (s.O, s.C // s.groups, *k)
    w = rng.standard_normal(w_shape, dtype=np.float32) * np.float32(1 / np.sqrt(fan_in))  # unit-variance outputs
    b = rng.standard_normal(s.O, dtype=np.float32)
    geo = dict(stride=s.stride, padding=s.padding, groups=s.groups)
    dy = rng.standard_normal(forward(x, w, b, **geo).shape, dtype=np.float32)

    def run_stateless():
        y = forward(x, w, b, **geo, algorithm=algorithm)
        dx, dw, db = backward(dy, x, w, **geo, algorithm=algorithm)
        return y, dx, dw, db

    layer_forward, layer_backward = layer_functions(s)

    def run_layer():  # as torch's autograd, the forward keeps what its backward needs
        y, context = layer_forward(x, w, b, **geo, algorithm=algorithm)
        dx, dw, db = layer_backward(dy, context)
        return y, dx, dw, db

    run_convprop = run_stateless if stateless else run_layer

    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_()
    dyt = torch.from_numpy(dy)

    def run_torch():
        xt.grad = wt.grad = bt.grad = None
        y = torch_forward(xt, wt, bt, **geo)
        y.backward(dyt)
        return y, xt.grad, wt.grad, bt.grad

    return run_convprop, run_torch


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (noisier)")
    parser.add_argument("--only", default=None, help="comma-separated shape names to run")
    parser.add_argument("--algorithm", default="auto", help="convprop algorithm (shapes it cannot do are skipped)")
    parser.add_argument("--stateless", action="store_true", help="conv2d + conv2d_backward instead of the layer pair")
    args = parser.parse_args(argv)
    reps = 3 if args.quick else 10
    shapes = [s for s in SHAPES if args.only is None or s.name in args.only.split(",")]
    rng = np.random.default_rng(0)
    with limited_threads():
        print_environment()
        print(f"fp32, forward + grad input/weight/bias, min of {reps} interleaved repetitions\n")
        print(f"convprop algorithm: {args.algorithm}; {'stateless pair' if args.stateless else 'layer pair (context)'}")
        header = f"{'shape':10s} {'N,C,size -> O, kernel, s, p, g':40s}"
        print(f"{header} {'convprop ms':>12s} {'torch ms':>10s} {'ratio':>7s} {'rel diff':>9s}", flush=True)
        ratios = []
        for s in shapes:
            try:
                ours, theirs = make_runners(s, rng, args.algorithm, args.stateless)
                mine = ours()
            except ArgumentError as exc:  # an explicit algorithm that cannot do this shape
                print(f"{s.name:10s} {describe(s):40s} skipped: {exc}", flush=True)
                continue
            diff = max(  # the same work: y, dx, dw, db against PyTorch's, relative to each one's largest value
                float(np.abs(a - b.detach().numpy()).max() / max(np.abs(b.detach().numpy()).max(), 1e-30))
                for a, b in zip(mine, theirs(), strict=True)
            )
            t = interleaved_min({"convprop": ours, "torch": theirs}, reps)
            ratio = t["convprop"] / t["torch"]
            ratios.append(ratio)
            print(
                f"{s.name:10s} {describe(s):40s} {t['convprop'] * 1e3:12.2f} {t['torch'] * 1e3:10.2f} {ratio:7.2f}"
                f" {diff:9.1e}",
                flush=True,
            )
        if ratios:
            print(
                f"\ngeometric-mean ratio {geomean(ratios):.2f}   worst ratio {max(ratios):.2f}  "
                f"over {len(ratios)} shapes (targets <= 0.85, <= 1.3)"
            )


if __name__ == "__main__":
    main()
