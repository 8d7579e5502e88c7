"""The intermediate graph: Caffe layers as nodes, blobs in SSA form, shapes in Caffe order.

Caffe reuses blob names for in-place layers (``relu1`` reads and writes ``conv1``). Here every
write makes a new version (``conv1``, ``conv1@relu1``, …) so each node's inputs and outputs are
distinct values; the Caffe name stays on :class:`Blob` for naming outputs.
"""

from dataclasses import dataclass, field

from . import spec, types
from .errors import ConversionError, at_layer

# Refuse blobs (activations) larger than this many elements before anything is allocated: 8 GiB
# of float32, and the most TensorFlow's kernels index with their 32-bit integers.
MAX_BLOB_ELEMENTS = 2**31
# Caffe's kMaxBlobAxes.
MAX_BLOB_AXES = 32
# Refuse networks learning more values than this (every blob: kernels, biases, statistics, scales)
# before Keras allocates them, unless raised (--max-params): 4 GiB of float32. VGG-16, among the
# largest Caffe models, has 138 million.
MAX_PARAMS = 2**30

@dataclass
class Blob:
    id: str  # SSA name, unique in the graph
    name: str  # Caffe's blob name
    shape: tuple  # Caffe order (N, C, H, W for images)
    producer: str = None  # name of the node writing it; None for network inputs


@dataclass(eq=False)  # a node is itself: Caffe lets two layers share a name and parameters
class Node:
    name: str
    type: str
    param: object  # caffe_pb2.LayerParameter
    bottoms: list = field(default_factory=list)  # SSA ids
    tops: list = field(default_factory=list)  # SSA ids
    problem: str = None  # in a tolerant build: why the node cannot be converted


@dataclass
class Graph:
    name: str
    nodes: list
    blobs: dict  # SSA id -> Blob
    inputs: list  # SSA ids of network inputs, in declaration order
    outputs: list  # SSA ids of network outputs, sorted by Caffe blob name like net.outputs
    path: str = None
    _by_name: dict = field(default=None, init=False, repr=False)

    def shape(self, blob_id):
        return self.blobs[blob_id].shape

    def node(self, name):
        """The first node of that name (Caffe lets layers share one)."""
        if self._by_name is None:
            self._by_name = {}
            for node in self.nodes:
                self._by_name.setdefault(node.name, node)
        return self._by_name[name]


def _check_shape(shape, layer, path, what):
    """Caffe's limits on a blob shape; a free (None) dimension is checked when the model runs."""
    if len(shape) > MAX_BLOB_AXES:
        raise ConversionError(f"{what} has {len(shape)} axes; Caffe allows at most {MAX_BLOB_AXES}", file=path, layer=layer)
    fixed = [int(d) for d in shape if d is not None]
    if any(dim <= 0 for dim in fixed):
        raise ConversionError(f"{what} has a non-positive dimension: {list(shape)}", file=path, layer=layer)
    count = 1
    for dim in fixed:
        count *= dim
    if count > MAX_BLOB_ELEMENTS:
        raise ConversionError(
            f"{what} {list(shape)} has {count:,} elements, more than this converter allows "
            f"({MAX_BLOB_ELEMENTS:,}); check the input shape",
            file=path,
            layer=layer,
        )


def learns_weights(g, node):
    """Whether Caffe keeps learned blobs for this node of ``g``, so a caffemodel must hold them."""
    return bool(types.learned(node, [g.shape(b) for b in node.bottoms]))


