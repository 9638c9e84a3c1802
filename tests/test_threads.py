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


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shapes", [((64, 300), (300, 40)), ((16, 5, 300), (300, 40)), ((40, 64), (64, 300))])
def test_matmul_splits_rows_and_equals_the_whole_product(shapes, dtype, two_blas_threads, monkeypatch):
    """threads.matmul writes each part's rows into one result: the product, to rounding (a BLAS may
    sum a block of rows in another order than the whole), split into THREADS parts inside the scope."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s).astype(dtype) for s in shapes)
    monkeypatch.setattr(threads, "SPLIT_MIN_PRODUCT", 1)
    calls = []
    real = threads.parallel
    monkeypatch.setattr(threads, "parallel", lambda parts: calls.append(len(parts)) or real(parts))
    whole = threads.matmul(a, b)  # outside the scope: one product
    with threads.blas_single_threaded():
        split = threads.matmul(a, b)
        transposed = threads.matmul(b.T, a.reshape(-1, a.shape[-1]).T)  # a transposed view, split by its rows
    assert calls == [2, 2]
    assert split.shape == whole.shape == (*a.shape[:-1], b.shape[1]) and split.dtype == dtype
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(split, a @ b, rtol=0, atol=tol * np.abs(a @ b).max())
    np.testing.assert_allclose(transposed, b.T @ a.reshape(-1, a.shape[-1]).T, rtol=0, atol=tol * np.abs(whole).max())


def test_matmul_leaves_small_products_and_one_dimensional_operands_whole(two_blas_threads, monkeypatch):
    calls = []
    real = threads.parallel
    monkeypatch.setattr(threads, "parallel", lambda parts: calls.append(len(parts)) or real(parts))
    a, v = np.ones((64, 8)), np.ones(8)
    with threads.blas_single_threaded():
        assert a.size * 8 < threads.SPLIT_MIN_PRODUCT
        np.testing.assert_array_equal(threads.matmul(a, np.ones((8, 8))), np.full((64, 8), 8.0))
        monkeypatch.setattr(threads, "SPLIT_MIN_PRODUCT", 1)
        np.testing.assert_array_equal(threads.matmul(a, v), np.full(64, 8.0))  # b not 2-D: numpy's own
        np.testing.assert_array_equal(threads.matmul(v, a.T), np.full(64, 8.0))  # a 1-D
    assert calls == []


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_backward_split_equals_the_whole_batch(dtype, two_blas_threads, monkeypatch):
    from convprop.functional.linear import linear_backward

    monkeypatch.setattr(threads, "SPLIT_MIN_PRODUCT", 1)
    rng = np.random.default_rng(3)
    x, w, dy = (rng.standard_normal(s).astype(dtype) for s in ((33, 70), (20, 70), (33, 20)))
    whole = linear_backward(dy, x, w)
    with threads.blas_single_threaded():
        split = linear_backward(dy, x, w)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for got, want, name in zip(split, whole, ("dx", "dw", "db"), strict=True):
        assert got.dtype == dtype, name
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max(), err_msg=name)
    np.testing.assert_allclose(whole[0], dy.astype(np.float64) @ w, rtol=1e-4 if dtype == np.float32 else 1e-12)


def test_tile_passes_take_both_threads_only_where_blas_is_held(two_blas_threads):
    from convprop.functional import conv_tiled

    small, large = conv_tiled.HELD_SPLIT_MACS, conv_tiled.SPLIT_MACS
    assert conv_tiled.pass_threads(small) == conv_tiled.THREADS == 1 and conv_tiled.pass_threads(large) is None
    with threads.blas_single_threaded():
        assert threads.held()
        assert conv_tiled.pass_threads(small) is None and conv_tiled.pass_threads(small - 1) == 1
    assert not threads.held()


@pytest.mark.parametrize("name", ["lenet", "resnet"])
def test_a_training_step_holds_blas_and_gives_the_same_gradients(name, two_blas_threads, monkeypatch):
    """Sequential.forward_with_context and backward_with_context run inside the scope (BLAS held, the
    passes split); the same step with no OpenBLAS to hold (nothing split) gives the same gradients."""
    from convprop.nn import Module, Sequential

    seen = []

    class Probe(Module):  # records whether BLAS is held while the model's passes run
        def forward_with_context(self, x):
            seen.append(("forward", threads.held(), _counts()))
            return x, None

        def backward_with_context(self, context, grad_output, *, input_grad=True):
            seen.append(("backward", threads.held(), _counts()))
            return grad_output

    def _counts():  # the thread counts of the OpenBLAS libraries the scope holds (found at its first use)
        return [lib.get() for lib in threads._openblas_libraries()]

    model = Sequential(Probe(), build_model(name, 1, (28, 28), 10, rng=0))
    x = np.random.default_rng(1).standard_normal((32, 1, 28, 28)).astype(np.float32)
    dy = np.random.default_rng(2).standard_normal((32, 10)).astype(np.float32)

    def gradients():
        for p in model.parameters():
            p.grad = None
        _, context = model.forward_with_context(x)
        model.backward_with_context(context, dy)
        return [p.grad.copy() for p in model.parameters()]

    held = gradients()
    assert threads._openblas_libraries()
    assert seen == [("forward", True, [1] * len(_counts())), ("backward", True, [1] * len(_counts()))]
    assert set(_counts()) == {2}
    monkeypatch.setattr(threads, "_libraries", [])  # no OpenBLAS found: nothing held, nothing split
    seen.clear()
    free = gradients()
    assert [s[1] for s in seen] == [False, False]
    for got, want in zip(held, free, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_a_graph_training_step_holds_blas(two_blas_threads):
    from convprop.nn import Graph, Linear, Module

    seen = []

    class Probe(Module):
        def forward_with_context(self, x):
            seen.append(threads.held())
            return x, None

        def backward_with_context(self, context, grad_output, *, input_grad=True):
            seen.append(threads.held())
            return grad_output

    graph = Graph(["x"], [("probe", Probe(), ["x"]), ("fc", Linear(4, 3), ["probe"])], ["fc"])
    y, context = graph.forward_with_context(np.ones((16, 4), np.float32))
    graph.backward_with_context(context, np.ones_like(y))
    assert seen == [True, True] and not threads.held()


def _held_counts():
    """The thread counts of the OpenBLAS libraries the scope holds (those loaded at its first use)."""
    return {lib.get() for lib in threads._openblas_libraries()}


def test_a_pass_on_blas_gets_its_threads_back_inside_the_scope(two_blas_threads):
    """blas_released: BLAS's own count during the pass (nested: until the outer one ends), held again
    after it; nothing held, nothing split meanwhile; outside the scope it changes nothing."""
    with threads.blas_released():
        assert _held_counts() == {2} and not threads.held()
    with threads.blas_single_threaded():
        assert threads.held() and _held_counts() == {1}
        with threads.blas_released():
            assert _held_counts() == {2} and not threads.held() and not threads.splits(64)
            with threads.blas_released():
                assert _held_counts() == {2}
            assert _held_counts() == {2} and not threads.held()
        assert _held_counts() == {1} and threads.held() and threads._released == 0
    assert _held_counts() == {2}


def test_the_scope_can_end_while_a_released_pass_runs(two_blas_threads):
    """Another thread's scope ends while this pass has BLAS released: nothing is held afterwards."""
    scope = threads.blas_single_threaded()
    scope.__enter__()
    with threads.blas_released():
        scope.__exit__(None, None, None)
    assert _held_counts() == {2} and threads._released == 0 and not threads.held()


