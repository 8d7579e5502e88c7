"""``caffe2keras verify``: a converted model against an independent Caffe implementation.

OpenCV's DNN module (``cv2.dnn.readNetFromCaffe``, the ``caffe2keras[verify]`` extra) runs the
original prototxt and caffemodel; the converted model runs on the same input (seeded random
values, or an image). Every network output and every layer both know is compared in Caffe's
order: the model's blob table (:mod:`~caffe2keras.blobtable`) says which Keras layer holds each
Caffe layer's tops (NHWC when 4-D, as the layout contract promises), the prototxt's graph (no
Keras built) the inputs. OpenCV runs with layer fusion off, so a convolution's top is compared
before the in-place ReLU that follows it, as Caffe records it.

Tolerance, as everywhere in this project: max|keras - caffe| <= 1e-4 * max(1, max|caffe|).
"""

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import depth
from .errors import ConversionError

RTOL = 1e-4


@dataclass
class Comparison:
    kind: str  # "output" or "layer"
    name: str  # Caffe blob (outputs) or layer name
    shape: list
    max_abs: float
    max_rel: float  # max_abs / max(1, max|reference|), compared with RTOL
    ok: bool
    note: str = ""


@dataclass
class Result:
    comparisons: list
    skipped: list  # Caffe layers compared on neither side, with why
    input_kind: str

    @property
    def ok(self):
        return bool(self.comparisons) and all(c.ok for c in self.comparisons)

    def as_dict(self):
        return {
            "ok": self.ok,
            "input": self.input_kind,
            "tolerance": f"max|keras - caffe| <= {RTOL} * max(1, max|caffe|)",
            "comparisons": [asdict(c) for c in self.comparisons],
            "skipped": self.skipped,
        }


def compare(kind, name, actual, expected, note=""):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        if actual.size != expected.size:
            return Comparison(kind, name, list(expected.shape), float("inf"), float("inf"), False,
                              f"shape {list(actual.shape)}, OpenCV's {list(expected.shape)}")
        actual = actual.reshape(expected.shape)  # OpenCV keeps trailing 1-dims Caffe drops, or the reverse
    if not expected.size:
        return Comparison(kind, name, list(expected.shape), 0.0, 0.0, True, note)
    err = float(np.max(np.abs(actual - expected)))
    if np.isnan(err):
        err = float("inf")
    scale = max(1.0, float(np.max(np.abs(expected))))
    return Comparison(kind, name, list(expected.shape), err, err / scale, err <= RTOL * scale, note)


def detection_rows(value):
    """DetectionOutput's (1, 1, N, 7) rows [image, label, score, box] in a canonical order:
    detections of equal score may come in either order, padding rows (image -1) last."""
    rows = np.asarray(value, dtype=np.float64).reshape(-1, 7)
    order = np.lexsort((rows[:, 6], rows[:, 5], rows[:, 4], rows[:, 3], -rows[:, 2], rows[:, 1], rows[:, 0], rows[:, 0] < 0))
    return rows[order]


def _opencv():
    try:
        import cv2
    except ImportError:
        raise ConversionError(
            "verify needs OpenCV's DNN module: pip install 'caffe2keras[verify]' (opencv-python-headless)"
        ) from None
    return cv2


def _inputs(graph, model, image, seed):
    """The model's raw inputs (a list in graph order, NHWC for images) and Caffe's view of them,
    ``{caffe blob: NCHW array}`` (the baked preprocessing applied, as Caffe's Transformer would)."""
    from . import preprocess
    from .predict import image_input, load_image, model_pixels

    config = preprocess.find(model)
    rng = np.random.default_rng(seed)
    raw, caffe = [], {}
    for bid in graph.inputs:
        blob = graph.blobs[bid]
        shape = blob.shape
        nhwc = len(shape) == 4
        if image is not None:
            if len(graph.inputs) != 1:
                raise ConversionError("--image needs a network with a single input")
            height, width, channels = image_input(model)
            pixels = model_pixels(model, load_image(image, height, width, channels))
            x = np.repeat(pixels[None], shape[0], axis=0)
        elif config is not None:
            x = rng.uniform(0.0, 255.0, size=(shape[0], shape[2], shape[3], shape[1])).astype(np.float32)
        else:
            x = rng.standard_normal(size=shape).astype(np.float32)
            x = x.transpose(0, 2, 3, 1) if nhwc else x
        raw.append(x)
        caffe_x = x
        if config is not None and len(graph.inputs) == 1:
            layer = preprocess.CaffePreprocess.from_config(config)
            layer.build(x.shape)
            source = preprocess.find_layer(model)
            layer.set_weights(source.get_weights())
            caffe_x = np.asarray(layer(x))
        caffe[blob.name] = caffe_x.transpose(0, 3, 1, 2) if nhwc else caffe_x
    return raw, caffe


def _graph_of(prototxt_path, model, model_path, input_shapes):
    """The graph the model was converted from (cut like the model, with ``--outputs``) and the
    model's blob table, checked to describe the same network."""
    from . import api, blobtable

    holder = blobtable.find(model)
    if holder is None:
        raise ConversionError("the model carries no Caffe blob table: convert it again with this caffe2keras",
                              file=model_path)
    table = holder.table
    graph, _ = api.check(prototxt_path, None, input_shapes=input_shapes, outputs=table["outputs"])
    if [n.name for n in graph.nodes] != [name for name, _, _ in table["layers"]] or len(graph.inputs) != len(
        table["inputs"]
    ):
        raise ConversionError("the model was not converted from this prototxt (its layers differ)", file=model_path)
    return graph, table


