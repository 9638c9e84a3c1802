"""Data-parallel training on this machine: 1 vs 2 MPI ranks, one BLAS thread each, and the cost model.

Runs ``mpiexec -n 1`` and ``mpiexec -n 2`` of itself (``--worker``). Each rank trains the default
model (lenet, Adam, global batch 64) on mnist-5k for a few epochs through ``convprop.fit``'s own
``train_epoch`` and reports rank 0's fastest epoch and the time it spent in ``allreduce_grads``
(waiting for the slower rank included). Then it times the gradient allreduce alone (the same bytes,
no compute) and the compute per image, and prints the cost model of docs/distributed.md:

    step(p) = c·B/p + 2(p−1)/p · S/β + 2(p−1)·α      (ring allreduce, no overlap with backward)

with c the compute seconds per image, B the global batch, S the gradient bytes, β the link bandwidth
and α the per-message latency.

    python benchmarks/distributed.py               # 3 epochs per world size
    python benchmarks/distributed.py --epochs 2
Needs the mpi and bench extras: pip install ".[mpi,bench]".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

LINKS_GBIT = (1, 10, 25)
MACHINES = (2, 8, 32)
# forward + backward FLOPs of lenet on one 28×28 image: 3 × (conv 28²·16·9·2 + conv 14²·32·16·9·2
# + linear 1568·128·2 + linear 128·10·2) (backward ≈ twice the forward)
LENET_FLOPS = 3 * (28 * 28 * 16 * 9 * 2 + 14 * 14 * 32 * 16 * 9 * 2 + 1568 * 128 * 2 + 128 * 10 * 2)
LATENCY = 50e-6  # seconds per message over TCP on Ethernet (an assumption, stated in the docs)


def worker(epochs: int) -> None:
    from threadpoolctl import threadpool_limits

    from convprop import data, distributed, models, optim
    from convprop.train import TrainConfig, train_epoch

    world = distributed.init()
    with threadpool_limits(limits=1):
        config = TrainConfig(progress=False)
        dataset = data.load_dataset(config.dataset, seed=config.seed)
        norm = data.Normalization.fit(dataset.train_images)
        x, y = norm(dataset.train_images), dataset.train_labels
        model = models.build_model(config.model, 1, dataset.image_size, dataset.num_classes, rng=0)
        world.broadcast_parameters(model)
        world.share_dropout_masks(model)
        opt = optim.Adam(model.parameters(), lr=config.lr)
        rng = np.random.default_rng(0)
        epochs_seen = []
        for _ in range(epochs):
            world.seconds = 0.0
            seconds = train_epoch(model, opt, x, y, config, rng, "", world)[2]
            epochs_seen.append((seconds, world.seconds))
        steps = -(-len(x) // config.batch_size)
        # the allreduce alone: the same gradient bytes, every rank arriving together
        for p in model.parameters():
            p.grad = np.zeros_like(p.data)
        world.allreduce_sum(np.zeros(1), "a barrier")
        reps = 50
        start = time.perf_counter()
        for _ in range(reps):
            world.allreduce_grads(model)
        allreduce_alone = (time.perf_counter() - start) / reps
    best = min(epochs_seen[1:] or epochs_seen)  # the first epoch compiles and warms caches
    if world.rank == 0:
        params = sum(p.data.size for p in model.parameters())
        report = {
            "ranks": world.size,
            "epoch_seconds": best[0],
            "allreduce_seconds": best[1],
            "steps": steps,
            "images": len(x),
            "batch": config.batch_size,
            "parameters": params,
            "gradient_bytes": params * 4,
            "allreduce_alone_seconds": allreduce_alone,
        }
        print("RESULT " + json.dumps(report), flush=True)


def run(ranks: int, epochs: int) -> dict:
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if mpiexec is None:
        raise SystemExit('mpiexec not found: pip install ".[mpi]"')
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    command = [mpiexec, "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--worker"]
    command += ["--epochs", str(epochs)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800, check=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def step_seconds(c: float, batch: int, gradient_bytes: float, p: int, gbit: float) -> float:
    """The cost model: compute of B/p images plus a ring allreduce of the gradient (no overlap)."""
    if p == 1:
        return c * batch
    return c * batch / p + 2 * (p - 1) / p * gradient_bytes / (gbit * 1e9 / 8) + 2 * (p - 1) * LATENCY


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.epochs)
        return
    print(f"python {sys.version.split()[0]}  numpy {np.__version__}  cpus {os.cpu_count()}  (one BLAS thread per rank)")
    results = [run(ranks, args.epochs) for ranks in (1, 2)]
    one = results[0]
    print("\nlenet on mnist-5k, Adam, global batch 64, fastest epoch of rank 0")
    print(f"{'ranks':>5} {'s/epoch':>8} {'speed-up':>8} {'allreduce s':>11} {'share':>6} {'allreduce alone':>15}")
    for r in results:
        print(
            f"{r['ranks']:>5} {r['epoch_seconds']:>8.2f} {one['epoch_seconds'] / r['epoch_seconds']:>7.2f}× "
            f"{r['allreduce_seconds']:>11.3f} {100 * r['allreduce_seconds'] / r['epoch_seconds']:>5.1f}% "
            f"{1e3 * r['allreduce_alone_seconds']:>12.3f} ms"
        )
    c = one["epoch_seconds"] / one["images"]  # compute seconds per image, one rank
    print(
        f"\ncompute c = {1e3 * c:.3f} ms per image; gradient {one['parameters']:,} parameters = "
        f"{one['gradient_bytes'] / 1e6:.2f} MB float32; latency α = {1e6 * LATENCY:.0f} µs assumed"
    )
    print("\ncost model: speed-up over one machine, step(1)/step(p), at global batch B (B/p images per machine)")
    flops_rate = LENET_FLOPS / c  # this machine's FLOP/s in convprop training, one thread
    print(f"  (= {flops_rate / 1e9:.1f} GFLOP/s: lenet's {LENET_FLOPS / 1e6:.1f} MFLOP per image, forward + backward)")
    models = {
        "lenet, measured": (c, one["gradient_bytes"]),
        "lenet's compute, 10× its parameters (fully-connected heavy)": (c, 10 * one["gradient_bytes"]),
        "ResNet-18 at 224×224 (11.7 M parameters, 10.9 GFLOP per image)": (10.9e9 / flops_rate, 4 * 11.7e6),
    }
    for name, (per_image, size) in models.items():
        print(f"\n  {name}: {size / 1e6:.1f} MB of gradient, {1e3 * per_image:.2f} ms per image")
        print(f"  {'B':>5} {'link':>9} " + " ".join(f"{f'p={p}':>7}" for p in MACHINES))
        for batch in (64, 256, 1024):
            for gbit in LINKS_GBIT:
                t1 = step_seconds(per_image, batch, size, 1, gbit)
                cells = " ".join(f"{t1 / step_seconds(per_image, batch, size, p, gbit):>6.1f}×" for p in MACHINES)
                print(f"  {batch:>5} {gbit:>4} Gb/s {cells}")


if __name__ == "__main__":
    main()
