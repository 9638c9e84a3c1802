"""BatchNorm1d/2d/3d and Dropout: the layers own the running statistics and the random stream."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import DTypeLike

from ..functional import norm as Nf
from ..init import RngLike, as_generator
from .module import Module, Parameter
from .validate import check_at_least, check_dtype, check_positive_int, check_probability


class _BatchNorm(Module):
    """Batch normalisation per channel over every other axis, ``torch.nn.BatchNorm{1,2,3}d``.

    Training: normalise with the batch mean and (biased) variance and update the running statistics
    (``running = (1 − momentum)·running + momentum·batch``, the variance unbiased; ``momentum=None``
    is PyTorch's cumulative average, momentum 1/t at the t-th training batch). Eval: use the
    running statistics. See ``functional.norm.batch_norm`` and ``docs/normalisation.md``.

    Shapes:
        x: (N, C, *S), the ranks ``shapes`` lists; weight, bias, running_mean, running_var: (C,)
    """

    registered = False
    shapes: ClassVar[dict[int, str]]  # accepted x.ndim → the shape shown in an error
    weight: Parameter | None  # None unless affine
    bias: Parameter | None
    running_mean: np.ndarray  # the three buffers exist only with track_running_stats
    running_var: np.ndarray
    num_batches_tracked: np.ndarray

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        self.num_features = check_positive_int(num_features, "num_features")
        self.eps = check_at_least(eps, "eps", 0.0, strict=True)
        self.momentum = None if momentum is None else check_probability(momentum, "momentum", allow_one=True)
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        dtype = check_dtype(dtype)
        self.weight = Parameter(np.ones(num_features, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))

    def _stats(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.track_running_stats:
            return self.running_mean, self.running_var
        return None, None

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.forward_with_context(x)[0]

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, tuple[Any, ...]]:
        """Context: ``(x, used_batch_statistics, mean, var)``. With batch statistics (training, or no
        running statistics) mean/var are the batch's, which the backward reuses; otherwise they are
        copies of the running statistics this call used, so a later training step cannot change the
        gradient of this call. In training mode the running statistics are updated, as PyTorch."""
        if np.ndim(x) not in self.shapes or np.shape(x)[1] != self.num_features:
            expected = " or ".join(shape.replace("C", str(self.num_features)) for shape in self.shapes.values())
            raise ValueError(f"{type(self).__name__}({self.num_features}) expects {expected}, got shape {np.shape(x)}")
        use_batch = self.training or not self.track_running_stats
        rm, rv = self._stats()
        momentum = self.momentum
        if momentum is None:  # cumulative average over the batches seen so far
            momentum = 1.0 / (int(self.num_batches_tracked) + 1) if self.track_running_stats else 0.0
        y, new_rm, new_rv, stats = Nf.batch_norm_with_stats(
            x,
            self.weight.data if self.weight is not None else None,  # (None unless affine)
            self.bias.data if self.bias is not None else None,
            rm,
            rv,
            training=use_batch,
            momentum=momentum,
            eps=self.eps,
        )
        if self.training and self.track_running_stats:
            self.running_mean[...] = new_rm
            self.running_var[...] = new_rv
            self.num_batches_tracked[...] += 1
        # the batch's statistics (the backward's own, computed once), or copies of the running ones used
        used = stats if use_batch else (stats[0].copy(), stats[1].copy())
        return y, (x, use_batch, *used)

    def backward_with_context(
        self, context: tuple[Any, ...], grad_output: np.ndarray, *, input_grad: bool = True
    ) -> np.ndarray | None:
        x, use_batch, mean, var = context
        dx, dw, db = Nf.batch_norm_backward(
            grad_output,
            x,
            self.weight.data if self.weight is not None else None,
            None if use_batch else mean,
            None if use_batch else var,
            training=use_batch,
            eps=self.eps,
            batch_stats=(mean, var) if use_batch else None,
        )
        if self.weight is not None and self.bias is not None:  # affine
            self.weight.accumulate(dw)
            self.bias.accumulate(db)
        return dx if input_grad else None

    def config(self) -> dict[str, Any]:
        return dict(
            num_features=self.num_features,
            eps=self.eps,
            momentum=self.momentum,
            affine=self.affine,
            track_running_stats=self.track_running_stats,
        )


class BatchNorm1d(_BatchNorm):
    """``torch.nn.BatchNorm1d``: statistics per channel over N (for (N, C)) or over (N, L) (for (N, C, L))."""

    shapes: ClassVar[dict[int, str]] = {2: "(N, C)", 3: "(N, C, L)"}


class BatchNorm2d(_BatchNorm):
    """``torch.nn.BatchNorm2d``: statistics per channel over (N, H, W). See ``_BatchNorm``."""

    shapes: ClassVar[dict[int, str]] = {4: "(N, C, H, W)"}


class BatchNorm3d(_BatchNorm):
    """``torch.nn.BatchNorm3d``: statistics per channel over (N, D, H, W). See ``_BatchNorm``."""

    shapes: ClassVar[dict[int, str]] = {5: "(N, C, D, H, W)"}


class Dropout(Module):
    """Inverted dropout, ``torch.nn.Dropout``: in training, zero each value with probability p and
    scale the rest by 1/(1 − p); in eval, the identity. The mask comes from the layer's own
    ``np.random.Generator`` (``rng``: a Generator or an int seed), so runs are reproducible."""

    def __init__(self, p: float = 0.5, *, rng: RngLike = None) -> None:
        super().__init__()
        self.p = check_probability(p, "p", allow_one=True)
        self.rng = as_generator(rng)

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Context: the keep-mask drawn from the layer's generator, or None for the identity (eval
        mode or p = 0)."""
        if not self.training or self.p == 0:
            return x, None
        mask = Nf.dropout_mask(np.shape(x), self.p, self.rng)
        return Nf.dropout(x, self.p, mask), mask

    def backward_with_context(
        self, context: np.ndarray | None, grad_output: np.ndarray, *, input_grad: bool = True
    ) -> np.ndarray | None:
        if not input_grad:
            return None
        if context is None:
            return grad_output
        return Nf.dropout_backward(grad_output, self.p, context)

    def config(self) -> dict[str, Any]:
        return dict(p=self.p)
