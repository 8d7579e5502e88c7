"""Translation of a shaped graph into a Keras functional model, one translator per Caffe type.

A translator is registered by Caffe type name with :func:`translator` and called as
``fn(ctx, node, inputs)`` where ``inputs`` are :class:`~caffe2keras.layout.Tensor` values of the
node's bottoms. It returns one entry per top: a Keras tensor in the canonical layout, or a
``(keras_tensor, layout)`` pair. The Keras layer producing a top is named after the Caffe layer
(``ctx.name(node)``); helper layers get derived names (``ctx.name(node, "pad")``).
"""

import importlib
import pkgutil
from dataclasses import dataclass, field

import keras
import numpy as np

from ..errors import ConversionError, InternalError
from ..layout import CAFFE, Tensor, canonical, keras_shape
from ..shapes import legacy_shape

TRANSLATORS = {}


def translator(*types):
    def register(fn):
        for t in types:
            TRANSLATORS[t] = fn
        return fn

    return register


def _register_all():
    """Import every module of this package: each registers its own translators, so the registry
    cannot fall behind the package."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def supported_types():
    """The Caffe layer types that have a translator, sorted."""
    _register_all()
    return sorted(TRANSLATORS)


def keras_name(caffe_name):
    return caffe_name.replace("/", "_")


class Context:
    """What translators share: unique layer names, weights, layout conversions."""

    def __init__(self, graph, weights=None):
        self.graph = graph
        self.weights = weights  # caffemodel.Weights or None (Keras initialisers)
        self.taken = set()
        self.reserved = {}
        self._converted = {}

    def _unique(self, base):
        name, i = base, 1
        while name in self.taken:
            name = f"{base}_{i}"
            i += 1
        self.taken.add(name)
        return name

    def name(self, node, suffix=None):
        """The Keras layer name for ``node`` (or for one of its helpers, with ``suffix``)."""
        base = keras_name(node.name)
        if suffix is None:
            # Keyed by node: Caffe lets two layers share a name (HED's five 'crop' layers).
            if id(node) not in self.reserved:
                self.reserved[id(node)] = self._unique(base)
            return self.reserved[id(node)]
        return self._unique(f"{base}_{suffix}")

    def fail(self, node, message):
        return ConversionError(message, file=self.graph.path, layer=node.name)

    def shape(self, node, i=0):
        """Caffe shape of the node's i-th top."""
        return self.graph.shape(node.tops[i])

    def as_layout(self, tensor, layout, node=None):
        """The Keras tensor of ``tensor`` in ``layout``, transposing (once per blob) if needed."""
        if tensor.layout == layout or tensor.rank != 4:
            return tensor.value
        key = (id(tensor.value), layout)
        if key not in self._converted:
            dims = (3, 1, 2) if layout == CAFFE else (2, 3, 1)
            owner = node.name if node is not None else "blob"
            suffix = "to_nchw" if layout == CAFFE else "to_nhwc"
            self._converted[key] = keras.layers.Permute(dims, name=self._unique(f"{keras_name(owner)}_{suffix}"))(
                tensor.value
            )
        return self._converted[key]

    def legacy(self, tensor, node):
        """``tensor`` as Caffe's legacy (num, channels, height, width) view: a blob of fewer axes
        padded with 1s, as layers reading their bottom with Caffe's num()/channels()/height()/
        width() see it."""
        if tensor.rank == 4:
            return tensor
        shape = legacy_shape(tensor.shape, node.type)
        value = keras.layers.Reshape(shape[1:], name=self._unique(f"{keras_name(node.name)}_as_4d"))(tensor.value)
        return Tensor(value, shape, CAFFE)

    def canonical(self, tensor, node=None):
        return self.as_layout(tensor, canonical(tensor.shape), node)

    def caffe(self, tensor, node=None):
        return self.as_layout(tensor, CAFFE, node)

    def params(self, node, shapes):
        """The node's learned blobs, checked against the Caffe shapes the prototxt implies.

        Returns None when converting without a caffemodel. ``shapes`` lists the expected shape of
        each blob; an entry of None accepts any shape (and the blob may be absent).
        """
        if self.weights is None:
            return None
        blobs = self.weights.take(node.name)
        if blobs is None:
            raise self.fail(node, f"{node.type} layer has no weights in the caffemodel")
        required = sum(1 for s in shapes if s is not None)
        if len(blobs) < required or len(blobs) > len(shapes):
            raise self.fail(
                node, f"caffemodel holds {len(blobs)} blob(s) for this {node.type} layer, the prototxt implies {required}"
            )
        out = []
        for i, (blob, expected) in enumerate(zip(blobs, shapes)):
            if expected is not None:
                blob = fit_shape(blob, tuple(expected), lambda got, exp, i=i: self.fail(
                    node, f"blob {i} has shape {list(got)} in the caffemodel, the prototxt implies {list(exp)}"
                ))
            out.append(blob)
        return out


