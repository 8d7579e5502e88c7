"""The one way tests compare a conversion with what real Caffe computed.

Project tolerance, for every tensor: max|keras - caffe| <= 1e-4 * max(1, max|caffe|).

Values are compared in Caffe's own order (NCHW for 4-D blobs): a converted tensor held NHWC is
transposed back before comparing. Layer tops are addressed as ``(caffe_layer_name, caffe_top_name)``,
so in-place chains (``relu1`` writing ``conv1``) are checked step by step.
"""

import json
from pathlib import Path

import keras
import numpy as np

RTOL = 1e-4


def build(prototxt, caffemodel=None, **kwargs):
    """``caffe2keras.api.build`` on paths (imported here so a broken package fails tests, not collection)."""
    from caffe2keras import api

    return api.build(str(prototxt), str(caffemodel) if caffemodel is not None else None, **kwargs)


def tolerance(expected_absmax):
    return RTOL * max(1.0, float(expected_absmax))


def assert_close(actual, expected, what):
    """Assert ``actual`` equals Caffe's ``expected`` in shape and within the project tolerance."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, Caffe's is {expected.shape}"
    err = max_error(actual, expected)
    tol = tolerance(np.max(np.abs(expected)) if expected.size else 0.0)
    assert err <= tol, f"{what}: max abs error {err:.3g} > tolerance {tol:.3g} (shape {expected.shape})"
    return err


def max_error(actual, expected):
    if actual.size == 0:
        return 0.0
    actual, expected = actual.astype(np.float64), expected.astype(np.float64)
    both_nan = np.isnan(actual) & np.isnan(expected)  # Caffe's own NaN (log of a negative) is matched
    diff = np.where(both_nan, 0.0, np.abs(actual - expected))
    if np.isnan(diff).any():
        return float("inf")
    return float(np.max(diff))


def to_caffe(value, layout):
    """A converted tensor's value in Caffe's order."""
    value = np.asarray(value)
    if layout == "nhwc" and value.ndim == 4:
        return value.transpose(0, 3, 1, 2)
    return value


def model_inputs(conversion, inputs):
    """The model's input list from ``{caffe_blob_name: NCHW array}``, in graph.inputs order."""
    graph = conversion.graph
    feed = []
    for bid in graph.inputs:
        name = graph.blobs[bid].name
        assert name in inputs, f"no value given for network input '{name}' (have {sorted(inputs)})"
        x = np.asarray(inputs[name], dtype=np.float32)
        tensor = conversion.tensors.get(bid)
        layout = tensor.layout if tensor is not None else ("nhwc" if x.ndim == 4 else "caffe")
        feed.append(x.transpose(0, 2, 3, 1) if layout == "nhwc" and x.ndim == 4 else x)
    return feed


