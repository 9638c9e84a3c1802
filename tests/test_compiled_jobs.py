"""``compiled_jobs`` and ``threads.split_compiled``: a range of images of ``conv_rows``' tiles run by a
worker without the GIL gives the bits the calling thread computes, in float32 and float64, for every
epilogue; compiled and Python jobs alternate on one worker in order; a sleeping worker is woken and a
sleeping caller notified; a descriptor that cannot describe its arrays is declined and the part runs
in the caller; a pool's NaN seen by a worker reaches the caller; two callers at once both finish; a
linear layer's rows (``linear_rows``) as a compiled job give the caller's bits too.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from convprop.functional import compiled_jobs, conv_rows, threads, workers
from convprop.functional.compiled_jobs import publish_linear, publish_rows
from convprop.functional.conv import resolve_forward
from convprop.functional.conv_rows_kernels import images
from convprop.functional.linear_rows import rows


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.setattr(threads, "THREADS", 2)


def _job(N, C, O, H, kernel, stride, padding, mode, dtype, seed=0, residual=False):
    """images' arguments (without n0, n1, out) and an output array, as conv_rows.run_planned makes them."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, H)).astype(dtype)
    w = rng.standard_normal((O, C, kernel, kernel)).astype(dtype)
    options = dict(stride=stride, padding=padding, dilation=1, groups=1, padding_mode="zeros", algorithm="auto")
    geo = resolve_forward(2, x, w, None, **options, name="conv2d")[3]
    p = conv_rows.plan(geo, x.dtype, mode)
    epilogue = rng.standard_normal((4, O)).astype(dtype)
    out = np.empty((N, O, *p.out_size), dtype=dtype)
    skip = rng.standard_normal(out.shape).astype(dtype) if residual else np.zeros((1, 1, 1, 1), dtype=dtype)
    (ph, pw), (sh, sw) = p.pads, p.stride
    args = (x, w.reshape(O, -1), p.offs, p.phases, ph, pw, sh, sw, p.Wq, p.S, p.L, p.pool, p.normalise, p.relu,
            epilogue, residual, skip)  # fmt: skip
    return args, out


