"""Programs that tests/test_distributed.py runs under ``mpiexec -n 2 python tests/mpi_worker.py MODE OUT``.

Modes:
    library   exact, then buffers:
    exact     float64: every rank trains through ``convprop.distributed``; rank 0 also trains the same
              model alone (a world of one) and writes the largest weight difference to OUT/exact.json.
    buffers   lenet-bn built with a different seed on each rank: rank 0's parameters and buffers after the
              broadcast, per-rank batch-norm statistics while training, rank 0's again after evaluate;
              each rank writes digests of its state to OUT/state.<rank>.json.
    pid       write OUT/pid.<rank>, then run ``convprop train`` with the remaining arguments.
    desert    rank 1 leaves after two steps without a word; rank 0 must abort by its watchdog (timeout 3 s).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from convprop import distributed, nn, optim
from convprop.functional.loss import cross_entropy
from convprop.models import build_model
from convprop.train import TrainConfig, train_epoch


def train_float64(world: distributed.World, x: np.ndarray, y: np.ndarray, batch_size: int) -> nn.Module:
    """Two epochs of lenet (dropout and augmentation included) in float64 with SGD, through train_epoch."""
    model = build_model("lenet", 1, (8, 8), 10, rng=3).astype(np.float64)
    world.broadcast_parameters(model)
    world.share_dropout_masks(model)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    config = TrainConfig(batch_size=batch_size, augment=1, progress=False)
    rng = np.random.default_rng(7)
    for _ in range(2):
        train_epoch(model, opt, x, y, config, rng, "", world)
    return model


def exact(out: Path) -> None:
    data = np.random.default_rng(0)
    x = data.standard_normal((101, 1, 8, 8))  # (N, C, H, W): batches of 5 (shards 2 and 3), the last of 1 (0 and 1)
    y = data.integers(0, 10, size=101)
    world = distributed.init()
    model = train_float64(world, x, y, batch_size=5)
    if world.rank == 0:
        alone = train_float64(distributed.World(), x, y, batch_size=5)
        ours, theirs = model.state_dict(), alone.state_dict()
        diff = max(float(np.abs(ours[k] - theirs[k]).max()) for k in ours)
        scale = max(float(np.abs(theirs[k]).max()) for k in theirs)
        (out / "exact.json").write_text(json.dumps({"max_abs_diff": diff, "max_abs_weight": scale}))


def digest(arrays: list[np.ndarray]) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()


def buffers(out: Path) -> None:
    world = distributed.init()
    model = build_model("lenet-bn", 1, (8, 8), 10, rng=world.rank)  # different weights on each rank
    params = lambda: digest([p.data for p in model.parameters()])  # noqa: E731
    stats = lambda: digest([b for _, b in model.named_buffers()])  # noqa: E731
    state = {"built": params()}
    world.broadcast_parameters(model)
    state |= {"broadcast": params(), "broadcast_buffers": stats()}
    x = np.random.default_rng(0).standard_normal((40, 1, 8, 8)).astype(np.float32)  # (N, C, H, W)
    y = np.arange(40) % 10
    opt = optim.SGD(model.parameters(), lr=0.05)
    train_epoch(model, opt, x, y, TrainConfig(batch_size=10, augment=0, progress=False), np.random.default_rng(0), "")
    state |= {"trained": params(), "trained_buffers": stats()}
    rank0_buffers = [b.copy() for _, b in model.named_buffers()]
    world.broadcast(rank0_buffers[0])  # (C,) rank 0's first running mean, for the check below
    test = world.evaluate(model, x, y)
    state |= {"evaluated_buffers": stats(), "rank0_first_buffer": digest(rank0_buffers[:1])}
    state |= {"first_buffer": digest([next(model.named_buffers())[1]]), "accuracy": test.accuracy}
    (out / f"state.{world.rank}.json").write_text(json.dumps(state))


def desert() -> None:
    world = distributed.init(timeout=3.0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, rng=0))
    x, y = np.ones((4, 4), dtype=np.float32), np.arange(4) % 3
    for step in range(1000):
        if world.rank == 1 and step == 2:
            raise SystemExit(0)  # a clean exit: MPI_Finalize waits for rank 0, the launcher sees nothing wrong
        model.zero_grad()
        xb, yb = world.shard_batch(x, y)
        _, grad = cross_entropy(model(xb), yb)
        model.backward(grad)
        world.allreduce_grads(model)
    raise SystemExit("rank 0 was never stopped")


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    if mode == "library":  # both library checks in one launch (each launch costs seconds of imports)
        exact(out)
        buffers(out)
    elif mode == "pid":
        rank = os.environ.get("PMI_RANK", "0")
        (out / f"pid.{rank}").write_text(str(os.getpid()))
        from convprop.cli import main as cli_main

        raise SystemExit(cli_main(sys.argv[3:]))
    elif mode == "desert":
        desert()


if __name__ == "__main__":
    main()
