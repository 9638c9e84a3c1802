"""Stride-1 2-D forward passes on the padded plane: the unfold as a few long contiguous copies.

With stride 1, tap (kh, kw) of output position (oh, ow) reads the padded input at
(oh + kh·dh, ow + kw·dw). Number the padded image's positions row by row, q = h·Wp + w: the tap reads
position q_out + kh·dh·Wp + kw·dw, a *fixed offset* from the output's own number — provided the output
is numbered on the same grid, q_out = oh·Wp + ow, i.e. computed on OH rows of Wp (not OW) columns.
Then one image's row of the unfolded matrix X̃ for channel c and tap (kh, kw) is the padded plane c
itself, read from that offset: a single run of OH·Wp values, where ``conv_gemm.unfold`` copies OH·KH·KW
runs of OW values each. The copy is about 3× faster (lenet's second layer, 16 images: 0.25 → 0.07 ms).

The price is the grid's extra Wp − OW columns per row, which the product computes and nobody reads:
(Wp − OW)/OW more arithmetic, 14% for 14×14 maps with padding 1, 7% at 28×28. Their columns of X̃
hold whatever lies beyond the row's end (the next row's start, the padding) — each output column of
``W̃ · X̃`` depends on its own column of X̃ only, so no valid output ever sees them, whatever they hold
(NaN included). The last (KW − 1)·dw entries of an image's run would read past the image; they are
set to zero instead.

Forward only, for passes that keep nothing (``conv.uses_grid`` says which: ``auto``'s dense
convolutions with several input channels that ``conv_rows``' tiles do not take — since the tiles,
those with a padding mode other than zeros), and the fused inference block (``functional.fused``),
which applies bias, ReLU and a 2×2 max-pool straight from each chunk's grid, so the convolution's full
output is never written. A layer that trains keeps ``conv_gemm``'s K-major columns: a grid backward
(δ placed on the grid, the weight gradient from the grid's columns, a compiled fold for the input
gradient) was written and measured on 2 December against ``conv_gemm``'s (forward + backward, fp32, 2
threads, 12 interleaved runs): mnist-2 17.4 ms → 20.3 (keeping the columns) or 18.4 (unfolding again
in the backward), lenet's layers at batch 32 6.2 → 6.4–6.8 and 2.3 → 2.8–3.0, LeNet-5's 5×5 5.8 →
6.4–8.5; only CIFAR's 3×3 gained (148 → 131). Whole-batch columns leave the cache, and the
backward's two layouts of δ cost what the faster unfold saved, so it is not in the code.

Letters as in ``conv_direct``; Hp, Wp the padded input's height and width, K = C·KH·KW.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from . import conv_memory
from .conv_algorithm import ConvGeometry
from .geometry import pad

# Unfolded bytes per chunk of images: measured on lenet's two layers at batch 64 and 1,000 (fp32, 2 threads),
# 1–2 MB chunks (8–32 images there) ran 1.5–2.5× faster than the whole batch at once, which leaves cache.
CHUNK_BYTES = 2 << 20


def applies(geo: ConvGeometry) -> bool:
    """Dense 2-D convolutions with stride 1 (any dilation), one kernel tap or more."""
    return geo.ndim == 2 and geo.stride == (1, 1) and geo.groups == 1


def grid_chunks(x: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (chunk, y): y = W̃ · X̃ of the images ``x[chunk]`` on the padded grid, (O, n, OH, Wp).

    ``x`` is the input *before* padding (N, C, H, W): each chunk is padded as it is unfolded, so the
    padded batch is never written whole (resnet's inference at batch 1,000 had spent 13% of its time
    padding). ``y`` lives in one buffer reused for every chunk: read it before asking for the next.
    Columns ow >= OW of each row are the grid's extra columns, not outputs.
    """
    N, C = x.shape[:2]
    Hp, Wp = geo.padded_size
    O = weight.shape[0]
    (KH, KW), (dh, dw) = geo.kernel, geo.dilation
    OH = geo.out_size[0]
    run = OH * Wp  # one image's grid
    length = run - (KW - 1) * dw  # the part of the run inside the image
    K = C * KH * KW
    w = weight.reshape(O, K)  # (O, K)
    s = x.itemsize
    budget = min(CHUNK_BYTES, conv_memory.unfold_budget(N, C, (Hp, Wp), O, geo.out_size, s))
    chunks = list(conv_memory.batch_chunks(N, K * run * s, budget))
    largest = chunks[0].stop if chunks else 0  # the first chunk is the largest
    columns = np.empty(K * largest * run, dtype=x.dtype)
    y = np.empty(O * largest * run, dtype=x.dtype)
    strides = (Hp * Wp * s, dh * Wp * s, dw * s, C * Hp * Wp * s, s)
    for chunk in chunks:
        n = chunk.stop - chunk.start
        xp = np.ascontiguousarray(pad(x[chunk], geo.pads, geo.padding_mode))  # (n, C, Hp, Wp)
        cols = columns[: K * n * run].reshape(C, KH, KW, n, run)
        # (C, KH, KW, n, length): each channel's plane read from each tap's offset, for every image. (The
        # ndarray constructor, not as_strided: 1 µs instead of 5, and it checks that the view fits the buffer.)
        taps = np.ndarray((C, KH, KW, n, length), x.dtype, buffer=xp, strides=strides)
        np.copyto(cols[..., :length], taps)
        cols[..., length:] = 0  # the tails no copy writes: zeros, not whatever the buffer held (np.zeros cost
        # ~25 µs a call at batch 1, a fifth of lenet's inference; garbage there made matmul warn of overflow)
        out = y[: O * n * run].reshape(O, n * run)
        np.matmul(w, cols.reshape(K, n * run), out=out)  # (O, K)·(K, n·OH·Wp)
        yield chunk, out.reshape(O, n, OH, Wp)


def forward(x: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Y = W̃ · X̃ on the padded grid, a chunk of images at a time, then its valid columns: (N, O, OH, OW).

    ``x`` before padding, (N, C, H, W)."""
    N, O, OW = x.shape[0], weight.shape[0], geo.out_size[1]
    y = np.empty((N, O, *geo.out_size), dtype=x.dtype)
    for chunk, grid in grid_chunks(x, weight, geo):
        y[chunk] = grid[..., :OW].transpose(1, 0, 2, 3)  # (O, n, OH, OW) → (n, O, OH, OW)
    return y
