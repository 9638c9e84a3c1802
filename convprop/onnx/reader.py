"""Reading an ONNX file safely: parse, check, and turn tensors into arrays without trusting the file.

An ONNX file is a protocol-buffers message: parsing it runs no code from the file. What the file could
still do is *claim* things — a tensor of 10¹² entries, data stored in another file, an opset this
importer was not written for — so every claim is checked before anything is allocated:

- the file must parse completely (a truncated or malformed message is refused);
- external-data tensors are refused (loading never reads another path the file names);
- a tensor's declared size (dims × item size) must equal the bytes it actually carries, and the
  tensors together must fit in ``MAX_TOTAL_BYTES``;
- the default-domain opset must lie in ``[MIN_OPSET, MAX_OPSET]`` and no other domain may be used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OnnxError
from ._require import require_onnx

MIN_OPSET = 11  # Pad, Dropout and the pools take their modern (input) forms from opset 11
MAX_OPSET = 25  # the newest opset whose versions of the operators in ops.py have been checked
MAX_TOTAL_BYTES = 2**31  # 2 GiB of tensors: protobuf's own limit for one message

# ONNX TensorProto data types that may appear in a file convprop reads, and the NumPy dtype of each.
DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.float32),  # FLOAT
    11: np.dtype(np.float64),  # DOUBLE
    6: np.dtype(np.int32),  # INT32 (shapes, axes)
    7: np.dtype(np.int64),  # INT64 (shapes, pads, axes)
    9: np.dtype(np.bool_),  # BOOL (Dropout's training_mode)
}
_TYPED_FIELD = {1: "float_data", 11: "double_data", 6: "int32_data", 7: "int64_data", 9: "int32_data"}


def dtype_name(elem_type: int) -> str:
    onnx = require_onnx()
    try:
        return str(onnx.TensorProto.DataType.Name(elem_type))
    except ValueError:
        return f"data type {elem_type}"


def read_model(source: str | os.PathLike | bytes | Any) -> Any:
    """An ``onnx.ModelProto`` from a path, bytes or a ModelProto, checked as described above."""
    onnx = require_onnx()
    if isinstance(source, onnx.ModelProto):
        model, where = source, "the model"
    else:
        if isinstance(source, (bytes, bytearray)):
            data, where = bytes(source), "the ONNX bytes"
        else:
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"no ONNX model at {str(path)!r}")
            data, where = path.read_bytes(), repr(str(path))
        model = onnx.ModelProto()
        try:
            model.ParseFromString(data)
        except Exception as exc:  # protobuf's DecodeError, or a RuntimeError from the C++ parser
            raise OnnxError(f"{where} is not a valid ONNX file (malformed or truncated): {exc}") from None
        if not data or not model.HasField("graph"):
            raise OnnxError(f"{where} is not an ONNX model: it holds no graph (malformed or truncated?)")
    check_model(model, where)
    return model


def opset_version(model: Any) -> int:
    """The default-domain (``ai.onnx``) opset the model imports."""
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise OnnxError("the model imports no opset of the default ONNX domain")
    return int(versions[0])


def check_model(model: Any, where: str = "the model") -> None:
    """Opset range, domains, and every tensor's declared size against the bytes it carries."""
    version = opset_version(model)
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise OnnxError(
            f"{where} uses ONNX opset {version}; convprop reads opsets {MIN_OPSET} to {MAX_OPSET} "
            "(convert it with onnx.version_converter.convert_version)"
        )
    graph = model.graph
    if graph.sparse_initializer:
        raise OnnxError(f"{where} has sparse initializers, which convprop does not read")
    total = 0
    for tensor in graph.initializer:
        total += check_tensor(tensor, f"initializer {tensor.name!r}")
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise OnnxError(
                f"node {node.name or node.output[0]!r} uses operator {node.domain}.{node.op_type}, "
                "outside the default ONNX domain; convprop has no such operator"
            )
        for attr in node.attribute:
            if attr.HasField("t"):
                total += check_tensor(attr.t, f"attribute {attr.name!r} of node {node.name or node.output[0]!r}")
            if attr.tensors or attr.g.node or attr.graphs:
                raise OnnxError(
                    f"node {node.name or node.output[0]!r} ({node.op_type}) has a graph or tensor-list "
                    f"attribute {attr.name!r}, which convprop does not read"
                )
    if total > MAX_TOTAL_BYTES:
        raise OnnxError(f"{where} declares {total} bytes of tensors, more than convprop reads ({MAX_TOTAL_BYTES})")


def check_tensor(tensor: Any, what: str) -> int:
    """The number of bytes ``tensor`` holds, after checking it carries exactly what its dims declare."""
    if tensor.data_location == 1 or tensor.external_data:  # TensorProto.EXTERNAL
        raise OnnxError(
            f"{what} stores its data in an external file; convprop only reads self-contained models "
            "(save with onnx.save(model, path, save_as_external_data=False))"
        )
    if tensor.data_type not in DTYPES:
        raise OnnxError(
            f"{what} has {dtype_name(tensor.data_type)} values; convprop reads "
            f"{', '.join(dtype_name(t) for t in DTYPES)}"
        )
    dims = list(tensor.dims)
    if any(d < 0 for d in dims):
        raise OnnxError(f"{what} declares negative dimensions {dims}")
    count = 1
    for d in dims:
        count *= d  # Python ints: no overflow however large the claim
    itemsize = DTYPES[tensor.data_type].itemsize
    if tensor.raw_data:
        if len(tensor.raw_data) != count * itemsize:
            raise OnnxError(
                f"{what} declares shape {dims} ({count * itemsize} bytes) but carries "
                f"{len(tensor.raw_data)} bytes (truncated or hostile file)"
            )
    else:
        field = _TYPED_FIELD[tensor.data_type]
        carried = len(getattr(tensor, field))
        if carried != count:
            raise OnnxError(f"{what} declares shape {dims} ({count} values) but carries {carried}")
    return count * itemsize


def to_array(tensor: Any, what: str) -> np.ndarray:
    """The checked tensor as a NumPy array (a copy owned by convprop)."""
    check_tensor(tensor, what)
    onnx = require_onnx()
    return np.array(onnx.numpy_helper.to_array(tensor), copy=True)