def build(netdef, input_shapes=None, outputs=None, supported=None, max_params=None, tolerant=False):
    """Build the graph of a :class:`~caffe2keras.prototxt.NetDef` and infer every shape.

    ``input_shapes`` maps input blob names to (N, C, H, W) overriding the declared shapes;
    ``outputs`` cuts the network at these Caffe blob names instead of Caffe's own outputs.
    ``supported`` lists the layer types a later stage can translate: every other type is
    reported, all at once, before any shape is inferred. The network may learn at most
    ``max_params`` values (default :data:`MAX_PARAMS`).

    ``tolerant`` surveys a network instead (``inspect``): what is wrong with a layer (a type not
    supported, a bottom nothing wrote, a shape Caffe would refuse to infer) is its node's
    :attr:`Node.problem`, not raised; the blobs it writes have an unknown shape (None), as do
    those of the layers reading them and an input declared without one. No limit is checked.
    """
    path = netdef.path
    if not netdef.inputs and not tolerant:
        raise ConversionError("the network declares no input (no 'input:', Input layer or data layer)", file=path)
    layers, current, problems, strays = _wire(netdef, tolerant)
    if outputs:
        missing = [o for o in outputs if o not in current]
        if missing:
            raise ConversionError(f"--outputs names blob(s) the network does not have: {', '.join(missing)}", file=path)
        # Cut before inferring shapes, so layers past the cut (a Python proposal layer) never matter.
        layers = _needed(layers, {current[o] for o in outputs})
    known = _known(supported)
    unsupported = sorted({layer.type for layer, _, _ in layers if not _supports(known, layer)})
    if unsupported and not tolerant:
        raise ConversionError(f"unsupported layer type(s): {', '.join(unsupported)}", file=path)
    used_inputs = set(netdef.inputs)
    if outputs:  # after the cut: the inputs some kept layer reads, or that are outputs themselves
        used_inputs = {b for _, bottoms, _ in layers for b in bottoms} | {current[o] for o in outputs}
    input_shapes = dict(input_shapes or {})
    if None in input_shapes:
        if len(netdef.inputs) != 1:
            known = ", ".join(netdef.inputs) or "none"
            raise ConversionError(f"the network has several inputs ({known}); name one as NAME=N,C,H,W", file=path)
        input_shapes[next(iter(netdef.inputs))] = input_shapes.pop(None)
    for name in input_shapes:
        if name not in netdef.inputs:
            known = ", ".join(netdef.inputs) or "none"
            raise ConversionError(f"--input-shape names '{name}', which is not an input (inputs: {known})", file=path)

    blobs = {bid: Blob(id=bid, name=name, shape=None) for bid, name in strays.items()}
    inputs = []
    for name, declared in netdef.inputs.items():
        if name not in used_inputs and outputs:
            continue
        shape = input_shapes.get(name, declared)
        if tolerant:
            blobs[name] = Blob(id=name, name=name, shape=None if shape is None else _dims(shape))
            inputs.append(name)
            continue
        if shape is None:
            raise ConversionError(
                f"input '{name}' has no declared shape; give one with --input-shape {name}=N,C,H,W", file=path
            )
        shape = _dims(shape)
        if not shape:
            raise ConversionError(
                f"input '{name}' has an empty shape (a 0-D blob, which no Keras model takes as input); "
                "declare its dimensions",
                file=path,
            )
        _check_shape(shape, None, path, f"input '{name}'")
        blobs[name] = Blob(id=name, name=name, shape=shape)
        inputs.append(name)

    nodes, params, limit = [], 0, MAX_PARAMS if max_params is None else max_params
    for layer, bottoms, tops in layers:
        lname = layer.name
        node = Node(name=lname, type=layer.type, param=layer, bottoms=bottoms)
        bottom_shapes = [blobs[b].shape for b in bottoms]
        if tolerant:
            node.problem = problems.get(id(layer)) or (None if _supports(known, layer) else "no translator for this type")
            top_shapes = _survey(node, bottom_shapes, [top for _, top in tops])
        else:
            try:
                with at_layer(lname):
                    top_shapes = types.infer(node, bottom_shapes)
                    params += _check_params(node, bottom_shapes, params, limit)
            except ConversionError as err:
                raise ConversionError(err.message, file=err.file or path, layer=err.layer or lname) from None
            _check_tops(node, top_shapes, [top for _, top in tops], path)
        for (bid, top), shape in zip(tops, top_shapes):
            blobs[bid] = Blob(id=bid, name=top, shape=_dims(shape) if shape is not None else None, producer=lname)
            node.tops.append(bid)
        nodes.append(node)

    if outputs:
        out_ids = [current[o] for o in outputs]
    else:
        # Inputs that only dropped loss and accuracy layers read are labels, no outputs.
        available = set(netdef.inputs).difference(b for _, layer in netdef.losses for b in layer.bottom)
        for layer, _, _ in layers:
            available.difference_update(layer.bottom)
            available.update(layer.top)
        # Caffe's net.outputs: every blob nothing reads after its last write (an input nothing
        # reads included), sorted by name.
        out_ids = [current[n] for n in sorted(available | {b for b in netdef.extra_outputs if b in current})]
    # A view's new version that nothing reads and no output is, is no part of the model.
    read = {b for node in nodes for b in node.bottoms} | set(out_ids)
    nodes = [node for node in nodes if node.type != spec.VIEW or node.param.bottom or node.tops[0] in read]
    return Graph(name=netdef.name, nodes=nodes, blobs=blobs, inputs=inputs, outputs=out_ids, path=path)


