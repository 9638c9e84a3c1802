"""Do float32 subnormals slow the convolution kernels? The same shape with normal and 1e-40 weights.

Run ``python benchmarks/denormals.py``. NumPy cannot set flush-to-zero, so subnormal arithmetic runs
at the CPU's speed for it. For each algorithm: forward + all gradients with unit-scale weights and with
weights scaled to 1e-40 (every one subnormal), interleaved, minimum of each, and the slowdown.
Issue 15's bound: a weight of 1e-40 must not slow a kernel 10×.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import interleaved_min, limited_threads, print_environment

# (name, N, C, H, O, kernel, algorithms)
SHAPES = [
    ("mnist-2", 64, 32, 14, 64, 3, ["gemm", "im2col", "winograd2", "winograd4", "direct_compiled"]),
    ("lenet5-2", 64, 6, 14, 16, 5, ["gemm", "direct_compiled"]),
    ("depthwise", 32, 64, 28, 64, 3, ["depthwise"]),
]


def main() -> None:
    from convprop.functional import conv2d, conv2d_backward

    rng = np.random.default_rng(0)
    with limited_threads():
        print_environment()
        print(f"\n{'shape':10s} {'algorithm':16s} {'normal ms':>10s} {'1e-40 ms':>10s} {'slowdown':>9s}")
        for name, N, C, H, O, k, algorithms in SHAPES:
            groups = C if name == "depthwise" else 1
            x = rng.standard_normal((N, C, H, H), dtype=np.float32)
            w = rng.standard_normal((O, C // groups, k, k), dtype=np.float32) / np.float32(np.sqrt(C // groups * k * k))
            tiny = (w * np.float32(1e-40)).astype(np.float32)
            assert np.all(np.abs(tiny) < np.finfo(np.float32).tiny)
            for algorithm in algorithms:
                options = dict(padding=k // 2, groups=groups, algorithm=algorithm)
                dy = rng.standard_normal(conv2d(x, w, **options).shape, dtype=np.float32)

                def run(weight, options=options, dy=dy, x=x):
                    conv2d(x, weight, **options)
                    conv2d_backward(dy, x, weight, **options)

                t = interleaved_min({"normal": lambda w=w: run(w), "tiny": lambda tiny=tiny: run(tiny)}, 5)
                print(f"{name:10s} {algorithm:16s} {t['normal'] * 1e3:10.2f} {t['tiny'] * 1e3:10.2f} "
                      f"{t['tiny'] / t['normal']:9.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