CASES = [  # (C, O, H, kernel, stride, padding, mode, residual)
    (3, 5, 9, 3, 1, 1, conv_rows.NORM_RELU, False),
    (4, 6, 11, 3, 2, 1, conv_rows.RELU, False),  # a stride with a remainder
    (2, 3, 10, 3, 1, 1, conv_rows.RELU_POOL, False),
    (8, 4, 9, 1, 2, 0, conv_rows.NORM, False),  # resnet's projection
    (5, 5, 7, 3, 1, 1, conv_rows.NORM_RELU, True),  # a residual block's tail
    (1, 7, 8, 5, 1, 2, conv_rows.PLAIN, False),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_a_workers_compiled_part_equals_the_whole_batch_here(case, dtype, two_threads):
    C, O, H, kernel, stride, padding, mode, residual = case
    args, out = _job(7, C, O, H, kernel, stride, padding, mode, dtype, residual=residual)
    whole = out.copy()
    images(*args, 0, 7, whole)
    worker = threads._crew().workers[0]
    for parts in ([(0, 3), (3, 7)], [(0, 1), (1, 7)], [(0, 2), (2, 4), (4, 7)]):  # (three: one runs here)
        out[...] = np.nan
        posted = worker.posted
        flags = threads.split_compiled(images, publish_rows, args, parts, out)
        assert worker.posted == posted + 1  # the second part went to the worker
        assert len(flags) == len(parts) and not any(flags)
        np.testing.assert_array_equal(out, whole)


def test_compiled_and_python_jobs_alternate_on_one_worker_in_order():
    worker = workers.Worker(rounds=workers.calibrate(), on_start=lambda: None, serve=compiled_jobs.serve)
    args, out = _job(4, 3, 4, 8, 3, 1, 1, conv_rows.RELU, np.float32)
    whole = out.copy()
    images(*args, 0, 4, whole)
    seen: list[int] = []
    for k in range(60):  # back to back: the worker watches between them, in compiled code or in Python
        out[...] = 0.0
        if k % 3:
            ticket = worker.post_compiled(publish_rows, *args, 0, 4, out)
            assert ticket is not None
            worker.wait(ticket)
            np.testing.assert_array_equal(out, whole)
            seen.append(k)
        else:
            worker.wait(worker.post(lambda k=k: seen.append(k)))
    assert seen == list(range(60))


def test_a_sleeping_worker_takes_a_compiled_job_and_a_sleeping_caller_is_notified():
    worker = workers.Worker(rounds=1, on_start=lambda: None, serve=compiled_jobs.serve)  # sleeps almost at once
    args, out = _job(200, 16, 16, 28, 3, 1, 1, conv_rows.NORM_RELU, np.float64)  # long enough to sleep on
    whole = out.copy()
    images(*args, 0, 200, whole)
    for _ in range(2):
        time.sleep(0.02)
        assert worker.flags[workers.ASLEEP] == 1
        out[...] = 0.0
        worker.wait(worker.post_compiled(publish_rows, *args, 0, 200, out))
        np.testing.assert_array_equal(out, whole)


def test_a_worker_without_a_server_and_an_undescribable_job_are_declined(two_threads):
    plain = workers.Worker(rounds=1, on_start=lambda: None)
    args, out = _job(4, 3, 4, 8, 3, 1, 1, conv_rows.RELU, np.float32)
    assert plain.post_compiled(publish_rows, *args, 0, 4, out) is None and plain.posted == 0
    strided = np.empty((4, 4, 8, 16), dtype=np.float32)[..., ::2]  # not C-contiguous: not describable
    flags, desc = np.zeros(32, dtype=np.int64), np.zeros(workers.DESC_SLOTS, dtype=np.int64)
    assert not publish_rows(flags, desc, 1, *args, 0, 4, strided) and flags[workers.POSTED] == 0
    whole = out.copy()
    images(*args, 0, 4, whole)
    strided[...] = np.nan
    threads.split_compiled(images, publish_rows, args, [(0, 2), (2, 4)], strided)  # both parts run here
    np.testing.assert_array_equal(strided, whole)


def test_a_pools_nan_on_the_workers_part_reaches_the_caller(two_threads):
    args, out = _job(6, 2, 3, 10, 3, 1, 1, conv_rows.RELU_POOL, np.float32)
    args[0][5, 0, 4, 4] = np.nan  # in the last image: the worker's part
    flags = threads.split_compiled(images, publish_rows, args, [(0, 3), (3, 6)], out)
    assert flags == [False, True]


def test_two_callers_at_once_both_finish_with_compiled_parts(two_threads):
    """The second caller finds the workers busy and runs its parts itself."""
    args, out = _job(6, 4, 4, 9, 3, 1, 1, conv_rows.NORM_RELU, np.float32)
    whole = out.copy()
    images(*args, 0, 6, whole)
    results: dict[int, bool] = {}

    def caller(c: int) -> None:
        ok = True
        for _ in range(40):
            mine = np.full_like(out, np.nan)
            threads.split_compiled(images, publish_rows, args, [(0, 3), (3, 6)], mine)
            ok &= bool(np.array_equal(mine, whole))
        results[c] = ok

    callers = [threading.Thread(target=caller, args=(c,)) for c in range(3)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(60)
    assert results == {0: True, 1: True, 2: True}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_linear_layers_rows_as_a_compiled_job_give_the_callers_bits(two_threads, dtype):
    """``linear_tiles``' split: the worker's rows through ``linear_rows.rows`` from a descriptor; a
    part of an odd size (a short chunk), and an output the descriptor cannot describe (run here)."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((37, 300)).astype(dtype), rng.standard_normal((21, 300)).astype(dtype)
    whole = np.empty((37, 21), dtype=dtype)
    rows(x, w, 0, 37, whole)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(whole, x.astype(np.float64) @ w.T.astype(np.float64), rtol=tol, atol=tol)
    out = np.full_like(whole, np.nan)
    results = threads.split_compiled(rows, publish_linear, (x, w), [(0, 19), (19, 37)], out)
    assert results == [False, False]
    np.testing.assert_array_equal(out, whole)  # each row's sum is the same wherever its chunk starts
    strided = np.full((37, 42), np.nan, dtype=dtype)[:, ::2]
    flags, desc = np.zeros(32, dtype=np.int64), np.zeros(workers.DESC_SLOTS, dtype=np.int64)
    assert not compiled_jobs.publish_linear(flags, desc, 1, x, w, 0, 37, strided) and flags[workers.POSTED] == 0
    threads.split_compiled(rows, publish_linear, (x, w), [(0, 19), (19, 37)], strided)
    np.testing.assert_array_equal(strided, whole)
