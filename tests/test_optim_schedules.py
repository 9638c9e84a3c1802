"""convprop.optim's lr schedules against torch.optim.lr_scheduler in float64: the lr per epoch, a schedule
driving SGD, state_dict and argument checks. The problem and parameters come from test_optim.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_optim import STEPS, P, params, problem, set_grads

from convprop import optim

SCHEDULES = [
    ("StepLR", dict(step_size=7, gamma=0.5)),
    ("StepLR", dict(step_size=1, gamma=0.9)),
    ("StepLR", dict(step_size=3)),
    ("CosineAnnealingLR", dict(T_max=30)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.02)),  # past T_max: the cosine rises again
    ("CosineAnnealingLR", dict(T_max=10, eta_min=0.0)),
    ("LinearLR", dict(start_factor=0.1, total_iters=10)),
    ("LinearLR", dict(start_factor=1.0, end_factor=0.05, total_iters=20)),
    ("LinearLR", dict()),
]


@pytest.mark.parametrize("name, kwargs", SCHEDULES, ids=str)
def test_schedule_matches_torch(name, kwargs):
    base = 0.3
    opt = optim.SGD([P(np.zeros(1))], lr=base)
    sched = getattr(optim, name)(opt, **kwargs)
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    tsched = getattr(torch.optim.lr_scheduler, name)(topt, **kwargs)
    ours, theirs = [sched.get_last_lr()], [tsched.get_last_lr()[0]]
    for _ in range(30):
        topt.step()
        tsched.step()
        sched.step()
        assert opt.lr == sched.get_last_lr()
        ours.append(sched.get_last_lr())
        theirs.append(tsched.get_last_lr()[0])
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_schedule_drives_training_like_torch():
    init, grads = problem(2)
    ours = [P(x.copy()) for x in init]
    theirs = [torch.tensor(x, requires_grad=True) for x in init]
    opt = optim.SGD(ours, lr=0.2, momentum=0.9)
    topt = torch.optim.SGD(theirs, lr=0.2, momentum=0.9, foreach=False)
    sched = optim.CosineAnnealingLR(opt, T_max=STEPS)
    tsched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=STEPS)
    for t in range(STEPS):
        set_grads(ours, grads[t])
        set_grads(theirs, grads[t], to_tensor=True)
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
    for p, tp in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-9, atol=1e-15)


def test_schedule_state_dict_round_trip():
    opt = optim.SGD([P(np.zeros(1))], lr=0.5)
    sched = optim.CosineAnnealingLR(opt, T_max=10)
    for _ in range(4):
        sched.step()
    saved = sched.state_dict()
    opt2 = optim.SGD([P(np.zeros(1))], lr=0.5)
    sched2 = optim.CosineAnnealingLR(opt2, T_max=10)
    sched2.load_state_dict(saved)
    assert opt2.lr == opt.lr
    sched.step()
    sched2.step()
    assert sched2.get_last_lr() == sched.get_last_lr()
    with pytest.raises(ValueError, match=r"missing \['base_lr'\]"):
        sched2.load_state_dict({"last_epoch": 3})


# ---------------------------------------------------------------------------------- validation


def sgd():
    return optim.SGD(params(), lr=0.1)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: optim.StepLR(sgd(), step_size=0), ValueError, r"step_size must be >= 1.*, got 0"),
        (lambda: optim.StepLR(sgd(), step_size=1.5), TypeError, r"step_size must be an int, got 1\.5 of type float"),
        (lambda: optim.StepLR(sgd(), step_size=2, gamma=0), ValueError, r"gamma must be > 0.*, got 0"),
        (lambda: optim.CosineAnnealingLR(sgd(), T_max=0), ValueError, r"T_max must be >= 1.*, got 0"),
        (
            lambda: optim.CosineAnnealingLR(sgd(), T_max=5, eta_min=-1e-3),
            ValueError,
            r"eta_min must be >=.*, got -0\.001",
        ),
        (lambda: optim.LinearLR(sgd(), start_factor=0), ValueError, r"start_factor must be in \(0, 1\].*, got 0"),
        (lambda: optim.LinearLR(sgd(), start_factor=1.5), ValueError, r"start_factor must be in \(0, 1\].*, got 1\.5"),
        (lambda: optim.LinearLR(sgd(), end_factor=-0.5), ValueError, r"end_factor must be in \[0, 1\].*, got -0\.5"),
        (lambda: optim.LinearLR(sgd(), total_iters=0), ValueError, r"total_iters must be >= 1.*, got 0"),
        (lambda: optim.StepLR(object(), step_size=2), TypeError, r"must be a convprop\.optim\.Optimizer, got object"),
    ],
)
def test_schedule_validation(make, error, match):
    with pytest.raises(error, match=match):
        make()
