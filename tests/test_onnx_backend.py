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

import onnx.backend.test  # noqa: E402

from convprop.onnx import Backend  # noqa: E402
from convprop.onnx.coverage import EXCLUDED, NODE_TESTS  # noqa: E402

with warnings.catch_warnings():  # generating ONNX's test cases warns about its own casts
    warnings.simplefilter("ignore")
    backend_test = onnx.backend.test.BackendTest(Backend, __name__)
for pattern in NODE_TESTS.values():
    backend_test.include(pattern)
for pattern in EXCLUDED:
    backend_test.exclude(pattern)

_selected = [re.compile(p) for p in NODE_TESTS.values()]
for _name, _case in backend_test.test_cases.items():  # collect only the selected tests, not ~2,000 skips
    for _attr in [a for a in vars(_case) if a.startswith("test_")]:
        if not any(p.search(_attr) for p in _selected):
            delattr(_case, _attr)
    if any(a.startswith("test_") for a in vars(_case)):
        globals()[_name] = _case


def test_every_operator_has_node_tests():
    names = [a for case in backend_test.test_cases.values() for a in vars(case) if a.startswith("test_")]
    empty = [op for op, pattern in NODE_TESTS.items() if not any(re.search(pattern, n) for n in names)]
    assert not empty, f"no ONNX node test selected for {empty}"


def test_the_exclusion_list_is_short_and_each_entry_matches_a_test():
    names = [a for case in backend_test.test_cases.values() for a in vars(case) if a.startswith("test_")]
    assert len(EXCLUDED) <= 10
    unused = [p for p in EXCLUDED if not any(re.search(p, n) for n in names)]
    assert not unused, f"exclusions that match no test: {unused}"
