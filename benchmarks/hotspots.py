"""Where inference time goes: per-layer times of the converted model beside OpenCV's, and profiles
of the calls users make.

For one net at one batch size, in one child process (threads as in ``inference``):

- **per layer, converted**: the model's own graph walk (``Functional._run_through_graph``, a
  private Keras method) with every layer compiled alone (``tf.function``) and timed on the value
  its inputs really have (median of ``reps`` calls), minus the cost of calling an empty compiled
  function (TensorFlow's per-call overhead, measured the same way). Helper layers the converter adds
  (``<layer>_pad``, layout transposes) count towards the Caffe layer they serve.
- **per layer, OpenCV**: ``Net.getPerfProfile()`` after each forward (median over ``reps``). OpenCV
  fuses ReLU, BatchNorm and Scale into the convolution before them: those show 0 there.
- **the compiled graph**: TensorFlow ops of the ``tf.function`` of the whole model, by op type
  (how many ``Transpose`` the layout tracking left, for instance).
- **cProfile** of ``model.predict(x)`` and of eager ``model(x)``: the Python functions that cost
  the time per call, beyond the kernels themselves.
"""

import collections
import cProfile
import io
import pstats
import statistics
import time

import measure
import models
from measure import python

NETS = ("bvlc_googlenet", "mobilenet_ssd")
TOP = 12


def child_profile(prototxt, caffemodel, size, batch, reps, threads):
    size, batch, reps, threads = int(size), int(batch), int(reps), int(threads)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import cv2
    import numpy as np

    from caffe2keras import api
    from caffe2keras.naming import keras_name

    cv2.setNumThreads(threads)
    conversion = api.build(prototxt, caffemodel, input_shapes={"data": (1, 3, size, size)})
    model = conversion.model
    caffe_layers = {keras_name(node.name): (node.name, node.type) for node in conversion.graph.nodes}
    x = np.random.default_rng(batch).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    xt = tf.constant(x)

    def timed(fn, *args):
        fn(*args)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            out = fn(*args)
            tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)
            times.append(time.perf_counter() - t0)
        return statistics.median(times), out

    empty, _ = timed(tf.function(lambda t: t), xt)
    compiled = tf.function(lambda t: model(t, training=False))
    whole, _ = timed(compiled, xt)
    layers = []

    def call_layer(op, *args, **kwargs):
        fn = tf.function(lambda *a: op(*a, **kwargs))
        seconds, out = timed(fn, *args)
        caffe_name, caffe_type = _caffe_layer(op.name, caffe_layers)
        layers.append({"keras": op.name, "class": type(op).__name__, "caffe": caffe_name, "type": caffe_type,
                       "ms": max(0.0, seconds - empty) * 1e3})
        return out

    model._run_through_graph(xt, call_fn=call_layer)

    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    net.forward()
    names = net.getLayerNames()
    per_forward, totals = [], []
    for _ in range(reps):
        net.forward()
        total, timings = net.getPerfProfile()
        per_forward.append(timings.ravel() / cv2.getTickFrequency() * 1e3)
        totals.append(total / cv2.getTickFrequency() * 1e3)
    opencv = [{"caffe": n, "type": net.getLayer(n).type, "ms": statistics.median(f[i] for f in per_forward)}
              for i, n in enumerate(names)]

    graph_ops = collections.Counter(op.type for op in compiled.get_concrete_function(xt).graph.get_operations())
    measure.emit({
        "batch": batch,
        "compiled_ms": whole * 1e3,
        "empty_call_ms": empty * 1e3,
        "opencv_ms": statistics.median(totals),
        "layers": layers,
        "opencv_layers": opencv,
        "graph_ops": dict(graph_ops.most_common()),
        "cprofile": {
            "predict": _cprofile(lambda: model.predict(x, verbose=0), reps),
            "eager": _cprofile(lambda: model(x, training=False), reps),
        },
    })


