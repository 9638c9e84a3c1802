"""convprop.onnx.export: every layer and container type and the models of models.py, run by ONNX Runtime
(the oracle) against convprop in float32 to 1e-5 relative; and the round trip export → load, exact."""

from __future__ import annotations

import numpy as np
import pytest
from reference import rel_error

ort = pytest.importorskip("onnxruntime")

import convprop.onnx as convprop_onnx  # noqa: E402
from convprop import models, nn  # noqa: E402
from convprop.errors import OnnxError  # noqa: E402

RTOL = 1e-5


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random running statistics and biases, so that nothing exported is a trivial 0 or 1."""
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and m.track_running_stats:
            m.running_mean[...] = rng.standard_normal(m.num_features)
            m.running_var[...] = rng.uniform(0.5, 2.0, m.num_features)
            if m.affine:
                m.weight.data[...] = rng.uniform(0.5, 1.5, m.num_features)
                m.bias.data[...] = rng.standard_normal(m.num_features)
    return model.eval()


def run_onnx(path, *inputs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, inputs, strict=True)))


def check_export(model, input_shape, tmp_path, *, seed=0, batch=3, opset=None):
    """Export, run in ONNX Runtime, compare with convprop; return the file and the input used."""
    model = randomise(model, seed)
    path = convprop_onnx.export(model, tmp_path / "model.onnx", input_shape, opset=opset)
    x = np.random.default_rng(seed).standard_normal((batch, *input_shape[1:])).astype(np.float32)
    expected = model.forward(x)
    (got,) = run_onnx(path, x)
    assert got.shape == expected.shape
    assert rel_error(got, expected) < RTOL, f"ONNX Runtime differs from convprop by {rel_error(got, expected):.2e}"
    return path, x


S = (1, 4, 9, 10)  # (N, C, H, W): odd and even sizes, so strides leave remainders
S1, S3 = (1, 4, 11), (1, 4, 5, 6, 7)  # (N, C, L) and (N, C, D, H, W)

LAYERS = {
    "conv": (lambda: nn.Conv2d(4, 6, 3, rng=1), S),
    "conv stride 2 pad 1": (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, rng=1), S),
    "conv rectangular dilated": (lambda: nn.Conv2d(4, 6, (3, 2), dilation=(2, 1), padding=(1, 2), rng=1), S),
    "conv groups": (lambda: nn.Conv2d(4, 6, 3, groups=2, rng=1), S),
    "conv depthwise": (lambda: nn.Conv2d(4, 4, 3, groups=4, padding=1, rng=1), S),
    "conv same": (lambda: nn.Conv2d(4, 6, 4, padding="same", rng=1), S),
    "conv same stride 2": (lambda: nn.Conv2d(4, 6, 3, stride=2, padding="same", rng=1), S),
    "conv same stride 3 dilated": (lambda: nn.Conv2d(4, 6, 2, stride=3, dilation=2, padding="same", rng=1), S),
    "conv no bias": (lambda: nn.Conv2d(4, 6, 3, bias=False, rng=1), S),
    "conv untied bias": (lambda: nn.Conv2d(4, 6, 3, bias="untied", input_size=(9, 10), rng=1), S),
    "conv reflect": (lambda: nn.Conv2d(4, 6, 3, padding=2, padding_mode="reflect", rng=1), S),
    "conv replicate": (lambda: nn.Conv2d(4, 6, 3, padding=(1, 2), padding_mode="replicate", rng=1), S),
    "conv circular": (lambda: nn.Conv2d(4, 6, 3, padding=1, padding_mode="circular", rng=1), S),
    "conv circular same stride 2": (
        lambda: nn.Conv2d(4, 6, 3, stride=2, padding="same", padding_mode="circular", rng=1),
        S,
    ),
    "linear": (lambda: nn.Linear(5, 3, rng=1), (1, 5)),
    "linear no bias": (lambda: nn.Linear(5, 3, bias=False, rng=1), (1, 5)),
    "linear on 3-d input": (lambda: nn.Linear(5, 3, rng=1), (1, 4, 5)),
    "relu": (lambda: nn.ReLU(), S),
    "leaky relu": (lambda: nn.LeakyReLU(0.2), S),
    "sigmoid": (lambda: nn.Sigmoid(), S),
    "tanh": (lambda: nn.Tanh(), S),
    "gelu": (lambda: nn.GELU(), S),
    "gelu tanh": (lambda: nn.GELU("tanh"), S),
    "softmax": (lambda: nn.Softmax(dim=1), S),
    "softmax last axis": (lambda: nn.Softmax(dim=-1), S),
    "log softmax": (lambda: nn.LogSoftmax(dim=1), (1, 7)),
    "flatten": (lambda: nn.Flatten(), S),
    "flatten 2..3": (lambda: nn.Flatten(2, 3), S),
    "flatten 1..2": (lambda: nn.Flatten(1, 2), S),
    "max pool": (lambda: nn.MaxPool2d(2), S),
    "max pool 3 stride 2 pad 1": (lambda: nn.MaxPool2d(3, stride=2, padding=1), S),
    "max pool ceil dilated": (lambda: nn.MaxPool2d(2, stride=2, dilation=2, ceil_mode=True), S),
    "avg pool": (lambda: nn.AvgPool2d(2), S),
    "avg pool pad excluded": (lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), S),
    "avg pool ceil": (lambda: nn.AvgPool2d(3, stride=2, ceil_mode=True), S),
    "adaptive avg pool 1": (lambda: nn.AdaptiveAvgPool2d(1), S),
    "adaptive avg pool 3x5": (lambda: nn.AdaptiveAvgPool2d((3, 5)), S),
    "batch norm": (lambda: nn.BatchNorm2d(4), S),
    "batch norm no affine": (lambda: nn.BatchNorm2d(4, affine=False), S),
    "dropout": (lambda: nn.Dropout(0.3), S),
    "identity": (lambda: nn.Identity(), S),
    "reshape": (lambda: nn.Reshape([0, 2, -1]), S),
    "transpose": (lambda: nn.Transpose([0, 2, 3, 1]), S),
    "pad constant": (lambda: nn.Pad([(1, 2), (0, 3)], "constant", 0.5), S),
    "pad crop": (lambda: nn.Pad([(-1, 2), (1, -2)]), S),
    "pad reflect": (lambda: nn.Pad([(1, 2), (2, 1)], "reflect"), S),
    "pad edge": (lambda: nn.Pad([(2, 0)], "edge"), S),
    "pad wrap": (lambda: nn.Pad([(1, 3), (2, 2)], "wrap"), S),
    "global max pool": (lambda: nn.GlobalMaxPool(), S),
    "sequential": (lambda: nn.Sequential(nn.Conv2d(4, 2, 3, rng=1), nn.ReLU(), nn.Flatten(), nn.Linear(112, 3)), S),
    "residual identity": (lambda: nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, rng=1), nn.ReLU())), S),
    "residual projection": (
        lambda: nn.Residual(
            nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1, rng=1), nn.BatchNorm2d(6)),
            nn.Sequential(nn.Conv2d(4, 6, 1, stride=2, rng=2), nn.BatchNorm2d(6)),
        ),
        S,
    ),
    "concat": (
        lambda: nn.Concat(
            nn.Conv2d(4, 2, 1, rng=1),
            nn.Sequential(nn.Conv2d(4, 3, 3, padding=1, rng=2), nn.ReLU()),
            nn.MaxPool2d(3, stride=1, padding=1),
        ),
        S,
    ),
    "graph with a shared layer": (lambda: shared_graph(), S),
    "conv per-side padding": (lambda: nn.Conv2d(4, 6, 3, padding=((0, 2), (1, 0)), rng=1), S),
    "conv1d": (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1, rng=1), S1),
    "conv1d same dilated": (lambda: nn.Conv1d(4, 6, 3, dilation=2, padding="same", rng=1), S1),
    "conv1d reflect": (lambda: nn.Conv1d(4, 6, 3, padding=2, padding_mode="reflect", rng=1), S1),
    "conv3d": (lambda: nn.Conv3d(4, 6, (2, 3, 1), stride=(1, 2, 1), padding=(1, 0, 1), rng=1), S3),
    "conv3d groups": (lambda: nn.Conv3d(4, 6, 2, groups=2, rng=1), S3),
    "conv transpose 1d": (lambda: nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1, rng=1), S1),
    "conv transpose 2d": (lambda: nn.ConvTranspose2d(4, 6, (3, 2), stride=2, rng=1), S),
    "conv transpose 2d groups dilated": (
        lambda: nn.ConvTranspose2d(4, 6, 3, stride=(2, 1), padding=(1, 2), dilation=2, groups=2, rng=1),
        S,
    ),
    "conv transpose 2d per-side": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=((0, 1), (2, 0)), rng=1), S),
    "conv transpose 3d": (lambda: nn.ConvTranspose3d(4, 6, 2, stride=2, bias=False, rng=1), S3),
    "max pool 1d": (lambda: nn.MaxPool1d(3, stride=2, padding=1), S1),
    "max pool 3d": (lambda: nn.MaxPool3d(2, ceil_mode=True), S3),
    "max pool per-side": (lambda: nn.MaxPool2d(3, stride=2, padding=((0, 1), (1, 0))), S),
    "avg pool 1d": (lambda: nn.AvgPool1d(3, stride=2, padding=1, count_include_pad=False), S1),
    "avg pool 3d": (lambda: nn.AvgPool3d(2, stride=1), S3),
    "adaptive avg pool 1d": (lambda: nn.AdaptiveAvgPool1d(1), S1),
    "adaptive avg pool 3d": (lambda: nn.AdaptiveAvgPool3d(1), S3),
    "batch norm 1d (N, C)": (lambda: nn.BatchNorm1d(5), (1, 5)),
    "batch norm 1d (N, C, L)": (lambda: nn.BatchNorm1d(4), S1),
    "batch norm 3d": (lambda: nn.BatchNorm3d(4), S3),
}


def shared_graph() -> nn.Graph:
    conv = nn.Conv2d(4, 4, 3, padding=1, rng=1)  # used twice: one set of weights
    nodes = [
        ("a", conv, ["x"]),
        ("r", nn.ReLU(), ["a"]),
        ("b", conv, ["r"]),
        ("s", nn.Add(), ["a", "b"]),
        ("m", nn.Mul(), ["s", "r"]),
        ("c", nn.Cat(dim=1), ["s", "m"]),
    ]
    return nn.Graph(["x"], nodes, ["c"])


@pytest.mark.parametrize("name", LAYERS)
def test_layer_runs_in_onnx_runtime(name, tmp_path):
    build, shape = LAYERS[name]
    check_export(build(), shape, tmp_path)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_models_run_in_onnx_runtime(name, tmp_path):
    model = models.build_model(name, 1, (28, 28), 10, rng=0)
    check_export(model, (1, 1, 28, 28), tmp_path)


# exported as an equivalent ONNX operator that imports as another convprop layer: equal to rounding, not bitwise
EQUIVALENT = {
    "adaptive avg pool 3x5": "AveragePool(kernel 3x2) for equal bins: another summation order",
    "linear on 3-d input": "MatMul then Add (Gemm is 2-D only): another summation order",
    "concat": "three branches read x: the graph sums their input gradients in reverse order",
    "conv circular same stride 2": "imports as Pad then an unpadded Conv, which trains on the tiles (the "
    "circularly padded strided layer runs conv_gemm's product): another summation order",
}


def _equal_to_rounding(a, b):
    """float32 sums of up to a few hundred terms in another order: a few units in the last place of the
    array's largest values (its small entries are differences of larger terms)."""
    scale = max(float(np.abs(b).max()), 1e-30)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=4e-6 * scale)


