"""convprop.optim against torch.optim in float64: parameters after every step, state_dict, argument checks,
and the compiled Adam update. The lr schedules are in test_optim_schedules.py, which imports the helpers here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from convprop import optim

SHAPES = [(3,), (2, 3), (4, 1, 2, 2)]
STEPS = 10
NONE_GRADS = {(2, 1), (5, 1), (5, 2), (6, 0)}  # (step, parameter index) pairs that get no gradient


class P:
    """The smallest parameter: ``data`` and ``grad``, as optimizers see ``convprop.nn.Parameter``."""

    def __init__(self, data):
        self.data = data
        self.grad = None


def problem(seed=0):
    """Initial values and a fixed sequence of gradients (None where NONE_GRADS says)."""
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s) for s in SHAPES]
    grads = [
        [None if (t, i) in NONE_GRADS else rng.standard_normal(s) for i, s in enumerate(SHAPES)] for t in range(STEPS)
    ]
    return init, grads


def set_grads(params, grads, to_tensor=False):
    for p, g in zip(params, grads, strict=True):
        p.grad = None if g is None else (torch.tensor(g) if to_tensor else g.copy())


def assert_matches_torch(name, kwargs, seed=0):
    """Run ``STEPS`` steps of convprop's and torch's optimizer on the same gradients; compare each step."""
    init, grads = problem(seed)
    ours = [P(x.copy()) for x in init]
    arrays = [p.data for p in ours]  # the optimizer must update these very arrays
    theirs = [torch.tensor(x, requires_grad=True) for x in init]
    opt = getattr(optim, name)(ours, **kwargs)
    topt = getattr(torch.optim, name)(theirs, foreach=False, **kwargs)
    for t in range(STEPS):
        set_grads(ours, grads[t])
        set_grads(theirs, grads[t], to_tensor=True)
        opt.step()
        topt.step()
        for i, (p, tp) in enumerate(zip(ours, theirs, strict=True)):
            assert p.data is arrays[i], "data must be updated in place"
            np.testing.assert_allclose(
                p.data, tp.detach().numpy(), rtol=1e-9, atol=1e-15, err_msg=f"{name} {kwargs} step {t} param {i}"
            )


SGD_GRID = [
    dict(lr=lr, momentum=m, dampening=d, weight_decay=wd, nesterov=n)
    for lr, m, d, wd, n in itertools.product([0.1], [0.0, 0.9], [0.0, 0.3], [0.0, 0.05], [False, True])
    if not (n and (m == 0 or d != 0))
]
ADAM_GRID = [
    dict(lr=0.05, betas=b, eps=e, weight_decay=wd, amsgrad=a)
    for b, e, wd, a in itertools.product(
        [(0.9, 0.999), (0.5, 0.9), (0.0, 0.99)], [1e-8, 1e-3], [0.0, 0.1], [False, True]
    )
]


@pytest.mark.parametrize("kwargs", SGD_GRID, ids=str)
def test_sgd_matches_torch(kwargs):
    assert_matches_torch("SGD", kwargs)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("kwargs", ADAM_GRID, ids=str)
def test_adam_matches_torch(name, kwargs):
    assert_matches_torch(name, kwargs)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_defaults_match_torch(name):
    assert_matches_torch(name, {})


def test_plain_sgd_is_the_seed_update():
    init, grads = problem()
    p = P(init[1].copy())
    p.grad = grads[0][1]
    optim.SGD([p], lr=0.25).step()
    np.testing.assert_array_equal(p.data, init[1] - 0.25 * grads[0][1])


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, 0.1, momentum=0.9), lambda ps: optim.Adam(ps)])
def test_none_grad_is_skipped(make):
    a, b = P(np.ones(3)), P(np.ones(2))
    opt = make([a, b])
    a.grad = np.full(3, 0.5)
    opt.step()
    np.testing.assert_array_equal(b.data, np.ones(2))
    assert opt.state[1] == {} and opt.state[0] != {}
    assert not np.array_equal(a.data, np.ones(3))


def test_zero_grad():
    p = P(np.zeros(3))
    opt = optim.SGD([p], lr=0.1)
    p.grad = np.ones(3)
    kept = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is kept and np.array_equal(kept, np.zeros(3))
    opt.zero_grad()
    assert p.grad is None


def test_works_with_nn_parameter():
    module = pytest.importorskip("convprop.nn.module")
    p = module.Parameter(np.arange(4.0))
    opt = optim.Adam([p], lr=0.1)
    p.accumulate(np.ones(4))
    opt.step()
    np.testing.assert_allclose(p.data, np.arange(4.0) - 0.1)
    opt.zero_grad()
    assert p.grad is None


# ---------------------------------------------------------------------------------- state_dict

ROUND_TRIP = [
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.1)),
    ("Adam", dict(lr=0.05, amsgrad=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.05)),
]


@pytest.mark.parametrize("name, kwargs", ROUND_TRIP, ids=str)
def test_state_dict_round_trip_continues_identically(name, kwargs):
    init, grads = problem(1)
    ours = [P(x.copy()) for x in init]
    opt = getattr(optim, name)(ours, **kwargs)
    for t in range(STEPS // 2):
        set_grads(ours, grads[t])
        opt.step()
    saved = opt.state_dict()
    assert all(isinstance(v, (int, float, np.ndarray)) for v in saved.values())
    restored = [P(p.data.copy()) for p in ours]
    opt2 = getattr(optim, name)(restored, **kwargs)
    opt2.load_state_dict(saved)
    for t in range(STEPS // 2, STEPS):
        set_grads(ours, grads[t])
        set_grads(restored, grads[t])
        opt.step()
        opt2.step()
    for p, q in zip(ours, restored, strict=True):
        np.testing.assert_array_equal(p.data, q.data)
    assert opt.state_dict()["lr"] == opt2.state_dict()["lr"]


def test_state_dict_is_a_copy():
    p = P(np.zeros(2))
    opt = optim.Adam([p])
    p.grad = np.ones(2)
    opt.step()
    saved = opt.state_dict()
    before = saved["exp_avg.0"].copy()
    opt.step()
    np.testing.assert_array_equal(saved["exp_avg.0"], before)
    assert saved["step.0"] == 1


def adam_state():
    p = P(np.zeros(2))
    opt = optim.Adam([p])
    p.grad = np.ones(2)
    opt.step()
    return opt, opt.state_dict()


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda s: s.pop("lr"), r"state_dict has no 'lr'"),
        (lambda s: s.update({"momentum_buffer.0": np.zeros(2)}), r"unexpected state_dict key 'momentum_buffer\.0'"),
        (lambda s: s.update({"exp_avg.7": np.zeros(2)}), r"unexpected state_dict key 'exp_avg\.7'.*index < 1"),
        (
            lambda s: s.update({"exp_avg.0": np.zeros(3)}),
            r"state_dict\['exp_avg\.0'\] has shape \(3,\), expected \(2,\)",
        ),
        (lambda s: s.pop("exp_avg_sq.0"), r"parameter 0 has entries \['exp_avg', 'step'\], expected all of"),
        (lambda s: s.update({"step.0": 0}), r"state_dict\['step\.0'\] must be >= 1.*, got 0"),
    ],
)
def test_load_state_dict_errors(edit, match):
    opt, saved = adam_state()
    edit(saved)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(saved)


# ---------------------------------------------------------------------------------- validation


def params():
    return [P(np.zeros(2)), P(np.zeros(3))]


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: optim.SGD(params(), lr=0.0), ValueError, r"lr must be > 0.*, got 0\.0"),
        (lambda: optim.SGD(params(), lr=-1), ValueError, r"lr must be > 0.*, got -1"),
        (lambda: optim.SGD(params(), lr=float("nan")), ValueError, r"lr must be finite.*, got nan"),
        (lambda: optim.SGD(params(), lr="0.1"), TypeError, r"lr must be a real number, got '0\.1' of type str"),
        (lambda: optim.Adam(params(), lr=0), ValueError, r"lr must be > 0.*, got 0"),
        (lambda: optim.SGD(params(), lr=0.1, momentum=-0.5), ValueError, r"momentum must be >= 0.*, got -0\.5"),
        (lambda: optim.SGD(params(), lr=0.1, dampening=1.5), ValueError, r"dampening must be in \[0, 1\].*, got 1\.5"),
        (lambda: optim.SGD(params(), 0.1, weight_decay=-1), ValueError, r"weight_decay must be >= 0.*, got -1"),
        (lambda: optim.SGD(params(), 0.1, nesterov=True), ValueError, r"nesterov=True requires momentum > 0 .*=0\.0"),
        (
            lambda: optim.SGD(params(), 0.1, momentum=0.9, dampening=0.1, nesterov=True),
            ValueError,
            r"dampening == 0, got momentum=0\.9 and dampening=0\.1",
        ),
        (lambda: optim.Adam(params(), betas=(1.0, 0.999)), ValueError, r"betas\[0\] must be in \[0, 1\).*, got 1\.0"),
        (lambda: optim.Adam(params(), betas=(0.9, -0.1)), ValueError, r"betas\[1\] must be in \[0, 1\).*, got -0\.1"),
        (lambda: optim.AdamW(params(), betas=0.9), TypeError, r"betas must be a pair \(beta1, beta2\), got 0\.9"),
        (lambda: optim.Adam(params(), eps=0.0), ValueError, r"eps must be > 0.*, got 0\.0"),
        (lambda: optim.Adam(params(), weight_decay=-0.1), ValueError, r"weight_decay must be >= 0.*, got -0\.1"),
        (lambda: optim.AdamW(params(), weight_decay=-0.1), ValueError, r"weight_decay must be >= 0.*, got -0\.1"),
        (lambda: optim.SGD([], lr=0.1), ValueError, r"params is empty"),
        (lambda: optim.SGD(iter([]), lr=0.1), ValueError, r"params is empty"),
        (
            lambda: (lambda p: optim.SGD([p, P(np.zeros(1)), p], lr=0.1))(P(np.zeros(1))),
            ValueError,
            r"parameter 2 is the same object as parameter 0",
        ),
        (lambda: optim.SGD(P(np.zeros(1)), lr=0.1), TypeError, r"params must be an iterable of parameters, got P"),
        (lambda: optim.SGD([np.zeros(2)], lr=0.1), TypeError, r"parameter 0 must have `data` .* got ndarray"),
        (lambda: optim.SGD([P(np.zeros(2, dtype=int))], lr=0.1), TypeError, r"parameter 0 data must be floating"),
    ],
)
def test_optimizer_validation(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_grad_shape_mismatch_names_parameter_and_updates_nothing():
    ps = params()
    opt = optim.SGD(ps, lr=0.1)
    ps[0].grad = np.ones(2)
    ps[1].grad = np.ones((3, 1))
    with pytest.raises(ValueError, match=r"parameter 1: grad shape \(3, 1\) does not match data shape \(3,\)"):
        opt.step()
    np.testing.assert_array_equal(ps[0].data, np.zeros(2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "kwargs",
    [{}, dict(betas=(0.5, 0.9)), dict(betas=(0.0, 0.99), eps=1e-3), dict(weight_decay=0.1)],
    ids=str,
)
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_compiled_adam_is_bit_identical_to_the_numpy_update(monkeypatch, name, kwargs, dtype):
    """optim_compiled.adam_step against Adam's NumPy operations, in both dtypes and both lerp forms."""
    rng = np.random.default_rng(1)
    init = [rng.standard_normal(s).astype(dtype) for s in [(257,), (3, 5, 7), (1000, 3)]]
    grads = [[rng.standard_normal(x.shape).astype(dtype) for x in init] for _ in range(6)]

    def run(compiled):
        with monkeypatch.context() as patch:
            if not compiled:
                patch.setattr(optim, "_one_contiguous_float_dtype", lambda *arrays: False)
            params = [P(x.copy()) for x in init]
            opt = getattr(optim, name)(params, lr=0.01, **kwargs)
            for step_grads in grads:
                set_grads(params, step_grads)
                opt.step()
        return [p.data for p in params], opt.state

    (fast, fast_state), (slow, slow_state) = run(True), run(False)
    for a, b in zip(fast, slow, strict=True):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)
    for a, b in zip(fast_state, slow_state, strict=True):
        np.testing.assert_array_equal(a["exp_avg"], b["exp_avg"])
        np.testing.assert_array_equal(a["exp_avg_sq"], b["exp_avg_sq"])


def test_adam_with_a_strided_gradient_takes_the_numpy_path_and_agrees():
    rng = np.random.default_rng(2)
    wide = rng.standard_normal((4, 6)).astype(np.float32)
    a, b = P(rng.standard_normal((4, 3)).astype(np.float32)), None
    b = P(a.data.copy())
    opt_a, opt_b = optim.Adam([a], lr=0.1), optim.Adam([b], lr=0.1)
    a.grad, b.grad = wide[:, ::2], np.ascontiguousarray(wide[:, ::2])  # a view with strides, and its copy
    opt_a.step()
    opt_b.step()
    np.testing.assert_array_equal(a.data, b.data)
