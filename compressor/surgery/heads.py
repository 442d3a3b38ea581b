"""The output layers of a network (its heads), which are never pruned: the classifier of an image classifier,
the box and class convs of a detector, the logits conv of a segmenter, every one of a multi-head network.

The rule (:func:`find_heads`): every Conv/Linear whose result reaches one of the model's output tensors through
parameter-free operations only (reshape, permute, sigmoid, concat, upsampling, ...), found by walking the
autograd graph back from each output; plus the last layer of every branch whose result reaches no output.
``pruning.heads`` replaces the rule with the layers it names (:func:`heads_for`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ModelError
from ..outputs import flatten
from .graph import PARAM_LAYERS, dead_end_layers, select_layers


def find_heads(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the layers producing the model's outputs (the classifier; a detector's or segmenter's heads),
    which are never pruned. The rule (:func:`output_layers`): every Conv/Linear whose result reaches one of the
    model's output tensors through parameter-free operations only (reshape, permute, sigmoid, concat,
    upsampling, ...), so the output keeps its channels; plus the last layer of every branch whose result
    reaches no output (:func:`dead_end_layers`). ``pruning.heads`` replaces the rule with a list of layers."""
    heads = output_layers(model, example) + dead_end_layers(model, example, terminal_only=True)
    if not heads:
        raise ModelError(f"{type(model).__name__} has no Conv or Linear layer: nothing to prune")
    return sorted(set(heads))


def heads_for(model: nn.Module, example: torch.Tensor, selectors: list[str] | None) -> list[str]:
    """``pruning.heads`` when the recipe names them (each selector must match), else :func:`find_heads`."""
    if selectors is None:
        return find_heads(model, example)
    return sorted({n for names in select_layers(model, selectors, "pruning.heads").values() for n in names})


def output_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The Conv/Linear layers whose results reach an output tensor through parameter-free operations: walked
    back on the autograd graph from each output until a layer's own result is met (the last layer run when
    no output carries a graph)."""
    names = {m: n for n, m in model.named_modules() if isinstance(m, PARAM_LAYERS)}
    produced: dict[object, str] = {}
    order: list[str] = []

    def record(module, _inputs, output):
        order.append(names[module])
        if isinstance(output, torch.Tensor) and output.grad_fn is not None:
            produced[output.grad_fn] = names[module]

    hooks = [m.register_forward_hook(record) for m in names]
    was_training = model.training
    try:
        with torch.enable_grad():
            output = model.eval()(example)  # eval: a training-mode pass would move BatchNorm statistics
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    found = set()
    for tensor in (t for t in flatten(output) if isinstance(t, torch.Tensor) and t.grad_fn is not None):
        found |= _producers(tensor.grad_fn, produced)
    if not found and order:
        found = {order[-1]}
    return sorted(found)


def _producers(start, produced: dict) -> set[str]:
    """The layers of ``produced`` met first on every path back from ``start`` (not walking past them)."""
    found, seen, stack = set(), set(), [start]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in produced:
            found.add(produced[node])
            continue
        stack.extend(parent for parent, _ in getattr(node, "next_functions", ()))
    return found
