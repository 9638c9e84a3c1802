"""Data-parallel training over MPI: synchronous SGD, as Horovod and ChainerMN do it, on ``mpi4py``.

Every rank holds a full copy of the model. Each step, every rank takes its own shard of the *global*
batch of B images, computes the mean-loss gradient g_r over its b_r images, and the ranks sum

    g = Σ_r (b_r / B) · g_r   =   (1/B) Σ_{i in batch} ∇ℓ_i

with one in-place ``Allreduce`` per dtype, so every rank steps its optimizer with exactly the gradient
one process would have computed for the whole batch (up to the order of float32 additions).

Launched without an MPI launcher (or under one with a single rank) this module is a single process:
``size == 1``, ``rank == 0``, every collective is the identity, and ``mpi4py`` is never imported.
Under ``mpiexec -n N`` (N > 1) ``mpi4py`` is required: ``pip install "convprop[mpi]"``.

Never a hang: every collective is non-blocking and polled from Python, so Ctrl-C is seen while a rank
waits, and a rank that waits longer than ``timeout`` seconds for the others (one died, or stopped)
prints which collective stalled and aborts the whole job (``MPI_Abort``). A rank killed by a signal
is noticed by the launcher (MPICH's ``mpiexec`` ends the job at once).

Shapes:
    a global batch x: (B, C, H, W) → rank r's shard x[lo_r:hi_r] with lo_r = ⌊r·B/N⌋, hi_r = ⌊(r+1)·B/N⌋
    (shard sizes differ by at most one; a rank whose shard is empty contributes zero gradient).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConvpropError

if TYPE_CHECKING:
    from .nn import Module
    from .train import Evaluation

DEFAULT_TIMEOUT = 60.0  # seconds a rank waits in one collective before it declares the others gone
ABORT_GRACE = 0.5  # seconds between printing the reason for an abort and MPI_Abort (see World.abort)
# what MPI launchers put in each rank's environment: MPICH's hydra and SLURM's srun (PMI), Open MPI
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
# what the CLI reports as a user's mistake (one line, exit 2) rather than a bug (a traceback)
USER_ERRORS = (ConvpropError,)  # exactly what cli.main prints as one line; anything else is a bug
INSTALL_HINT = 'pip install "convprop[mpi]"  (brings mpi4py and the mpich wheel, whose mpiexec lands in your venv)'

__all__ = [
    "DEFAULT_TIMEOUT",
    "DistributedError",
    "World",
    "allreduce_grads",
    "broadcast_parameters",
    "init",
    "rank",
    "shard_batch",
    "shard_range",
    "world",
    "world_size",
]


class DistributedError(ConvpropError):
    """Distributed training cannot start or go on (mpi4py missing, another rank failed)."""


def launcher_size() -> int:
    """The number of ranks an MPI launcher started, read from its environment (1 without a launcher)."""
    for name in LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def shard_range(n: int, rank: int, size: int) -> tuple[int, int]:
    """Rank ``rank``'s rows [lo, hi) of ``n`` rows split over ``size`` ranks: contiguous, sizes ⌊n/size⌋ or
    ⌈n/size⌉, the larger ones last (lo = ⌊rank·n/size⌋). Concatenated in rank order they are 0..n-1."""
    return rank * n // size, (rank + 1) * n // size


class World:
    """The ranks of one job: ``size``, ``rank``, and the collectives that ``fit`` needs.

    ``World(comm=None)`` on one process is a world of one. ``seconds`` and ``bytes`` accumulate the
    time spent in, and the payload of, gradient allreduces (for benchmarks and the cost model).
    """

    def __init__(self, comm: Any = None, *, timeout: float = DEFAULT_TIMEOUT):
        self.comm = comm
        self.size = 1 if comm is None else int(comm.Get_size())
        self.rank = 0 if comm is None else int(comm.Get_rank())
        self.timeout = float(timeout)
        self.seconds = 0.0  # in allreduce_grads, waiting included
        self.bytes = 0  # gradient bytes this rank sent into allreduce_grads
        self._shard: tuple[int, int, int] | None = None  # (lo, hi, B) of the last shard_batch
        self._generators: list[_GlobalBatchGenerator] = []  # installed by share_dropout_masks

    def __repr__(self) -> str:
        return f"World(rank={self.rank}, size={self.size})"

    # --- the one waiting loop ---------------------------------------------------------------------
    def _wait(self, request: Any, what: str) -> None:
        """Poll a non-blocking collective until done. Python code runs between polls, so Ctrl-C raises
        KeyboardInterrupt here; past ``timeout`` seconds without completion, abort the whole job."""
        start = time.monotonic()
        polls = 0
        while not request.Test():
            polls += 1
            if polls > 200:  # after a short spin, sleep: the other rank may need this core to compute
                time.sleep(min(1e-3, 1e-5 * (polls - 200)))
            if time.monotonic() - start > self.timeout:
                self.abort(
                    f"rank {self.rank} of {self.size}: no answer from the other ranks for {self.timeout:.0f} s "
                    f"during {what}; one of them has died, stopped or failed. Ending every rank.",
                    code=1,
                )

    def abort(self, message: str, code: int = 1) -> None:
        """Print ``convprop: error: message`` and end every rank of the job (MPI_Abort); never returns."""
        print(f"convprop: error: {message}", file=sys.stderr, flush=True)
        if self.comm is not None:
            # MPICH's launcher forwards each rank's stderr asynchronously and MPI_Abort tears its proxies
            # down at once: without a pause the message was lost in about 1 launch of 5 (measured)
            time.sleep(ABORT_GRACE)
            self.comm.Abort(code)
        raise SystemExit(code)

    # --- collectives ------------------------------------------------------------------------------
    def allreduce_sum(self, values: np.ndarray, what: str = "allreduce") -> np.ndarray:
        """The element-wise sum over ranks of ``values`` (a new contiguous array, same shape and dtype)."""
        total = np.ascontiguousarray(values).copy()
        if self.comm is not None and self.size > 1:
            from mpi4py import MPI

            self._wait(self.comm.Iallreduce(MPI.IN_PLACE, total, op=MPI.SUM), what)
        return total

    def broadcast(self, values: np.ndarray, what: str = "broadcast") -> np.ndarray:
        """Rank 0's ``values``, in place on every rank (contiguous arrays of one shape and dtype)."""
        if self.comm is not None and self.size > 1:
            self._wait(self.comm.Ibcast(values, root=0), what)
        return values

    def allgather_rows(self, local: np.ndarray, n: int, what: str = "allgather") -> np.ndarray:
        """Concatenate every rank's ``shard_range(n)`` rows in rank order: (n_r, ...) → (n, ...)."""
        if self.comm is None or self.size == 1:
            return local
        local = np.ascontiguousarray(local)
        row = int(np.prod(local.shape[1:], dtype=np.int64))
        counts = [(hi - lo) * row for lo, hi in (shard_range(n, r, self.size) for r in range(self.size))]
        full = np.empty((n, *local.shape[1:]), dtype=local.dtype)  # (n, ...)
        self._wait(self.comm.Iallgatherv(local, [full, counts]), what)
        return full

    def broadcast_parameters(self, model: Module) -> None:
        """Rank 0's parameters and buffers (running statistics) copied into every rank's model, in place."""
        arrays = [p.data for p in model.parameters()] + [b for _, b in model.named_buffers()]
        for dtype, group in _by_dtype(arrays).items():
            flat = np.concatenate([a.ravel() for a in group]) if group else np.empty(0, dtype)  # (Σ sizes,)
            self.broadcast(flat, "the broadcast of the parameters")
            _scatter(flat, group)

    def broadcast_buffers(self, model: Module) -> None:
        """Rank 0's buffers everywhere: batch-norm statistics are per rank (as PyTorch's DDP), and rank 0's
        are the ones evaluated and saved, as DDP's ``broadcast_buffers=True``."""
        buffers = [b for _, b in model.named_buffers()]
        for dtype, group in _by_dtype(buffers).items():
            flat = np.concatenate([a.ravel() for a in group]) if group else np.empty(0, dtype)  # (Σ sizes,)
            self.broadcast(flat, "the broadcast of the buffers")
            _scatter(flat, group)

    def allreduce_grads(self, model: Module, weight: float | None = None) -> None:
        """Every parameter's ``grad`` ← Σ_r weight_r · grad_r, in place, one Allreduce per dtype.

        ``weight`` is this rank's share of the global batch, b_r / B (``None``: 1/size, right when all
        shards are equal). A ``grad`` that is None on this rank counts as zeros; it stays None only if it
        is None on every rank (so an unused parameter is skipped by the optimizer as on one process).
        """
        if self.size == 1:
            return
        start = time.perf_counter()
        weight = 1.0 / self.size if weight is None else float(weight)
        params = model.parameters()
        for dtype in _by_dtype([p.data for p in params]):
            members = [p for p in params if p.data.dtype == dtype]
            # (Σ sizes + one "has a gradient" flag per parameter,)
            flat = np.empty(sum(p.data.size for p in members) + len(members), dtype=dtype)
            offset = 0
            for p in members:
                size = p.data.size
                if p.grad is None:
                    flat[offset : offset + size] = 0
                else:
                    np.multiply(np.asarray(p.grad).ravel(), weight, out=flat[offset : offset + size])
                offset += size
            flat[offset:] = [p.grad is not None for p in members]
            self.bytes += flat.nbytes
            from mpi4py import MPI

            self._wait(self.comm.Iallreduce(MPI.IN_PLACE, flat, op=MPI.SUM), "the allreduce of the gradients")
            offset = 0
            for p, flag in zip(members, flat[-len(members) :], strict=True):
                size = p.data.size
                p.grad = flat[offset : offset + size].reshape(p.data.shape) if flag > 0 else None
                offset += size
        self.seconds += time.perf_counter() - start

    # --- data -------------------------------------------------------------------------------------
    def shard_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This rank's rows of a global batch: x (B, ...) → (b_r, ...), y (B,) → (b_r,); see ``shard_range``.

        An empty shard (B < size) is for the caller to skip (no forward): the Dropout generators of
        ``share_dropout_masks`` are advanced here by what the other ranks' forward passes draw."""
        lo, hi = shard_range(len(y), self.rank, self.size)
        self._shard = (lo, hi, len(y))
        if lo == hi:
            for generator in self._generators:
                generator.skip_rows(len(y))
        return x[lo:hi], y[lo:hi]

    def share_dropout_masks(self, model: Module) -> None:
        """Make every Dropout draw the mask of the whole global batch and keep this rank's rows, so the
        masks, and so the run, do not depend on the number of ranks (each rank's generator is seeded
        alike and advances alike). Call once after building the model; needs ``shard_batch`` each step."""
        if self.size == 1:
            return
        from .nn import Dropout

        for module in model.modules():
            if isinstance(module, Dropout) and isinstance(getattr(module, "rng", None), np.random.Generator):
                generator = _GlobalBatchGenerator(module.rng.bit_generator, self)
                object.__setattr__(module, "rng", generator)
                self._generators.append(generator)

    def evaluate(self, model: Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> Evaluation:
        """``train.evaluate`` with the images split over the ranks: the loss is summed, the per-image
        probabilities gathered, so every rank returns the Evaluation of the whole set."""
        from .metrics import confusion_matrix
        from .train import Evaluation, evaluate

        self.broadcast_buffers(model)
        n = len(images)
        if self.size == 1 or n < self.size:
            return evaluate(model, images, labels, batch_size)
        lo, hi = shard_range(n, self.rank, self.size)
        local = evaluate(model, images[lo:hi], labels[lo:hi], batch_size)
        loss_sum = self.allreduce_sum(np.array([local.loss * (hi - lo)]), "the evaluation")[0]
        probabilities = self.allgather_rows(local.probabilities, n, "the evaluation")  # (n, K)
        predictions = probabilities.argmax(axis=1)  # (n,)
        return Evaluation(
            loss=float(loss_sum) / n,
            accuracy=float((predictions == labels).mean()),
            predictions=predictions,
            probabilities=probabilities,
            confusion=confusion_matrix(labels, predictions, probabilities.shape[1]),
        )

    def on_rank_zero(self, action: Callable[[], str]) -> str:
        """Run ``action`` on rank 0 only and hand its string result to every rank. If it raises there,
        rank 0 re-raises and the others raise DistributedError: every rank stops, none waits forever."""
        result = ""
        if self.rank == 0:
            try:
                result = action()
            except BaseException as exc:
                self._broadcast_text(f"\0{type(exc).__name__}: {exc}")
                raise
        text = self._broadcast_text(result)
        if text.startswith("\0"):
            raise DistributedError(f"rank 0 stopped: {text[1:]}")
        return text

    def _broadcast_text(self, text: str) -> str:
        if self.size == 1:
            return text
        encoded = text.encode()
        length = int(self.broadcast(np.array([len(encoded)], dtype=np.int64), "a broadcast from rank 0")[0])
        payload = np.zeros(length, dtype=np.uint8)  # (length,) rank 0's UTF-8 bytes, after the broadcast
        if self.rank == 0:
            payload[:] = np.frombuffer(encoded, dtype=np.uint8)
        return self.broadcast(payload, "a broadcast from rank 0").tobytes().decode()

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Around a distributed program: an exception on any rank prints ``convprop: error: rank r of N: ...``
        and aborts every rank (the others may be waiting for it in a collective). Ctrl-C passes through."""
        try:
            yield
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            if self.size == 1:
                raise
            user_error = isinstance(exc, USER_ERRORS)
            if not user_error:  # a bug: its traceback, as on one process
                traceback.print_exc()
            self.abort(f"rank {self.rank} of {self.size}: {exc}", code=2 if user_error else 1)


class _GlobalBatchGenerator(np.random.Generator):
    """A Generator sharing a Dropout's bit generator whose ``random((b_r, ...))`` draws (B, ...) and returns
    this rank's rows: the numbers one process would have drawn for those images."""

    def __init__(self, bit_generator: np.random.BitGenerator, world: World):
        super().__init__(bit_generator)
        self._world = world
        self._row_shape: tuple[int, ...] | None = None  # the (...) of the last (b_r, ...) drawn

    def random(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        shard = self._world._shard
        shape = tuple(int(n) for n in np.atleast_1d(size)) if size is not None else ()
        if shard is None or out is not None or not shape or shape[0] != shard[1] - shard[0]:
            return super().random(size, dtype=dtype, out=out)
        lo, hi, total = shard
        self._row_shape = shape[1:]
        if lo == hi:  # already skipped by shard_batch
            return np.empty(shape, dtype=dtype)
        return super().random((total, *shape[1:]), dtype=dtype)[lo:hi]  # (B, ...) → (b_r, ...)

    def skip_rows(self, total: int) -> None:
        """Draw and drop the numbers of ``total`` rows (a step whose shard here is empty)."""
        if self._row_shape is not None:
            super().random((total, *self._row_shape))


def _by_dtype(arrays: list[np.ndarray]) -> dict[np.dtype, list[np.ndarray]]:
    groups: dict[np.dtype, list[np.ndarray]] = {}
    for a in arrays:
        groups.setdefault(np.asarray(a).dtype, []).append(a)
    return dict(sorted(groups.items(), key=lambda item: item[0].str))  # the same order on every rank


def _scatter(flat: np.ndarray, arrays: list[np.ndarray]) -> None:
    offset = 0
    for a in arrays:
        a[...] = flat[offset : offset + a.size].reshape(a.shape)
        offset += a.size


_WORLD: World | None = None


def init(*, timeout: float = DEFAULT_TIMEOUT) -> World:
    """The world of this process, created once: MPI's COMM_WORLD under a launcher with N > 1 ranks, else a
    world of one. Raises DistributedError naming the ``mpi`` extra if N > 1 and mpi4py is missing."""
    global _WORLD
    if _WORLD is None:
        size = launcher_size()
        if size <= 1:
            _WORLD = World(timeout=timeout)
        else:
            try:
                from mpi4py import MPI
            except ImportError as exc:
                raise DistributedError(
                    f"this process was started as one of {size} MPI ranks, but mpi4py is not installed "
                    f"({exc}); install the mpi extra: {INSTALL_HINT}"
                ) from None
            _WORLD = World(MPI.COMM_WORLD, timeout=timeout)
    _WORLD.timeout = float(timeout)
    return _WORLD


def world() -> World:
    """The current world (``init()`` with the default timeout on first use)."""
    return _WORLD if _WORLD is not None else init()


def world_size() -> int:
    return world().size


def rank() -> int:
    return world().rank


def broadcast_parameters(model: Module) -> None:
    """Rank 0's parameters and buffers into every rank's ``model`` (see ``World.broadcast_parameters``)."""
    world().broadcast_parameters(model)


def allreduce_grads(model: Module, weight: float | None = None) -> None:
    """Sum ``weight``-scaled gradients over the ranks, in place (see ``World.allreduce_grads``)."""
    world().allreduce_grads(model, weight)


def shard_batch(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """This rank's rows of a global batch (see ``World.shard_batch``)."""
    return world().shard_batch(x, y)
