"""Save and load models as safetensors files: tensors under PyTorch's state_dict names, architecture in
the metadata.

A checkpoint is a plain safetensors file, so ``safetensors.torch.load_file`` reads it into an
equivalent ``torch.nn.Sequential``. The header's metadata holds::

    {"format": "convprop", "format_version": "1", "architecture": <JSON>, "dtype": "float32", ...}

where the architecture is a tree of ``{"type": class name, "config": constructor arguments}`` nodes and
containers (Sequential, Residual, Concat, Graph with its nodes and edges; ``convprop.architecture``).
Loading rebuilds the model from that JSON using only the classes registered in ``convprop.nn.LAYERS``:
no code from the file is ever run, and nothing is unpickled.

Hostile files are refused with a ``CheckpointError`` before anything is allocated beyond the file's
own size: the header is checked (nesting depth, tensor shapes against their byte ranges), and the
declared architecture may allocate at most ``BUDGET_PER_ELEMENT`` times as many elements as the file's
tensors hold; every floating-point tensor must be finite.
Writes are atomic: a temporary file in the same directory, flushed to disk, then renamed over the target.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from . import __version__
from .architecture import MAX_DEPTH, describe, json_depth
from .architecture import build as build_architecture
from .errors import ArgumentTypeError, CheckpointError
from .fileio import check_suffix, write_atomic
from .nn.module import Module

FORMAT = "convprop"
FORMAT_VERSION = "1"
MAX_HEADER_BYTES = 16 << 20  # a header (tensor table and metadata) beyond 16 MiB is refused
BUDGET_PER_ELEMENT = 64  # the architecture may allocate at most 64 × (elements in the file) + BUDGET_FLOOR
BUDGET_FLOOR = 1 << 20
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def _check_tensor_entries(header: Any, data_bytes: int, path: Path) -> None:
    """Each tensor's declared shape, dtype and byte range must agree, inside the file."""
    if not isinstance(header, dict):
        raise CheckpointError(f"{str(path)!r}: the safetensors header must be a JSON object")
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not (isinstance(entry, dict) and isinstance(entry.get("shape"), list)):
            raise CheckpointError(f"{str(path)!r}: tensor {name!r:.100} has no shape list in the header")
        shape, dtype, offsets = entry["shape"], entry.get("dtype"), entry.get("data_offsets")
        if not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40 for d in shape):
            raise CheckpointError(f"{str(path)!r}: tensor {name!r:.100} has shape {shape!r:.100}")
        if not isinstance(dtype, str) or dtype not in _ITEMSIZE:
            raise CheckpointError(f"{str(path)!r}: tensor {name!r:.100} has dtype {dtype!r:.50}")
        size = math.prod(shape) * _ITEMSIZE[dtype]
        valid = isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
        start, end = (offsets[0], offsets[1]) if isinstance(offsets, list) and valid else (-1, -1)
        if not valid or not 0 <= start <= end <= data_bytes or end - start != size:
            raise CheckpointError(
                f"{str(path)!r}: tensor {name!r:.100} of shape {shape} ({dtype}) needs {size} bytes, but its "
                f"data_offsets are {offsets!r:.100} in {data_bytes} bytes of data"
            )


def _check_finite(tensors: dict[str, np.ndarray], path: Path) -> None:
    for name, value in tensors.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            raise CheckpointError(f"{str(path)!r}: tensor {name!r} has {bad} non-finite value(s) (NaN or inf)")


def architecture(model: Module) -> dict[str, Any]:
    """The JSON-serialisable description of ``model`` (see ``convprop.architecture``)."""
    return describe(model)


def build(spec: Any, budget: float = float("inf")) -> Module:
    """Rebuild a model from :func:`architecture`'s description (registered classes only)."""
    return build_architecture(spec, budget)


