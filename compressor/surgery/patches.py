"""Upstream-style fixes to torch-pruning 1.6.1, kept in one place, each with a test
(``tests/unit/surgery/test_any_cnn.py``). :func:`apply` installs them once, before a graph is built; each
patch replaces one torch-pruning function by a copy that differs only where the comment says.

- ``reshape_zero_channels`` (cause C2): ``update_reshape_index_mapping`` divides by the channel count it
  infers on either side of a reshape; after chunk -> conv -> cat -> channel shuffle that count comes out 0
  (its own comment: "=0 if there is a residual connection to model inputs") and the build dies with
  ZeroDivisionError. A reshape whose sides cannot be inferred, or do not divide, is no flatten: leave its
  mapping alone (as torch-pruning does for every other reshape it does not understand).
- ``split_pieces`` and ``concat_sizes`` (causes C2, C3): torch-pruning gives the i-th *consumer* of a
  split the i-th piece (``torch.chunk`` even gets one piece per consumer) and infers concat input widths by
  walking the graph. When a piece has two consumers or none (chunk -> identity + conv branch -> cat ->
  channel shuffle, ShuffleNet V2), or a concat input's width cannot be walked back (dense blocks feeding
  grouped convs, CondenseNet), the offsets run out (IndexError, None + int) or point at the wrong
  channels (out-of-range indices). Fixed: piece and concat widths come from the traced tensors themselves
  (autograd's input metadata), and each consumer's piece or concat position from its autograd edge
  (``next_functions``), never from the order of the graph's node lists.
"""

from __future__ import annotations

_APPLIED: set[str] = set()


def apply() -> None:
    """Install every patch (idempotent)."""
    if "reshape_zero_channels" not in _APPLIED:
        _patch_reshape()
        _APPLIED.add("reshape_zero_channels")
    if "split_pieces" not in _APPLIED:
        _patch_split()
        _APPLIED.add("split_pieces")
    if "concat_sizes" not in _APPLIED:
        _patch_concat()
        _APPLIED.add("concat_sizes")


def _patch_reshape() -> None:
    from torch_pruning.dependency import index_mapping

    original = index_mapping.update_reshape_index_mapping

    def update_reshape_index_mapping(graph, reshape_node):
        sides = _reshape_channels(graph, reshape_node, index_mapping)
        if sides is None:
            return None
        inner, outer = sides
        if not inner or not outer or max(inner, outer) % min(inner, outer):  # the fix: no flatten here
            return None
        return original(graph, reshape_node)

    update_reshape_index_mapping.__wrapped__ = original
    index_mapping.update_reshape_index_mapping = update_reshape_index_mapping


def _reshape_channels(graph, node, index_mapping) -> tuple[int, int] | None:
    """(channels into, channels out of) a reshape as torch-pruning infers them, or None when it cannot."""
    infer = index_mapping.shape_infer
    limit = index_mapping.constants.MAX_RECURSION_DEPTH

    def first(nodes, fn):
        for n in nodes:
            depth = [0]
            value = fn(graph, n, depth)
            if depth[0] > limit:
                return None
            if value is not None:
                return value
        return None

    outer = first(node.outputs, infer.infer_in_channels_recursively)
    inner = first(node.inputs, infer.infer_out_channels_recursively)
    if outer is None or inner is None:
        return None
    return inner, outer


def _patch_split() -> None:
    from torch_pruning import ops
    from torch_pruning.dependency import index_mapping, shape_infer

    original = index_mapping.update_split_index_mapping
    between = shape_infer.infer_channels_between

    def update_split_index_mapping(graph, split_node):
        if split_node.type != ops.OPTYPE.SPLIT or not _exact_pieces(split_node):
            return original(graph, split_node)
        offsets = _offsets(split_node.module.split_sizes)
        split_node.module.offsets = offsets
        for out_node in split_node.outputs:
            pieces = _pieces_read(out_node, split_node)
            if len(set(pieces)) != 1 or not split_node.enable_index_mapping:
                continue  # a consumer of several pieces: no mapping (the surgery checks protect the group)
            piece = offsets[pieces[0]: pieces[0] + 2]
            _set_mapping(split_node, out_node, index_mapping._SplitIndexMapping, piece, slot=0)
        return None

    def infer_channels_between(graph, node_1, node_2):
        if node_1.type == ops.OPTYPE.SPLIT and _exact_pieces(node_1):
            pieces = set(_pieces_read(node_2, node_1))
            return node_1.module.split_sizes[pieces.pop()] if len(pieces) == 1 else None
        return between(graph, node_1, node_2)

    update_split_index_mapping.__wrapped__ = original
    infer_channels_between.__wrapped__ = between
    index_mapping.update_split_index_mapping = update_split_index_mapping
    shape_infer.infer_channels_between = infer_channels_between