@pytest.mark.parametrize("name", [*LAYERS, *(f"model {m}" for m in sorted(models.MODELS))])
def test_round_trip_is_exact(name, tmp_path):
    """export → load gives the same outputs bit for bit, and the same gradients."""
    assert_equal = np.testing.assert_array_equal
    if name in EQUIVALENT:
        assert_equal = _equal_to_rounding
    if name.startswith("model "):
        model, shape = models.build_model(name[6:], 1, (28, 28), 10, rng=0), (1, 1, 28, 28)
    else:
        build, shape = LAYERS[name]
        model = build()
    path, x = check_export(model, shape, tmp_path)
    imported = convprop_onnx.load(path)
    assert_equal(imported.forward(x), model.forward(x))
    y, context = model.forward_with_context(x)
    grad_output = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    model.zero_grad()
    dx = model.backward_with_context(context, grad_output)
    y2, context2 = imported.forward_with_context(x)
    dx2 = imported.backward_with_context(context2, grad_output)
    assert_equal(y2, y)
    assert_equal(dx2, dx)
    if name in EQUIVALENT:  # the same parameters, gradients equal to rounding
        ours = sorted(((p.shape, p.grad) for p in model.parameters()), key=lambda t: t[0])
        theirs = sorted(((p.shape, p.grad) for p in imported.parameters()), key=lambda t: t[0])
        assert [s for s, _ in ours] == [s for s, _ in theirs]
        for (_, a), (_, b) in zip(ours, theirs, strict=True):
            assert_equal(b, a)
        return
    theirs = {(p.grad.tobytes(), p.shape) for p in imported.parameters()}
    # every parameter's gradient is there (an imported BatchNorm2d(affine=False) has scale 1 and shift 0 too)
    assert {(p.grad.tobytes(), p.shape) for p in model.parameters()} <= theirs


