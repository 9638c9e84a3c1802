"""Programs that tests/test_distributed.py runs under ``mpiexec -n 2 python tests/mpi_worker.py MODE OUT``.

Modes:
    exact     float64: every rank trains through ``convprop.distributed``; rank 0 also trains the same
              model alone (a world of one) and writes the largest weight difference to OUT/exact.json.
    pid       write OUT/pid.<rank>, then run ``convprop train`` with the remaining arguments.
    desert    rank 1 leaves after two steps without a word; rank 0 must abort by its watchdog (timeout 3 s).
"""

from __future__ import annotations

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
    if mode == "exact":
        exact(out)
    elif mode == "pid":
        rank = os.environ.get("PMI_RANK", "0")
        (out / f"pid.{rank}").write_text(str(os.getpid()))
        from convprop.cli import main as cli_main

        raise SystemExit(cli_main(sys.argv[3:]))
    elif mode == "desert":
        desert()


if __name__ == "__main__":
    main()
