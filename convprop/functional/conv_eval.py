"""Which forward a pass that keeps nothing runs (eval, or training under ``no_grad``).

A training forward keeps what its backward reads (``conv_tiled``'s padded input, or ``conv_gemm``'s
columns). A forward that keeps nothing may run something faster for the same result (to float
rounding), under ``algorithm="auto"`` only (an explicit algorithm runs as named): ``conv_rows``' tiles
for zero-padded dense convolutions (:func:`uses_rows`), else ``conv_flat``'s padded grid for the
other dense stride-1 2-D ones — a padding mode other than zeros (:func:`uses_grid`) — else the chosen
algorithm on the padded input, its batch split between convprop's threads inside
``threads.batch_scope``. ``functional.fused`` asks the same two questions for its fused blocks.
"""

from __future__ import annotations

import numpy as np

from . import conv_flat, conv_gemm, conv_im2col, conv_pointwise, conv_rows, threads
from .conv_algorithm import ConvAlgorithm, ConvGeometry
from .conv_context import pads_itself
from .conv_tile import VECTOR_BYTES
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


# A strided 1×1 convolution (resnet's projections) runs on the tiles below this batch, and at any
# batch where BLAS's kernels are narrower than AVX-512's 64-byte vectors (threads.blas_vector_bytes)
STRIDED_1X1_BATCH = 64
WIDE_BLAS_BYTES = 64


def uses_rows(algorithm: str, algo: ConvAlgorithm, geo: ConvGeometry, batch: int | None = None) -> bool:
    """Whether a forward pass that keeps nothing runs ``conv_rows``' tiles: under ``"auto"``, every
    dense convolution with zero padding that ``auto`` gives an unfolding algorithm and ``conv_rows``
    computes (1-D and 2-D any stride, 3-D stride 1), 1×1 kernels aside (a plain product, no unfolding)
    — but for a strided 1×1 one over ``batch`` images, fewer than ``STRIDED_1X1_BATCH`` or any number
    where OpenBLAS runs narrower vectors than AVX-512's (``WIDE_BLAS_BYTES``; a BLAS whose kernels are
    not known counts as the tiles' width).

    Measured forward alone against what ``auto`` ran otherwise (the grid's product, im2col for one
    input channel, or ``conv_gemm``; fp32, 2 threads, AVX-512 Xeon, 2 December), as time ratios over
    resnet's, lenet's and the conv benchmark's stride-1 layers (1–64 input channels, 7×7 to 32×32 maps,
    3×3 and 5×5 kernels): 0.11–0.82 at batch 64 and 512, 0.32–0.73 at batch 1 — except CIFAR's
    64 → 128 on 32×32 at batch 1, 1.06 (one image runs on one thread; the product on two). Strided
    3×3 layers 0.17–0.76; 1×1 stride 2 lost there from batch 64 (1.08–1.41, OpenBLAS's AVX-512
    kernels). On an AMD EPYC (Zen 5) whose image pins OpenBLAS to its AVX2 kernels, resnet's two
    projections with their batch norm ran on the tiles in 0.83 of the product's time at batch 1,
    0.67–0.74 at 64 and 0.82–1.0 at 1,000 (3 December). On an AMD EPYC Zen 3 (AVX2 tiles, OpenBLAS's
    Haswell kernels — as wide as the tiles, which the rule had then required BLAS to be narrower than)
    with their batch norm: 0.85 and 0.88 of the product's time at batch 64, 0.53 and 0.71 at 1,000
    (4 December). So the product keeps only AVX-512 BLAS kernels' batches of 64 and more.
    """
    if algorithm != "auto" or not (algo is conv_gemm or algo is conv_im2col) or not conv_rows.applies(geo):
        return False
    if geo.kernel != (1,) * geo.ndim:
        return True
    strided = geo.stride != (1,) * geo.ndim
    narrower = (threads.blas_vector_bytes() or VECTOR_BYTES) < WIDE_BLAS_BYTES
    return strided and batch is not None and (batch < STRIDED_1X1_BATCH or narrower)


def eval_forward(
    x: np.ndarray, weight: np.ndarray, geo: ConvGeometry, algo: ConvAlgorithm, algorithm: str
) -> np.ndarray:
    """The forward product of a pass that keeps nothing (no bias), of x before padding: (N, O, *out_size).

    Inside ``threads.blas_single_threaded`` the batch is split between convprop's threads, each
    running the product on its part with BLAS on one thread (the row pass splits it itself)."""
    if uses_rows(algorithm, algo, geo, x.shape[0]):
        return conv_rows.forward(x, weight, geo)  # pads each image in cache, images split between threads
    if pads_itself(algo, geo):  # conv_depthwise: pads each plane in cache, images split between threads
        return algo.forward_unpadded(x, weight, geo)  # type: ignore[attr-defined]
    if threads.splits(x.shape[0]):
        return threads.split_batch(lambda part: eval_forward(part, weight, geo, algo, algorithm), x)
    if uses_grid(algorithm, algo, geo):
        return conv_flat.forward(x, weight, geo)  # pads a chunk at a time
    return algo.forward(pad(x, geo.pads, geo.padding_mode), weight, geo)