def _patch_concat() -> None:
    from torch_pruning import ops
    from torch_pruning.dependency import index_mapping

    original = index_mapping.update_concat_index_mapping

    def update_concat_index_mapping(graph, cat_node):
        if cat_node.type != ops.OPTYPE.CONCAT or getattr(cat_node.grad_fn, "_saved_dim", None) != 1:
            return original(graph, cat_node)
        if cat_node.module.concat_sizes is None:  # later calls see the sizes torch-pruning's ConcatPruner updated
            widths = _edge_channels(cat_node.grad_fn)
            if widths is None:
                return original(graph, cat_node)
            cat_node.module.concat_sizes = widths
        offsets = _offsets(cat_node.module.concat_sizes)
        cat_node.module.offsets = offsets
        for in_node in cat_node.inputs:
            places = _places_of(in_node, cat_node)
            if len(places) != 1 or not cat_node.enable_index_mapping:
                continue  # one tensor concatenated twice: no mapping (the surgery checks protect the group)
            piece = offsets[places[0]: places[0] + 2]
            _set_mapping(in_node, cat_node, index_mapping._ConcatIndexMapping, piece, slot=1)
        return None

    update_concat_index_mapping.__wrapped__ = original
    index_mapping.update_concat_index_mapping = update_concat_index_mapping


def _set_mapping(upstream, downstream, mapping, offset, slot: int) -> None:
    """The index mapping between two nodes of a concat or split, both ways, as torch-pruning sets them:
    ``reverse=False`` from upstream to downstream, ``reverse=True`` back."""
    for dep in downstream.dependencies:
        if dep.target is upstream:
            dep.index_mapping[slot] = mapping(offset=offset, reverse=True)
    for dep in upstream.dependencies:
        if dep.target is downstream:
            dep.index_mapping[slot] = mapping(offset=offset, reverse=False)


def _exact_pieces(split_node) -> bool:
    """Give the split its piece widths from the traced tensors (once); False when they are not known."""
    module = split_node.module
    if getattr(module, "compressor_pieces", False):
        return True
    fn = split_node.grad_fn
    if getattr(fn, "_saved_dim", None) != 1:
        return False
    shapes = [m.shape for m in getattr(fn, "_input_metadata", ())]
    if not shapes or any(len(shape) < 2 for shape in shapes):
        return False
    module.split_sizes = [int(shape[1]) for shape in shapes]
    module.compressor_pieces = True
    return True


def _edge_channels(fn) -> list[int] | None:
    """Channels (dim 1) of every input of the autograd node ``fn``, from the producers' output metadata."""
    widths = []
    for producer, nr in fn.next_functions:
        meta = getattr(producer, "_input_metadata", None) if producer is not None else None
        if not meta or nr >= len(meta) or len(meta[nr].shape) < 2:
            return None
        widths.append(int(meta[nr].shape[1]))
    return widths


def _pieces_read(consumer, split_node) -> list[int]:
    """Which outputs (pieces) of a split ``consumer`` reads, from autograd's edges (``output_nr``)."""
    return [nr for f, nr in _edges(consumer) if f is split_node.grad_fn]


def _places_of(producer, cat_node) -> list[int]:
    """At which input positions a concat reads ``producer``'s output."""
    return [i for i, (f, _nr) in enumerate(_edges(cat_node)) if f is producer.grad_fn]


def _edges(node) -> list:
    fn = node.grad_fn
    return list(getattr(fn, "next_functions", ())) if fn is not None else []


def _offsets(sizes) -> list[int]:
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + int(size))
    return offsets
