"""convprop's own threads, and BLAS held to one thread while a pass that keeps nothing runs.

The compiled kernels (``conv_rows``' tiles, ``conv_direct_compiled``) split a batch between ``THREADS``
Python threads, each running a loop that releases the GIL. OpenBLAS has threads of its own, and after
each multi-threaded product they *spin* (``OPENBLAS_THREAD_TIMEOUT``: about 2²⁸ cycles, a tenth of a
second) before they sleep: on a 2-core machine a spinning BLAS thread takes one of the two cores from
the kernel that runs next. An inference pass alternates the two kinds (lenet: two convolution passes,
then a linear layer; every forward after the first starts while the last one's BLAS threads still
spin), so its compiled layers ran at half speed. Measured on lenet's eval forward (fp32, 2 cores,
AVX-512 Xeon, 2 December): with BLAS held to one thread, 0.65 of the time at batch 1,000 and 0.72 at
64, the same at batch 1 (resnet: 0.86 and 0.97).

So ``Sequential.forward`` and ``Graph.forward`` run inside :func:`batch_scope` (batches of at least
``SPLIT_MIN_IMAGES``), which holds BLAS to one thread (:func:`blas_single_threaded`); there the
products that keep nothing — a linear layer's of at least ``SPLIT_MIN_PRODUCT`` multiply-adds, the
unfolding convolutions' of an eval pass — split the batch between convprop's threads themselves
(:func:`split_batch`), each calling BLAS on one thread, so both cores stay busy and no BLAS thread is
left spinning. The scope is process-wide (the BLAS thread count is) and counted: nested and concurrent
passes (``convprop serve``'s threads) hold it together, and the last one out restores the count it
found. BLAS is held to one thread only where its count is at most ``THREADS`` (a larger machine keeps
BLAS's own threads).

Training passes enter it too (``Sequential``'s and ``Graph``'s ``forward_with_context`` and
``backward_with_context``; ``convprop train`` holds it for a whole epoch, distortions included): there
a linear layer's three products split by rows (:func:`matmul`) and the tile passes of a layer of at
least ``conv_tiled.HELD_SPLIT_MACS`` multiply-adds take both threads (:func:`held`), while a
convolution that trains on BLAS's products gets BLAS's threads back for its passes
(:func:`blas_released`). Outside the scope a small layer's tile passes stay on one thread, since a
BLAS thread may be spinning on the other core. Measured on ``convprop train``'s epochs (distortions
included; AMD EPYC, 2 cores, 3 December; epochs alternating with the scope switched off): lenet
0.76–0.82 of the time, resnet 0.75–0.81.

The parts of a split run on ``workers``' threads, which watch for the next job without the GIL for
a while before they sleep (a handoff to a sleeping pool thread had cost 54–175 µs); the first part
of a region runs on the calling thread, and small products are not split.
"""

from __future__ import annotations

import contextvars
import ctypes
import functools
import itertools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from typing import Any

import numpy as np

from . import compiled_jobs, workers

THREADS = min(2, os.cpu_count() or 1)  # this machine class has 2 cores
SPLIT_MIN_IMAGES = 8  # smaller batches run as one call: a thread handoff costs more than half of it
# a linear layer's product splits its rows from this many multiply-adds (8.4 M): with the workers'
# handoff, lenet's 1568 → 256 at batch 32 (12.8 M) took 0.28–0.46 ms split against 0.41–0.49 on one
# thread, for each of its three products (AMD EPYC, 3 December); through the old pool's handoff a
# product of 26 M had only broken even, so the bound was 2²⁵ until then
SPLIT_MIN_PRODUCT = 1 << 23

_workers: workers.Crew | None = None
_pool_lock = threading.Lock()  # two first calls from two threads make one crew
_scope_lock = threading.Lock()
_depth = 0  # passes inside blas_single_threaded, over all threads
_restore: list[tuple[_OpenBLAS, int]] = []  # (library, its thread count) to restore on exit
_released = 0  # passes inside the scope that gave BLAS its threads back (blas_released)
_libraries: list[_OpenBLAS] | None = None
_local = threading.local()  # .worker: a pool thread; .splitting: running one part of a split batch


