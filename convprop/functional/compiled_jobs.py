"""Jobs a worker runs without the GIL: a range of images of ``conv_rows``' tiles, or of a linear layer's
rows on the tiles (``linear_rows``), described by numbers.

A job handed to a worker as a Python callable (``workers.Worker.post``) must take the GIL to start,
and on these machines it waited for it: the caller holds the GIL until its own part enters compiled
code, and the worker, blocked meanwhile, is woken through the GIL's condition variable — a median
24 µs after the caller's part had begun (two 14 µs parts took 39 µs; AMD EPYC Zen 3, 2 cores,
4 December). resnet's eval forward at batch 64 splits nine convolutions so. Here the job is a
descriptor: the addresses, shapes and scalars of ``conv_rows_kernels.images``' arguments, written
by :func:`publish_rows` (compiled, under the GIL) into the worker's int64 array ``desc``; the worker,
watching in compiled code (``workers``), reads it with no GIL, rebuilds the arrays over the same
memory (``numba.carray``) and runs the loop; it takes up jobs so until a Python job is posted or the
watch ends (:func:`serve`). The caller keeps the arrays alive until the job is done (``threads.split_images``).

Ordering: the caller's descriptor stores are released before ``POSTED`` moves (:func:`publish_rows`,
a release fence) and the worker's loads acquired after it sees it (``workers._watch``); the worker's
output stores are released before ``DONE`` moves (``workers._finish``). On x86 these fences only keep
the compiler from reordering; on weaker memory models they are the barriers the protocol needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic

from .conv_rows_kernels import images
from .linear_rows import rows
from .workers import POSTED, PYTHON, _finish, _release

# desc's slots: the job's kind and result, then the arrays' addresses, their shapes, the scalars
KIND, RESULT = 0, 1
ROWS_F32, ROWS_F64 = 1, 2  # a range of images of conv_rows_kernels.images, in float32 / float64
LINEAR_F32, LINEAR_F64 = 3, 4  # a range of rows of linear_rows.rows (a linear layer on the tiles)
_ADDRESSES, _SHAPES, _SCALARS = 2, 9, 28  # x w offs phases epilogue skip out; their 19 extents; 13 scalars
DESC_SLOTS = 48


@intrinsic
def _pointer_intrinsic(typingctx, address, like):  # type: ignore[no-untyped-def]
    """An int64 address as a pointer to ``like``'s type (a scalar of it), for ``numba.carray``."""
    pointer = types.CPointer(like)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.inttoptr(args[0], context.get_value_type(pointer))

    return pointer(types.int64, like), codegen


_pointer: Callable[..., Any] = _pointer_intrinsic  # (called in compiled code as _pointer(address, like))


