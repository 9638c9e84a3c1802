"""A model's architecture as JSON, and back: the part of a checkpoint that says how to rebuild it.

``describe(model)`` gives a tree of nodes::

    {"type": "Sequential", "layers": [node, ...]}
    {"type": "Residual", "body": node, "shortcut": node | null}
    {"type": "Concat", "dim": 1, "branches": [node, ...]}
    {"type": "Graph", "inputs": [...], "outputs": [...],
     "nodes": [{"name": n, "inputs": [...], "layer": node} | {"name": n, "inputs": [...], "shares": m}]}
    {"type": <registered layer class>, "config": {constructor arguments}}

(``"shares": m`` is a node that reuses node m's module instance: shared weights stay shared.)

``build(spec, budget)`` rebuilds it from registered classes only (no code from the file runs) and
refuses, with a ``CheckpointError`` naming the node, anything hostile *before* allocating: an unknown
type, a tree deeper than ``MAX_DEPTH``, more than ``MAX_MODULES`` modules, an integer setting beyond
``MAX_INT``, or layers whose settings could allocate more than ``budget`` elements (the caller derives
the budget from the file's own tensors, so a small file can never build a huge model).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from .errors import ArgumentError, ArgumentTypeError, CheckpointError
from .nn.containers import Concat, Residual
from .nn.graph import Graph
from .nn.module import LAYERS, Module, Sequential

CONTAINERS = ("Sequential", "Residual", "Concat", "Graph")
MAX_DEPTH = 64  # JSON nesting levels of an architecture (or any metadata value)
MAX_MODULES = 10_000  # modules in one model
MAX_INT = 1 << 20  # any integer setting (channels, kernel, padding, sizes)
ELEMENTS_PER_SETTING_PRODUCT = 4  # a layer allocates at most 4 × Π(its integer settings) elements


_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"')  # a JSON string, matched without backtracking


def json_depth(text: str) -> int:
    """The bracket nesting depth of a JSON text, found without parsing it (no recursion)."""
    stripped = _STRING.sub('""', text)  # strings cannot open or close anything
    codes = np.frombuffer(stripped.encode("utf-8", "replace"), dtype=np.uint8)
    steps = np.zeros(codes.shape, dtype=np.int32)  # 4 bytes per character, the only large array
    steps[(codes == ord("[")) | (codes == ord("{"))] = 1
    steps[(codes == ord("]")) | (codes == ord("}"))] = -1
    np.cumsum(steps, out=steps)
    return int(steps.max(initial=0))


# ---------------------------------------------------------------------------------------------- describe


def describe(model: Module) -> dict[str, Any]:
    """The JSON-serialisable description of ``model`` that :func:`build` turns back into a model."""
    return _describe(model, "model", {})


def _describe(model: Module, path: str, seen: dict[int, str]) -> dict[str, Any]:
    if id(model) in seen:
        raise ArgumentError(
            f"cannot save {path}: it is the same module instance as {seen[id(model)]}; only Graph nodes may "
            "share a module in a checkpoint (list it as two nodes of one Graph)"
        )
    seen[id(model)] = path
    if isinstance(model, Sequential):
        return {"type": "Sequential", "layers": [_describe(m, f"{path}.{i}", seen) for i, m in enumerate(model)]}
    if isinstance(model, Residual):
        shortcut = None if model.shortcut is None else _describe(model.shortcut, f"{path}.shortcut", seen)
        return {"type": "Residual", "body": _describe(model.body, f"{path}.body", seen), "shortcut": shortcut}
    if isinstance(model, Concat):
        branches = [_describe(m, f"{path}.{i}", seen) for i, m in enumerate(model)]
        return {"type": "Concat", "dim": model.dim, "branches": branches}
    if isinstance(model, Graph):
        nodes = []
        for node in model.nodes:
            entry: dict[str, Any] = {"name": node.name, "inputs": list(node.inputs)}
            owner = model.owner[node.name]
            if owner == node.name:
                entry["layer"] = _describe(node.module, f"{path}.{node.name}", seen)
            else:
                entry["shares"] = owner
            nodes.append(entry)
        return {"type": "Graph", "inputs": list(model.input_names), "outputs": list(model.output_names), "nodes": nodes}
    if model._modules:
        raise ArgumentTypeError(
            f"cannot save {path} ({type(model).__name__}): only Sequential, Residual, Concat and Graph may contain "
            "other modules in a checkpoint"
        )
    if type(model).__name__ not in LAYERS or LAYERS[type(model).__name__] is not type(model):
        raise ArgumentTypeError(f"cannot save {path}: {type(model).__name__} is not a registered convprop layer")
    return {"type": type(model).__name__, "config": model.config()}


# ---------------------------------------------------------------------------------------------- build


class _Builder:
    def __init__(self, budget: float):
        self.budget, self.spent, self.modules = budget, 0.0, 0

    def build(self, spec: Any, path: str, depth: int = 0) -> Module:
        if depth > MAX_DEPTH:
            raise CheckpointError(f"architecture node {path} is nested deeper than {MAX_DEPTH} levels")
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise CheckpointError(f"architecture node {path} must be an object with a string 'type', got {spec!r:.200}")
        self.modules += 1
        if self.modules > MAX_MODULES:
            raise CheckpointError(f"the architecture has more than {MAX_MODULES} modules (at {path})")
        kind = spec["type"]
        try:
            if kind == "Sequential":
                layers = _list(spec, "layers", path)
                return Sequential(*(self.build(s, f"{path}.{i}", depth + 1) for i, s in enumerate(layers)))
            if kind == "Residual":
                body = self.build(spec.get("body"), f"{path}.body", depth + 1)
                raw = spec.get("shortcut")
                return Residual(body, None if raw is None else self.build(raw, f"{path}.shortcut", depth + 1))
            if kind == "Concat":
                branches = _list(spec, "branches", path)
                dim = _int(spec.get("dim", 1), f"{path}.dim")
                return Concat(*(self.build(s, f"{path}.{i}", depth + 1) for i, s in enumerate(branches)), dim=dim)
            if kind == "Graph":
                return self._graph(spec, path, depth)
        except (ArgumentError, ArgumentTypeError) as exc:
            raise CheckpointError(f"architecture node {path} ({kind}): {exc}") from None
        return self._leaf(kind, spec, path)

    def _graph(self, spec: dict[str, Any], path: str, depth: int) -> Graph:
        inputs, outputs = _names(spec, "inputs", path), _names(spec, "outputs", path)
        nodes: list[tuple[str, Module, list[str]]] = []
        modules: dict[str, Module] = {}
        for i, entry in enumerate(_list(spec, "nodes", path)):
            where = f"{path}.nodes[{i}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise CheckpointError(f"graph node {where} must be an object with a string 'name', got {entry!r:.200}")
            name = entry["name"]
            if name in modules or name in inputs:
                raise CheckpointError(f"graph node {name!r} ({where}): two nodes (or an input) have that name")
            node_inputs = _names(entry, "inputs", f"graph node {name!r}")
            if "shares" in entry:
                shared = entry["shares"]
                if not isinstance(shared, str) or shared not in modules:
                    raise CheckpointError(f"graph node {name!r} shares {shared!r:.100}, which is not an earlier node")
                module = modules[shared]
            else:
                module = self.build(entry.get("layer"), f"{path}.{name}", depth + 1)
            modules[name] = module
            nodes.append((name, module, node_inputs))
        return Graph(inputs, nodes, outputs)  # its checks (order, cycles, outputs) name the node

    def _leaf(self, kind: str, spec: dict[str, Any], path: str) -> Module:
        cls = LAYERS.get(kind)
        if cls is None or kind in CONTAINERS:
            raise CheckpointError(
                f"unknown layer type {kind!r:.100} at {path} in the checkpoint; known types: {sorted(LAYERS)}"
            )
        config = spec.get("config", {})
        if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
            raise CheckpointError(f"config of {kind} at {path} must be an object, got {config!r:.200}")
        product = 1.0
        for key, value in config.items():
            for number in _integers(value, f"{path} ({kind}) config {key!r}"):
                product *= max(1, abs(number))
        cost = ELEMENTS_PER_SETTING_PRODUCT * product
        self.spent += cost
        if self.spent > self.budget:
            raise CheckpointError(
                f"layer {path} ({kind}) with config {config} could allocate about {cost:.3g} elements, more than "
                f"the file's own tensors justify (budget {self.budget:.3g} for the whole model)"
            )
        try:
            return cls(**config)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"cannot rebuild {kind} at {path} from config {config}: {exc}") from None


def _integers(value: Any, where: str) -> list[int]:
    """The integers in one config value (a scalar, a flat list, or a list of flat lists such as per-side
    padding ``[[before, after], ...]``), each within ±MAX_INT."""
    items = value if isinstance(value, list) else [value]
    if any(isinstance(item, list) for item in items):  # one level of nesting: per-side pairs
        items = [inner for item in items for inner in (item if isinstance(item, list) else [item])]
    found = []
    for item in items:
        if isinstance(item, (list, dict)):
            raise CheckpointError(
                f"{where} must be a number, string, bool, null, a flat list or a list of flat lists, got {value!r:.200}"
            )
        if isinstance(item, int) and not isinstance(item, bool):
            if abs(item) > MAX_INT:
                raise CheckpointError(f"{where} = {item} is beyond the largest setting convprop accepts ({MAX_INT})")
            found.append(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise CheckpointError(f"{where} = {item} is not a finite number")
    return found


def _list(spec: dict[str, Any], key: str, path: str) -> list[Any]:
    value = spec.get(key)
    if not isinstance(value, list):
        raise CheckpointError(f"architecture node {path} ({spec.get('type')}) needs a {key!r} list, got {value!r:.100}")
    if len(value) > MAX_MODULES:
        raise CheckpointError(f"architecture node {path}: {key!r} has {len(value)} entries (at most {MAX_MODULES})")
    return value


def _names(spec: dict[str, Any], key: str, path: str) -> list[str]:
    names = _list(spec, key, path)
    if not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{path}: {key!r} must be a list of names, got {names!r:.200}")
    return names


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_INT:
        raise CheckpointError(f"{where} must be a small int, got {value!r:.50}")
    return value


def build(spec: Any, budget: float = float("inf")) -> Module:
    """Rebuild a model from :func:`describe`'s description; see the module docstring for the checks."""
    return _Builder(budget).build(spec, "model")