@pytest.mark.parametrize("mode", ["reflect", "pointwise"])
def test_an_unfolding_layers_training_pass_runs_on_blas_threads(mode, two_blas_threads, monkeypatch):
    """Inside a model's training pass, a convolution that trains on BLAS's products (a padding mode
    other than zeros, a 1×1 kernel) runs them with BLAS's own threads; so does a tiled layer where it
    falls back to them (the second layer's input gradient where a tile has 8 output channels:
    AVX-512), the tiles' own passes with it held."""
    from convprop import nn
    from convprop.functional import conv_gemm, conv_pointwise

    algo = conv_gemm if mode == "reflect" else conv_pointwise
    seen = []
    for name in ("forward", "grad_input", "grad_weight"):
        real = getattr(algo, name)
        monkeypatch.setattr(algo, name, lambda *a, real=real: seen.append(threads.held()) or real(*a))
    if mode == "reflect":
        monkeypatch.setattr(
            conv_gemm, "forward_saving", lambda xp, w, geo, budget: (conv_gemm.forward(xp, w, geo), None)
        )
        layer = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
    else:
        layer = nn.Conv2d(3, 4, 1)
    model = nn.Sequential(layer, nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    x = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    y, context = model.forward_with_context(x)
    model.backward_with_context(context, np.ones_like(y))
    assert seen and not any(seen)


def test_a_convolution_called_on_its_own_runs_inside_the_scope(monkeypatch):
    """conv_with_context and the backward from its context enter batch_scope themselves (a layer
    called alone gets both threads for its tile passes), transposed ones too; small batches do not."""
    from convprop.functional import conv as fc
    from convprop.functional import conv_transpose as ft

    seen = []
    for module, name in ((fc, "forward_nd"), (fc, "_backward"), (ft, "_forward"), (ft, "_backward")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, real=real, **k: seen.append(threads._depth) or real(*a, **k))
    rng = np.random.default_rng(0)
    for n, depth in ((16, 1), (4, 0)):
        x, w = rng.standard_normal((n, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3))
        y, context = fc.conv_with_context(x, w, None, padding=1, ndim=2)
        fc.conv_backward_from_context(np.ones_like(y), context)
        y, context = ft.conv_transpose_with_context(x, w.transpose(1, 0, 2, 3).copy(), None, stride=2, ndim=2)
        ft.conv_transpose_backward_from_context(np.ones_like(y), context)
        assert seen == [depth] * 4, (n, seen)
        seen.clear()
    assert threads._depth == 0