def ranges(N: int, threads: int | None = None) -> list[tuple[int, int]]:
    """The batch split into at most ``threads`` (default THREADS) contiguous ranges of images."""
    parts = max(1, min(THREADS if threads is None else threads, N))
    bounds = [N * k // parts for k in range(parts + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(parts)]


def parallel(calls: Sequence[Callable[[], object]]) -> None:
    """Run the calls: the first in this thread, the others on convprop's workers (the kernels release
    the GIL; ``workers``: a handoff that does not sleep); all of them here if the workers are busy with
    another caller's, or if this is a worker. Each call runs in a copy of the caller's context (NumPy's
    errstate is a context variable). The first exception raised is raised here, once all have ended."""
    if len(calls) == 1 or getattr(_local, "worker", False):  # a worker waiting on the workers could deadlock
        for call in calls:
            call()
        return
    crew = _crew()
    if not crew.lock.acquire(blocking=False):  # another caller's parts hold the workers: the cores are busy
        for call in calls:
            call()
        return
    try:
        handed = crew.workers[: len(calls) - 1]
        tickets = [
            (w, w.post(partial(contextvars.copy_context().run, call)))
            for w, call in zip(handed, calls[1:], strict=False)  # (calls beyond the workers run here)
        ]
        error: BaseException | None = None
        try:
            for call in (calls[0], *calls[1 + len(handed) :]):
                call()
        except BaseException as raised:
            error = raised
        for worker, ticket in tickets:
            try:
                worker.wait(ticket)
            except BaseException as raised:
                error = error or raised
        if error is not None:
            raise error
    finally:
        crew.lock.release()


def split_compiled(
    kernel: Callable[..., Any], publish: Callable[..., bool], args: tuple[Any, ...], parts: Sequence[tuple[int, int]],
    out: np.ndarray,
) -> list[Any]:  # fmt: skip
    """``kernel(*args, n0, n1, out)`` for each part (n0, n1), each but the first as a compiled job on
    a worker (``publish`` describes it, ``compiled_jobs``) — no GIL handoff — the first here; the
    results in the parts' order (a worker's from its descriptor's result slot). As :func:`parallel`,
    all run here if this is a worker or the workers are busy, and so does a part ``publish`` declines.
    The arrays stay referenced (``args``, ``out``) until every job has ended, error or not."""
    if len(parts) == 1 or getattr(_local, "worker", False):
        return [kernel(*args, n0, n1, out) for n0, n1 in parts]
    crew = _crew()
    if not crew.lock.acquire(blocking=False):
        return [kernel(*args, n0, n1, out) for n0, n1 in parts]
    results: list[Any] = [None] * len(parts)
    posted: list[tuple[int, workers.Worker, int]] = []  # (part, worker, ticket)
    try:
        for k, worker in enumerate(crew.workers[: len(parts) - 1], start=1):
            ticket = worker.post_compiled(publish, *args, *parts[k], out)
            if ticket is not None:
                posted.append((k, worker, ticket))
        handed = {k for k, _, _ in posted}
        for k, (n0, n1) in enumerate(parts):
            if k not in handed:  # the first part, any beyond the workers, any declined
                results[k] = kernel(*args, n0, n1, out)
    finally:
        try:
            for k, worker, ticket in posted:
                worker.wait(ticket)
                results[k] = worker.desc[compiled_jobs.RESULT]  # (read before another caller can post to it)
        finally:
            crew.lock.release()
    return results


def _crew() -> workers.Crew:
    """The workers (THREADS − 1 of them), started at the first split; again in a forked child (the
    parent's threads do not run there)."""
    global _workers
    with _pool_lock:
        if _workers is None or _workers.pid != os.getpid() or len(_workers.workers) < THREADS - 1:
            _workers = workers.Crew(max(1, THREADS - 1), _mark_worker, compiled_jobs.serve)
        return _workers


def _mark_worker() -> None:
    _local.worker = True


class _OpenBLAS:
    """One loaded OpenBLAS (pthreads threading layer): its thread-count getter and setter, by ctypes.

    Called directly, not through threadpoolctl's limiter: threadpoolctl lets only the first thread that
    set a count set it again (others silently do nothing), and a pass in ``convprop serve`` may enter
    the scope on one thread and leave it on another. This module keeps its own process-wide count."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)  # the library already loaded: the same handle, nothing loaded twice
        for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
            getter = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
            setter = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
            if getter is not None and setter is not None:
                getter.restype, setter.argtypes = ctypes.c_int, [ctypes.c_int]
                self.get, self.set = getter, setter
                return
        raise LookupError(f"no openblas_get/set_num_threads in {path}")


def _openblas_libraries() -> list[_OpenBLAS]:
    """The OpenBLAS libraries loaded in this process with their own thread pool (found once, by
    threadpoolctl); an OpenMP-layered or other BLAS is not held (its threads are not OpenBLAS's)."""
    global _libraries
    if _libraries is None:
        from threadpoolctl import threadpool_info

        found = []
        for info in threadpool_info():
            if info.get("internal_api") == "openblas" and info.get("threading_layer") == "pthreads":
                try:
                    found.append(_OpenBLAS(info["filepath"]))
                except (OSError, LookupError):
                    continue  # not one we can hold: it keeps its own threads
        _libraries = found
    return _libraries


# OpenBLAS's core types whose kernels use 64-byte (AVX-512) vectors; the others it names here use 32
# (Haswell, Zen, SandyBridge) or fewer
_AVX512_CORES = ("skylakex", "cooperlake", "sapphirerapids")
_AVX_CORES = ("haswell", "zen", "sandybridge")


@functools.lru_cache(maxsize=1)
def blas_vector_bytes() -> int | None:
    """The vector width of the kernels OpenBLAS runs, from the core type threadpoolctl reports (an image
    may pin it below the CPU's: ``OPENBLAS_CORETYPE=Haswell`` on an AVX-512 machine); None for another
    BLAS or a core type not named here."""
    from threadpoolctl import threadpool_info

    widths = []
    for info in threadpool_info():  # (NumPy's and SciPy's, when both are loaded: one environment pins both)
        core = str(info.get("architecture", "")).lower() if info.get("internal_api") == "openblas" else ""
        widths += [64] if core in _AVX512_CORES else [32] if core in _AVX_CORES else []
    return min(widths, default=None)


@contextmanager
def blas_single_threaded() -> Iterator[None]:
    """BLAS on one thread (where it had 2..THREADS) until the last pass inside this scope leaves it."""
    global _depth, _restore
    with _scope_lock:
        if _depth == 0:
            _restore = []
            for lib in _openblas_libraries():
                count = lib.get()
                if 1 < count <= THREADS:
                    lib.set(1)
                    _restore.append((lib, count))
        _depth += 1
    try:
        yield
    finally:
        with _scope_lock:
            _depth -= 1
            if _depth == 0:
                for lib, count in _restore:
                    lib.set(count)
                _restore = []


@contextmanager
def blas_released() -> Iterator[None]:
    """Inside :func:`blas_single_threaded`: BLAS's own thread count back while a pass that runs on
    BLAS's products runs (an unfolding convolution's training pass, whose products on one thread took
    1.13–1.27× their time on two), held again after it; nothing is split meanwhile. Outside: nothing."""
    global _released
    with _scope_lock:
        counted = bool(_restore)
        if counted:
            if _released == 0:
                for lib, count in _restore:
                    lib.set(count)
            _released += 1
    try:
        yield
    finally:
        if counted:
            with _scope_lock:
                _released -= 1
                if _released == 0:
                    for lib, _ in _restore:  # (emptied if the scope ended meanwhile: nothing to hold)
                        lib.set(1)


def batch_scope(x: Any) -> AbstractContextManager[None]:
    """:func:`blas_single_threaded` for a pass over ``x`` of at least ``SPLIT_MIN_IMAGES`` along its
    first axis; for fewer, nothing (nothing would be split, and BLAS runs one image on one thread)."""
    shape = np.shape(x)
    return blas_single_threaded() if shape and shape[0] >= SPLIT_MIN_IMAGES else nullcontext()


def held() -> bool:
    """Whether BLAS is held to one thread here (inside :func:`blas_single_threaded`, an OpenBLAS found):
    no BLAS thread spins after a product, so convprop's own passes can have both cores."""
    return bool(_restore) and not _released and THREADS > 1


def splits(N: int) -> bool:
    """Whether a product over N images should be split between convprop's threads: inside
    :func:`blas_single_threaded` with BLAS held there, not already in one part of a split, N large enough."""
    return held() and N >= SPLIT_MIN_IMAGES and not getattr(_local, "splitting", False)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (b 2-D): where :func:`splits` says so and the product has at least ``SPLIT_MIN_PRODUCT``
    multiply-adds, ``a``'s first axis split between convprop's threads, each part's product written
    into its rows of the result (no concatenation)."""
    if a.ndim < 2 or b.ndim != 2 or a.size * b.shape[1] < SPLIT_MIN_PRODUCT or not splits(a.shape[0]):
        return a @ b
    out = np.empty((*a.shape[:-1], b.shape[1]), dtype=np.result_type(a, b))
    parallel([partial(_as_part, partial(np.matmul, out=out[n0:n1]), a[n0:n1], b) for n0, n1 in ranges(a.shape[0])])
    return out


def _as_part(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) as one part of a split: whatever it calls is not split again."""
    _local.splitting = True
    try:
        return fn(*args)
    finally:
        _local.splitting = False


def split_batch(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """fn(x[a:b]) for each of :func:`ranges`' parts of the batch, on the pool, concatenated along axis 0.

    ``fn`` must treat each image on its own (its result for an image does not depend on the others)."""
    parts: list[np.ndarray | None] = [None] * THREADS

    def part(k: int, n0: int, n1: int) -> None:
        parts[k] = _as_part(fn, x[n0:n1])

    parallel([partial(part, k, n0, n1) for k, (n0, n1) in enumerate(ranges(x.shape[0]))])
    return np.concatenate([p for p in parts if p is not None], axis=0)
