"""Writing a Keras model as an ONNX file, with memory for one copy of the weights at most.

tf2onnx converts the graph, not the weights: the model is traced with its variables as extra
inputs (``stateless_call``), so neither TensorFlow's freezing nor tf2onnx ever holds a weight.
(Handed the variables, both copy every weight many times over: tf2onnx rewrites each constant
into the node's protobuf arena once per optimizer pass and deep-copies the graph before each,
TensorFlow's freezing and grappler copy them again; VGG16's 528 MB took 23 GB.)

The weight inputs then become initializers. Where tf2onnx laid a weight out for ONNX (a
Transpose of a convolution kernel, a Reshape or Squeeze of a bias), that layout step is done
once here, on the initializer, so the file holds the weights as ONNX operators take them. The
initializers are streamed into the file one by one after the rest of the model: protobuf merges
a repeated message field written in several pieces, so the file is the model ONNX reads.
"""

import json

import numpy as np

from .errors import ConversionError

# Opset 17 is what onnxruntime releases of the last years all run; tf2onnx writes up to 18, and
# from 13 on Squeeze, Unsqueeze and Softmax take the forms the converted layers are tested with.
OPSET = 17
OPSETS = range(13, 19)
# A protobuf message (an ONNX file) cannot exceed 2 GiB.
MAX_BYTES = 2**31 - 1
# Metadata key holding what caffe2keras knows of the model (preprocessing, layout).
METADATA_KEY = "caffe2keras"
# Layout operators evaluated on initializers; each is exact (it only moves values).
LAYOUT_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity")


def check_size(weights_size, path):
    """Refuse, before tf2onnx starts, weights that no ONNX file can hold."""
    if weights_size > MAX_BYTES:
        raise ConversionError(
            f"the weights take {weights_size / 2**30:.1f} GiB; an ONNX file holds at most 2 GiB "
            "(a protobuf limit): export .keras, .h5 or a SavedModel directory instead", file=path)


def write(model, path, opset=None, nchw_inputs=False, metadata=None):
    """Write ``model`` (TensorFlow backend) to ``path`` as ONNX. With ``nchw_inputs`` the 4-D
    inputs take Caffe's (N, C, H, W); the batch dimension of every input and output is named
    ``batch``. ``metadata`` (JSON-ready) is stored under the key ``caffe2keras``."""
    from onnx import numpy_helper

    variables = list(model.trainable_variables) + list(model.non_trainable_variables)
    proto, weight_names = _convert(model, variables, opset or OPSET, nchw_inputs)
    values = {name: _reader(v) for name, v in zip(weight_names, variables)}
    graph = proto.graph
    graph_inputs = [i for i in graph.input if i.name not in values]
    del graph.input[:]
    graph.input.extend(graph_inputs)
    for tensor in graph.initializer:  # tf2onnx's own constants: small
        values[tensor.name] = _constant(numpy_helper.to_array(tensor))
    del graph.initializer[:]
    _fold_layout(graph, values)
    used = _names_read(graph) | {o.name for o in graph.output}
    _name_batch(graph)
    if metadata is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
        for name in sorted(n for n in values if n in used):
            _write_initializer(f, name, values[name]())


