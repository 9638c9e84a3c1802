"""Fuzzing POST /api/predict (hypothesis, bounded: a few hundred requests, seconds not minutes).

Whatever the body — random JSON values, pixel grids of the wrong shape, depth or type, huge and
non-finite numbers, deep nesting, mutated or truncated images, random bytes, oversized bodies — the
answer is either a 4xx whose body is exactly ``{"error": <message>}`` or a 200 with finite
probabilities that sum to 1. Never a 500, and never an exception escaping the app (TestClient
re-raises any, so a crash fails the example).
"""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from test_serve import LOCAL, png_b64
from test_serve import ckpt as ckpt  # a fixture, used by name below

from convprop.inference import Predictor
from convprop.serve import MAX_BODY_BYTES, create_app

FUZZ = settings(  # derandomized by the "ci" profile (conftest.py); HYPOTHESIS_PROFILE=dev explores
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def client(ckpt):
    with TestClient(create_app(Predictor(ckpt)), base_url=LOCAL) as c:
        yield c


def check(client, body: bytes) -> None:
    """The one property: a 4xx with exactly {"error": str}, or a 200 with finite probabilities."""
    r = client.post("/api/predict", content=body, headers={"content-type": "application/json"})
    assert r.headers["content-type"] == "application/json", (r.status_code, r.text[:200])
    answer = json.loads(r.text, parse_constant=lambda token: pytest.fail(f"non-JSON token {token} in the answer"))
    if r.status_code == 200:
        probs = np.array(answer["probabilities"], dtype=np.float64)
        assert probs.shape == (10,) and np.isfinite(probs).all() and abs(probs.sum() - 1) < 1e-5
    else:
        assert 400 <= r.status_code < 500, (r.status_code, answer)
        assert list(answer) == ["error"] and isinstance(answer["error"], str) and answer["error"]


def dumps(value) -> bytes:
    """JSON as a careless client writes it: NaN and Infinity tokens included, huge ints in full."""
    return json.dumps(value, allow_nan=True).encode()


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=1),
    st.integers(min_value=-(10**450), max_value=10**450),
    st.sampled_from([0, 1, -0.0, 1e-320, 1 - 1e-16, 1 + 1e-15, 10**400, -(10**400)]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=20))
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)
KEYS = st.sampled_from(["pixels", "png", "image", "", "PIXELS"])


@FUZZ
@given(value=JSON_VALUES, keys=st.lists(KEYS, max_size=3), top=st.booleans())
def test_random_json_values(client, value, keys, top):
    check(client, dumps(value if top or not keys else dict.fromkeys(keys, value)))


HOSTILE = [10**400, -(10**400), 2**1024, 2**63, -1, 2, 1e308, math.inf, -math.inf, math.nan, True, False, None, "0.5"]
PIXEL = st.one_of(st.sampled_from(HOSTILE), st.floats(min_value=0, max_value=1), SCALARS, st.lists(NUMBERS, max_size=2))


@FUZZ
@given(
    rows=st.one_of(st.just(28), st.integers(0, 30)),  # the right size half the time: values get checked
    cols=st.one_of(st.just(28), st.integers(0, 30)),
    fill=st.floats(min_value=0, max_value=1),
    odd=st.lists(st.tuples(st.integers(0, 29), st.integers(0, 29), PIXEL), min_size=1, max_size=3),
    depth=st.integers(0, 3),
)
def test_pixel_grids_of_every_shape_and_type(client, rows, cols, fill, odd, depth):
    grid: list = [[fill] * cols for _ in range(rows)]
    for i, j, v in odd:
        if i < rows and j < cols:
            grid[i][j] = v
    value: object = grid
    for _ in range(depth):  # wrong nesting depth: [[grid]] or a grid of single-element lists
        value = [value]
    check(client, dumps({"pixels": value}))


def valid_png() -> bytes:
    return base64.b64decode(png_b64(7))


@FUZZ
@given(
    cut=st.integers(0, 2000),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    junk=st.binary(max_size=200),
    prefix=st.sampled_from(["", "data:image/png;base64,", "data:image/png,", "data:;base64,"]),
)
def test_mutated_and_truncated_images(client, cut, flips, junk, prefix):
    data = bytearray(valid_png())
    for where, byte in flips:
        data[where % len(data)] = byte
    data = data[: len(data) - cut] if cut < len(data) else data
    for raw in (bytes(data), junk, bytes(data) + junk):
        check(client, dumps({"png": prefix + base64.b64encode(raw).decode()}))


@FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(str.encode),
        st.integers(1, 5000).map(lambda n: b"[" * n),
        st.integers(1, 5000).map(lambda n: b'{"pixels": ' + b"[" * n + b"]" * n + b"}"),
        st.integers(1, 6000).map(lambda n: b'{"pixels": [[' + b"9" * n + b"]]}"),
        st.sampled_from([b"", b"null", b"NaN", b"-Infinity", b'{"pixels": 1e400}', b"\xef\xbb\xbf{}", b"{}" * 3]),
    )
)
def test_random_bytes_and_deep_nesting(client, body):
    check(client, body)


@pytest.mark.parametrize("size", [MAX_BODY_BYTES - 20, MAX_BODY_BYTES + 1, 3 * MAX_BODY_BYTES])
def test_bodies_around_the_size_limit(client, size):
    filler = "A" * max(0, size - len('{"png": ""}'))
    check(client, json.dumps({"png": filler}).encode())
