"""``caffe2keras verify``: a converted model against an independent Caffe implementation.

OpenCV's DNN module (``cv2.dnn.readNetFromCaffe``, the ``caffe2keras[verify]`` extra) runs the
network as the converter reads it, with the caffemodel; the converted model runs on the same
input (seeded random values, or an image). Every network output and every layer both know is
compared in Caffe's order: the model's blob table (:mod:`~caffe2keras.blobtable`, recorded in the
exported formats too) says which Keras layer holds each Caffe layer's tops (NHWC when 4-D, as the
layout contract promises), the prototxt's graph (no Keras built) the inputs. A model in an
exported format (.tflite, .onnx, SavedModel) keeps no per-layer values: its outputs are compared.

OpenCV gets a copy of the network in the converter's reading (:func:`opencv_prototxt`): the TEST
phase, data layers as inputs of the shapes converted, no loss layers, fork types it lacks mapped
to its own (depthwise convolutions, py-faster-rcnn's Python proposal layer). It runs with layer
fusion off, so a convolution's top is compared before the in-place ReLU that follows it, as
Caffe records it, and without Winograd convolutions, which add an error of their own.

Where the two implementations legitimately differ in form, the real values are compared:
DetectionOutput's detections as a set (OpenCV pads with zero rows, the model with Caffe's
label -1 rows); the rows after a region proposal layer in the order of the proposals, equal
scores taken in coordinate order (OpenCV breaks ties its own way), without padding rows.

Tolerance, as everywhere in this project: max|keras - caffe| <= 1e-4 * max(1, max|caffe|).
"""

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import depth
from .errors import ConversionError, clip
from .layout import to_caffe_order, to_nhwc

RTOL = 1e-4
# OpenCV's words for a layer type it does not have.
CANNOT_CREATE = re.compile(r'Can\'t create layer "([^"]+)" of type "([^"]+)"')


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
    """DetectionOutput's (1, 1, N, 7) rows [image, label, score, box], the real detections only,
    in a canonical order: detections of equal score may come in either order; padding rows
    (Caffe's label -1, OpenCV's all-zero rows) are left out."""
    rows = np.asarray(value, dtype=np.float64).reshape(-1, 7)
    rows = rows[(rows[:, 1] != -1) & np.any(rows != 0, axis=1)]
    order = np.lexsort((rows[:, 6], rows[:, 5], rows[:, 4], rows[:, 3], -rows[:, 2], rows[:, 1], rows[:, 0]))
    return rows[order]


def compare_detections(kind, name, actual, expected):
    actual, expected = detection_rows(actual), detection_rows(expected)
    if len(actual) != len(expected):
        return Comparison(kind, name, list(expected.shape), float("inf"), float("inf"), False,
                          f"{len(actual)} detections, OpenCV's {len(expected)}")
    return compare(kind, name, actual, expected, f"{len(actual)} detections")


def tie_order(rois, scores):
    """Row order putting each run of equal scores in coordinate order."""
    order = np.arange(len(rois))
    start = 0
    for end in range(1, len(rois) + 1):
        if end == len(rois) or scores[end] != scores[start]:
            run = order[start:end]
            order[start:end] = run[np.lexsort(rois[run].T[::-1])]
            start = end
    return order


def opencv_prototxt(graph, without=()):
    """The network as the converter read it, as prototxt text OpenCV can load: inputs declared
    with the converted shapes, only the layers converted (TEST phase, no data or loss layers),
    fork depthwise convolutions as grouped Convolution, py-faster-rcnn's Python proposal layer
    as OpenCV's Proposal with the same settings. The layers named in ``without`` are left out,
    and every layer reading what they write. Returns ``(text, {left-out layer: the first one
    it depends on})``."""
    from google.protobuf import text_format

    from .schema import caffe_pb2
    from .types.rcnn import proposal_settings

    net = caffe_pb2.NetParameter(name=graph.name or "")
    for bid in graph.inputs:
        blob = graph.blobs[bid]
        net.input.append(blob.name)
        net.input_shape.add().dim.extend(blob.shape)
    left_out, tainted = {}, {}
    for node in graph.nodes:
        layer = node.param
        cause = node.name if node.name in without else next((tainted[b] for b in layer.bottom if b in tainted), None)
        if cause is not None:
            left_out[node.name] = cause
            tainted.update({top: cause for top in layer.top})
            continue
        if layer.type == "Input":
            continue
        copy = net.layer.add()
        copy.CopyFrom(layer)
        del copy.include[:], copy.exclude[:]
        if layer.type in ("ConvolutionDepthwise", "DepthwiseConvolution"):
            copy.type = "Convolution"
            copy.convolution_param.group = copy.convolution_param.num_output
        elif layer.type == "Python" and is_proposal(layer):
            settings = proposal_settings(layer)
            copy.type = "Proposal"
            copy.ClearField("python_param")
            p = copy.proposal_param
            p.feat_stride, p.base_size, p.min_size = settings.feat_stride, settings.base_size, int(settings.min_size)
            p.ratio.extend(settings.ratios)
            p.scale.extend(settings.scales)
            p.pre_nms_topn, p.post_nms_topn, p.nms_thresh = (settings.pre_nms_top_n, settings.post_nms_top_n,
                                                             settings.nms_thresh)
    return text_format.MessageToString(net), left_out


