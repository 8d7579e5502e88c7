"""Translation of a shaped graph into a Keras functional model, by each Caffe type's translator.

A translator is registered with its type's spec (:func:`caffe2keras.spec.register`) and called as
``fn(ctx, node, inputs)`` where ``inputs`` are :class:`~caffe2keras.layout.Tensor` values of the
node's bottoms (4-D ones NHWC). It returns one entry per top: a Keras tensor in the canonical
layout, or a ``(keras_tensor, layout)`` pair. Names come from :mod:`caffe2keras.naming`, decided
before any layer is built: the layer producing the tops is ``ctx.name(node)``, helper layers
``ctx.name(node, "pad")``. A 4-D top held in Caffe's order is made by a layer named
``ctx.name(node, layout=CAFFE)``; :func:`build_model` adds the NHWC view carrying the node's
name, so every Caffe layer's tops are reachable by name in the layout users are promised.
"""

from dataclasses import dataclass, field

from . import naming, types, weights
from ._lazy import blobtable, keras, preprocess
from .errors import ConversionError, InternalError, at_layer
from .layout import CAFFE, NHWC, Tensor, canonical, keras_shape, permute_dims
from .shapes import legacy_shape


class Context:
    """What translators share: the names decided for the graph, weights, layout conversions."""

    def __init__(self, graph, names, weights=None):
        self.graph = graph
        self.names = names
        self.weights = weights  # caffemodel.Weights or None (Keras initialisers)
        self._converted = {}
        self._views = set()  # ids of the NHWC views of tops computed in Caffe's order
        self._learned = (None, None)  # the node last asked for its blobs, and them by name

    def name(self, node, suffix=None, layout=None):
        """The Keras name of the layer giving ``node``'s tops, or with ``suffix`` a fresh name for
        one of its helpers. ``layout=CAFFE`` names a layer holding the node's 4-D top in Caffe's
        order: a helper, as the name belongs to the NHWC view."""
        if suffix is None and layout == CAFFE and len(self.shape(node)) == 4:
            suffix = naming.CAFFE_ORDER
        if suffix is None:
            return self.names.layers[node]
        return self.names.helper(node, suffix)

    def fail(self, node, message):
        return ConversionError(message, file=self.graph.path, layer=node.name)

    def shape(self, node, i=0):
        """Caffe shape of the node's i-th top."""
        return self.graph.shape(node.tops[i])

    def as_layout(self, tensor, layout, node):
        """The Keras tensor of ``tensor`` in ``layout``, transposing (once per blob, by a helper of
        the first ``node`` asking) if needed."""
        if tensor.layout == layout or tensor.rank != 4:
            return tensor.value
        key = (id(tensor.value), layout)
        if key not in self._converted:
            name = self.name(node, "to_nchw" if layout == CAFFE else "to_nhwc")
            self._converted[key] = keras.layers.Permute(permute_dims(layout), name=name)(tensor.value), name
        value, name = self._converted[key]
        self.names.uses(node, name)
        return value

    def legacy(self, tensor, node):
        """``tensor`` as Caffe's legacy (num, channels, height, width) view: a blob of fewer axes
        padded with 1s, as layers reading their bottom with Caffe's num()/channels()/height()/
        width() see it."""
        if tensor.rank == 4:
            return tensor
        shape = legacy_shape(tensor.shape, node.type)
        value = keras.layers.Reshape(shape[1:], name=self.name(node, "as_4d"))(tensor.value)
        return Tensor(value, shape, CAFFE)

    def is_view(self, tensor):
        """Whether ``tensor`` is the NHWC view of a top computed in Caffe's order: reading it in
        Caffe's order costs nothing where TensorFlow optimises the graph (the transposes fold)."""
        return id(tensor.value) in self._views

    def canonical(self, tensor, node):
        return self.as_layout(tensor, canonical(tensor.shape), node)

    def caffe(self, tensor, node):
        return self.as_layout(tensor, CAFFE, node)

    def learned(self, node):
        """The node's learned blobs by their spec's names, checked against the Caffe shapes the
        prototxt implies (:func:`~caffe2keras.types.learned`); None without a caffemodel."""
        if self.weights is None:
            return None
        if self._learned[0] is not node:
            blobs = self.weights.take(node.name)
            if blobs is None:
                raise self.fail(node, f"{node.type} layer has no weights in the caffemodel")
            expected = types.learned(node, [self.graph.shape(b) for b in node.bottoms], held=len(blobs))
            try:
                fitted = weights.fit_blobs(node.type, blobs, [b.shape for b in expected])
            except ValueError as err:
                raise self.fail(node, str(err)) from None
            self._learned = (node, {b.name: value for b, value in zip(expected, fitted)})
        return self._learned[1]

    def bind(self, node, layer, inputs, keras_weights):
        """``layer`` called on ``inputs``, its weights created holding the node's learned blobs:
        ``keras_weights(blobs)`` maps the blobs (:meth:`learned`) to the layer's weights by their
        Keras names. The only way weights enter a model; without a caffemodel Keras' initialisers
        fill them.

        Each value is the initial value of its variable: no random fill to overwrite, no second
        buffer for a big kernel (VGG16's fc6: 400 MB).
        """
        blobs = self.learned(node)
        if blobs is None:
            return layer(inputs)
        pending = {name: value for name, value in keras_weights(blobs).items() if value is not None}
        add_weight = layer.add_weight

        def holding(*args, **kwargs):
            value = pending.pop(kwargs.get("name"), None)
            if value is not None:
                shape = tuple(kwargs["shape"])
                if shape != value.shape:
                    raise InternalError(f"internal: {kwargs['name']} of shape {list(value.shape)} for a Keras "
                                        f"weight of shape {list(shape)}", file=self.graph.path, layer=node.name)
                kwargs["initializer"] = lambda shape, dtype=None: weights.variable_value(value)
            return add_weight(*args, **kwargs)

        # The instance's own add_weight while it builds: a Keras layer creates each weight by name.
        object.__setattr__(layer, "add_weight", holding)
        try:
            outputs = layer(inputs)
        finally:
            object.__delattr__(layer, "add_weight")
        if pending:
            raise InternalError(f"internal: {type(layer).__name__} made no weight named {', '.join(pending)}",
                                file=self.graph.path, layer=node.name)
        return outputs


