"""Save and load models as safetensors files: tensors under PyTorch's state_dict names, architecture in
the metadata.

A checkpoint is a plain safetensors file, so ``safetensors.torch.load_file`` reads it into an
equivalent ``torch.nn.Sequential``. The header's metadata holds::

    {"format": "convprop", "format_version": "1", "architecture": <JSON>, "dtype": "float32", ...}

where the architecture is a tree of ``{"type": class name, "config": constructor arguments}`` nodes
(``"layers"`` for a Sequential). Loading rebuilds the model from that JSON using only the classes
registered in ``convprop.nn.LAYERS``: no code from the file is ever run, and nothing is unpickled.
Writes are atomic: a temporary file in the same directory, flushed to disk, then renamed over the target.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from . import __version__
from .errors import ArgumentTypeError, CheckpointError
from .fileio import write_atomic
from .nn.module import LAYERS, Module, Sequential

FORMAT = "convprop"
FORMAT_VERSION = "1"


def architecture(model: Module) -> dict[str, Any]:
    """The JSON-serialisable description of ``model`` that :func:`build` turns back into a model."""
    if isinstance(model, Sequential):
        return {"type": "Sequential", "layers": [architecture(layer) for layer in model]}
    if model._modules:  # type: ignore[attr-defined]  # Module sets it via object.__setattr__ (nn/module.py)
        raise ArgumentTypeError(
            f"cannot describe {type(model).__name__}: only Sequential may contain other modules in a checkpoint"
        )
    return {"type": type(model).__name__, "config": model.config()}


def build(spec: dict[str, Any]) -> Module:
    """Rebuild a model from :func:`architecture`'s description (registered classes only)."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise CheckpointError(f"architecture node must be an object with a 'type', got {spec!r:.200}")
    kind = spec["type"]
    if kind == "Sequential":
        layers = spec.get("layers")
        if not isinstance(layers, list):
            raise CheckpointError("a Sequential node needs a 'layers' list")
        return Sequential(*(build(layer) for layer in layers))
    cls = LAYERS.get(kind)
    if cls is None or cls is Sequential:
        raise CheckpointError(f"unknown layer type {kind!r} in the checkpoint; known types: {sorted(LAYERS)}")
    config = spec.get("config", {})
    if not isinstance(config, dict):
        raise CheckpointError(f"config of {kind} must be an object, got {config!r:.200}")
    try:
        return cls(**config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot rebuild {kind} from config {config}: {exc}") from None


def save(model: Module, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Save ``model`` (parameters, buffers, architecture) to ``path`` atomically; returns the path.

    ``metadata``: extra string key/values stored in the header (e.g. normalisation constants).
    """
    if not isinstance(model, Module):
        raise ArgumentTypeError(f"save needs a convprop Module, got {type(model).__name__}")
    path = Path(path)
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
    try:
        header = json.loads(data[8 : 8 + header_len])
        tensors = st_load(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
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
        try:
            spec = json.loads(meta["architecture"])
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{str(path)!r}: the architecture metadata is not valid JSON ({exc})") from None
        model = build(spec)
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
