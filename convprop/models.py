"""Ready-made networks for the digit recogniser, by name, and a look inside them (feature maps)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from . import nn
from .errors import ArgumentError, ArgumentTypeError
from .init import RngLike, as_generator
from .nn.trace import trace


def lenet(
    in_channels: int,
    image_size: tuple[int, int],
    num_classes: int,
    *,
    rng: RngLike = None,
    algorithm: str = "auto",
    width: tuple[int, int] = (16, 32),
    hidden: int = 256,
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """A LeNet-style convnet: (conv 3×3 → ReLU → max-pool 2×2) twice, then linear → ReLU → linear.

    "same" padding keeps the image size through each convolution, so each pool halves it:
    28×28 → 14×14 → 7×7 (8×8 → 4×4 → 2×2 for the small digits set). ``dropout`` > 0 puts a Dropout
    after the hidden layer's ReLU (none by default: with the training distortions, 5-fold validation
    scored it lower, docs/training.md; 0.1 had 128 hidden units and dropout 0.25).
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
        *([nn.Dropout(dropout, rng=int(seeds[3]))] if dropout else []),
        nn.Linear(hidden, num_classes, rng=int(seeds[4])),
    )


def lenet_small(
    in_channels: int, image_size: tuple[int, int], num_classes: int, *, rng: RngLike = None, algorithm: str = "auto"
) -> nn.Sequential:
    """A narrower LeNet (8 and 16 channels, 64 hidden units, dropout 0.25): about 4× faster, less accurate."""
    return lenet(
        in_channels, image_size, num_classes, rng=rng, algorithm=algorithm, width=(8, 16), hidden=64, dropout=0.25
    )


def lenet_bn(
    in_channels: int, image_size: tuple[int, int], num_classes: int, *, rng: RngLike = None, algorithm: str = "auto"
) -> nn.Sequential:
    """0.1's LeNet (128 hidden units, dropout 0.25) with batch normalisation after each convolution
    (whose bias it makes redundant)."""
    return lenet(
        in_channels, image_size, num_classes, rng=rng, algorithm=algorithm, batch_norm=True, hidden=128, dropout=0.25
    )


def resnet(
    in_channels: int,
    image_size: tuple[int, int],
    num_classes: int,
    *,
    rng: RngLike = None,
    algorithm: str = "auto",
    width: tuple[int, int, int] = (8, 16, 32),
    blocks: tuple[int, int, int] = (1, 1, 1),
) -> nn.Sequential:
    """A small ResNet (He et al. 2016, the CIFAR variant) for 28×28 digits.

    Stem: conv 3×3 → BN → ReLU; then three stages of basic blocks ``relu(body(x) + shortcut(x))`` with
    ``body = conv 3×3 → BN → ReLU → conv 3×3 → BN``. The first block of stages 2 and 3 halves the
    size with stride 2 and doubles the channels; its shortcut is a 1×1 stride-2 projection with BN
    (elsewhere the identity). Global average pooling and one linear layer give the logits:
    28×28 → 28×28 → 14×14 → 7×7 → 1×1.
    """
    gen = as_generator(rng)
    H, W = image_size
    if H < 4 or W < 4:
        raise ArgumentError(f"resnet needs images of at least 4×4 (two stride-2 stages), got {image_size}")
    seeds = iter(int(s) for s in gen.integers(0, 2**31, size=4 + 3 * sum(blocks)))

    def conv(c_in: int, c_out: int, k: int, stride: int = 1) -> nn.Conv2d:
        return nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False, algorithm=algorithm, rng=next(seeds))

    def block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
        body = nn.Sequential(
            conv(c_in, c_out, 3, stride), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            conv(c_out, c_out, 3), nn.BatchNorm2d(c_out),
        )  # fmt: skip
        shortcut = None
        if stride != 1 or c_in != c_out:
            shortcut = nn.Sequential(conv(c_in, c_out, 1, stride), nn.BatchNorm2d(c_out))  # 1×1 projection
        return nn.Sequential(nn.Residual(body, shortcut), nn.ReLU(inplace=True))

    layers: list[nn.Module] = [conv(in_channels, width[0], 3), nn.BatchNorm2d(width[0]), nn.ReLU(inplace=True)]
    c = width[0]
    for stage, (c_out, count) in enumerate(zip(width, blocks, strict=True)):
        for b in range(count):
            layers.append(block(c, c_out, 2 if stage > 0 and b == 0 else 1))
            c = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes, rng=next(seeds))]
    return nn.Sequential(*layers)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet": lenet,
    "lenet-small": lenet_small,
    "lenet-bn": lenet_bn,
    "resnet": resnet,
}


def build_model(
    name: str,
    in_channels: int,
    image_size: tuple[int, int],
    num_classes: int,
    *,
    rng: RngLike = None,
    algorithm: str = "auto",
) -> nn.Module:
    """The named model for the given input and class count (``MODELS`` lists the names)."""
    if name not in MODELS:
        raise ArgumentError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](in_channels, image_size, num_classes, rng=rng, algorithm=algorithm)