def _dims(shape):
    return tuple(None if d is None else int(d) for d in shape)


def _known(supported):
    known = set(types.SPECS) if supported is None else set(types.SPECS) & set(supported)
    return known | {spec.VIEW}


def _supports(known, layer):
    """Whether ``layer``'s type is in ``known`` (:func:`_known`). A layer calling itself (view) is
    not one _wire made (those name no Caffe bottom)."""
    return layer.type in known and not (layer.type == spec.VIEW and layer.bottom)


def _survey(node, bottom_shapes, tops):
    """The shapes of ``node``'s ``tops`` (Caffe names) in a tolerant build, each None when unknown:
    when the node has a problem already, reads a blob of unknown shape, or gets one now (a top
    the strict build would refuse included)."""
    unknown = [None] * len(tops)
    if node.problem or any(s is None for s in bottom_shapes):
        return unknown
    try:
        with at_layer(node.name):
            shapes = types.infer(node, bottom_shapes)
        _check_tops(node, shapes, tops, None)
    except ConversionError as err:
        node.problem = err.message
        return unknown
    return shapes


def _check_tops(node, shapes, tops, path):
    """Refuse inferred top ``shapes`` that do not fit ``node``'s listed ``tops`` (Caffe names): as
    many shapes as tops, each within Caffe's limits (:func:`_check_shape`)."""
    if len(shapes) != len(tops):
        raise ConversionError(f"{node.type} produces {len(shapes)} top(s) but {len(tops)} are listed",
                              file=path, layer=node.name)
    for top, shape in zip(tops, shapes):
        _check_shape(_dims(shape), node.name, path, f"top '{top}'")


def _wire(netdef, tolerant=False):
    """Each layer with its bottoms and tops as SSA ids ((id, Caffe name) pairs for tops), the
    final SSA id of every Caffe blob name, and when ``tolerant`` what is wrong with a layer (by its
    ``id``) instead of raising it, and the SSA id of each bottom nothing wrote (→ Caffe name).
    Input layers are left out: their tops are inputs.

    Caffe blobs may share memory: Split's tops, Flatten's and Reshape's (and Concat's of one
    bottom, Slice's to one top, Permute's in the same order) are views of their bottom. A layer
    writing one of them in place changes them all, so each other view still read later gets a
    new version, made by a :data:`~caffe2keras.spec.VIEW` node from the written one.
    """
    path = netdef.path
    current = {name: name for name in netdef.inputs}
    memory = {name: name for name in netdef.inputs}  # SSA id -> the SSA id whose memory it holds
    taken = set(current)
    readers = {}  # SSA id -> names of the layers reading it
    wired, problems, strays = [], {}, {}

    def fail(layer, message):
        if not tolerant:
            raise ConversionError(message, file=path, layer=layer.name)
        problems.setdefault(id(layer), message)

    def new_id(top, layer_name):
        bid = top if top not in taken else f"{top}@{layer_name}"
        i = 1
        while bid in taken:  # layer names may repeat (HED has five 'crop' layers)
            bid = f"{top}@{layer_name}#{i}"
            i += 1
        taken.add(bid)
        return bid

    for index, layer in enumerate(netdef.layers):
        if not layer.name:
            layer.name = f"{layer.type.lower()}{index}"
        if layer.type == "Input":
            continue
        if not layer.bottom:
            # Only data and Input layers start a Caffe network; every other layer reads a blob.
            fail(layer, f"{layer.type} layer has no bottom")
        bottoms = []
        for b in layer.bottom:
            if b not in current:
                fail(layer, f"bottom '{b}' is not produced by any earlier layer")
                stray = new_id(b, layer.name)
                strays[stray] = b
                memory[stray] = stray
                bottoms.append(stray)
                continue
            bottoms.append(current[b])
            readers.setdefault(current[b], []).append(layer.name)
        tops, written = [], []
        for position, top in enumerate(layer.top):
            problem = _second_source(layer, position, top, current, readers)
            if problem:
                fail(layer, problem)
            bid = new_id(top, layer.name)
            if position < len(layer.bottom) and layer.bottom[position] == top:  # Caffe's in-place rule
                memory[bid] = memory[bottoms[position]]
                written.append(bid)
            else:
                memory[bid] = memory[bottoms[0]] if _shares_memory(layer) and bottoms else bid
            current[top] = bid
            tops.append((bid, top))
        wired.append((layer, bottoms, tops))
        for bid in written:
            for name, other in list(current.items()):
                if memory[other] == memory[bid] and other not in (b for b, _ in tops):
                    view = new_id(name, layer.name)
                    memory[view] = memory[bid]
                    current[name] = view
                    wired.append((_view_layer(layer, name), [bid, other], [(view, name)]))
    return wired, current, problems, strays


