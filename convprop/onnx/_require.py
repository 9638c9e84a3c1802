"""The optional ``onnx`` dependency, imported only when ONNX is used, with a message naming the extra."""

from __future__ import annotations

from types import ModuleType

from ..errors import OnnxError


def require_onnx() -> ModuleType:
    """The ``onnx`` package, or an :class:`OnnxError` saying how to install it."""
    try:
        import onnx
        import onnx.numpy_helper
    except ImportError as exc:
        raise OnnxError(
            f'ONNX support needs the onnx package ({exc}); install it with: pip install "convprop[onnx]"'
        ) from None
    return onnx