def feature_maps(model: nn.Module, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The output of every Conv2d of any model for one input, in execution order, as (label, (C, h, w)).

    Labels are ``"conv<k> [<path>]"``, the path as in ``named_parameters`` (e.g. ``conv3 [3.0.body.0]``).
    Inside a Sequential, the map is taken after the activation that directly follows the convolution
    (after a BatchNorm too), when there is one: what the next layer actually sees; the label then ends
    in ``" + ReLU"``. Runs in eval mode without writing to the model (safe from many threads on an
    eval-mode model); ``x`` is (C, H, W) or (1, C, H, W).
    """
    return forward_with_feature_maps(model, x)[1]


_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.Sigmoid)


def _next_sibling(path: str) -> str | None:
    """The path of the layer after ``path`` in the same Sequential ("3.0.body.1" → "3.0.body.2")."""
    parent, _, last = path.rpartition(".")
    if not last.isdigit():
        return None  # not a Sequential's child (a Graph node, a Residual's body...)
    return _join_path(parent, str(int(last) + 1))


def _join_path(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def forward_with_feature_maps(model: nn.Module, x: np.ndarray) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """One eval-mode pass over one image: the model's output (1, ...) and :func:`feature_maps`'s list.

    The model must be in eval mode already or is switched for the call (then this is not thread-safe)."""
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"feature_maps needs a convprop Module, got {type(model).__name__}")
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]  # (1, C, H, W)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ArgumentError(f"feature_maps takes one image (C, H, W) or (1, C, H, W), got shape {x.shape}")
    plain = _plain(model)
    was_training = any(m.training for m in ((model, *model._modules.values()) if plain else model.modules()))
    if was_training:
        model.eval()
    maps: list[tuple[str, np.ndarray]] = []
    follows: dict[str, int] = {}  # path of the layer right after a conv → index of that conv's map

    def visit(path: str, layer: nn.Module, y: np.ndarray) -> None:
        at = follows.pop(path, None)
        if isinstance(layer, nn.Conv2d):
            maps.append((f"conv{len(maps) + 1} [{path or type(layer).__name__}]", y[0].copy()))
            at = len(maps) - 1
        elif at is not None and isinstance(layer, nn.BatchNorm2d):
            maps[at] = (maps[at][0], y[0].copy())
        elif at is not None and isinstance(layer, _ACTIVATIONS):
            maps[at] = (f"{maps[at][0]} + {type(layer).__name__}", y[0].copy())  # a copy: later layers work in place
            return
        else:
            return
        sibling = _next_sibling(path)
        if sibling is not None:
            follows[sibling] = at

    try:
        if plain:
            assert isinstance(model, nn.Sequential)  # (what _plain checked)
            return _plain_maps(model, x)
        y = trace(model, (x,), visit)
    finally:
        if was_training:
            model.train()
    return y, maps


def _plain(model: nn.Module) -> bool:
    """A Sequential of leaf layers with no batch norm after a convolution: :func:`_plain_maps` applies."""
    if type(model) is not nn.Sequential:
        return False
    layers = list(model._modules.values())
    if any(layer._modules for layer in layers):
        return False  # a container inside: the general walk
    return not any(isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d) for a, b in itertools.pairwise(layers))


def _plain_maps(model: nn.Sequential, x: np.ndarray) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """forward_with_feature_maps of a :func:`_plain` Sequential (in eval mode), without the walk's
    per-layer bookkeeping: a Conv2d followed by a ReLU is one fused call (``functional.fused``:
    convolution, bias and ReLU as each value is stored; the same bits as the two layers), whose
    output is the map. The same labels, maps and output as the walk (tests/test_feature_maps.py);
    lenet's one-image pass with its maps 0.43 → 0.25–0.28 ms (AMD EPYC, 3 December)."""
    from .functional.fused import conv2d_relu_pool
    from .nn.fused import _options

    children = list(model._modules.items())
    maps: list[tuple[str, np.ndarray]] = []
    y, i = x, 0
    while i < len(children):
        name, layer = children[i]
        after = children[i + 1][1] if i + 1 < len(children) else None
        i += 1
        if not isinstance(layer, nn.Conv2d):
            y = layer.forward(y)
            continue
        label = f"conv{len(maps) + 1} [{name}]"
        if type(layer) is nn.Conv2d and type(after) is nn.ReLU:
            bias = layer.bias.data if layer.bias is not None else None
            y = conv2d_relu_pool(y, layer.weight.data, bias, _options(layer), relu=True)
            label, i = f"{label} + ReLU", i + 1
        else:
            y = layer.forward(y)
            if isinstance(after, _ACTIVATIONS):
                y = after.forward(y)
                label, i = f"{label} + {type(after).__name__}", i + 1
        maps.append((label, y[0].copy()))  # a copy: later layers may work in place
    return y, maps
