"""The operator table: for each ONNX operator convprop implements, the converter that turns one node into
convprop layers (docs/onnx.md lists what maps to what).

A converter reads the node's attributes (an attribute it does not know is refused, naming it), takes
weights and settings from static values, and emits one node — or a few, when ONNX packs more into one
operator than the convprop layer does: asymmetric ``pads`` become a ``Pad`` node in front of a Conv or a
pool (or a cropping ``Pad`` after a ConvTranspose), which is exact because zero (or −∞ for max pooling)
padding followed by an unpadded window is what the padded operator computes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import nn
from ..errors import OnnxError
from ._require import require_onnx
from .context import ImportContext, node_label

Converter = Callable[[ImportContext, Any], None]
OPS: dict[str, Converter] = {}
VERSIONS: dict[str, tuple[int, ...]] = {}  # operator → the since-versions its converter implements


def op(name: str, *versions: int) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        OPS[name] = fn
        VERSIONS[name] = versions
        return fn

    return register


MAX_SETTING = 1 << 20  # any integer setting (a pad, a kernel size, an output size): larger ones would only
# make convprop allocate what the file claims


def check_setting(values: Any, node: Any, what: str) -> None:
    """Integers in an attribute or a settings tensor (pads, shapes) within ``MAX_SETTING``."""
    flat = [values] if isinstance(values, (int, np.integer)) else list(np.ravel(values))
    if any(isinstance(v, (int, np.integer)) and abs(int(v)) > MAX_SETTING for v in flat):
        raise OnnxError(f"node {node_label(node)}: {what} {list(flat)[:8]} is beyond convprop's limit of {MAX_SETTING}")


def attributes(node: Any, known: dict[str, Any]) -> dict[str, Any]:
    """The node's attributes over the defaults in ``known``; an attribute not in ``known`` is refused, and
    integers beyond ``MAX_SETTING`` too."""
    onnx = require_onnx()
    values = dict(known)
    for attr in node.attribute:
        if attr.name not in known:
            raise OnnxError(
                f"node {node_label(node)} has attribute {attr.name!r}, which convprop does not support "
                f"(it reads {sorted(known) or 'none'})"
            )
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, (int, list)) and not isinstance(value, bool) and attr.name != "seed":
            check_setting(value if isinstance(value, int) else [v for v in value if isinstance(v, int)], node,
                          f"attribute {attr.name!r}")  # fmt: skip
        if isinstance(value, float):  # stored as float32: the shortest decimal gives back e.g. eps=1e-5 exactly
            value = float(str(np.float32(value)))
        values[attr.name] = value.decode() if isinstance(value, bytes) else value
    return values


def unsupported(node: Any, what: str) -> OnnxError:
    return OnnxError(f"node {node_label(node)}: {what} is not supported by convprop")


def inputs_of(node: Any, minimum: int, maximum: int) -> list[str]:
    """The node's input names ('' for an omitted optional input), checked for count."""
    names = list(node.input)
    while names and names[-1] == "":
        names.pop()
    if not minimum <= len(names) <= maximum:
        raise OnnxError(f"node {node_label(node)} has {len(names)} inputs; {node.op_type} takes {minimum}-{maximum}")
    return names + [""] * (maximum - len(names))


def single_output(node: Any, ctx: ImportContext) -> str:
    """The node's one output; optional extra outputs (Dropout's mask, MaxPool's indices) are refused if used."""
    extra = [o for o in node.output[1:] if o]
    if extra:
        raise unsupported(node, f"the extra output {extra[0]!r} (convprop computes only the first output)")
    return str(node.output[0])


def layer_class(node: Any, family: str, spatial: int) -> Any:
    cls = getattr(nn, f"{family}{spatial}d", None)
    if cls is None:
        raise unsupported(node, f"a {spatial}-D {family} (convprop has no nn.{family}{spatial}d)")
    return cls


def set_data(param: nn.Parameter | None, value: np.ndarray, node: Any, what: str) -> None:
    if param is None or param.data.shape != value.shape:
        raise OnnxError(
            f"node {node_label(node)}: {what} of shape {value.shape} does not fit the layer "
            f"(expected {None if param is None else param.data.shape})"
        )
    param.data[...] = value