def _caffe_layer(keras_layer, caffe_layers):
    """(Caffe name, type) of the Caffe layer a Keras layer implements or serves."""
    if keras_layer in caffe_layers:
        return caffe_layers[keras_layer]
    owners = [k for k in caffe_layers if keras_layer.startswith(k + "_")]
    if owners:
        return caffe_layers[max(owners, key=len)]
    return keras_layer, "(converter)"


def _cprofile(fn, reps):
    """Milliseconds per call and the functions that take the most of it (own time)."""
    fn()
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    for _ in range(reps):
        fn()
    profile.disable()
    per_call = (time.perf_counter() - start) / reps * 1e3
    stats = pstats.Stats(profile, stream=io.StringIO())
    rows = []
    for (file, line, func), (_, calls, own, cumulative, _) in stats.stats.items():
        rows.append({"function": f"{_short(file)}:{line}({func})", "calls_per_call": calls / reps,
                     "own_ms": own / reps * 1e3, "cumulative_ms": cumulative / reps * 1e3})
    rows.sort(key=lambda r: -r["own_ms"])
    return {"ms_per_call": per_call, "top_own": rows[:TOP]}


def _short(path):
    for marker in ("site-packages/", "converter/", "lib/python"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


# ---------------------------------------------------------------- the parent


def run(work, nets=NETS, batches=(1, 8), reps=7, threads=2, guards=None):
    guards = guards or {}
    results = {"nets": []}
    for name in nets:
        prototxt, caffemodel = models.prepare(work, name)
        size = models.NETS[name][1]
        for batch in batches:
            r = measure.run(python(__file__, "_profile", prototxt, caffemodel, size, batch, reps, threads), **guards)
            entry = {"net": name, "batch": batch, "load": measure.load()}
            if r.ok:
                entry.update(r.report())
            else:
                entry["error"] = r.note
            results["nets"].append(entry)
            print("\n".join(summary(entry)), flush=True)
    return results


def by_type(entry):
    """{Caffe type: (converted ms, OpenCV ms)} summed over the layers, largest first."""
    ours, theirs = collections.Counter(), collections.Counter()
    for layer in entry["layers"]:
        ours[layer["type"]] += layer["ms"]
    for layer in entry["opencv_layers"]:
        theirs[layer["type"]] += layer["ms"]
    kinds = sorted(set(ours) | set(theirs), key=lambda k: -max(ours[k], theirs[k]))
    return {k: (ours[k], theirs[k]) for k in kinds}


def summary(entry):
    label = f"{models.LABELS[entry['net']]} batch {entry['batch']}"
    if "error" in entry:
        return [f"  {label}: {entry['error']}"]
    layer_sum = sum(layer["ms"] for layer in entry["layers"])
    lines = [
        f"  {label}: compiled call {entry['compiled_ms']:.1f} ms (layers alone {layer_sum:.1f} ms + "
        f"{entry['empty_call_ms']:.2f} ms per call), OpenCV {entry['opencv_ms']:.1f} ms; "
        f"predict {entry['cprofile']['predict']['ms_per_call']:.1f} ms, eager {entry['cprofile']['eager']['ms_per_call']:.1f} ms "
        f"(under cProfile)"
    ]
    lines.append("    by Caffe type (converted / OpenCV ms): " + ", ".join(
        f"{k} {a:.1f}/{b:.1f}" for k, (a, b) in list(by_type(entry).items())[:10]))
    slow = sorted(entry["layers"], key=lambda layer: -layer["ms"])[:6]
    lines.append("    slowest layers: " + ", ".join(f"{layer['keras']} ({layer['class']}) {layer['ms']:.1f}" for layer in slow))
    ops = entry["graph_ops"]
    lines.append(f"    graph: {sum(ops.values())} ops, {ops.get('Transpose', 0)} Transpose; " + ", ".join(
        f"{k} {v}" for k, v in list(ops.items())[:8]))
    return lines


if __name__ == "__main__":
    measure.child_main(globals())
