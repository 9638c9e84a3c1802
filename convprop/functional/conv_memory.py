"""Batch chunking and the memory budget shared by the unfolding algorithms (``conv_im2col``, ``conv_gemm``).

An unfolded input holds C·K_1···K_n values per output position, K times the input: the algorithms
unfold a chunk of images at a time so that the buffer stays within :data:`CHUNK_BYTES` (cache-sized)
and never exceeds the bytes of input + output together (at least one image is always processed):
``benchmarks/memory.py`` keeps forward + backward under 4× input + output + weight.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from .geometry import Sizes

CHUNK_BYTES = 8 << 20  # unfolded-matrix budget per chunk of images: bounds memory, stays cache-sized
KEEP_COLUMNS_BYTES = 256 << 20  # a layer keeps its unfolded input up to this size, else unfolds again


def batch_chunks(N: int, bytes_per_image: int, budget: int | None = None) -> Iterator[slice]:
    """Slices n0:n1 over the batch, each holding at most ``budget`` (default ``CHUNK_BYTES``) bytes, >= 1 image."""
    step = max(1, (CHUNK_BYTES if budget is None else budget) // max(1, bytes_per_image))
    for n0 in range(0, N, step):
        yield slice(n0, min(N, n0 + step))


def unfold_budget(N: int, C: int, in_size: Sizes, O: int, out_size: Sizes, itemsize: int) -> int:
    """Bytes an unfolded chunk may hold: ``CHUNK_BYTES``, but never more than input + output together."""
    in_out = N * (C * math.prod(in_size) + O * math.prod(out_size)) * itemsize
    return min(CHUNK_BYTES, in_out)
