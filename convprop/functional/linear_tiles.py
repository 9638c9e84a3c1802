"""A linear layer's forward product, y = x Wᵀ, on ``conv_tile``'s register tiles.

Read as a convolution, the product is a 1×1 one whose positions are the images: with a chunk of the
batch laid out transposed, image j of input feature t at ``buf[t·P + j]`` (P the chunk's width),
every output is a sum over the taps t = 0 … F−1 at the fixed offsets t·P::

    y[n0 + j, o] = Σ_t w[o, t] · buf[j + t·P]

which is ``conv_tile.accumulate``'s form, the weight (O, F) as it is (no copy). A chunk is one tile's
width of images (P = 48 in float32 on AVX-512; fewer, rounded up to a vector, for a smaller batch),
so each tap's inputs are P contiguous values right after the previous tap's: a tile streams its
chunk front to back, and keeps its 8 × P outputs in vector registers over all F taps. The batch is
split between convprop's threads as ``conv_tiled`` splits a tile pass, the worker's part a compiled
job (``compiled_jobs``: no GIL handoff; lenet's batch of 64 in 0.98 of the time it took as a Python
job). A chunk's columns past the batch are zeros, computed and never read. (Summing the taps in blocks
of 128–512, so a block of the chunk stays in L1, was 1.06–1.13× slower: the accumulators' loads and
stores each block cost more than the L2 reads they saved.)

Why not BLAS's product: inside a model's pass BLAS is held to one thread (``threads.batch_scope``)
and a product is split by rows between convprop's threads, and there, on the AMD EPYC (Zen 5) of
3 December whose image pins OpenBLAS to its AVX2 kernels, lenet's 1568 → 256 took 0.58–0.61 ms at
batch 64 and 4.1 at 1,000 (two parts of one thread each; at 64 they ran no faster than one after the
other), against 0.31 and 3.0 on the tiles (fp32; OpenBLAS free on its own two threads: 0.27 and 3.9,
but then its threads spin into the next layers). The sums run tap by tap into one accumulator each,
so their float32 rounding error grows with F: 1.6e-6 relative for F = 1568 against BLAS's 4.7e-7,
inside the 1e-5 the layer is tested to against PyTorch. ``functional.linear`` takes the tiles inside
a model's scope only (``threads.held``); outside it BLAS has its own threads (0.27 ms against the
tiles' 0.41 on one thread at batch 64). Below ``MIN_ROWS`` images, and for products too small to
matter (``MIN_MACS``), BLAS's product stays.
"""

from __future__ import annotations

import numpy as np

from . import threads
from .compiled_jobs import publish_linear
from .conv_tiled import pass_threads
from .linear_rows import rows

MIN_ROWS = 16  # at fewer images a tile would be mostly padding: BLAS
MIN_MACS = 1 << 18  # (lenet's last 256 → 10 at batch 64: 164 K, 7 µs in BLAS, 13–19 on the tiles)


def applies(x: np.ndarray, weight: np.ndarray) -> bool:
    """Whether :func:`forward` takes x (B, F) @ weight (O, F)ᵀ: one float dtype, at least MIN_ROWS
    images and MIN_MACS multiply-adds."""
    B, F = x.shape if x.ndim == 2 else (0, 0)
    return (
        B >= MIN_ROWS
        and B * F * weight.shape[0] >= MIN_MACS
        and x.dtype in (np.float32, np.float64)
        and weight.dtype == x.dtype
    )


def forward(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """x (B, F) @ weight (O, F)ᵀ → (B, O), x and weight of one float dtype (:func:`applies`)."""
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(weight)
    (B, F), O = x.shape, w.shape[0]
    out = np.empty((B, O), dtype=x.dtype)
    count = pass_threads(B * F * O)  # split as a tile pass of ``conv_tiled``
    # the worker's part a compiled job (no GIL handoff: compiled_jobs)
    threads.split_compiled(rows, publish_linear, (x, w), threads.ranges(B, count), out)
    return out