def test_graph_of_two_inputs_and_two_outputs(tmp_path):
    conv = nn.Conv2d(4, 3, 3, padding=1, rng=1)
    nodes = [("p", conv, ["x"]), ("q", conv, ["y"]), ("s", nn.Sub(), ["p", "q"]), ("t", nn.Add(), ["p", "q", "s"])]
    model = nn.Graph(["x", "y"], nodes, ["t", "s"]).eval()
    path = convprop_onnx.export(model, tmp_path / "m.onnx", [S, S])
    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal((2, 4, 9, 10)).astype(np.float32) for _ in range(2))
    expected = model.forward(x, y)
    for got, want in zip(run_onnx(path, x, y), expected, strict=True):
        assert rel_error(got, want) < RTOL
    imported = convprop_onnx.load(path)
    for got, want in zip(imported.forward(x, y), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert len(imported.parameters()) == 2  # the shared convolution's weight and bias, written once


def test_float64_models_export_as_double(tmp_path):
    """ONNX Runtime has no float64 Conv, so ONNX's reference evaluator is the oracle here."""
    from onnx.reference import ReferenceEvaluator

    model = models.lenet_bn(1, (28, 28), 10, rng=0).astype(np.float64)
    model = randomise(model)
    path = convprop_onnx.export(model, tmp_path / "m.onnx", (1, 1, 28, 28))
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28))
    (got,) = ReferenceEvaluator(str(path)).run(None, {"input": x})
    assert got.dtype == np.float64
    assert rel_error(got, model.forward(x)) < 1e-12


