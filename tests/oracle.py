"""The oracle for nets real Caffe never ran here: random weights, OpenCV's DNN as the reference.

:func:`random_caffemodel` writes a caffemodel with well-conditioned random weights for any
prototxt, shaped from the converter's own graph (every blob shape is known there).
:func:`compare_with_opencv` runs the same prototxt and caffemodel through
``cv2.dnn.readNetFromCaffe`` and through the converted Keras model on one random input and
returns, per network output, the max abs error and the project tolerance.
"""

import math
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import build, layer_values, max_error, tolerance

def _learned_blobs(node, graph, rng):
    """The blobs Caffe keeps for ``node`` (names and shapes from the converter's spec of its
    type), random but keeping activations of order one."""
    from caffe2keras import types

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def uniform(low, high):
        return lambda shape: rng.uniform(low, high, shape).astype(np.float32)

    fills = {
        # Caffe's fillers take a kernel's fan-in as its count over its first axis.
        "weight": lambda shape: normal(shape, 1.0 / math.sqrt(math.prod(shape[1:]))),
        "bias": lambda shape: normal(shape, 0.1),
        "mean": lambda shape: normal(shape, 0.1),
        "variance": uniform(0.5, 1.5),
        "scale": lambda shape: (1.0 + 0.2 * rng.standard_normal(shape)).astype(np.float32),
        "scale_factor": lambda shape: np.ones(1, np.float32),
        ("PReLU", "slope"): uniform(0.05, 0.3),
        ("BN", "slope"): lambda shape: (1.0 + 0.2 * rng.standard_normal(shape)).astype(np.float32),
        ("Normalize", "scale"): uniform(1.0, 20.0),
        ("Embed", "weight"): lambda shape: normal(shape, 1.0),
    }
    learned = types.learned(node, [graph.shape(b) for b in node.bottoms])
    return [fills.get((node.type, b.name), fills.get(b.name))(b.shape) for b in learned]


def random_caffemodel(prototxt, path, input_shapes=None, seed=0):
    """Write a caffemodel of random weights for ``prototxt`` to ``path``; returns the graph."""
    from caffe2keras import caffe_pb2, graph, prototxt as proto

    g = graph.build(proto.load(str(prototxt)), input_shapes=input_shapes)
    rng = np.random.default_rng(seed)
    net = caffe_pb2.NetParameter(name=g.name or "net")
    for node in g.nodes:
        blobs = _learned_blobs(node, g, rng)
        if not blobs:
            continue
        layer = net.layer.add(name=node.name, type=node.type)
        for b in blobs:
            blob = layer.blobs.add()
            blob.shape.dim.extend(b.shape)
            blob.data.extend(b.reshape(-1).tolist())
    Path(path).write_bytes(net.SerializeToString())
    return g


def opencv_outputs(prototxt, caffemodel, inputs, names):
    """OpenCV's values of the first top of each layer in ``names`` for ``{input: NCHW array}``
    (the test is skipped without OpenCV, an optional dependency)."""
    cv2 = pytest.importorskip("cv2")

    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel) if caffemodel is not None else None)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    for name, value in inputs.items():
        net.setInput(np.ascontiguousarray(value, dtype=np.float32), name)
    known = set(net.getLayerNames())
    names = [n for n in names if n in known]
    return dict(zip(names, (np.asarray(o) for o in net.forward(names))))


def detections(rows):
    """The real detections of a DetectionOutput blob (1, 1, R, 7), by image, label and falling
    score: the converter pads with label -1 rows, OpenCV with zero rows, and OpenCV orders the
    rows by score where Caffe orders them by label."""
    rows = np.asarray(rows).reshape(-1, 7)
    rows = rows[(rows[:, 1] >= 0) & (rows[:, 2] > 0)]
    return rows[np.lexsort((-rows[:, 2], rows[:, 1], rows[:, 0]))]


