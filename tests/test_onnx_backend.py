"""ONNX's own node tests, run against convprop through ``convprop.onnx.Backend`` by ``onnx.backend.test``.

Only the node tests of the operators in ``convprop.onnx.coverage.NODE_TESTS`` are collected; the few that
convprop does not pass are skipped with their reason from ``coverage.EXCLUDED`` (the one list, shown in
docs/onnx.md).
"""

from __future__ import annotations

import re
import warnings

import pytest

pytest.importorskip("onnx")

import onnx.backend.test

from convprop.onnx import Backend
from convprop.onnx.coverage import EXCLUDED, NODE_TESTS

with warnings.catch_warnings():  # generating ONNX's test cases warns about its own casts
    warnings.simplefilter("ignore")
    backend_test = onnx.backend.test.BackendTest(Backend, __name__)
for pattern in NODE_TESTS.values():
    backend_test.include(pattern)
for pattern in EXCLUDED:
    backend_test.exclude(pattern)

_selected = [re.compile(p) for p in NODE_TESTS.values()]
OnnxBackendNodeModelTest = backend_test.test_cases["OnnxBackendNodeModelTest"]  # the node tests only
for _attr in [a for a in vars(OnnxBackendNodeModelTest) if a.startswith("test_")]:
    if not any(p.search(_attr) for p in _selected):  # collect the selected tests, not ~1,800 skips
        delattr(OnnxBackendNodeModelTest, _attr)


def test_every_operator_has_node_tests():
    names = [a for a in vars(backend_test.test_cases["OnnxBackendNodeModelTest"]) if a.startswith("test_")]
    empty = [op for op, pattern in NODE_TESTS.items() if not any(re.search(pattern, n) for n in names)]
    assert not empty, f"no ONNX node test selected for {empty}"


def test_the_exclusion_list_is_short_and_each_entry_matches_a_test():
    names = [a for a in vars(backend_test.test_cases["OnnxBackendNodeModelTest"]) if a.startswith("test_")]
    assert len(EXCLUDED) <= 10
    unused = [p for p in EXCLUDED if not any(re.search(p, n) for n in names)]
    assert not unused, f"exclusions that match no test: {unused}"


def test_docs_list_every_exclusion_with_its_reason():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "onnx.md").read_text(encoding="utf-8")
    missing = [reason for reason in EXCLUDED.values() if reason not in text]
    assert not missing, f"docs/onnx.md does not give these exclusions: {missing}"


def test_backend_runs_inputs_given_as_a_list_a_dict_or_one_array():
    import numpy as np
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    rep = Backend.prepare(model)
    x = np.array([-1.0, 0.0, 2.0], np.float32)
    for inputs in ([x], {"x": x}, x):
        (y,) = rep.run(inputs)
        np.testing.assert_array_equal(y, [0.0, 0.0, 2.0])
    assert Backend.supports_device("CPU") and not Backend.supports_device("CUDA")
    with pytest.raises(ValueError, match="CPU only"):
        Backend.prepare(model, "CUDA")
