"""``functional.workers`` and ``threads.parallel`` on them: every part runs once, its exception reaches
the caller, and no handoff is lost — a worker that fell asleep is woken, a caller asleep on a long
part is woken, two callers at once both finish, and a forked child gets workers of its own.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from functools import partial

import numpy as np
import pytest

from convprop.functional import threads, workers


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.setattr(threads, "THREADS", 2)


def test_every_call_runs_once_even_beyond_the_workers(two_threads):
    seen: list[int] = []
    lock = threading.Lock()

    def call(k: int) -> None:
        with lock:
            seen.append(k)

    for n in (1, 2, 5):  # one call (no handoff), one per thread, more calls than workers
        seen.clear()
        threads.parallel([lambda k=k: call(k) for k in range(n)])
        assert sorted(seen) == list(range(n))


def test_the_parts_run_on_two_threads(two_threads):
    names: set[str] = set()
    barrier = threading.Barrier(2, timeout=10)  # both parts must be running at once to pass it

    def call() -> None:
        names.add(threading.current_thread().name)
        barrier.wait()

    threads.parallel([call, call])
    assert len(names) == 2


@pytest.mark.parametrize("where", [0, 1])
def test_an_exception_in_either_part_reaches_the_caller_after_both_ended(two_threads, where):
    ended: list[int] = []

    def call(k: int) -> None:
        if k == where:
            raise ValueError(f"part {k}")
        time.sleep(0.01)
        ended.append(k)

    with pytest.raises(ValueError, match=f"part {where}"):
        threads.parallel([lambda: call(0), lambda: call(1)])
    assert ended == [1 - where]  # the other part had finished when the error was raised
    threads.parallel([lambda: ended.append(2), lambda: ended.append(3)])  # the workers still work
    assert sorted(ended) == [1 - where, 2, 3]


def test_a_sleeping_worker_is_woken_and_a_sleeping_caller_is_notified():
    worker = workers.Worker(rounds=1, on_start=lambda: None)  # watches one round: sleeps almost at once
    out: list[str] = []
    for _ in range(3):
        time.sleep(0.02)  # the worker is asleep on its condition by now
        assert worker.flags[workers.ASLEEP] == 1
        ticket = worker.post(lambda: (time.sleep(0.02), out.append("long")))  # the caller sleeps too
        worker.wait(ticket)
        assert out[-1] == "long"
    assert len(out) == 3


def test_a_worker_watching_takes_jobs_in_turn():
    worker = workers.Worker(rounds=workers.calibrate(), on_start=lambda: None)
    out: list[int] = []
    for k in range(200):  # back to back: the worker watches between them
        worker.wait(worker.post(lambda k=k: out.append(k)))
    assert out == list(range(200))


def test_two_callers_at_once_both_finish(two_threads):
    """The second caller finds the workers busy and runs its parts itself."""
    results: dict[int, np.ndarray] = {}

    def caller(c: int) -> None:
        for _ in range(50):
            parts = np.zeros(4)
            threads.parallel([partial(parts.__setitem__, k, c + k) for k in range(4)])
            results[c] = parts

    callers = [threading.Thread(target=caller, args=(10 * c,)) for c in range(3)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(30)
    assert {c: r.tolist() for c, r in results.items()} == {10 * c: [10 * c + k for k in range(4)] for c in range(3)}


def _child(queue) -> None:  # pragma: no cover - runs in the forked child
    parts = [0, 0]
    threads.parallel([lambda: parts.__setitem__(0, 1), lambda: parts.__setitem__(1, 2)])
    queue.put(parts)


def test_a_forked_child_gets_workers_of_its_own(two_threads):
    threads.parallel([lambda: None, lambda: None])  # the parent's workers exist before the fork
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child, args=(queue,))
    child.start()
    got = queue.get(timeout=30)
    child.join(30)
    assert child.exitcode == 0 and got == [1, 2]
