"""Keep freed memory in the process: glibc's malloc, tuned for arrays of a few megabytes freed every step.

A training step allocates and frees the same large arrays each time: a layer's columns (7 MB for the
second convolution of ``lenet`` on a batch of 64), its output, the gradients. By default glibc's
``malloc`` serves a large request with a fresh ``mmap`` and gives it back to the kernel when freed
(and trims the top of its heap once more than a few megabytes there are free), so every step the kernel
maps and zeroes the same memory again: page faults that cost more than the arithmetic of ReLU's
backward. Measured on ``lenet`` (2 cores, per-layer minimum of 70 steps): the second convolution's
forward took 5.8 ms instead of 3.0, max-pooling's backward 4.1 ms instead of 0.3, a whole training
step about 25% longer. Per-call contexts made it visible: several such arrays are alive at once.

:func:`keep_freed_memory` raises both of glibc's thresholds (``M_MMAP_THRESHOLD`` to its maximum,
32 MiB, and ``M_TRIM_THRESHOLD`` to 1 GiB), so freed arrays go back to malloc's own free lists and
the next step reuses them. The price: the process keeps up to its peak heap instead of returning
memory to the system between steps. It is called once when convprop is imported; set
``CONVPROP_KEEP_FREED_MEMORY=0`` in the environment to leave malloc as it was. Elsewhere than glibc
(macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["keep_freed_memory"]

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # the largest glibc accepts on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 1024 * 1024 * 1024
ENVIRONMENT_VARIABLE = "CONVPROP_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (see the module docstring); True if malloc took both.

    False, changing nothing, if the C library is not glibc or ``CONVPROP_KEEP_FREED_MEMORY=0``.
    """
    if os.environ.get(ENVIRONMENT_VARIABLE, "1").strip() == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only: anything else has other tunables
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) & bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
