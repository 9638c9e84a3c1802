"""ONNX in and out: ``export`` a convprop model, ``load`` an ONNX model as an ``nn.Graph``, and ``Backend``
(an ``onnx.backend.base.Backend``) for ONNX's own backend tests. See docs/onnx.md.

Needs the optional ``onnx`` package (``pip install "convprop[onnx]"``); importing this module does not,
and each entry point says how to install it when it is missing.
"""

from __future__ import annotations

from typing import Any

from .exporter import DEFAULT_OPSET, export
from .importer import load, load_with_metadata
from .reader import MAX_OPSET, MIN_OPSET

__all__ = ["DEFAULT_OPSET", "MAX_OPSET", "MIN_OPSET", "Backend", "export", "load", "load_with_metadata"]


def __getattr__(name: str) -> Any:
    if name == "Backend":  # a subclass of onnx's own Backend: defined only when onnx is imported
        from ._require import require_onnx

        require_onnx()
        from .backend import Backend

        return Backend
    raise AttributeError(f"module 'convprop.onnx' has no attribute {name!r}")