def _as_list(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


def run_outputs(conversion, inputs):
    """Run the model once: ``{caffe_blob_name: NCHW array}`` for each network output."""
    graph = conversion.graph
    outs = _as_list(conversion.model(model_inputs(conversion, inputs), training=False))
    assert len(outs) == len(graph.outputs), f"model has {len(outs)} outputs, graph {len(graph.outputs)}"
    result = {}
    for bid, value in zip(graph.outputs, outs):
        value = keras.ops.convert_to_numpy(value)
        result[graph.blobs[bid].name] = value.transpose(0, 3, 1, 2) if value.ndim == 4 else value
    return result


def blob_values(conversion, inputs):
    """Run one model exposing every converted tensor: ``{ssa_id: value in Caffe order}``."""
    keras_tensors, ids, index = [], [], {}
    constants = {}
    for bid, tensor in conversion.tensors.items():
        value = tensor.value
        if not isinstance(value, keras.KerasTensor):
            constants[bid] = to_caffe(keras.ops.convert_to_numpy(value), tensor.layout)
            continue
        if id(value) not in index:
            index[id(value)] = len(keras_tensors)
            keras_tensors.append(value)
        ids.append((bid, index[id(value)]))
    probe = keras.Model(conversion.model.inputs, keras_tensors)
    outs = _as_list(probe(model_inputs(conversion, inputs), training=False))
    values = dict(constants)
    for bid, i in ids:
        values[bid] = to_caffe(keras.ops.convert_to_numpy(outs[i]), conversion.tensors[bid].layout)
    return values


def layer_values(conversion, inputs):
    """``{(caffe_layer, caffe_top): NCHW array}`` for every top of every converted layer."""
    return _by_layer(conversion.graph, blob_values(conversion, inputs))


def _by_layer(graph, by_id):
    result = {}
    for node in graph.nodes:
        for bid in node.tops:
            if bid in by_id:
                result[(node.name, graph.blobs[bid].name)] = by_id[bid]
    return result


def _fed_blob(graph, name):
    """SSA id of ``feeds/<name>``: the top of layer ``name`` (what fed an output layer).

    Falls back to a blob called ``name`` read by a layer producing a network output, for a
    feeding layer the converter does not keep as a node.
    """
    for node in graph.nodes:
        if node.name == name and len(node.tops) == 1:
            return node.tops[0]
    producers = {node.name: node for node in graph.nodes}
    for out in graph.outputs:
        node = producers.get(graph.blobs[out].producer)
        for bid in node.bottoms if node is not None else ():
            if graph.blobs[bid].name == name:
                return bid
    return None


def check_golden(net_dir, caffemodel_name="weights.caffemodel", prototxt_name="deploy.prototxt", conversion=None,
                 relative=False):
    """Convert a golden net and compare it with real Caffe; returns ``{what: max abs error}``, or
    with ``relative`` ``{what: max abs error / max(1, max|caffe|)}``.

    Top-level nets: every ``layer/<layer>/<top>`` in expected.npz whose layer is in the converted
    graph. Zoo nets (meta.json says ``outputs only``): every layer top through its samples in
    meta.json, plus the full outputs and ``feeds/<blob>`` in expected.npz. Fails when nothing was
    compared, or when a layer of the graph has an expected top it did not produce. Pass
    ``conversion`` to check one already built from these files.
    """
    net_dir = Path(net_dir)
    expected = np.load(net_dir / "expected.npz")
    meta = json.loads((net_dir / "meta.json").read_text())
    inputs = {k[len("input/"):]: expected[k] for k in expected.files if k.startswith("input/")}

    if conversion is None:
        conversion = build(net_dir / prototxt_name, net_dir / caffemodel_name)
    graph = conversion.graph
    by_id = blob_values(conversion, inputs)
    actual = _by_layer(graph, by_id)
    in_graph = {node.name for node in graph.nodes}

    # Layer and blob names may hold "/" (inception_3a/1x1): split keys by what meta.json lists.
    split_key = {
        f"layer/{layer['name']}/{top}": (layer["name"], top) for layer in meta["layers"] for top in layer["tops"]
    }
    errors, failures, missing = {}, [], []

    def full(a, e, what):
        err = assert_close(a, e, what)
        return err / max(1.0, float(np.max(np.abs(e))) if e.size else 0.0) if relative else err

    def sampled(a, stats, what):
        err = assert_samples(a, stats, what)
        return err / max(1.0, abs(stats["min"]), abs(stats["max"])) if relative else err

    def compare(what, fn):
        try:
            errors[what] = fn()
        except AssertionError as exc:
            failures.append(str(exc))

    # Zoo nets: every layer top through the samples real Caffe recorded (first, in execution order).
    if meta.get("full_tensors") != "every layer top":
        for layer in meta["layers"]:
            if layer["name"] not in in_graph:
                continue
            for top, stats in layer["tops"].items():
                what = f"sample/{layer['name']}/{top}"
                if (layer["name"], top) not in actual:
                    missing.append(what)
                    continue
                compare(what, lambda a=actual[(layer["name"], top)], s=stats, w=what: sampled(a, s, w))

    # Full tensors: every layer top (top-level nets) or the network outputs (zoo nets).
    last_value = {}
    for key in expected.files:
        if not key.startswith("layer/"):
            continue
        layer, top = split_key.get(key) or key[len("layer/"):].split("/", 1)
        last_value[top] = key
        if layer not in in_graph:
            continue  # Input layers, Caffe's auto-inserted *_split layers, layers the converter drops
        if (layer, top) not in actual:
            missing.append(key)
            continue
        compare(key, lambda a=actual[(layer, top)], e=expected[key], k=key: full(a, e, k))

    # What fed the output layers (zoo nets): logits before the final Softmax and the like.
    for key in expected.files:
        if not key.startswith("feeds/"):
            continue
        bid = _fed_blob(graph, key[len("feeds/"):])
        if bid is None or bid not in by_id:
            missing.append(key)
            continue
        compare(key, lambda a=by_id[bid], e=expected[key], k=key: full(a, e, k))

    # The model itself: its outputs are Caffe's and hold Caffe's values.
    outputs = run_outputs(conversion, inputs)
    if meta.get("outputs"):
        assert sorted(outputs) == sorted(meta["outputs"]), (
            f"{net_dir.name}: model outputs {sorted(outputs)}, Caffe's are {sorted(meta['outputs'])}"
        )
    for name, value in outputs.items():
        # Caffe's final value of the blob when recorded (a later in-place layer may have written
        # memory it shares), else the value its last layer wrote.
        key = f"output/{name}" if f"output/{name}" in expected.files else last_value.get(name)
        if key is not None:
            what = f"output {name} ({key})"
            compare(f"output/{name}", lambda a=value, e=expected[key], w=what: full(a, e, w))

    assert not missing, f"{net_dir.name}: converted graph lacks expected layer tops: {', '.join(missing)}"
    assert errors or failures, f"{net_dir.name}: nothing was compared"
    if failures:
        shown = "\n  ".join(failures[:15])
        more = f"\n  ... and {len(failures) - 15} more" if len(failures) > 15 else ""
        raise AssertionError(
            f"{net_dir.name}: {len(failures)} of {len(failures) + len(errors)} tensors differ from Caffe "
            f"(first in execution order first):\n  {shown}{more}"
        )
    return errors


def final_blobs(net_dir):
    """``{blob: value}``: each blob as Caffe's ``net.blobs`` holds it after the forward pass (the
    last layer writing it; inputs as fed), from a fixture recording every layer top."""
    net_dir = Path(net_dir)
    expected = np.load(net_dir / "expected.npz")
    meta = json.loads((net_dir / "meta.json").read_text())
    last = {k[len("input/"):]: expected[k] for k in expected.files if k.startswith("input/")}
    for layer in meta["layers"]:
        for top in layer["tops"]:
            key = f"layer/{layer['name']}/{top}"
            if key in expected.files:
                last[top] = expected[key]
    return last


def assert_samples(actual, stats, what):
    """Compare a tensor with real Caffe's recorded samples (meta.json) at the full tensor's tolerance."""
    actual = np.asarray(actual)
    shape = tuple(stats["shape"])
    assert actual.shape == shape, f"{what}: shape {actual.shape}, Caffe's is {shape}"
    got = actual.reshape(-1)[np.asarray(stats["sample_index"], dtype=np.int64)]
    want = np.asarray(stats["sample"], dtype=np.float64)
    err = max_error(got, want)
    tol = tolerance(max(abs(stats["min"]), abs(stats["max"])))
    assert err <= tol, f"{what}: max abs error {err:.3g} at samples > tolerance {tol:.3g} (shape {shape})"
    return err


def write_caffemodel(path, layers):
    """A caffemodel holding ``{layer name: [blob arrays]}`` (float32, shapes as given)."""
    from caffe2keras import caffe_pb2

    net = caffe_pb2.NetParameter()
    for name, blobs in layers.items():
        layer = net.layer.add(name=name)
        for array in blobs:
            blob = layer.blobs.add()
            blob.shape.dim.extend(np.shape(array))
            blob.data.extend(np.asarray(array, np.float32).reshape(-1).tolist())
    Path(path).write_bytes(net.SerializeToString())
    return path


def write_net(directory, text, weights=None, name="net"):
    """``text`` as ``<directory>/<name>.prototxt`` and ``weights`` (``{layer name: [blob
    arrays]}``, optional) as a caffemodel beside it: ``(prototxt, caffemodel or None)``."""
    prototxt = Path(directory) / f"{name}.prototxt"
    prototxt.write_text(text)
    caffemodel = write_caffemodel(prototxt.with_suffix(".caffemodel"), weights) if weights else None
    return prototxt, caffemodel


def run_net(directory, text, inputs, weights=None, **build_options):
    """Convert the net of prototxt ``text`` (see :func:`write_net`) and run it once on
    ``{input: NCHW array}``: ``(conversion, {(caffe_layer, caffe_top): NCHW array})``."""
    conversion = build(*write_net(directory, text, weights), **build_options)
    return conversion, layer_values(conversion, inputs)