def is_proposal(layer):
    from .types.rcnn import is_proposal_layer

    return layer.type == "Proposal" or is_proposal_layer(layer)


def _opencv():
    try:
        import cv2
    except ImportError:
        raise ConversionError(
            "verify needs OpenCV's DNN module: pip install 'caffe2keras[verify]' (opencv-python-headless)"
        ) from None
    return cv2


def _graph_of(prototxt_path, runner, model_path, input_shapes):
    """The graph the model was converted from (cut like the model, with ``--outputs``) and the
    model's blob table, checked to describe the same network: the same layers, the same input
    shapes."""
    from . import api

    table = runner.blob_table
    if table is None:
        raise ConversionError("the model carries no Caffe blob table: convert it again with this caffe2keras",
                              file=model_path)
    graph, _ = api.check(prototxt_path, None, input_shapes=input_shapes)
    blobs = {blob.name for blob in graph.blobs.values()}
    missing = [name for name in table["outputs"] if name not in blobs]
    if missing:
        raise ConversionError(f"the model was not converted from this prototxt (it has no blob {', '.join(missing)}, "
                              "which the model outputs)", file=model_path)
    if table["outputs"] != [graph.blobs[b].name for b in graph.outputs]:  # the model was cut with --outputs
        graph, _ = api.check(prototxt_path, None, input_shapes=input_shapes, outputs=table["outputs"])
    if [n.name for n in graph.nodes] != [name for name, _, _ in table["layers"]] or len(graph.inputs) != len(
        table["inputs"]
    ):
        raise ConversionError("the model was not converted from this prototxt (its layers differ)", file=model_path)
    _check_input_shapes(graph, table, runner, model_path)
    return graph, table


def _check_input_shapes(graph, table, runner, model_path):
    """Refuse a model whose inputs are not the shapes the prototxt gives (converted with another
    --input-shape, or from another network of the same layer names): one line saying where."""
    from .layout import canonical, keras_shape

    ports = {p.name: p for p in runner.inputs}
    for bid, (blob, name) in zip(graph.inputs, table["inputs"]):
        shape = graph.blobs[bid].shape
        want = tuple(keras_shape(shape, canonical(shape))[1:])
        have = tuple(ports[name].shape[1:]) if name in ports else None
        if have is None or len(have) != len(want) or any(h is not None and h != w for h, w in zip(have, want)):
            raise ConversionError(
                f"the shapes disagree: the model's input '{name}' is {_shape(have)}, the prototxt's '{blob}' "
                f"gives {_shape(want)} (Keras order): the model was converted from another network, or with "
                "another --input-shape (pass it to verify too)", file=model_path)


def _shape(dims):
    return "missing" if dims is None else "(N, " + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def _inputs(graph, table, runner, image, seed):
    """The model's raw inputs (a list in the runner's input order, NHWC for images) and Caffe's
    view of them, ``{caffe blob: NCHW array}`` (the baked preprocessing applied, as Caffe's
    Transformer would). An im_info input of a proposal layer gets the image's size and a scale
    so small that py-faster-rcnn's minimum box size, which OpenCV's Proposal lacks, keeps all."""
    from .predict import load_image, model_pixels

    config = runner.preprocess
    rng = np.random.default_rng(seed)
    images = [bid for bid in graph.inputs if len(graph.blobs[bid].shape) == 4]
    im_info = {node.bottoms[2] for node in graph.nodes if is_proposal(node.param) and len(node.bottoms) == 3}
    raw, caffe = {}, {}
    for bid, (_, keras_input) in zip(graph.inputs, table["inputs"]):
        blob = graph.blobs[bid]
        shape = blob.shape
        nhwc = len(shape) == 4
        if bid in im_info and images:
            height, width = graph.blobs[images[0]].shape[2:]
            x = np.tile(np.array([[height, width, 0.01]], np.float32), (shape[0], 1))
        elif image is not None and nhwc:
            if len(images) != 1:
                raise ConversionError("--image needs a network with a single image input")
            pixels = model_pixels(runner, load_image(image, shape[2], shape[3], shape[1]))
            x = np.repeat(pixels[None], shape[0], axis=0)
        elif config is not None and nhwc:
            x = rng.uniform(0.0, 255.0, size=(shape[0], shape[2], shape[3], shape[1])).astype(np.float32)
        else:
            x = rng.standard_normal(size=shape).astype(np.float32)
            x = to_nhwc(x) if nhwc else x
        raw[keras_input] = x
        caffe_x = _caffe_view(x, config, runner) if config is not None and nhwc else x
        caffe[blob.name] = to_caffe_order(caffe_x) if nhwc else caffe_x
    return [raw[p.name] for p in runner.inputs], caffe


