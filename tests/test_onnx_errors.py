"""Bad ONNX input, each a clear OnnxError (a CheckpointError) that says what is wrong: malformed and truncated
files, operators and attributes convprop lacks (named with the node), opsets out of range, external data,
tensors that claim more than they carry, shapes that do not fit — and nothing is allocated or run first."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import convprop.onnx as convprop_onnx  # noqa: E402
from convprop import nn  # noqa: E402
from convprop.errors import CheckpointError, OnnxError  # noqa: E402
from convprop.onnx import reader  # noqa: E402


def model_of(nodes, inputs, outputs, initializers=(), opset=20):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def info(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def conv_model(**attrs):
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv1", **attrs)
    return model_of([node], [info("x", [1, 1, 5, 5])], [info("y", None)], [w])


def relu_model(opset=20):
    return model_of([helper.make_node("Relu", ["x"], ["y"])], [info("x", [2])], [info("y", [2])], opset=opset)


def test_a_good_model_loads():
    assert isinstance(convprop_onnx.load(conv_model()), nn.Graph)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00\x01garbage\xff" * 10, pickle.dumps({"evil": print}), b"\x08\x07" + b"\xff" * 40],
    ids=["empty", "garbage", "a pickle", "bad varint"],
)
def test_malformed_bytes_are_refused(data, tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    with pytest.raises(OnnxError, match=r"not (a valid ONNX file|an ONNX model)"):
        convprop_onnx.load(path)


def test_a_truncated_file_is_refused(tmp_path):
    data = conv_model().SerializeToString()
    for cut in (len(data) // 3, len(data) - 5):
        path = tmp_path / "cut.onnx"
        path.write_bytes(data[:cut])
        with pytest.raises(OnnxError):
            convprop_onnx.load(path)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ONNX model"):
        convprop_onnx.load(tmp_path / "nothing.onnx")


def test_onnx_errors_are_checkpoint_errors():
    assert issubclass(OnnxError, CheckpointError) and issubclass(OnnxError, ValueError)


def test_an_unknown_operator_is_named_with_its_node():
    node = helper.make_node("Erf", ["x"], ["y"], name="mystery")
    model = model_of([node], [info("x", [2])], [info("y", [2])])
    with pytest.raises(OnnxError, match=r"node 'mystery' \(Erf\) uses the operator 'Erf'.*does not implement"):
        convprop_onnx.load(model)


def test_another_domain_is_refused():
    node = helper.make_node("Relu", ["x"], ["y"], name="custom", domain="com.example")
    model = model_of([node], [info("x", [2])], [info("y", [2])])
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(OnnxError, match=r"com\.example\.Relu, outside the default ONNX domain"):
        convprop_onnx.load(model)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (conv_model(foo=1), r"node 'conv1' \(Conv\) has attribute 'foo', which convprop does not support"),
        (conv_model(auto_pad="SOMETIMES"), r"auto_pad='SOMETIMES' is not supported"),
        (
            model_of(
                [helper.make_node("AveragePool", ["x"], ["y"], name="p", kernel_shape=[2, 2], dilations=[2, 2])],
                [info("x", [1, 1, 6, 6])],
                [info("y", None)],
            ),
            r"AveragePool with dilations \[2, 2\]",
        ),
        (
            model_of(
                [
                    helper.make_node(
                        "BatchNormalization",
                        ["x", "s", "b", "m", "v"],
                        ["y", "mean", "var"],
                        name="bn",
                        training_mode=1,
                    )
                ],
                [info("x", [2, 3, 4, 4])],
                [info("y", None), info("mean", None), info("var", None)],
                [numpy_helper.from_array(np.ones(3, np.float32), n) for n in "sbmv"],
            ),
            r"training_mode=1",
        ),
    ],
    ids=["unknown attribute", "auto_pad value", "pool dilations", "batch norm training"],
)
def test_unsupported_attributes_say_which(model, message):
    with pytest.raises(OnnxError, match=message):
        convprop_onnx.load(model)


@pytest.mark.parametrize("opset", [reader.MIN_OPSET - 1, reader.MAX_OPSET + 1, 99])
def test_opsets_outside_the_range_are_refused(opset):
    with pytest.raises(OnnxError, match=f"opset {opset}; convprop reads opsets {reader.MIN_OPSET} to"):
        convprop_onnx.load(relu_model(opset))


def test_external_data_is_refused_without_reading_it(tmp_path):
    model = conv_model()
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="/etc/passwd")
    with pytest.raises(OnnxError, match="initializer 'w' stores its data in an external file"):
        convprop_onnx.load(model)


def test_a_tensor_claiming_more_than_it_carries_is_refused_before_allocating():
    model = conv_model()
    w = model.graph.initializer[0]
    del w.dims[:]
    w.dims.extend([10**6, 10**6, 10**3])  # 4 × 10¹⁵ bytes claimed, 72 carried
    with pytest.raises(OnnxError, match=r"declares shape \[1000000, 1000000, 1000\] .* but carries 72 bytes"):
        convprop_onnx.load(model)


def test_typed_data_of_the_wrong_length_is_refused():
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, 1, 3, 3], float_data=[1.0] * 5)
    node = helper.make_node("Conv", ["x", "w"], ["y"])
    model = model_of([node], [info("x", [1, 1, 5, 5])], [info("y", None)], [t])
    with pytest.raises(OnnxError, match=r"declares shape \[2, 1, 3, 3\] \(18 values\) but carries 5"):
        convprop_onnx.load(model)


def test_the_total_of_tensors_is_bounded(monkeypatch):
    monkeypatch.setattr(reader, "MAX_TOTAL_BYTES", 50)
    with pytest.raises(OnnxError, match="declares 72 bytes of tensors, more than convprop reads"):
        convprop_onnx.load(conv_model())


def test_shapes_that_do_not_fit_are_refused():
    w = numpy_helper.from_array(np.ones((4, 5), np.float32), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    model = model_of([node], [info("x", [2, 3])], [info("y", None)], [w])  # (2, 3) @ (4, 5)
    with pytest.raises(OnnxError, match=r"shapes or types do not fit.*MatMul"):
        convprop_onnx.load(model)


def test_integer_inputs_are_refused():
    x, y = info("x", [2], TensorProto.INT32), info("y", [2], TensorProto.INT32)
    model = model_of([helper.make_node("Relu", ["x"], ["y"])], [x], [y])
    with pytest.raises(OnnxError, match="graph input 'x' has INT32 values"):
        convprop_onnx.load(model)


def test_a_weight_computed_at_run_time_is_refused():
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv1")
    model = model_of([node], [info("x", [1, 1, 5, 5]), info("w", [2, 1, 3, 3])], [info("y", None)])
    with pytest.raises(OnnxError, match=r"'conv1' \(Conv\) needs its weight 'w' to be a constant"):
        convprop_onnx.load(model)


def test_an_extra_output_that_is_used_is_refused():
    node = helper.make_node("MaxPool", ["x"], ["y", "idx"], name="pool", kernel_shape=[2, 2])
    outputs = [info("y", None), info("idx", None, TensorProto.INT64)]
    model = model_of([node], [info("x", [1, 1, 4, 4])], outputs)
    with pytest.raises(OnnxError, match="the extra output 'idx'"):
        convprop_onnx.load(model)


def test_a_wrong_input_at_run_time_is_a_clear_error():
    graph = convprop_onnx.load(conv_model())
    with pytest.raises(ValueError, match=r"channel|C_in|in_channels"):
        graph.forward(np.zeros((1, 3, 5, 5), np.float32))


def test_a_missing_onnx_package_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if it were not installed
    with pytest.raises(OnnxError, match=r'pip install "convprop\[onnx\]"'):
        convprop_onnx.load(b"")
    with pytest.raises(OnnxError, match=r'pip install "convprop\[onnx\]"'):
        convprop_onnx.export(nn.ReLU(), "never.onnx", (1, 2))


@pytest.mark.parametrize(("axis", "shape"), [(1, (2, 3, 4)), (0, (2, 3)), (2, (2, 3, 4)), (-1, (2, 3, 4))])
def test_softmax_before_opset_13_normalises_the_flattened_trailing_axes(axis, shape):
    """Opset 11's Softmax sees the input as 2-D, (d0·...·d[axis-1], d[axis]·...), as ONNX Runtime does (ONNX's
    own reference evaluator applies opset 13's meaning here)."""
    ort = pytest.importorskip("onnxruntime")

    for op in ("Softmax", "LogSoftmax"):
        node = helper.make_node(op, ["x"], ["y"], axis=axis)
        model = model_of([node], [info("x", list(shape))], [info("y", list(shape))], opset=11)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        (expected,) = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
        np.testing.assert_allclose(convprop_onnx.load(model).forward(x), expected, rtol=1e-6, atol=1e-7)


def test_settings_that_would_allocate_what_the_file_claims_are_refused():
    pads = numpy_helper.from_array(np.array([0, 0, 10**9, 0, 0, 0], np.int64), "pads")
    node = helper.make_node("Pad", ["x", "pads"], ["y"], name="huge")
    model = model_of([node], [info("x", [1, 1, 4])], [info("y", None)], [pads])
    with pytest.raises(OnnxError, match=r"'huge' \(Pad\): pads .* beyond convprop's limit"):
        convprop_onnx.load(model)
    pool = helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2], pads=[0, 10**8])
    model = model_of([pool], [info("x", [1, 1, 4])], [info("y", None)])
    with pytest.raises(OnnxError, match=r"attribute 'pads' .* beyond convprop's limit"):
        convprop_onnx.load(model)
