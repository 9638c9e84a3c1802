"""Fuzzing checkpoints: mutated safetensors headers and architecture metadata must give a
``CheckpointError`` (or load) — never another exception — and never allocate more than a stated bound.

Bound: loading any file below may allocate at most ``PEAK_BYTES`` (8 MiB) on the Python heap,
measured by tracemalloc (which also sees NumPy's buffers); the files are a few kB, so a build that
trusted huge declared sizes (gigabytes) would be caught. Bounded in time: ~100 examples in all.
"""

from __future__ import annotations

import json
import struct
import tracemalloc

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convprop
from convprop import nn
from convprop.errors import CheckpointError

PEAK_BYTES = 8 << 20
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def seed_file() -> bytes:
    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3, rng=1))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.safetensors"
        convprop.save(model, path)
        return path.read_bytes()


SEED = seed_file()
HEADER_LEN = int.from_bytes(SEED[:8], "little")
HEADER = json.loads(SEED[8 : 8 + HEADER_LEN])
DATA = SEED[8 + HEADER_LEN :]


def pack(header: dict, data: bytes = DATA) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def load_within_bound(tmp_path, blob: bytes) -> None:
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(blob)
    tracemalloc.start()
    try:
        convprop.load(path)
    except CheckpointError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < PEAK_BYTES, f"loading a {len(blob)}-byte file allocated {peak} bytes"


# JSON values, including large and negative numbers, nested containers and wrong kinds
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**62), 2**62), st.floats(allow_nan=True), st.text(max_size=8)
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
layer_types = st.sampled_from(
    ["Sequential", "Residual", "Concat", "Graph", "Conv2d", "Linear", "BatchNorm2d", "ReLU", "Flatten", "Nope"]
)


@st.composite
def architectures(draw, depth=0):
    kind = draw(layer_types)
    node = {"type": kind}
    if kind in ("Sequential", "Concat") and depth < 3:
        key = "layers" if kind == "Sequential" else "branches"
        node[key] = draw(st.lists(architectures(depth + 1), max_size=3))
    elif kind == "Residual" and depth < 3:
        node["body"] = draw(architectures(depth + 1))
        node["shortcut"] = draw(st.none() | architectures(depth + 1))
    elif kind == "Graph" and depth < 3:
        names = ["x", "a", "b", "c"]
        node["inputs"] = draw(st.lists(st.sampled_from(names), min_size=0, max_size=2))
        node["outputs"] = draw(st.lists(st.sampled_from(names), min_size=0, max_size=2))
        node["nodes"] = [
            {"name": draw(st.sampled_from(names)), "inputs": draw(st.lists(st.sampled_from(names), max_size=2)),
             "layer": draw(architectures(depth + 1))}
            for _ in range(draw(st.integers(0, 3)))
        ]  # fmt: skip
    else:
        node["config"] = draw(st.dictionaries(st.sampled_from(
            ["in_features", "out_features", "in_channels", "out_channels", "kernel_size", "padding", "stride",
             "num_features", "start_dim", "bias", "groups", "dim"]), values, max_size=4))  # fmt: skip
    return node


@SETTINGS
@given(arch=architectures())
def test_random_architectures_load_or_give_checkpoint_error(tmp_path, arch):
    header = dict(HEADER)
    header["__metadata__"] = dict(HEADER["__metadata__"], architecture=json.dumps(arch))
    load_within_bound(tmp_path, pack(header))


@SETTINGS
@given(
    name=st.sampled_from([k for k in HEADER if k != "__metadata__"]),
    field=st.sampled_from(["shape", "dtype", "data_offsets"]),
    value=values,
)
def test_mutated_tensor_entries_give_checkpoint_error(tmp_path, name, field, value):
    header = json.loads(json.dumps(HEADER))
    header[name][field] = value
    load_within_bound(tmp_path, pack(header))


@SETTINGS
@given(position=st.integers(0, len(SEED) - 1), byte=st.integers(0, 255), cut=st.integers(0, 64))
def test_flipped_and_truncated_bytes_give_checkpoint_error(tmp_path, position, byte, cut):
    blob = bytearray(SEED)
    blob[position] = byte
    load_within_bound(tmp_path, bytes(blob[: len(blob) - cut]))


def test_deeply_nested_header_json_is_refused_without_recursion_error(tmp_path):
    header = dict(HEADER)
    header["__metadata__"] = dict(HEADER["__metadata__"], architecture="[" * 100_000 + "]" * 100_000)
    load_within_bound(tmp_path, pack(header))
    blob = pack({"a": json.loads("[" * 50 + "]" * 50)})
    text = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    load_within_bound(tmp_path, struct.pack("<Q", len(text)) + text)
    load_within_bound(tmp_path, blob)


def test_a_huge_declared_model_in_a_small_file_is_refused_before_allocating(tmp_path):
    header = dict(HEADER)
    arch = {
        "type": "Sequential",
        "layers": [{"type": "Linear", "config": {"in_features": 60000, "out_features": 60000}}],
    }
    header["__metadata__"] = dict(HEADER["__metadata__"], architecture=json.dumps(arch))
    load_within_bound(tmp_path, pack(header))
    assert np.prod([60000, 60000]) * 4 > 100 * PEAK_BYTES  # the bound would catch trusting it