def _probe(graph, table, model):
    """A model over ``model``'s layers giving the first top of every Caffe layer, NHWC when 4-D
    as the layout contract promises: ``(probe, [caffe layer])``."""
    import keras

    by_name = {layer.name: layer for layer in model.layers}
    tensors, entries = [], []
    for node, (_, keras_layer, _) in zip(graph.nodes, table["layers"]):
        layer = by_name.get(keras_layer)
        if layer is None or not node.tops:
            continue
        out = layer.output
        tensors.append(out[0] if isinstance(out, (list, tuple)) else out)
        entries.append(node)
    return depth.call(keras.Model, model.inputs, tensors), entries


def verify(prototxt_path, caffemodel_path, model_path, image=None, input_shapes=None, seed=0):
    """Compare the converted model at ``model_path`` with OpenCV running the Caffe files."""
    cv2 = _opencv()
    from .predict import load_model

    model = load_model(model_path)
    graph, table = _graph_of(prototxt_path, model, model_path, input_shapes)
    raw, caffe_inputs = _inputs(graph, model, image, seed)

    try:
        net = cv2.dnn.readNetFromCaffe(str(prototxt_path), str(caffemodel_path))
    except cv2.error as err:
        raise ConversionError(f"OpenCV cannot load this network ({' '.join(str(err).split())[-200:]})",
                              file=prototxt_path) from None
    net.enableFusion(False)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    for name, x in caffe_inputs.items():
        net.setInput(np.ascontiguousarray(x, dtype=np.float32), name)
    opencv_layers = set(net.getLayerNames())

    comparisons, skipped = [], []
    outs = model(raw if isinstance(model.input, (list, tuple)) else raw[0], training=False)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    producer = {bid: node for node in graph.nodes for bid in node.tops}
    wanted = []
    for bid, name, value in zip(graph.outputs, model.output_names, outs):
        node = producer.get(bid)
        # OpenCV gives a layer's first top by the layer's name.
        if node is None or node.name not in opencv_layers or node.tops[0] != bid:
            skipped.append(f"output {name}: OpenCV exposes no layer giving it")
            continue
        value = np.asarray(value)
        wanted.append(("output", graph.blobs[bid].name, node, value.transpose(0, 3, 1, 2) if value.ndim == 4 else value))

    probe, entries = _probe(graph, table, model)
    values = probe(raw, training=False)
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    for node, value in zip(entries, values):
        if node.name not in opencv_layers:
            skipped.append(f"layer {node.name}: not a layer of OpenCV's network")
            continue
        value = np.asarray(value)
        wanted.append(("layer", node.name, node, value.transpose(0, 3, 1, 2) if value.ndim == 4 else value))

    if not wanted:
        raise ConversionError("nothing to compare: OpenCV and the model share no layer or output", file=model_path)
    names = list(dict.fromkeys(w[2].name for w in wanted))
    try:
        references = dict(zip(names, net.forward(names)))
    except cv2.error as err:
        raise ConversionError(f"OpenCV failed to run this network ({' '.join(str(err).split())[-200:]})",
                              file=prototxt_path) from None
    for kind, name, node, value in wanted:
        reference = references[node.name]
        if node.type == "DetectionOutput":
            value, reference = detection_rows(value), detection_rows(reference)
        comparisons.append(compare(kind, name, value, reference))
    return Result(comparisons, skipped, "image " + Path(image).name if image else f"random (seed {seed})")


def format_report(result, show_all=False):
    """Outputs first, then layers (only failing ones unless ``show_all``), then a verdict."""
    lines = [f"input: {result.input_kind}; tolerance max|keras - caffe| <= {RTOL:g} * max(1, max|caffe|)"]
    header = f"{'':6}  {'name':40}  {'shape':>18}  {'max abs':>10}  {'max rel':>10}"
    lines.append(header)
    layer_rows = [c for c in result.comparisons if c.kind == "layer"]
    shown = [c for c in result.comparisons if c.kind == "output"]
    shown += layer_rows if show_all else [c for c in layer_rows if not c.ok]
    for c in shown:
        shape = "x".join(map(str, c.shape))
        mark = "" if c.ok else "  FAIL" + (f" ({c.note})" if c.note else "")
        lines.append(f"{c.kind:6}  {c.name:40}  {shape:>18}  {c.max_abs:>10.3g}  {c.max_rel:>10.3g}{mark}")
    # The first layer in execution order to go wrong is where to look; outputs only follow it.
    failed = [c for c in layer_rows if not c.ok] + [c for c in result.comparisons if c.kind == "output" and not c.ok]
    worst = max((c.max_rel for c in layer_rows), default=0.0)
    lines.append(
        f"{len(layer_rows)} layers compared (worst max rel {worst:.3g}), {len(result.skipped)} skipped; "
        + ("all within tolerance" if result.ok else f"{len(failed)} beyond tolerance, first: {failed[0].name}"
           if failed else "nothing compared")
    )
    return "\n".join(lines)