def _caffe_view(x, config, runner):
    """What Caffe's Transformer makes of pixels ``x`` (NHWC): (x[BGR] - mean) * scale, in float32
    as the baked layer computes it."""
    from . import preprocess

    x = x[..., ::-1] if config["rgb_input"] else x
    if config.get("mean") is not None:
        x = x - np.asarray(config["mean"], np.float32)
    elif config.get("mean_shape") is not None:
        if runner.model is None:
            raise ConversionError("the mean image baked into this model is kept in its .keras/.h5 file only: "
                                  "verify that file", file=runner.path)
        x = x - preprocess.find_layer(runner.model).get_weights()[0]
    return (x * np.float32(config["scale"])).astype(np.float32) if config["scale"] != 1.0 else x.astype(np.float32)


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
    """Compare the converted model at ``model_path`` (any format caffe2keras writes) with OpenCV
    running the Caffe files."""
    cv2 = _opencv()
    from . import runtime

    runner = runtime.load(model_path)
    graph, table = _graph_of(prototxt_path, runner, model_path, input_shapes)
    raw, caffe_inputs = _inputs(graph, table, runner, image, seed)
    wanted, skipped, proposals = _model_values(graph, table, runner, raw)
    names = list(dict.fromkeys([w[2] for w in wanted] + ([proposals["layer"]] if proposals else [])))
    references, left_out = _opencv_forward(cv2, graph, caffemodel_path, prototxt_path, caffe_inputs, names)
    for cause in dict.fromkeys(left_out.values()):
        after = sum(1 for c in left_out.values() if c == cause) - 1
        skipped.append(f"layer {cause}: OpenCV has no '{graph.node(cause).type}' layer"
                       + (f" (nor the {after} layer(s) after it)" if after else ""))
    for kind, name, layer, _ in wanted:
        if layer not in references and layer not in left_out:
            skipped.append(f"{kind} {name}: " + ("OpenCV exposes no layer giving it" if kind == "output"
                                                  else "not a layer of OpenCV's network"))
    wanted = [w for w in wanted if w[2] in references]
    if not wanted:
        raise ConversionError("nothing to compare: OpenCV and the model share no layer or output", file=model_path)
    if proposals is not None and proposals["layer"] not in references:
        proposals = None
    rows = _row_orders(proposals, references) if proposals is not None else None
    comparisons = []
    for kind, name, layer, value in wanted:
        reference = references[layer]
        if graph.node(layer).type == "DetectionOutput":
            comparisons.append(compare_detections(kind, name, value, reference))
            continue
        if rows is not None and layer in rows["after"]:
            value, reference = _real_rows(value, reference, rows)
        comparisons.append(compare(kind, name, value, reference))
    return Result(comparisons, skipped, "image " + Path(image).name if image else f"random (seed {seed})")


def _model_values(graph, table, runner, raw):
    """What the model computes on ``raw``, as ``(wanted, skipped, proposals)``: ``wanted`` lists
    (kind, Caffe name, Caffe layer, value in Caffe's layout) for the outputs and, from a Keras
    file, every layer; ``proposals`` is :func:`_proposals`' record or None."""
    producer = {bid: node for node in graph.nodes for bid in node.tops}
    wanted, skipped = [], []
    for bid, name, value in zip(graph.outputs, runner.output_names, runner(raw)):
        node = producer.get(bid)
        # OpenCV gives a layer's first top by the layer's name.
        if node is None or node.tops[0] != bid:
            skipped.append(f"output {name}: OpenCV exposes no layer giving it")
            continue
        value = np.asarray(value)
        wanted.append(("output", graph.blobs[bid].name, node.name, to_caffe_order(value)))
    if runner.model is None:
        skipped.append(f"layers: a {runner.kind} file keeps no per-layer values (verify the .keras file for them)")
        return wanted, skipped, None
    probe, entries = _probe(graph, table, runner.model)
    for node, value in zip(entries, _run(probe, raw)):
        wanted.append(("layer", node.name, node.name, to_caffe_order(value)))
    return wanted, skipped, _proposals(graph, runner.model, raw)


