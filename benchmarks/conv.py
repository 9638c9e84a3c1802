"""conv2d forward + all three gradients, convprop (algorithm="auto") vs PyTorch, fp32.

Run ``python benchmarks/conv.py`` (``--quick`` for fewer repetitions). One row per shape: the
minimum time of each side over interleaved repetitions and their ratio (convprop / torch; below 1
means convprop is faster); last, the geometric-mean ratio and the worst ratio.
Targets (issue 5): geometric mean <= 1.25, no shape worse than 2.0.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import geomean, interleaved_min, limited_threads, print_environment


@dataclass(frozen=True)
class Shape:
    name: str
    N: int
    C: int
    H: int
    W: int
    O: int
    K: int
    stride: int = 1
    padding: int = 0
    groups: int = 1


SHAPES = [
    Shape("mnist-1", 64, 1, 28, 28, 32, 3, 1, 1),
    Shape("mnist-2", 64, 32, 14, 14, 64, 3, 1, 1),
    Shape("cifar", 32, 64, 32, 32, 128, 3, 1, 1),
    Shape("strided", 16, 64, 56, 56, 64, 3, 2, 1),
    Shape("pointwise", 32, 256, 28, 28, 64, 1, 1, 0),
    Shape("depthwise", 32, 64, 56, 56, 64, 3, 1, 1, 64),
]


def make_runners(s: Shape, rng: np.random.Generator):
    import torch
    import torch.nn.functional as F

    from convprop.functional import conv2d, conv2d_backward

    x = rng.standard_normal((s.N, s.C, s.H, s.W), dtype=np.float32)
    w = rng.standard_normal((s.O, s.C // s.groups, s.K, s.K), dtype=np.float32)
    w *= np.float32(1 / np.sqrt(s.C // s.groups * s.K * s.K))  # unit-variance outputs
    b = rng.standard_normal(s.O, dtype=np.float32)
    geo = dict(stride=s.stride, padding=s.padding, groups=s.groups)
    dy = rng.standard_normal(conv2d(x, w, b, **geo).shape, dtype=np.float32)

    def run_convprop():
        y = conv2d(x, w, b, **geo)
        dx, dw, db = conv2d_backward(dy, x, w, **geo)
        return y, dx, dw, db

    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_()
    dyt = torch.from_numpy(dy)

    def run_torch():
        xt.grad = wt.grad = bt.grad = None
        y = F.conv2d(xt, wt, bt, **geo)
        y.backward(dyt)
        return y, xt.grad, wt.grad, bt.grad

    return run_convprop, run_torch


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (noisier)")
    parser.add_argument("--only", default=None, help="comma-separated shape names to run")
    args = parser.parse_args(argv)
    reps = 3 if args.quick else 10
    shapes = [s for s in SHAPES if args.only is None or s.name in args.only.split(",")]
    rng = np.random.default_rng(0)
    with limited_threads():
        print_environment()
        print(f"fp32, forward + grad input/weight/bias, min of {reps} interleaved repetitions\n")
        print(
            f"{'shape':10s} {'N,C,H,W -> O, k, s, p, g':32s} {'convprop ms':>12s} {'torch ms':>10s} {'ratio':>7s}",
            flush=True,
        )
        ratios = []
        for s in shapes:
            ours, theirs = make_runners(s, rng)
            t = interleaved_min({"convprop": ours, "torch": theirs}, reps)
            ratio = t["convprop"] / t["torch"]
            ratios.append(ratio)
            geo = f"{s.N},{s.C},{s.H}x{s.W} -> {s.O}, {s.K}x{s.K}, s{s.stride}, p{s.padding}, g{s.groups}"
            print(
                f"{s.name:10s} {geo:32s} {t['convprop'] * 1e3:12.2f} {t['torch'] * 1e3:10.2f} {ratio:7.2f}", flush=True
            )
        print(
            f"\ngeometric-mean ratio {geomean(ratios):.2f}   worst ratio {max(ratios):.2f}  (targets <= 1.25, <= 2.0)"
        )


if __name__ == "__main__":
    main()
