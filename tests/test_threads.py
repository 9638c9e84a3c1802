"""``functional.threads``: BLAS held to one thread during an inference pass, and the batch split between
convprop's own threads there.

The scope must restore the BLAS thread count it found — after nesting, after passes from several
threads that enter and leave in any order, after an error — and must leave a BLAS with more threads
than convprop's pool alone. A split product must equal the whole batch's (one part of a split never
splits again, and a pool thread never waits on the pool), and models must give the same logits with
and without the split.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from convprop.functional import conv2d, linear, threads
from convprop.models import build_model


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.fixture
def two_blas_threads(monkeypatch):
    """BLAS on 2 threads and a pool of 2, whatever this machine has."""
    monkeypatch.setattr(threads, "THREADS", 2)
    with threadpool_limits(2, user_api="blas"):
        if 2 not in _blas_threads():
            pytest.skip("this machine's BLAS does not run on 2 threads")
        yield


def test_scope_holds_blas_to_one_thread_and_restores_it(two_blas_threads):
    before = _blas_threads()
    with threads.blas_single_threaded():
        assert set(_blas_threads()) == {1}
        with threads.blas_single_threaded():  # nested: still held, and not restored by the inner exit
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {1}
    assert _blas_threads() == before


def test_scope_restores_after_an_error(two_blas_threads):
    before = _blas_threads()
    with pytest.raises(RuntimeError, match="inside"), threads.blas_single_threaded():
        raise RuntimeError("inside")
    assert _blas_threads() == before
    assert not threads.splits(64)


def test_passes_from_two_threads_leave_in_any_order(two_blas_threads):
    """Thread A enters, B enters, A leaves (B still inside: BLAS still held), B leaves: restored."""
    before = _blas_threads()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with threads.blas_single_threaded():
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def b():
        a_in.wait(10)
        with threads.blas_single_threaded():
            b_in.set()
            a_out.wait(10)
            seen["after A left"] = _blas_threads()

    workers = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(20)
    assert set(seen["after A left"]) == {1}
    assert _blas_threads() == before


def test_a_blas_with_more_threads_than_the_pool_is_left_alone(two_blas_threads, monkeypatch):
    monkeypatch.setattr(threads, "THREADS", 1)  # BLAS's 2 threads are more than convprop's 1
    with threads.blas_single_threaded():
        assert 2 in _blas_threads()
        assert not threads.splits(64)  # nothing held, so nothing is split


def test_splits_only_inside_the_scope_and_for_enough_images(two_blas_threads):
    assert not threads.splits(64)
    with threads.blas_single_threaded():
        assert threads.splits(threads.SPLIT_MIN_IMAGES)
        assert not threads.splits(threads.SPLIT_MIN_IMAGES - 1)
        inner = threads.split_batch(lambda part: np.array([threads.splits(64)] * len(part)), np.zeros((8, 1)))
        assert not inner.any()  # one part of a split never splits again


def test_split_batch_parts_and_nesting(two_blas_threads):
    x = np.arange(10.0).reshape(10, 1)
    with threads.blas_single_threaded():
        sizes = threads.split_batch(lambda part: np.full((len(part), 1), len(part)), x)
        assert sizes[:, 0].tolist() == [5] * 10
        # a pool thread that calls parallel() runs the calls itself instead of waiting on the busy pool
        nested = threads.split_batch(lambda part: threads.split_batch(lambda p: 2 * p, part), x)
    np.testing.assert_array_equal(nested, 2 * x)


def test_split_products_equal_the_whole_batch(two_blas_threads):
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((64, 300), (40, 300), (40,)))
    images, kernel = rng.standard_normal((16, 8, 14, 14)).astype(np.float32), rng.standard_normal((8, 8, 3, 3))
    kernel = kernel.astype(np.float32)
    whole = linear(x, w, b), conv2d(images, kernel, stride=2, padding=1), conv2d(images, kernel, padding=1)
    with threads.blas_single_threaded():
        assert threads.splits(64)
        split = linear(x, w, b), conv2d(images, kernel, stride=2, padding=1), conv2d(images, kernel, padding=1)
    for got, want in zip(split, whole, strict=True):  # float32 rounding of the output's scale, at most
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())


@pytest.mark.parametrize("name", ["lenet", "resnet"])
def test_models_give_the_same_logits_split_or_not(name, two_blas_threads):
    model = build_model(name, 1, (28, 28), 10, rng=0).eval()
    x = np.random.default_rng(1).standard_normal((20, 1, 28, 28)).astype(np.float32)
    split = model.forward(x)  # Sequential.forward: inside the scope, products split
    layer_by_layer = _unsplit(model, x)  # outside the scope: nothing split, BLAS on 2 threads
    np.testing.assert_allclose(split, layer_by_layer, rtol=1e-5, atol=1e-6)
    assert _blas_threads() == [2] * len(_blas_threads())


def _unsplit(container, x):
    """A container's layers' own forwards, one by one (a Sequential's forward would enter the scope)."""
    from convprop.nn import Residual, Sequential

    if isinstance(container, Residual):
        body = _unsplit(container.body, x)
        shortcut = x if container.shortcut is None else _unsplit(container.shortcut, x)
        return body + shortcut
    assert isinstance(container, Sequential)
    for layer in container:
        x = _unsplit(layer, x) if isinstance(layer, (Residual, Sequential)) else layer.forward(x)
    return x


def test_the_callers_errstate_holds_in_the_parts(two_blas_threads):
    """NumPy's errstate is a context variable: the pool's threads must see the caller's."""
    x = np.full((16, 4), np.inf, dtype=np.float32)
    with threads.blas_single_threaded(), np.errstate(invalid="raise"), pytest.raises(FloatingPointError):
        threads.split_batch(lambda part: part - part, x)  # inf − inf: invalid
    with threads.blas_single_threaded(), np.errstate(invalid="ignore"):
        assert np.isnan(threads.split_batch(lambda part: part - part, x)).all()
