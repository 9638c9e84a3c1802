"""nn.Conv2d against torch.nn.Conv2d, through test_nn_layers.py's ``check_layer``: a table of geometries,
padding modes and groups, then random geometries (hypothesis) over every algorithm, float64 throughout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_nn_layers import F64, case, check_layer, run_case
from torch_reference import explicit_pads

from convprop import nn
from convprop.functional import ALGORITHMS

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")

C, T = nn, torch.nn  # ours, theirs


class TorchSameStrided(torch.nn.Conv2d):
    """torch.nn.Conv2d with convprop's padding="same" for stride > 1 (TensorFlow's rule), which torch refuses."""

    def __init__(self, *args, same_input_size, **kwargs):
        super().__init__(*args, padding=0, **kwargs)
        self.same_input_size = same_input_size

    def forward(self, x):
        (t, b), (l, r) = explicit_pads("same", self.same_input_size, self.kernel_size, self.stride, self.dilation)
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        return TF.conv2d(
            TF.pad(x, (l, r, t, b), mode=mode), self.weight, self.bias, self.stride, 0, self.dilation, self.groups
        )


CONV = [
    case("3x3", lambda: C.Conv2d(3, 4, 3, **F64), lambda: T.Conv2d(3, 4, 3), (2, 3, 7, 6)),
    case("1x1", lambda: C.Conv2d(5, 2, 1, **F64), lambda: T.Conv2d(5, 2, 1), (3, 5, 4, 4)),
    case(
        "rect-kernel-stride-pad",
        lambda: C.Conv2d(2, 3, (2, 4), stride=(2, 1), padding=(1, 2), **F64),
        lambda: T.Conv2d(2, 3, (2, 4), stride=(2, 1), padding=(1, 2)),
        (2, 2, 7, 8),
    ),
    case(
        "stride3-pad2",
        lambda: C.Conv2d(3, 3, 3, stride=3, padding=2, **F64),
        lambda: T.Conv2d(3, 3, 3, stride=3, padding=2),
        (1, 3, 9, 10),
    ),
    case("no-bias", lambda: C.Conv2d(3, 4, 3, bias=False, **F64), lambda: T.Conv2d(3, 4, 3, bias=False), (2, 3, 5, 5)),
    case(
        "valid",
        lambda: C.Conv2d(2, 3, 3, padding="valid", **F64),
        lambda: T.Conv2d(2, 3, 3, padding="valid"),
        (2, 2, 6, 5),
    ),
    case(
        "same-odd",
        lambda: C.Conv2d(2, 3, 3, padding="same", **F64),
        lambda: T.Conv2d(2, 3, 3, padding="same"),
        (2, 2, 6, 5),
    ),
    case(
        "same-even",
        lambda: C.Conv2d(2, 3, (2, 4), padding="same", **F64),
        lambda: T.Conv2d(2, 3, (2, 4), padding="same"),
        (2, 2, 6, 7),
    ),
    case(
        "same-dilated",
        lambda: C.Conv2d(2, 2, 3, padding="same", dilation=2, **F64),
        lambda: T.Conv2d(2, 2, 3, padding="same", dilation=2),
        (1, 2, 7, 7),
    ),
    case(
        "same-stride2",
        lambda: C.Conv2d(2, 3, 3, stride=2, padding="same", **F64),
        lambda: TorchSameStrided(2, 3, 3, stride=2, same_input_size=(7, 8)),
        (2, 2, 7, 8),
    ),
    case(
        "same-stride2-even-reflect",
        lambda: C.Conv2d(2, 2, 4, stride=(2, 3), padding="same", padding_mode="reflect", **F64),
        lambda: TorchSameStrided(2, 2, 4, stride=(2, 3), padding_mode="reflect", same_input_size=(9, 8)),
        (1, 2, 9, 8),
    ),
    case(
        "dilation",
        lambda: C.Conv2d(2, 3, 3, dilation=(2, 3), padding=1, **F64),
        lambda: T.Conv2d(2, 3, 3, dilation=(2, 3), padding=1),
        (2, 2, 9, 10),
    ),
    case(
        "groups2",
        lambda: C.Conv2d(4, 6, 3, groups=2, padding=1, **F64),
        lambda: T.Conv2d(4, 6, 3, groups=2, padding=1),
        (2, 4, 5, 5),
    ),
    case(
        "depthwise",
        lambda: C.Conv2d(3, 3, 3, groups=3, padding=1, **F64),
        lambda: T.Conv2d(3, 3, 3, groups=3, padding=1),
        (2, 3, 6, 5),
    ),
    case(
        "depthwise-multiplier",
        lambda: C.Conv2d(2, 6, 3, groups=2, stride=2, **F64),
        lambda: T.Conv2d(2, 6, 3, groups=2, stride=2),
        (2, 2, 7, 7),
    ),
    case(
        "single-channel",
        lambda: C.Conv2d(1, 4, 5, padding=2, **F64),
        lambda: T.Conv2d(1, 4, 5, padding=2),
        (3, 1, 6, 6),
    ),
    case("unbatched", lambda: C.Conv2d(2, 3, 3, padding=1, **F64), lambda: T.Conv2d(2, 3, 3, padding=1), (2, 5, 4)),
    *[
        case(
            f"mode-{mode}-pad{pad}",
            lambda mode=mode, pad=pad: C.Conv2d(2, 3, 3, padding=pad, padding_mode=mode, **F64),
            lambda mode=mode, pad=pad: T.Conv2d(2, 3, 3, padding=pad, padding_mode=mode),
            (2, 2, 5, 6),
        )
        for mode in ("zeros", "reflect", "replicate", "circular")
        for pad in (1, (2, 1), "same")
    ],
    case(
        "circular-groups-stride",
        lambda: C.Conv2d(4, 4, 3, stride=2, padding=2, groups=2, padding_mode="circular", **F64),
        lambda: T.Conv2d(4, 4, 3, stride=2, padding=2, groups=2, padding_mode="circular"),
        (2, 4, 5, 5),
    ),
    case("float32-layer-cast", lambda: C.Conv2d(3, 2, 2, stride=2), lambda: T.Conv2d(3, 2, 2, stride=2), (2, 3, 6, 6)),
]


@pytest.mark.parametrize("ours, theirs, x_shape, kw", CONV)
def test_conv2d_matches_torch(ours, theirs, x_shape, kw):
    run_case(ours, theirs, x_shape, kw)


@st.composite
def conv_geometries(draw):
    groups = draw(st.sampled_from([1, 2, 3]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(
        st.one_of(
            st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2)), st.sampled_from(["same", "valid"])
        )
    )
    if padding == "same":
        stride = (1, 1)  # torch.nn.Conv2d refuses "same" with stride > 1 (covered by TorchSameStrided rows)
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    size = (draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    pads = explicit_pads(padding, size, kernel, stride, dilation)
    for a in range(2):
        assume(size[a] + sum(pads[a]) >= dilation[a] * (kernel[a] - 1) + 1)
        assume(mode != "reflect" or max(pads[a]) < size[a])
        assume(mode != "circular" or max(pads[a]) <= size[a])
    algorithms = ["auto", "direct", "scipy", "im2col", "gemm"] + (["depthwise"] if cin == groups else [])
    assert set(algorithms) - {"auto"} <= set(ALGORITHMS)
    return (
        dict(
            in_channels=cin,
            out_channels=cout,
            kernel_size=kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=draw(st.booleans()),
            padding_mode=mode,
        ),
        (draw(st.integers(1, 2)), cin, *size),
        draw(st.sampled_from(algorithms)),
    )


@settings(max_examples=100, deadline=None)
@given(geometry=conv_geometries(), seed=st.integers(0, 2**16))
def test_conv2d_random_geometry_matches_torch(geometry, seed):
    options, x_shape, algorithm = geometry
    ours = nn.Conv2d(**options, algorithm=algorithm, rng=seed, dtype=np.float64)
    check_layer(ours, torch.nn.Conv2d(**options), x_shape, seed=seed)
