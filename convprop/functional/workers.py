"""convprop's worker threads, and a handoff to them that does not put them to sleep between passes.

A training step of a small network is a chain of compiled passes of 0.1–1 ms each with Python between
them. Handed to a thread that sleeps on a condition (``concurrent.futures``' pool), each part started a
median 54–175 µs late on these machines — the longer the thread had slept, the later — so splitting
such a pass between the two cores was slower than one core. Here a worker that finishes a job keeps
watching for the next one in a compiled loop that holds no GIL and yields its core to any other
runnable thread at every round (``sched_yield``); only after ``SPIN_SECONDS`` with no job does it
sleep on a condition (and the next job pays the wake-up). The caller, having run its own part, watches
for the workers' ends the same way. Measured with two 62 µs parts (fp32 loops, AVX-512 Xeon, 2 cores,
2 December): both done 85 µs after the start with a watching worker against 111 µs through the pool,
113 against 209 µs after 2 ms of rest.

The protocol, per worker: ``flags[POSTED]`` counts the jobs handed to it, ``flags[DONE]`` those it
finished; a job is the callable in ``Worker.job`` (set before ``POSTED`` moves; the GIL orders the two
for the worker, which takes the GIL before it reads the job), or, where ``desc[0]`` (its kind) is not
``PYTHON``, a compiled job the worker runs without taking the GIL (``compiled_jobs``: the crew's
``serve``). ``flags[ASLEEP]`` and
``flags[CALLER_ASLEEP]`` say who waits on the condition and must be notified. The worker's store to
``DONE`` and its load of ``CALLER_ASLEEP`` have no fence between them in compiled code, so a caller
asleep on the condition also wakes every millisecond to look (a lost notification costs at most that).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

SPIN_SECONDS = 0.002  # how long a worker (or a waiting caller) watches before it sleeps
POSTED, DONE, ASLEEP, CALLER_ASLEEP = 0, 8, 16, 24  # int64 slots a cache line apart
PYTHON = 0  # desc[0] of a job that is a Python callable (Worker.job)
DESC_SLOTS = 48  # a worker's job descriptor (compiled_jobs' layout)
_NOTIFY = 2  # what _finish returns when the caller sleeps on the condition
Serve = Callable[[np.ndarray, np.ndarray, int, int], tuple[int, int]]


@intrinsic
def _sched_yield(typingctx):  # type: ignore[no-untyped-def]
    """libc's sched_yield(), called by name (so the compiled callers can be cached)."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        return builder.call(fn, [])

    return types.int32(), codegen


def _fence(ordering: str):  # type: ignore[no-untyped-def]
    """An intrinsic: an LLVM fence of ``ordering`` (on x86 acquire and release only bar the compiler)."""

    @intrinsic
    def fence(typingctx):  # type: ignore[no-untyped-def]
        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            builder.fence(ordering)
            return context.get_dummy_value()

        return types.none(), codegen

    return fence


_acquire, _release = _fence("acquire"), _fence("release")


@njit(cache=True)
def _publish(flags: np.ndarray, desc: np.ndarray, kind: int, ticket: int) -> None:  # pragma: no cover - compiled
    """desc[0] = kind, released before flags[POSTED] = ticket (a worker in compiled code reads them)."""
    desc[0] = kind
    _release()
    flags[POSTED] = ticket


@njit(cache=True, nogil=True)
def _watch(flags: np.ndarray, slot: int, value: int, rounds: int) -> bool:  # pragma: no cover - compiled
    """Whether flags[slot] reaches ``value`` within ``rounds`` rounds, yielding the core at each one.
    (The call to sched_yield, opaque to the compiler, makes every round load the flag again.)"""
    for _ in range(rounds):
        if flags[slot] >= value:
            _acquire()  # what was stored before the flag moved, seen after it
            return True
        _sched_yield()  # type: ignore[call-arg]
    reached = flags[slot] >= value
    _acquire()
    return reached


@njit(cache=True, nogil=True)
def _finish(flags: np.ndarray, done: int, rounds: int) -> int:  # pragma: no cover - compiled
    """The worker's end of job ``done``: DONE = done without taking the GIL (the caller watching for
    it takes the GIL at once); then _NOTIFY if the caller sleeps on the condition, else whether job
    done + 1 was posted within ``rounds``."""
    _release()  # the job's stores before DONE moves
    flags[DONE] = done
    if flags[CALLER_ASLEEP]:
        return _NOTIFY
    return int(_watch(flags, POSTED, done + 1, rounds))