def save(model: Module, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Save ``model`` (parameters, buffers, architecture) to ``path`` atomically; returns the path.

    ``metadata``: extra string key/values stored in the header (e.g. normalisation constants).
    """
    if not isinstance(model, Module):
        raise ArgumentTypeError(f"save needs a convprop Module, got {type(model).__name__}")
    path = check_suffix(path, (".safetensors",), "a checkpoint")  # safetensors bytes, never under another name
    if not path.parent.is_dir():
        raise CheckpointError(f"cannot save to {str(path)!r}: directory {str(path.parent)!r} does not exist")
    extra = dict(metadata or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
        raise ArgumentTypeError("metadata must map strings to strings")
    tensors = {
        name: np.array(a, order="C") for name, a in model.state_dict().items()
    }  # (ascontiguousarray would make 0-d 1-d)
    params = model.parameters()
    header = extra | {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "convprop_version": __version__,
        "architecture": json.dumps(architecture(model)),
        "dtype": str(params[0].data.dtype) if params else "float32",
    }
    write_atomic(path, st_save(tensors, metadata=header))
    return path


def read(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors and the header metadata of any safetensors file, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}")
    data = path.read_bytes()
    if len(data) < 8:
        raise CheckpointError(f"{str(path)!r} is not a safetensors file: only {len(data)} bytes")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8:
        raise CheckpointError(
            f"{str(path)!r} is truncated or not a safetensors file (header of {header_len} bytes, file of {len(data)})"
        )
    if header_len > MAX_HEADER_BYTES:
        raise CheckpointError(f"{str(path)!r}: a header of {header_len} bytes is larger than {MAX_HEADER_BYTES}")
    try:
        text = data[8 : 8 + header_len].decode("utf-8")
        if json_depth(text) > MAX_DEPTH:
            raise CheckpointError(f"{str(path)!r}: the header's JSON is nested deeper than {MAX_DEPTH} levels")
        header = json.loads(text)
        _check_tensor_entries(header, len(data) - 8 - header_len, path)
        tensors = st_load(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{str(path)!r} is corrupted or not a safetensors file: {exc}") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        meta = {}
    return tensors, meta


def load(path: str | os.PathLike, model: Module | None = None) -> Module:
    """Load a checkpoint. Without ``model``, rebuild it from the file's architecture metadata; with
    ``model`` (e.g. for a file written by ``safetensors.torch.save_file``), fill that model's
    parameters and buffers by name (shapes checked). Returns the model in eval mode."""
    return load_with_metadata(path, model)[0]


def load_with_metadata(path: str | os.PathLike, model: Module | None = None) -> tuple[Module, dict[str, str]]:
    """:func:`load`, also returning the header metadata — both from one read of the file, so they
    always belong together even if a running training replaces the file meanwhile."""
    tensors, meta = read(path)
    _check_finite(tensors, Path(path))
    if model is None:
        if meta.get("format") != FORMAT or "architecture" not in meta:
            raise CheckpointError(
                f"{str(path)!r} has no convprop architecture metadata (a foreign safetensors file?); "
                "build the model yourself and pass it: convprop.load(path, model=...)"
            )
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{str(path)!r} has checkpoint format version {meta.get('format_version')!r}; "
                f"this convprop reads version {FORMAT_VERSION}"
            )
        text = meta["architecture"]
        if json_depth(text) > MAX_DEPTH:
            raise CheckpointError(f"{str(path)!r}: the architecture metadata is nested deeper than {MAX_DEPTH} levels")
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{str(path)!r}: the architecture metadata is not valid JSON ({exc})") from None
        elements = sum(int(t.size) for t in tensors.values())
        try:
            model = build(spec, budget=BUDGET_PER_ELEMENT * elements + BUDGET_FLOOR)
        except CheckpointError as exc:
            raise CheckpointError(f"{str(path)!r}: {exc}") from None
        dtype = meta.get("dtype", "float32")
        if dtype not in ("float32", "float64"):
            raise CheckpointError(f"{str(path)!r}: dtype metadata must be 'float32' or 'float64', got {dtype!r:.50}")
        model.astype(dtype)
    try:
        model.load_state_dict(tensors)
    except ValueError as exc:
        raise CheckpointError(f"{str(path)!r} does not fit the model: {exc}") from None
    return model.eval(), meta


def metadata(path: str | os.PathLike) -> dict[str, str]:
    """The header metadata of a checkpoint (architecture, versions and anything passed to ``save``)."""
    return read(path)[1]
