"""Ready-made networks for the digit recogniser, by name, and a look inside them (feature maps)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import nn
from .errors import ArgumentError, ArgumentTypeError
from .init import RngLike, as_generator


def lenet(
    in_channels: int,
    image_size: tuple[int, int],
    num_classes: int,
    *,
    rng: RngLike = None,
    algorithm: str = "auto",
    width: tuple[int, int] = (16, 32),
    hidden: int = 128,
    dropout: float = 0.25,
    batch_norm: bool = False,
) -> nn.Sequential:
    """A LeNet-style convnet: (conv 3×3 → ReLU → max-pool 2×2) twice, then linear → ReLU → dropout → linear.

    "same" padding keeps the image size through each convolution, so each pool halves it:
    28×28 → 14×14 → 7×7 (8×8 → 4×4 → 2×2 for the small digits set).
    """
    gen = as_generator(rng)
    H, W = image_size
    if H < 4 or W < 4:
        raise ArgumentError(f"lenet needs images of at least 4×4 (two 2×2 poolings), got {image_size}")
    c1, c2 = width
    seeds = gen.integers(0, 2**31, size=5)

    def block(c_in: int, c_out: int, seed: np.integer) -> list[nn.Module]:
        conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm, algorithm=algorithm, rng=int(seed))
        norm = [nn.BatchNorm2d(c_out)] if batch_norm else []
        # ReLU in place: the layers before it keep their own inputs, never their outputs
        return [conv, *norm, nn.ReLU(inplace=True), nn.MaxPool2d(2)]

    return nn.Sequential(
        *block(in_channels, c1, seeds[0]),
        *block(c1, c2, seeds[1]),
        nn.Flatten(),
        nn.Linear(c2 * (H // 4) * (W // 4), hidden, rng=int(seeds[2])),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout, rng=int(seeds[3])),
        nn.Linear(hidden, num_classes, rng=int(seeds[4])),
    )


def lenet_small(
    in_channels: int, image_size: tuple[int, int], num_classes: int, *, rng: RngLike = None, algorithm: str = "auto"
) -> nn.Sequential:
    """A narrower LeNet (8 and 16 channels, 64 hidden units): about 4× faster, a little less accurate."""
    return lenet(in_channels, image_size, num_classes, rng=rng, algorithm=algorithm, width=(8, 16), hidden=64)


def lenet_bn(
    in_channels: int, image_size: tuple[int, int], num_classes: int, *, rng: RngLike = None, algorithm: str = "auto"
) -> nn.Sequential:
    """LeNet with batch normalisation after each convolution (whose bias it makes redundant)."""
    return lenet(in_channels, image_size, num_classes, rng=rng, algorithm=algorithm, batch_norm=True)


MODELS: dict[str, Callable[..., nn.Sequential]] = {"lenet": lenet, "lenet-small": lenet_small, "lenet-bn": lenet_bn}


def build_model(
    name: str,
    in_channels: int,
    image_size: tuple[int, int],
    num_classes: int,
    *,
    rng: RngLike = None,
    algorithm: str = "auto",
) -> nn.Sequential:
    """The named model for the given input and class count (``MODELS`` lists the names)."""
    if name not in MODELS:
        raise ArgumentError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](in_channels, image_size, num_classes, rng=rng, algorithm=algorithm)


def feature_maps(model: nn.Module, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The output of every Conv2d in a Sequential model for one input, in order, as (label, (C, h, w)).

    The maps are taken after the activation that follows the convolution, when there is one: what
    the next layer actually sees. Runs in eval mode; ``x`` is (C, H, W) or (1, C, H, W).
    """
    return forward_with_feature_maps(model, x)[1]


def forward_with_feature_maps(model: nn.Module, x: np.ndarray) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """One eval-mode pass over one image: the model's output (1, ...) and :func:`feature_maps`'s list."""
    if not isinstance(model, nn.Sequential):
        raise ArgumentTypeError(f"feature_maps needs a Sequential model, got {type(model).__name__}")
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]  # (1, C, H, W)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ArgumentError(f"feature_maps takes one image (C, H, W) or (1, C, H, W), got shape {x.shape}")
    was_training = model.training  # type: ignore[attr-defined]  # Module sets it via object.__setattr__ (nn/module.py)
    model.eval()
    maps: list[tuple[str, np.ndarray]] = []
    layers = list(model)
    conv_count = 0
    pending: str | None = None
    try:
        for i, layer in enumerate(layers):
            x = layer(x)
            if isinstance(layer, nn.Conv2d):
                conv_count += 1
                pending = f"conv{conv_count}"
                nxt = layers[i + 1] if i + 1 < len(layers) else None
                if not isinstance(nxt, (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.BatchNorm2d)):
                    maps.append((pending, x[0].copy()))
                    pending = None
            elif pending is not None and not isinstance(layer, nn.BatchNorm2d):
                maps.append(
                    (f"{pending} + {type(layer).__name__}", x[0].copy())
                )  # a copy: later layers may work in place
                pending = None
    finally:
        model.train(was_training)
    return x, maps
