"""Checkpoints of every container and of Graph (round trips, shared weights stay shared), hostile graph
metadata refused naming the node, build/call-time errors of Graph, and the threads guarantee."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from safetensors.numpy import save as st_save
from test_graph import graph_sharing_one_layer, graph_two_in_two_out, inception_block, residual_block_with_projection

import convprop
from convprop import models, nn
from convprop.errors import ArgumentError, CheckpointError

MODELS = [
    pytest.param(residual_block_with_projection, [(2, 3, 7, 6)], id="residual"),
    pytest.param(inception_block, [(2, 3, 6, 5)], id="concat"),
    pytest.param(lambda: models.resnet(1, (12, 12), 4, rng=0), [(2, 1, 12, 12)], id="resnet"),
    pytest.param(graph_sharing_one_layer, [(3, 4)], id="graph-shared"),
    pytest.param(graph_two_in_two_out, [(2, 2, 5, 5), (2, 2, 4, 4)], id="graph-two-in-two-out"),
]


@pytest.mark.parametrize("make, shapes", MODELS)
def test_round_trip_gives_the_same_model(make, shapes, tmp_path):
    model = make().eval()
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(s).astype(model.parameters()[0].data.dtype) for s in shapes]
    convprop.save(model, tmp_path / "m.safetensors")
    loaded = convprop.load(tmp_path / "m.safetensors")
    assert repr(loaded) == repr(model)
    assert list(loaded.state_dict()) == list(model.state_dict())
    got, want = loaded(*xs), model(*xs)
    for a, b in zip(
        got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_shared_weights_are_still_shared_after_a_round_trip(tmp_path):
    convprop.save(graph_sharing_one_layer(), tmp_path / "m.safetensors")
    loaded = convprop.load(tmp_path / "m.safetensors")
    assert loaded.nodes[0].module is loaded.nodes[2].module and len(loaded.parameters()) == 2


def write(tmp_path, architecture, tensors=None):
    path = tmp_path / "hostile.safetensors"
    meta = {"format": "convprop", "format_version": "1", "architecture": json.dumps(architecture), "dtype": "float32"}
    path.write_bytes(st_save(tensors or {"t": np.zeros(1, np.float32)}, metadata=meta))
    return path


def graph(nodes, inputs=("x",), outputs=("b",)):
    return {"type": "Graph", "inputs": list(inputs), "outputs": list(outputs), "nodes": nodes}


RELU = {"type": "ReLU", "config": {}}
HOSTILE = [
    ("cycle", graph([{"name": "a", "inputs": ["b"], "layer": RELU}, {"name": "b", "inputs": ["a"], "layer": RELU}]),
     r"node 'a' takes 'b', which is neither a graph input nor an earlier node"),
    ("dangling", graph([{"name": "b", "inputs": ["nowhere"], "layer": RELU}]), r"node 'b' takes 'nowhere'"),
    ("duplicate", graph([{"name": "b", "inputs": ["x"], "layer": RELU}, {"name": "b", "inputs": ["b"], "layer": RELU}]),
     r"graph node 'b' .*two nodes \(or an input\) have that name"),
    ("unknown-layer", graph([{"name": "b", "inputs": ["x"], "layer": {"type": "os.system", "config": {}}}]),
     r"unknown layer type 'os.system' at model.b"),
    ("never-computed", graph([{"name": "b", "inputs": ["x"], "layer": RELU}], outputs=["c"]),
     r"Graph output 'c' is never computed"),
    ("shares-later", graph([{"name": "b", "inputs": ["x"], "shares": "c"}]), r"graph node 'b' shares 'c'"),
    ("deep", {"type": "Sequential", "layers": [json.loads("[" * 100 + "]" * 100)]}, r"nested deeper than 64"),
    ("huge-linear", {"type": "Linear", "config": {"in_features": 60000, "out_features": 60000}},
     r"could allocate about .* more than the file's own tensors justify"),
    ("huge-int", {"type": "Conv2d", "config": {"in_channels": 1, "out_channels": 1, "kernel_size": 1 << 40}},
     r"beyond the largest setting"),
]  # fmt: skip


@pytest.mark.parametrize("architecture, message", [pytest.param(a, m, id=i) for i, a, m in HOSTILE])
def test_hostile_architectures_are_refused_naming_the_node(architecture, message, tmp_path):
    with pytest.raises(CheckpointError, match=message):
        convprop.load(write(tmp_path, architecture))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(value, tmp_path):
    model = nn.Sequential(nn.Linear(2, 2, rng=0))
    model[0].bias.data[1] = value
    convprop.save(model, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match=r"tensor '0.bias' has 1 non-finite value"):
        convprop.load(tmp_path / "m.safetensors")


BUILD_ERRORS = [
    (lambda: nn.Graph(["x"], [("a", nn.ReLU(), ["b"]), ("b", nn.ReLU(), ["a"])], ["b"]), r"node 'a' takes 'b'"),
    (lambda: nn.Graph(["x"], [("a", nn.ReLU(), ["x"]), ("a", nn.ReLU(), ["a"])], ["a"]), r"node 'a': the name is"),
    (lambda: nn.Graph(["x"], [("a", nn.ReLU(), ["x"])], ["z"]), r"output 'z' is never computed"),
    (lambda: nn.Graph(["x", "x"], [("a", nn.ReLU(), ["x"])], ["a"]), r"input 'x' is listed twice"),
    (lambda: nn.Graph(["x"], [("a.b", nn.ReLU(), ["x"])], ["a.b"]), r"without '\.', got 'a\.b'"),
    (lambda: nn.Graph(["x"], [("r", nn.ReLU(inplace=True), ["x"]), ("y", nn.Add(), ["r", "x"])], ["y"]),
     r"node 'r': ReLU\(inplace=True\) would overwrite 'x'"),
]  # fmt: skip


@pytest.mark.parametrize("make, message", BUILD_ERRORS)
def test_graph_build_errors_name_the_node(make, message):
    with pytest.raises(ArgumentError, match=message):
        make()


def test_graph_call_errors_quote_what_was_given():
    g = graph_two_in_two_out()
    with pytest.raises(ArgumentError, match=r"Graph takes 2 input\(s\) \['x1', 'x2'\], got 1"):
        g(np.ones((2, 2, 5, 5)))
    with pytest.raises(ArgumentError, match=r"backward called before forward"):
        g.backward((np.ones((2, 3)), np.ones((2, 2, 5, 5))))
    g(np.ones((2, 2, 5, 5)), np.ones((2, 2, 4, 4)))
    with pytest.raises(ArgumentError, match=r"one gradient per output \['head', 'u'\] \(a tuple\), got ndarray"):
        g.backward(np.ones((2, 3)))
    with pytest.raises(ArgumentError, match=r"gradient for 'head' .* has shape \(2, 4\), expected \(2, 3\)"):
        g.backward((np.ones((2, 4)), np.ones((2, 2, 5, 5))))


def test_eight_threads_of_eval_forwards_equal_the_sequential_results_bit_for_bit():
    model = models.resnet(1, (12, 12), 4, rng=0).eval()
    inputs = [np.random.default_rng(i).standard_normal((2, 1, 12, 12)).astype(np.float32) for i in range(8)]
    expected = [model(x) for x in inputs]
    results: dict[int, list[np.ndarray]] = {}
    start = threading.Barrier(8)

    def work(t: int) -> None:
        start.wait()
        results[t] = [model(inputs[(t + k) % 8]) for k in range(50)]

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for t in range(8):
        for k, y in enumerate(results[t]):
            np.testing.assert_array_equal(y, expected[(t + k) % 8])
    assert all(m._last_context is None for m in model.modules())