@njit(cache=True)
def publish_rows(
    flags: np.ndarray,
    desc: np.ndarray,
    ticket: int,
    x: np.ndarray,
    w: np.ndarray,
    offs: np.ndarray,
    phases: np.ndarray,
    ph: int,
    pw: int,
    sh: int,
    sw: int,
    Wq: int,
    S: int,
    L: int,
    pool: bool,
    normalise: bool,
    relu: bool,
    epilogue: np.ndarray,
    residual: bool,
    skip: np.ndarray,
    n0: int,
    n1: int,
    out: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """Describe ``images(x, ..., n0, n1, out)`` in desc and post it as job ``ticket``; False (nothing
    posted) unless every array is C-contiguous and x, w, epilogue, skip and out share a float dtype
    of 4 or 8 bytes (what the worker's rebuilt arrays assume)."""
    size = x.itemsize
    same = w.itemsize == size and epilogue.itemsize == size and skip.itemsize == size and out.itemsize == size
    contiguous = (
        x.flags.c_contiguous and w.flags.c_contiguous and offs.flags.c_contiguous and phases.flags.c_contiguous
        and epilogue.flags.c_contiguous and skip.flags.c_contiguous and out.flags.c_contiguous
    )  # fmt: skip
    if not (same and contiguous and (size == 4 or size == 8)):
        return False
    desc[KIND] = ROWS_F32 if size == 4 else ROWS_F64
    desc[RESULT] = 0
    a = _ADDRESSES
    desc[a], desc[a + 1], desc[a + 2], desc[a + 3] = x.ctypes.data, w.ctypes.data, offs.ctypes.data, phases.ctypes.data
    desc[a + 4], desc[a + 5], desc[a + 6] = epilogue.ctypes.data, skip.ctypes.data, out.ctypes.data
    e = _SHAPES
    desc[e], desc[e + 1], desc[e + 2], desc[e + 3] = x.shape
    desc[e + 4], desc[e + 5] = w.shape
    desc[e + 6] = offs.shape[0]
    desc[e + 7], desc[e + 8] = phases.shape
    desc[e + 9], desc[e + 10] = epilogue.shape
    desc[e + 11], desc[e + 12], desc[e + 13], desc[e + 14] = skip.shape
    desc[e + 15], desc[e + 16], desc[e + 17], desc[e + 18] = out.shape
    s = _SCALARS
    desc[s], desc[s + 1], desc[s + 2], desc[s + 3], desc[s + 4], desc[s + 5], desc[s + 6] = ph, pw, sh, sw, Wq, S, L
    desc[s + 7], desc[s + 8], desc[s + 9], desc[s + 10] = pool, normalise, relu, residual
    desc[s + 11], desc[s + 12] = n0, n1
    _release()  # the descriptor before the post
    flags[POSTED] = ticket
    return True


@njit(cache=True, nogil=True)
def _run_rows(d: np.ndarray, zero: Any) -> bool:  # pragma: no cover - compiled
    """The job described in d, its float arrays of ``zero``'s type (compiled once per dtype)."""
    a, e, s, index = _ADDRESSES, _SHAPES, _SCALARS, np.int64(0)
    x = carray(_pointer(d[a], zero), (d[e], d[e + 1], d[e + 2], d[e + 3]))
    w = carray(_pointer(d[a + 1], zero), (d[e + 4], d[e + 5]))
    epilogue = carray(_pointer(d[a + 4], zero), (d[e + 9], d[e + 10]))
    skip = carray(_pointer(d[a + 5], zero), (d[e + 11], d[e + 12], d[e + 13], d[e + 14]))
    out = carray(_pointer(d[a + 6], zero), (d[e + 15], d[e + 16], d[e + 17], d[e + 18]))
    offs = carray(_pointer(d[a + 2], index), (d[e + 6],))
    phases = carray(_pointer(d[a + 3], index), (d[e + 7], d[e + 8]))
    return images(x, w, offs, phases, d[s], d[s + 1], d[s + 2], d[s + 3], d[s + 4], d[s + 5], d[s + 6],
                  d[s + 7] != 0, d[s + 8] != 0, d[s + 9] != 0, epilogue, d[s + 10] != 0, skip, d[s + 11],
                  d[s + 12], out)  # fmt: skip


@njit(cache=True)
def publish_linear(
    flags: np.ndarray, desc: np.ndarray, ticket: int, x: np.ndarray, w: np.ndarray, n0: int, n1: int, out: np.ndarray
) -> bool:  # pragma: no cover - compiled
    """Describe ``rows(x, w, n0, n1, out)`` (``linear_rows``) in desc and post it as job ``ticket``; False
    (nothing posted) unless the three arrays are C-contiguous and of one float dtype of 4 or 8 bytes."""
    size = x.itemsize
    if not (w.itemsize == size and out.itemsize == size and (size == 4 or size == 8)):
        return False
    if not (x.flags.c_contiguous and w.flags.c_contiguous and out.flags.c_contiguous):
        return False
    desc[KIND] = LINEAR_F32 if size == 4 else LINEAR_F64
    desc[RESULT] = 0
    a, e, s = _ADDRESSES, _SHAPES, _SCALARS
    desc[a], desc[a + 1], desc[a + 2] = x.ctypes.data, w.ctypes.data, out.ctypes.data
    desc[e], desc[e + 1], desc[e + 2], desc[e + 3], desc[e + 4], desc[e + 5] = x.shape[0], x.shape[1], w.shape[0], \
        w.shape[1], out.shape[0], out.shape[1]  # fmt: skip
    desc[s], desc[s + 1] = n0, n1
    _release()  # the descriptor before the post
    flags[POSTED] = ticket
    return True


@njit(cache=True, nogil=True)
def _run_linear(d: np.ndarray, zero: Any) -> bool:  # pragma: no cover - compiled
    """The linear job described in d, its arrays of ``zero``'s type."""
    a, e, s = _ADDRESSES, _SHAPES, _SCALARS
    x = carray(_pointer(d[a], zero), (d[e], d[e + 1]))
    w = carray(_pointer(d[a + 1], zero), (d[e + 2], d[e + 3]))
    out = carray(_pointer(d[a + 2], zero), (d[e + 4], d[e + 5]))
    return rows(x, w, d[s], d[s + 1], out)


@njit(cache=True, nogil=True)
def serve(flags: np.ndarray, desc: np.ndarray, done: int, rounds: int) -> tuple[int, int]:  # pragma: no cover
    """The worker's side (``workers.Worker``): run the posted job (number done + 1) and each one posted
    after it, until a Python job is posted (returns (done, 1): it is the next), the watch for a job
    ends (0) or the caller sleeps on the condition (``workers._NOTIFY``)."""
    while True:
        kind = desc[KIND]
        if kind == ROWS_F32:
            result = _run_rows(desc, np.float32(0.0))
        elif kind == ROWS_F64:
            result = _run_rows(desc, np.float64(0.0))
        elif kind == LINEAR_F32:
            result = _run_linear(desc, np.float32(0.0))
        else:
            result = _run_linear(desc, np.float64(0.0))
        desc[RESULT] = result
        done += 1
        state = _finish(flags, done, rounds)
        if state != 1 or desc[KIND] == PYTHON:
            return done, state
