"""A model's outputs as a flat list of named tensors, in one documented order (export, parity, heads, loss).

A classifier returns one tensor, named ``logits``. A detector or segmenter may return tuples, lists and dicts
of tensors, nested: they are flattened depth first, tuples and lists by index, dicts in their insertion order
(the order ``torch.onnx.export`` writes the graph outputs in). Names: a dict entry's key, a sequence item
``output_<i>`` at the top level; nested names join with ``.`` (``{"p3": (a, b)}`` -> ``p3.0``, ``p3.1``).
"""

from __future__ import annotations

from typing import Any

SINGLE = "logits"


def flatten(value: Any) -> list:
    """The tensors of ``value`` (anything with a ``shape`` counts as one), depth first."""
    return [tensor for _, tensor in named(value)]


def named(value: Any) -> list[tuple[str, Any]]:
    """(name, tensor) for every tensor of ``value``, in export order."""
    if hasattr(value, "shape") and not isinstance(value, (dict, list, tuple)):
        return [(SINGLE, value)]
    return list(_walk(value, ""))


def _walk(value: Any, prefix: str):
    if isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(str(i) if prefix else f"output_{i}", v) for i, v in enumerate(value)]
    else:
        if hasattr(value, "shape"):
            yield prefix, value
        return
    for key, item in items:
        yield from _walk(item, f"{prefix}.{key}" if prefix else key)
