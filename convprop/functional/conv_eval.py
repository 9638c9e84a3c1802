"""Which forward a pass that keeps nothing runs (eval, or training under ``no_grad``).

A training forward keeps what its backward reads (``conv_gemm``'s columns), so it always runs the
algorithm ``conv_resolve._choose`` picked. A forward that keeps nothing may run something faster for
the same result (to float rounding), under ``algorithm="auto"`` only (an explicit algorithm runs as named):
``conv_rows``' direct kernel for small dense stride-1 convolutions (:func:`uses_rows`), else
``conv_flat``'s padded grid for the other dense stride-1 ones (:func:`uses_grid`), else the chosen
algorithm on the padded input. ``functional.fused`` asks the same two questions for its fused blocks.
"""

from __future__ import annotations

import numpy as np

from . import conv_flat, conv_gemm, conv_im2col, conv_pointwise, conv_rows, threads
from .conv_algorithm import ConvAlgorithm, ConvGeometry
from .geometry import pad


def uses_grid(algorithm: str, algo: ConvAlgorithm, geo: ConvGeometry) -> bool:
    """Whether a forward pass that keeps nothing runs on ``conv_flat``'s grid: under ``"auto"``, the
    dense stride-1 2-D convolutions ``conv_gemm`` computes (more than one input channel), 1×1 aside.

    Measured forward alone (fp32, 2 threads, conv → output, 20 interleaved runs): 0.72–0.90 of
    ``conv_gemm``'s time on lenet's second layer (batch 1, 32 and 1,000), LeNet-5's 5×5 and CIFAR's
    3×3, but 1.07 on mnist-2 and 1.14 on 7×7 maps; for one input channel 2.7–5.5× *slower* than
    ``conv_im2col`` (the grid's (O, n, OH, Wp) product must be transposed into the output, which for
    K = 9 costs more than the product), so those stay with im2col. The training forward keeps
    ``conv_gemm``'s columns instead, which its weight gradient reads (the grid's backward was measured
    too, and was no faster: ``conv_flat``'s docstring).
    """
    return algorithm == "auto" and algo is conv_gemm and conv_flat.applies(geo) and not conv_pointwise.applies(geo)


ROWS_MIN_WIDTH = 14  # output rows shorter than this (7×7 maps) ran 1.3–2.3× slower in conv_rows
ROWS_MAX_CHANNEL_PRODUCT = 512  # C·O above this (32 → 64 and wider) left conv_rows slower than the product


def uses_rows(algorithm: str, algo: ConvAlgorithm, geo: ConvGeometry) -> bool:
    """Whether a forward pass that keeps nothing runs ``conv_rows``' direct kernel: under ``"auto"``,
    the dense stride-1 convolutions of width-3 or width-5 kernels on maps at least 14 wide with few
    channels (C·O <= 512).

    Measured forward alone against what ``auto`` ran before (the grid's product, or im2col for one
    input channel; fp32, 2 threads, interleaved, 2 December), as time ratios: 8 → 8 on 28×28 0.29–0.41,
    16 → 16 on 28×28 0.44–0.59, 16 → 16 on 14×14 0.51–0.72, 16 → 32 on 14×14 0.79–1.06, one input
    channel on 28×28 0.47–0.68 (batch 1 and 1,000; 1.0–1.3 at 64), LeNet-5's 6 → 16 5×5 0.43–1.1; but
    32 → 32 on 7×7 1.3–2.3 and 32 → 64 or 64 → 64 on 14×14 1.2–1.7, so those keep the product.
    """
    return (
        algorithm == "auto"
        and (algo is conv_gemm or algo is conv_im2col)
        and conv_rows.applies(geo)
        and geo.out_size[1] >= ROWS_MIN_WIDTH
        and geo.in_channels * geo.out_channels <= ROWS_MAX_CHANNEL_PRODUCT
    )


def eval_forward(
    x: np.ndarray, weight: np.ndarray, geo: ConvGeometry, algo: ConvAlgorithm, algorithm: str
) -> np.ndarray:
    """The forward product of a pass that keeps nothing (no bias), of x before padding: (N, O, *out_size).

    Inside ``threads.blas_single_threaded`` the batch is split between convprop's threads, each
    running the product on its part with BLAS on one thread (the row pass splits it itself)."""
    if uses_rows(algorithm, algo, geo):
        return conv_rows.forward(x, weight, geo)  # pads each image in cache, images split between threads
    if threads.splits(x.shape[0]):
        return threads.split_batch(lambda part: eval_forward(part, weight, geo, algo, algorithm), x)
    if uses_grid(algorithm, algo, geo):
        return conv_flat.forward(x, weight, geo)  # pads a chunk at a time
    return algo.forward(pad(x, geo.pads, geo.padding_mode), weight, geo)