def _convert(model, variables, opset, nchw_inputs):
    """tf2onnx's model for ``model`` with the variables as inputs: ``(proto, weight names)``."""
    import tensorflow as tf
    import tf2onnx

    inputs = [tf.TensorSpec((None, *t.shape[1:]), t.dtype or tf.float32, name=t.name) for t in model.inputs]
    names = _weight_names(variables, {t.name for t in model.inputs})
    # Of unknown sizes, then given theirs: Grappler (which both TensorFlow's freezing and tf2onnx run)
    # feeds every placeholder of a known shape a tensor of that shape, a copy of the weights per
    # run (VGG16: +0.9 GiB). ``ensure_shape`` gives the graph the shapes back (tf2onnx makes it
    # an Identity, folded into the initializer).
    weights = [tf.TensorSpec((None,) * len(v.shape), v.dtype, name=name) for v, name in zip(variables, names)]
    count, trainable = len(inputs), len(model.trainable_variables)

    def call(*args):
        xs = list(args[:count])
        values = [tf.ensure_shape(value, v.shape) for value, v in zip(args[count:], variables)]
        outputs, _ = model.stateless_call(values[:trainable], values[trainable:], xs if count > 1 else xs[0],
                                          training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return dict(zip(model.output_names, outputs))

    signature = inputs + weights
    nchw = [t.name for t in model.inputs if len(t.shape) == 4] if nchw_inputs else None
    proto, _ = tf2onnx.convert.from_function(tf.function(call, input_signature=signature), input_signature=signature,
                                             opset=opset, inputs_as_nchw=nchw)
    order = {name: i for i, name in enumerate(model.output_names)}
    outputs = sorted(proto.graph.output, key=lambda o: order.get(o.name, len(order)))
    del proto.graph.output[:]
    proto.graph.output.extend(outputs)
    return proto, names


def _weight_names(variables, taken):
    """Initializer names: the variables' Keras paths (``conv1/kernel``), unique."""
    names = []
    for v in variables:
        base = "".join(c if c.isalnum() or c in "_./-" else "_" for c in v.path).lstrip("./-") or "weight"
        name, i = base, 1
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        names.append(name)
    return names


def _reader(variable):
    """The variable's value when asked for (a view where TensorFlow allows one)."""

    def read():
        try:
            return np.from_dlpack(variable.value.read_value())
        except (AttributeError, TypeError, ValueError, RuntimeError, BufferError):
            return np.asarray(variable)

    return read


def _constant(array):
    return lambda: array


def _fold_layout(graph, values):
    """Evaluate every layout operator whose inputs are all initializers, lazily: the node goes,
    its output becomes an initializer computed when written."""
    changed = True
    while changed:
        changed = False
        kept = []
        for node in graph.node:
            if node.op_type in LAYOUT_OPS and node.input and all(name in values for name in node.input if name):
                values[node.output[0]] = _layout_step(node, [values[name] for name in node.input if name])
                changed = True
            else:
                kept.append(node)
        if changed:
            del graph.node[:]
            graph.node.extend(kept)


def _layout_step(node, readers):
    from onnx import helper

    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op = node.op_type

    def compute():
        x, *rest = (read() for read in readers)
        if op == "Transpose":
            return np.transpose(x, attributes.get("perm")).copy(order="C")
        if op == "Reshape":
            shape = [int(d) for d in rest[0]]
            if not attributes.get("allowzero", 0):
                shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
            return x.reshape(shape)
        axes = [int(a) for a in rest[0]] if rest else attributes.get("axes")
        if op == "Squeeze":
            return np.squeeze(x, axis=tuple(axes) if axes is not None else None)
        if op == "Unsqueeze":
            return np.expand_dims(x, axis=tuple(axes))
        return x

    return compute


def _names_read(graph):
    """Every name the nodes of ``graph`` read, those of subgraphs (loop bodies) included."""
    from onnx import helper

    names = set()
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            value = helper.get_attribute_value(attribute)
            for subgraph in value if isinstance(value, list) else [value]:
                if hasattr(subgraph, "node"):
                    names |= _names_read(subgraph)
    return names


def _name_batch(graph):
    """Call the first dimension of inputs and outputs ``batch`` where it is free."""
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"


def _write_initializer(f, name, array):
    """Append ``array`` to the model in ``f`` as the initializer ``name``: the bytes of a
    ModelProto whose graph holds only that TensorProto, its data written straight from the
    array (no serialised copy)."""
    from onnx import TensorProto, helper

    array = np.asarray(array)  # (np.ascontiguousarray would make a scalar a vector)
    if not array.flags.c_contiguous:
        array = array.copy(order="C")
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    header = TensorProto(name=name, dims=array.shape, data_type=helper.np_dtype_to_tensor_dtype(array.dtype))
    head = header.SerializeToString()
    data = memoryview(array.reshape(-1)).cast("B")
    tensor_size = len(head) + 1 + len(_varint(data.nbytes)) + data.nbytes
    initializer = _tag(5) + _varint(tensor_size)  # GraphProto.initializer
    graph_size = len(initializer) + tensor_size
    f.write(_tag(7) + _varint(graph_size) + initializer + head + _tag(9) + _varint(data.nbytes))  # ModelProto.graph, TensorProto.raw_data
    f.write(data)


def _tag(field):
    """The key of a length-delimited protobuf field."""
    return _varint(field << 3 | 2)


def _varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_metadata(proto):
    """What :func:`write` stored under ``caffe2keras``, or None."""
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    return None