def fit_shape(blob, expected, error):
    """``blob`` reshaped to ``expected`` when it is the same data in a legacy 4-D (num, channels,
    height, width) shape, as V1 caffemodels store an InnerProduct weight as 1x1xNxK."""
    if blob.shape == expected:
        return blob
    squeeze = tuple(d for d in blob.shape if d != 1)
    if blob.size == int(np.prod(expected)) and squeeze == tuple(d for d in expected if d != 1):
        return blob.reshape(expected)
    raise error(blob.shape, expected)


@dataclass
class Conversion:
    """A built model with what tests and ``verify`` need to relate it to Caffe."""

    model: object
    graph: object
    tensors: dict  # SSA blob id -> Tensor
    targets: list = field(default_factory=list)  # with a solver: training.Target per loss, in output order


def build_model(graph, weights=None):
    _register_all()
    ctx = Context(graph, weights)
    values, inputs = {}, []
    for bid in graph.inputs:
        blob = graph.blobs[bid]
        layout = canonical(blob.shape)
        kshape = keras_shape(blob.shape, layout)
        inp = keras.Input(shape=kshape[1:], name=ctx._unique(keras_name(blob.name)))
        inputs.append(inp)
        values[bid] = Tensor(inp, blob.shape, layout)

    unsupported = sorted({n.type for n in graph.nodes if n.type not in TRANSLATORS})
    if unsupported:
        raise ConversionError(f"unsupported layer type(s): {', '.join(unsupported)}", file=graph.path)

    for node in graph.nodes:
        ctx.name(node)  # reserve the Caffe name before helpers take theirs
        outs = TRANSLATORS[node.type](ctx, node, [values[b] for b in node.bottoms])
        if len(outs) != len(node.tops):
            raise InternalError(
                f"internal: translator made {len(outs)} outputs for {len(node.tops)} tops", file=graph.path, layer=node.name
            )
        for bid, out in zip(node.tops, outs):
            shape = graph.shape(bid)
            value, layout = out if isinstance(out, tuple) else (out, canonical(shape))
            expected = keras_shape(shape, layout)
            got = tuple(value.shape)
            if len(got) != len(expected) or any(g is not None and g != e for g, e in zip(got[1:], expected[1:])):
                raise InternalError(
                    f"internal: built tensor {got} but Caffe's shape is {list(shape)} ({layout})",
                    file=graph.path,
                    layer=node.name,
                )
            values[bid] = Tensor(value, shape, layout)

    outputs = []
    for bid in graph.outputs:
        blob = graph.blobs[bid]
        tensor = values[bid]
        wanted = keras_name(blob.name)
        value = _canonical_output(ctx, tensor)
        if value._keras_history[0].name != wanted:
            holder = _layer_named(values, wanted)
            if holder is not None and not isinstance(holder, keras.layers.InputLayer):
                # An in-place chain ends at this output (conv5 rewritten by relu5): the output
                # takes the blob's name, as Caffe's net.blobs["conv5"] is the final value, and
                # the earlier layer of that name becomes <name>_pre.
                holder.name = ctx._unique(f"{wanted}_pre")
                name = wanted
            else:
                name = ctx._unique(wanted)
            value = keras.layers.Identity(name=name)(value)
        outputs.append(value)

    if weights is not None:
        weights.warn_unused()
    model = keras.Model(inputs=inputs, outputs=outputs, name=keras_name(graph.name or "caffe_net"))
    return Conversion(model=model, graph=graph, tensors=values)


def _canonical_output(ctx, tensor):
    """A network output in the canonical layout. When a 4-D output is held in Caffe order, the
    transpose takes over the producing layer's Caffe name (the producer is renamed as a helper),
    so the layer named after the Caffe layer still yields the user-facing NHWC value."""
    if tensor.layout == canonical(tensor.shape) or tensor.rank != 4:
        return tensor.value
    producer = tensor.value._keras_history[0]
    name = producer.name
    producer.name = ctx._unique(f"{name}_caffe_order")
    return keras.layers.Permute((2, 3, 1), name=name)(tensor.value)


def _layer_named(values, name):
    for tensor in values.values():
        layer = tensor.value._keras_history[0]
        if layer.name == name:
            return layer
    return None