def test_batch_axis_is_symbolic(tmp_path):
    model = models.lenet(1, (28, 28), 10, rng=0).eval()
    path = convprop_onnx.export(model, tmp_path / "m.onnx", (1, 1, 28, 28))
    for batch in (1, 5):
        x = np.zeros((batch, 1, 28, 28), np.float32)
        assert run_onnx(path, x)[0].shape == (batch, 10)


@pytest.mark.parametrize(
    ("model", "opset", "message"),
    [
        (nn.GELU(), 19, "GELU .* needs ONNX opset 20"),
        (nn.Conv2d(4, 2, 3, padding=1, padding_mode="circular"), 18, "circular.* needs ONNX opset 19"),
        (nn.AvgPool2d(2, divisor_override=3), None, "divisor_override"),
        (nn.AdaptiveAvgPool2d((4, 3)), None, r"does not divide the input size \(9, 10\)"),
        (nn.BatchNorm2d(4, track_running_stats=False), None, "track_running_stats=False"),
        (nn.ReLU(), 12, "opset must be an int from 13"),
    ],
    ids=["gelu", "circular", "divisor_override", "adaptive", "batch stats", "opset"],
)
def test_what_onnx_cannot_express_is_refused(model, opset, message, tmp_path):
    with pytest.raises(OnnxError, match=message):
        convprop_onnx.export(model, tmp_path / "m.onnx", S, opset=opset)
    assert not (tmp_path / "m.onnx").exists()


def test_unknown_layer_is_refused(tmp_path):
    class Mystery(nn.Module):
        def forward_with_context(self, x):
            return x, None

    with pytest.raises(OnnxError, match="cannot export Mystery at 1: convprop has no ONNX mapping"):
        convprop_onnx.export(nn.Sequential(nn.ReLU(), Mystery()), tmp_path / "m.onnx", S)


@pytest.mark.parametrize("shape", [(), "1x2", (1, 0, 3), (1, 2.5)])
def test_bad_input_shape_is_refused(shape, tmp_path):
    with pytest.raises(OnnxError, match="input_shape must be"):
        convprop_onnx.export(nn.ReLU(), tmp_path / "m.onnx", shape)