@dataclass
class Conversion:
    """A built model with what tests and ``verify`` need to relate it to Caffe."""

    model: object
    graph: object
    tensors: dict  # SSA blob id -> Tensor
    names: object  # naming.Names
    targets: list = field(default_factory=list)  # with a solver: training.Target per loss, in output order


def _preprocessed(inputs, options, names, path):
    """``inputs`` with :class:`~caffe2keras.preprocess.CaffePreprocess` on the image input: the
    only input, or the only 4-D one (Faster R-CNN's data beside im_info)."""
    images = [x for x in inputs if len(x.shape) == 4] if len(inputs) > 1 else inputs
    if len(images) != 1:
        raise ConversionError(f"preprocessing applies to a single image input; this network has several "
                              f"({', '.join(x.name for x in inputs)})", file=path)
    try:
        layer = preprocess.make_layer(tuple(images[0].shape), name=names.preprocess_layer, **options)
    except ConversionError as err:
        raise ConversionError(err.message, file=err.file or path, layer=err.layer) from None
    return [layer(x) if x is images[0] else x for x in inputs]


def build_model(graph, weights=None, preprocessing=None):
    """The Keras model of ``graph``; ``preprocessing`` (options of
    :func:`caffe2keras.preprocess.make_layer`) puts Caffe's Transformer on the image input."""
    specs = types.SPECS
    unsupported = sorted({n.type for n in graph.nodes if n.type not in specs})
    if unsupported:
        raise ConversionError(f"unsupported layer type(s): {', '.join(unsupported)}", file=graph.path)
    names = naming.assign(graph)
    ctx = Context(graph, names, weights)
    inputs = []
    for bid in graph.inputs:
        shape = graph.blobs[bid].shape
        inputs.append(keras.Input(shape=keras_shape(shape, canonical(shape))[1:], name=names.inputs[bid]))
    seen = inputs if preprocessing is None else _preprocessed(inputs, preprocessing, names, graph.path)
    # The blob table rides on the inputs (after the preprocessing, as Caffe's input blobs hold
    # it), so it is on every path of the model; a network without layers has no blob to look up.
    if graph.nodes:
        seen = blobtable.CaffeBlobs(names.table(graph), name=names.table_layer)(seen)
    values = {bid: Tensor(v, graph.blobs[bid].shape, canonical(graph.blobs[bid].shape))
              for bid, v in zip(graph.inputs, seen)}

    for node in graph.nodes:
        with at_layer(node.name):
            outs = specs[node.type].translate(ctx, node, [values[b] for b in node.bottoms])
        if len(outs) != len(node.tops):
            raise InternalError(
                f"internal: translator made {len(outs)} outputs for {len(node.tops)} tops", file=graph.path, layer=node.name
            )
        for bid, out in zip(node.tops, outs):
            shape = graph.shape(bid)
            value, layout = out if isinstance(out, tuple) else (out, canonical(shape))
            expected = keras_shape(shape, layout)
            got = tuple(value.shape)
            if len(got) != len(expected) or any(
                g is not None and e is not None and g != e for g, e in zip(got[1:], expected[1:])
            ):
                raise InternalError(
                    f"internal: built tensor {got} but Caffe's shape is {list(shape)} ({layout})",
                    file=graph.path,
                    layer=node.name,
                )
            if layout == CAFFE and len(shape) == 4:
                if len(node.tops) > 1:
                    raise InternalError("internal: a 4-D top of a multi-top layer held in Caffe order",
                                        file=graph.path, layer=node.name)
                # The layer of the Caffe name is the NHWC view; later layers read it, so it is
                # part of the model (TensorFlow's graph optimiser folds a transpose back to Caffe
                # order into this one).
                value = keras.layers.Permute(permute_dims(NHWC), name=names.layers[node])(value)
                layout = NHWC
                ctx._views.add(id(value))
            values[bid] = Tensor(value, shape, layout)

    raw = dict(zip(graph.inputs, inputs))
    outputs = []
    for i, bid in enumerate(graph.outputs):
        if bid in raw:
            outputs.append(raw[bid])
        elif i in names.direct:
            outputs.append(values[bid].value)
        else:
            outputs.append(keras.layers.Identity(name=names.outputs[i])(values[bid].value))

    model = keras.Model(inputs=inputs, outputs=outputs, name=names.model)
    return Conversion(model=model, graph=graph, tensors=values, names=names)