class Worker:
    """One thread that runs the jobs handed to it by :meth:`post`, in order, one at a time."""

    def __init__(self, rounds: int, on_start: Callable[[], None], serve: Serve | None = None) -> None:
        self.flags = np.zeros(32, dtype=np.int64)
        self.desc = np.zeros(DESC_SLOTS, dtype=np.int64)  # the job: desc[0] its kind (PYTHON: Worker.job)
        self.serve = serve  # runs compiled jobs (compiled_jobs.serve): (flags, desc, done, rounds) → (done, state)
        self.rounds = rounds
        self.cond = threading.Condition()
        self.job: Callable[[], object] | None = None
        self.error: BaseException | None = None
        self.posted = 0  # the caller's count of jobs handed over (flags[POSTED] is the worker's view)
        self._on_start = on_start
        threading.Thread(target=self._loop, name="convprop-worker", daemon=True).start()

    def post(self, job: Callable[[], object]) -> int:
        """Hand ``job`` to the worker; the number :meth:`wait` takes."""
        self.job = job
        self.posted += 1
        _publish(self.flags, self.desc, PYTHON, self.posted)
        self._wake()
        return self.posted

    def post_compiled(self, publish: Callable[..., bool], *args: object) -> int | None:
        """Hand the worker a compiled job: ``publish(flags, desc, ticket, *args)`` (compiled, as
        ``compiled_jobs.publish_rows``) describes and posts it; the number :meth:`wait` takes, or None
        if this worker runs no compiled jobs or ``publish`` declined (nothing was posted)."""
        if self.serve is None or not publish(self.flags, self.desc, self.posted + 1, *args):
            return None
        self.posted += 1
        self._wake()
        return self.posted

    def _wake(self) -> None:
        if self.flags[ASLEEP]:  # (the worker sets it and reads POSTED holding the GIL, as the caller does here)
            with self.cond:
                self.cond.notify_all()

    def wait(self, ticket: int) -> None:
        """Until job ``ticket`` has run; its exception, if it raised one, raised here."""
        flags = self.flags
        if not _watch(flags, DONE, ticket, self.rounds):
            with self.cond:
                flags[CALLER_ASLEEP] = 1
                while flags[DONE] < ticket:
                    self.cond.wait(0.001)  # (module docstring: a notification can be missed)
                flags[CALLER_ASLEEP] = 0
        error, self.error = self.error, None
        if error is not None:
            raise error

    def _loop(self) -> None:
        self._on_start()
        flags, desc, done = self.flags, self.desc, 0
        state = 0
        while True:
            if not state:
                with self.cond:
                    flags[ASLEEP] = 1
                    while flags[POSTED] <= done:
                        self.cond.wait()
                    flags[ASLEEP] = 0
            if desc[0] != PYTHON and self.serve is not None:  # this job and the compiled ones after it
                done, state = self.serve(flags, desc, done, self.rounds)
            else:
                job, self.job = self.job, None
                try:
                    job()  # type: ignore[misc]
                except BaseException as error:  # handed to the caller in wait()
                    self.error = error
                done += 1
                state = _finish(flags, done, self.rounds)
            if state == _NOTIFY:
                with self.cond:
                    self.cond.notify_all()
                state = int(_watch(flags, POSTED, done + 1, self.rounds))


def calibrate() -> int:
    """Rounds of :func:`_watch` in ``SPIN_SECONDS`` on this machine (a round is one sched_yield)."""
    flags = np.zeros(32, dtype=np.int64)
    _watch(flags, POSTED, 1, 1)  # compiled (or loaded) before it is timed
    start = time.perf_counter()
    _watch(flags, POSTED, 1, 2000)
    per_round = max((time.perf_counter() - start) / 2000, 1e-8)
    return max(1, int(SPIN_SECONDS / per_round))


class Crew:
    """``size`` workers and a lock: one caller at a time hands them jobs (another runs its own)."""

    def __init__(self, size: int, on_start: Callable[[], None], serve: Serve | None = None) -> None:
        rounds = calibrate()
        self.workers = [Worker(rounds, on_start, serve) for _ in range(size)]
        self.lock = threading.Lock()
        self.pid = os.getpid()