def _run(model, raw):
    """``model``'s outputs on the inputs ``raw``, as numpy arrays (on any Keras backend)."""
    import keras

    values = model(raw if len(raw) > 1 else raw[0], training=False)
    return [keras.ops.convert_to_numpy(v) for v in (values if isinstance(values, (list, tuple)) else [values])]


def _opencv_forward(cv2, graph, caffemodel_path, prototxt_path, inputs, names):
    """OpenCV's values of the layers ``names`` for ``inputs``: ``(values, left out)``. A layer
    OpenCV cannot create (a fork type it lacks) is left out with what depends on it, and the
    rest run again."""
    without = set()
    while True:
        text, left_out = opencv_prototxt(graph, without)
        net = _opencv_net(cv2, text, caffemodel_path, prototxt_path)
        for name, x in inputs.items():
            net.setInput(np.ascontiguousarray(x, dtype=np.float32), name)
        present = set(net.getLayerNames())
        asked = [n for n in names if n in present]
        if not asked:
            return {}, left_out
        try:
            return dict(zip(asked, net.forward(asked))), left_out
        except cv2.error as err:
            found = CANNOT_CREATE.search(str(err))
            if found is None or found.group(1) in without:
                raise ConversionError(f"OpenCV failed to run this network ({_opencv_problem(err)})",
                                      file=prototxt_path) from None
            without.add(found.group(1))


def _opencv_problem(err):
    """OpenCV's message without the source file and line it starts with (``OpenCV(4.x)
    /io/opencv/…/caffe_importer.cpp:568: error: (-5:Bad argument) …``): what went wrong."""
    text = " ".join(str(err).split())
    _, found, problem = text.partition(": error: ")
    return clip(problem if found else text, 200)


def _opencv_net(cv2, text, caffemodel_path, prototxt_path):
    import tempfile

    with tempfile.TemporaryDirectory(prefix="caffe2keras-verify-") as tmp:
        mapped = Path(tmp) / "opencv.prototxt"
        mapped.write_text(text)
        try:
            net = cv2.dnn.readNetFromCaffe(str(mapped), str(caffemodel_path))
        except cv2.error as err:
            raise ConversionError(f"OpenCV cannot load this network ({_opencv_problem(err)})",
                                  file=prototxt_path) from None
    net.enableFusion(False)
    net.enableWinograd(False)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return net


def _proposals(graph, model, raw):
    """The model's region proposals, when the network has a proposal layer: its rois, scores,
    how many are real, and the Caffe layers computed on them."""
    import keras

    from .layers.rcnn import find_proposal

    layer = find_proposal(model)
    if layer is None:
        return None
    rois, scores, count = _run(depth.call(keras.Model, model.inputs, list(layer.output)), raw)
    node = next(n for n in graph.nodes if is_proposal(n.param))
    after, produced = set(), set(node.tops)
    for other in graph.nodes:
        if other is not node and produced.intersection(other.bottoms):
            after.add(other.name)
            produced.update(other.tops)
    return {"layer": node.name, "rois": rois, "scores": scores, "count": int(count.reshape(-1)[0]), "after": after}


def _row_orders(proposals, references):
    """How the model's and OpenCV's rows line up after the proposal layer."""
    n = proposals["count"]
    rois, scores = proposals["rois"][:n], proposals["scores"].reshape(len(proposals["rois"]), -1)[:n, 0]
    theirs = np.asarray(references[proposals["layer"]]).reshape(-1, 5)[:n]
    return {"count": n, "mine": tie_order(rois, scores), "theirs": tie_order(theirs, scores),
            "after": proposals["after"] | {proposals["layer"]}}


def _real_rows(value, reference, rows):
    n = rows["count"]
    value, reference = np.asarray(value), np.asarray(reference)
    if value.shape[0] < n or reference.shape[0] < n:
        return value, reference
    return value[:n][rows["mine"]], reference[:n][rows["theirs"]]


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
    # An exported format keeps no per-layer values: then its outputs are what was compared.
    counted, what = (layer_rows, "layers") if layer_rows else ([c for c in result.comparisons if c.kind == "output"],
                                                                "output(s)")
    worst = max((c.max_rel for c in counted), default=0.0)
    lines.append(
        f"{len(counted)} {what} compared (worst max rel {worst:.3g}), {len(result.skipped)} skipped; "
        + ("all within tolerance" if result.ok else f"{len(failed)} beyond tolerance, first: {failed[0].name}"
           if failed else "nothing compared")
    )
    return "\n".join(lines)
