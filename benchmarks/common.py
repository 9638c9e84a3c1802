"""Shared benchmark plumbing: the environment printout, thread limits, and interleaved timing.

Timings on a shared machine are noisy, so every benchmark interleaves its candidates (A, B, A, B, ...)
and reports the *minimum* of each: the least-disturbed run, and ratios taken within one run. Each
timed call follows untimed calls of the same candidate (:func:`interleaved_min`), so neither side
is timed while the other's idle threads still spin.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import scipy
from threadpoolctl import threadpool_info, threadpool_limits

# Seconds each candidate runs untimed before its timed call (interleaved_min). Measured on an AMD EPYC
# (Zen 5), 3 December: after one call, ONNX Runtime's idle workers burnt 47 ms of CPU time while the
# caller slept, PyTorch's 11 ms, convprop's 2 ms; lenet's batch of 64 took convprop 1.65-1.8 ms for
# 40 ms after an ONNX Runtime call and 0.95 ms after that. The 2 ms this was before hid none of it.
SETTLE = float(os.environ.get("CONVPROP_BENCH_SETTLE", "0.06"))
THREADS = 2  # same thread count for torch (intra-op) and for NumPy's BLAS


def cpu_count() -> int:
    return os.cpu_count() or 1


def print_environment(threads: int = THREADS) -> None:
    """Versions, CPU, BLAS libraries and thread counts: enough to tell two runs' machines apart."""
    import torch

    print(
        f"python {platform.python_version()}  numpy {np.__version__}  scipy {scipy.__version__}  "
        f"torch {torch.__version__}"
    )
    print(f"machine {platform.machine()} {platform.processor() or platform.platform()}  cpus {cpu_count()}")
    print(f"threads: torch intra-op {torch.get_num_threads()}, BLAS limited to {threads}")
    print(f"cpu {_cpu_model()}")
    pinned = {k: v for k, v in sorted(os.environ.items()) if k.startswith("OPENBLAS_")}
    if pinned:  # an image may pin OpenBLAS's kernels (OPENBLAS_CORETYPE) below what the CPU has
        print("environment: " + "  ".join(f"{k}={v}" for k, v in pinned.items()))
    for lib in threadpool_info():
        extra = f" arch {lib['architecture']}" if "architecture" in lib else ""
        print(
            f"  {lib['internal_api']:9s} {lib.get('version')} threads {lib['num_threads']}{extra}  "
            f"{os.path.basename(lib['filepath'])}"
        )
    sys.stdout.flush()


def _cpu_model() -> str:
    """The CPU's model name and family from /proc/cpuinfo on Linux; the platform's name elsewhere."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not key.strip():
                    break  # the first processor's block is enough
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    flags = fields.get("flags", "").split()  # x86 only: other CPUs name their features differently
    isa = next((f", {isa}" for isa in ("avx512f", "avx2") if isa in flags), "")
    return f"{fields.get('model name', 'unknown')} (family {fields.get('cpu family', '?')}{isa})"


@contextmanager
def limited_threads(threads: int = THREADS):
    """torch.set_num_threads(threads) and BLAS/OpenMP pools limited to ``threads`` inside the block."""
    import torch

    torch.set_num_threads(threads)
    with threadpool_limits(limits=threads):
        yield


def interleaved_min(
    candidates: dict[str, Callable[[], object]], reps: int, warmup: int = 1, settle: float | None = None
) -> dict[str, float]:
    """Run each candidate ``warmup`` times, then ``reps`` rounds; min seconds per candidate.

    In each round every candidate first runs untimed for at least ``settle`` seconds (one call or
    more; :data:`SETTLE` unless given), then once timed. Each library's idle threads spin for a while
    after a call (OpenBLAS's, PyTorch's OpenMP pool, ONNX Runtime's) and on two cores they slow
    whatever runs next: measured on
    LeNet-5's 5×5 layer, convprop took 3.4 ms after itself but 4.5 ms right after PyTorch, and PyTorch
    1.3 ms after itself but 2.0 ms after convprop (mnist-2: 18.8 vs 25.8 and 13.2 vs 17.4 ms); at
    batch 1, one untimed call was not enough (lenet: convprop 0.20 ms after one, 0.15 after five;
    ONNX Runtime 0.057 and 0.038). The untimed calls absorb the other side's spinning and bring back
    its own caches, so each side is timed as a user who runs only that library would see it, while
    the rounds still alternate and share the machine's noise.
    """
    settle = SETTLE if settle is None else settle
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    best = {name: float("inf") for name in candidates}
    for _ in range(reps):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            while time.perf_counter() - start < settle:
                fn()
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def geomean(values) -> float:
    values = np.asarray(list(values), dtype=np.float64)
    return float(np.exp(np.log(values).mean()))