def _second_source(layer, j, top, current, readers):
    """What breaks Caffe's rule for a top name that already exists (Net::AppendTop after
    InsertSplits), or None: only the layer's bottom at the same position may be rewritten in
    place, and only while no other layer reads that value (Caffe would give each reader a copy,
    so the rewrite would no longer be in place). Anything else Caffe refuses: "Top blob produced
    by multiple sources"."""
    if top not in current:
        return None
    if j >= len(layer.bottom) or layer.bottom[j] != top:
        return (f"top '{top}' already exists (a network input or another layer's top); Caffe refuses a blob "
                f"produced by multiple sources: give this top a name of its own")
    others = [name for name in readers.get(current[top], []) if name != layer.name]
    if others or readers[current[top]].count(layer.name) > 1:
        who = f"layer '{others[0]}'" if others else "this layer's other bottom"
        return (f"rewrites '{top}' in place while {who} also reads it; Caffe refuses this (the reader gets a "
                f"split copy, the in-place top becomes a second source of '{top}'): give this top a name of its own")
    return None


def _shares_memory(layer):
    """Whether Caffe makes this layer's tops views of its first bottom's memory (ShareData)."""
    if layer.type in ("Split", "Flatten", "Reshape"):
        return True
    if layer.type == "Concat":
        return len(layer.bottom) == 1
    if layer.type == "Slice":
        return len(layer.top) == 1
    if layer.type == "Permute":
        order = list(layer.permute_param.order)
        return order == list(range(len(order)))  # the axes Caffe appends keep their order too
    return False


def _view_layer(writer, name):
    """The node param of blob ``name`` seen anew after ``writer`` wrote its memory in place."""
    return type(writer)(name=f"{writer.name}/{name}@view", type=spec.VIEW)


def _needed(wired, wanted):
    """The layers the blob ids ``wanted`` depend on, in order."""
    needed, kept = set(wanted), []
    for layer, bottoms, tops in reversed(wired):
        if needed.intersection(bid for bid, _ in tops):
            kept.append((layer, bottoms, tops))
            needed.update(bottoms)
    return kept[::-1]


def learned_sizes(g):
    """Layer name -> how many values the network gives the layer
    (:func:`~caffe2keras.types.learned_elements`), for the layers that learn: what a caffemodel may
    hold for them."""
    sizes = {}
    for node in g.nodes:
        count = types.learned_elements(node, [g.shape(b) for b in node.bottoms])
        if count:
            sizes[node.name] = max(count, sizes.get(node.name, 0))
    return sizes


def _check_params(node, bottom_shapes, total_before, limit):
    count = types.learned_elements(node, bottom_shapes)
    if total_before + count > limit:
        raise ConversionError(
            f"{node.type} learns {count:,} values ({total_before + count:,} in the network so far), more than "
            f"the {limit:,} allowed; check num_output and the input shape, or raise the limit with --max-params"
        )
    return count