def with_confidence_threshold(prototxt, path, threshold):
    """A copy of ``prototxt`` whose DetectionOutput keeps scores above ``threshold``: random
    weights give near-uniform class scores, below the thresholds trained nets use."""
    text = Path(prototxt).read_text()
    text, count = re.subn(r"confidence_threshold\s*:\s*[-+0-9.eE]+", f"confidence_threshold: {threshold}", text)
    assert count, f"{prototxt} sets no confidence_threshold"
    Path(path).write_text(text)
    return path


def with_whole_prior_sizes(prototxt, path):
    """A copy of ``prototxt`` whose PriorBox min_size/max_size are whole pixels. SSD's Caffe reads
    them into an ``int`` (prior_box_layer.cpp), OpenCV keeps the fraction; with whole sizes both
    compute Caffe's boxes."""
    text = Path(prototxt).read_text()
    text = re.sub(r"\b(min_size|max_size)(\s*:\s*)([-+0-9.eE]+)", lambda m: f"{m[1]}{m[2]}{int(float(m[3]))}.0", text)
    Path(path).write_text(text)
    return path


def compare_with_opencv(
    prototxt, workdir, caffemodel=None, input_shapes=None, seed=0, input_range=1.0, confidence_threshold=None
):
    """Random weights (or ``caffemodel``'s) and a random input through OpenCV and the converted model.

    Returns ``{layer/top: (max abs error, tolerance, note)}`` for every layer top OpenCV exposes,
    in execution order, the network outputs included. DetectionOutput blobs are compared as
    their detection rows (the two pad differently), and the note counts them;
    ``confidence_threshold`` replaces the prototxt's so that random weights detect something.
    """
    workdir = Path(workdir)
    if confidence_threshold is not None:
        prototxt = with_confidence_threshold(prototxt, workdir / "deploy.prototxt", confidence_threshold)
    if caffemodel is None:
        caffemodel = workdir / "random.caffemodel"
        random_caffemodel(prototxt, caffemodel, input_shapes=input_shapes, seed=seed)
    conversion = build(prototxt, caffemodel, input_shapes=input_shapes)
    graph = conversion.graph
    rng = np.random.default_rng(seed + 1)
    inputs = {
        graph.blobs[b].name: rng.uniform(-input_range, input_range, graph.blobs[b].shape).astype(np.float32)
        for b in graph.inputs
    }
    # OpenCV renames repeated layer names (HED's five 'crop' layers) to crop, crop_1, crop_2, ...
    seen, cv_names = {}, []
    for node in graph.nodes:
        k = seen.get(node.name, 0)
        seen[node.name] = k + 1
        cv_names.append(node.name if k == 0 else f"{node.name}_{k}")
    reference = opencv_outputs(prototxt, caffemodel, inputs, cv_names)
    ours = layer_values(conversion, inputs)
    result = {}
    for node, cv_name in zip(graph.nodes, cv_names):
        top = graph.blobs[node.tops[0]].name
        if cv_name not in reference or (node.name, top) not in ours:
            continue  # layers OpenCV folds away (Split, Dropout) or does not expose
        mine, ref = ours[(node.name, top)], reference[cv_name]
        note = ""
        if node.type == "DetectionOutput":
            mine, ref = detections(mine), detections(ref)
            note = f"{len(mine)} detections"
        what = f"{node.name}/{top}"
        if ref.size != mine.size:
            result[what] = (float("inf"), 0.0, f"shape {mine.shape}, OpenCV's {ref.shape}")
            continue
        ref = ref.reshape(mine.shape)
        result[what] = (max_error(mine, ref), tolerance(np.abs(ref).max() if ref.size else 0.0), note)
    outputs = {f"{graph.blobs[b].producer}/{graph.blobs[b].name}" for b in graph.outputs}
    assert outputs <= set(result), f"OpenCV gave no value for output(s) {sorted(outputs - set(result))}"
    return result


def worst(result):
    """The first layer beyond tolerance (in execution order), else the one nearest to it."""
    for what, (err, tol, note) in result.items():
        if err > tol:
            return what, err, tol, note
    what = max(result, key=lambda k: result[k][0] / result[k][1] if result[k][1] else 0.0)
    return (what,) + result[what]
