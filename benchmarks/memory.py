"""Peak extra memory of a convolution's forward + backward (algorithm="auto"), per benchmark shape, fp32.

Run ``python benchmarks/memory.py``. Measured with ``tracemalloc`` (NumPy reports its array
buffers to it): the peak of everything allocated during the forward + backward functions of each
shape in ``conv.py`` (1-D, 2-D, 3-D, transposed), with the inputs and the upstream gradient already
allocated, so the outputs y, dx, dw, db count. Budgets: 4× the bytes of input + output + weight
(issue 5), 3× (issue 15); the unfolded matrix is built a chunk of images at a time to stay under it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import limited_threads, print_environment
from conv import SHAPES, functions


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="accepted for symmetry; the measurement is one run")
    parser.parse_args(argv)
    rng = np.random.default_rng(0)
    with limited_threads():
        print_environment()
        print("fp32, tracemalloc peak during forward + backward (outputs included)\n")
        print(f"{'shape':10s} {'x+y+w MB':>9s} {'peak MB':>8s} {'peak/(x+y+w)':>13s} {'within 3x':>10s}")
        worst = 0.0
        for s in SHAPES:
            forward, backward, _ = functions(s)  # the shape's own dimension and kind
            k = (s.K,) * len(s.size)
            x = rng.standard_normal((s.N, s.C, *s.size), dtype=np.float32)
            w_shape = (s.C, s.O // s.groups, *k) if s.transposed else (s.O, s.C // s.groups, *k)
            w = rng.standard_normal(w_shape, dtype=np.float32)
            b = rng.standard_normal(s.O, dtype=np.float32)
            geo = dict(stride=s.stride, padding=s.padding, groups=s.groups)
            dy = np.ones_like(forward(x, w, b, **geo))  # also compiles any kernels before measuring
            backward(dy, x, w, **geo)
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            y = forward(x, w, b, **geo)
            grads = backward(dy, x, w, **geo)
            peak = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.stop()
            del y, grads
            size = x.nbytes + dy.nbytes + w.nbytes
            worst = max(worst, peak / size)
            ok = "yes" if peak <= 3 * size else "NO"
            print(f"{s.name:10s} {size / 2**20:9.2f} {peak / 2**20:8.2f} {peak / size:13.2f} {ok:>10s}", flush=True)
        print(f"\nworst peak/(x+y+w) {worst:.2f}  (target <= 3)")


if __name__ == "__main__":
    main()
