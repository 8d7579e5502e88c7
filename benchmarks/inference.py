"""Inference speed: the converted model, called the ways users call it, against OpenCV's DNN.

For each net (GoogLeNet, ResNet-50, MobileNet v1, MobileNet-SSD) the CLI first writes the
``.tflite`` and ``.onnx`` exports (timed, guarded); then one child process holds every runtime on
the same Caffe files and the same input, with the same thread count (``cv2.setNumThreads``,
TensorFlow's intra- and inter-op pools, the TFLite interpreter's and onnxruntime's intra-op
threads), and measures, at batch 1 and 8:

    opencv     cv2.dnn.readNetFromCaffe(prototxt, caffemodel), setInput + forward
    predict    model.predict(x, verbose=0)
    eager      model(x, training=False)                      (what users write first)
    predict_on_batch  model.predict_on_batch(x)              (Keras' compiled predict step, no data pipeline)
    compiled   tf.function(lambda t: model(t, training=False))
    xla        the same with jit_compile=True
    tflite     tf.lite.Interpreter (XNNPACK, the default delegate for float models)
    onnx       onnxruntime.InferenceSession, CPU provider

In rounds: each round runs every method, in an order rotated round by round, for a window of
``window`` seconds (at least ``MIN_CALLS`` calls); a method's time in a round is its median call.
A ratio is OpenCV's time over the method's in the same round (> 1: faster than OpenCV), and the
reported ratio is its median over rounds, so machine load hits both sides of each ratio alike.
Every method's output is compared with OpenCV's (detection rows as sets, matched by image and
label), and so are the converted model's logits (the blob feeding a Softmax output): random
weights saturate a softmax into 0s and 1s that a wrong network can match too.
"""

import json
import statistics
import sys
import time

import measure
import models
from measure import median, python

NETS = ("bvlc_googlenet", "resnet50", "mobilenet_v1", "mobilenet_ssd")
METHODS = ("opencv", "predict", "eager", "predict_on_batch", "compiled", "xla", "tflite", "onnx")
EXPORTS = ("tflite", "onnx")
# ≥ this many times OpenCV's speed; xla is reported, not targeted.
TARGETS = {"predict": 1.0, "eager": 1.0, "compiled": 1.5, "tflite": 1.0, "onnx": 1.0}
MIN_CALLS = 2
WARMUP_CALLS = 2


# ---------------------------------------------------------------- the child


def child_infer(prototxt, caffemodel, size, exports, batches, rounds, window, threads):
    threads, size, rounds, window = int(threads), int(size), int(rounds), float(window)
    import tensorflow as tf

    # Before any TensorFlow op runs, or the pools are already made.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import cv2
    import numpy as np

    from caffe2keras import api

    cv2.setNumThreads(threads)
    exports = json.loads(exports)
    conversion = api.build(prototxt, caffemodel, input_shapes={"data": (1, 3, size, size)})
    model = conversion.model
    compiled = tf.function(lambda t: model(t, training=False))
    xla = tf.function(lambda t: model(t, training=False), jit_compile=True)
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    detection = any(type(layer).__name__ == "DetectionOutput" for layer in model.layers)
    report = {"threads": threads, "versions": _versions(), "batches": {}, "failed": {}}
    for batch in json.loads(batches):
        x = np.random.default_rng(batch).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
        blob = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        xt = tf.constant(x)

        def opencv():
            net.setInput(blob)
            return net.forward()

        methods = {
            "opencv": opencv,
            "predict": lambda: model.predict(x, verbose=0),
            "eager": lambda: np.asarray(model(x, training=False)),
            "predict_on_batch": lambda: model.predict_on_batch(x),
            "compiled": lambda: np.asarray(compiled(xt)),
            "xla": lambda: np.asarray(xla(xt)),
        }
        for fmt in EXPORTS:
            if fmt in exports:
                try:
                    methods[fmt] = (_tflite if fmt == "tflite" else _onnx)(exports[fmt], x, threads)
                except Exception as e:  # an export a runtime cannot load is a result, not a crash
                    report["failed"][f"{fmt}@{batch}"] = _first_line(e)
        report.setdefault("logits", {})[str(batch)] = _logits(conversion, net, x, blob)
        reference = opencv()
        results = {}
        for name, fn in list(methods.items()):
            try:
                out = fn()
                for _ in range(WARMUP_CALLS):
                    fn()
            except Exception as e:
                report["failed"][f"{name}@{batch}"] = _first_line(e)
                del methods[name]
                continue
            results[name] = {"check": _compare(out, reference, detection), "rounds": []}
        names = list(methods)
        for r in range(rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                results[name]["rounds"].append(_window(methods[name], window))
        for name, result in results.items():
            times = result["rounds"]
            result["seconds"] = statistics.median(times)
            if name != "opencv":
                result["ratio"] = statistics.median(cv / t for cv, t in zip(results["opencv"]["rounds"], times))
        report["batches"][str(batch)] = results
    measure.emit(report)


def _window(fn, window):
    """The median call of ``fn`` over a window of ``window`` seconds (at least MIN_CALLS calls)."""
    calls, start = [], time.perf_counter()
    while len(calls) < MIN_CALLS or time.perf_counter() - start < window:
        t0 = time.perf_counter()
        fn()
        calls.append(time.perf_counter() - t0)
    return statistics.median(calls)


def _tflite(path, x, threads):
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=threads)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    out = interpreter.get_output_details()[0]["index"]

    def call():
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return call


def _onnx(path, x, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    return lambda: session.run(None, feed)[0]


def _compare(ours, reference, detection):
    """(max abs difference, tolerance, note) of a method's output against OpenCV's."""
    import numpy as np

    ours = np.asarray(ours[0] if isinstance(ours, (list, tuple)) else ours, np.float64)
    reference = np.asarray(reference, np.float64)
    if detection:
        return _compare_detections(ours, reference)
    if ours.ndim == 4 and ours.shape[1:3] != reference.shape[2:4] and ours.size == reference.size:
        ours = ours.transpose(0, 3, 1, 2)  # NHWC output, NCHW reference
    tol = 1e-4 * max(1.0, float(np.max(np.abs(reference))))
    return float(np.max(np.abs(ours.reshape(reference.shape) - reference))), tol, ""


def _compare_detections(ours, reference):
    """Detection rows compared as sets: each row of one side against the nearest row of the
    same image and label on the other (scores one ulp apart order rows differently)."""
    import numpy as np

    sys.path.insert(0, str(models.TESTS))
    from oracle import detections

    ours, reference = detections(ours), detections(reference)
    note = f"{len(reference)} detections"
    if len(ours) != len(reference):
        return None, None, f"{len(ours)} detections, OpenCV {len(reference)}"
    if not len(reference):
        return 0.0, 1e-4, note

    def farthest(a, b):
        worst = 0.0
        for row in a:
            same = b[(b[:, 0] == row[0]) & (b[:, 1] == row[1])]
            worst = max(worst, float(np.abs(same - row).max(axis=1).min()) if len(same) else np.inf)
        return worst

    tol = 1e-4 * max(1.0, float(np.max(np.abs(reference))))
    return max(farthest(ours, reference), farthest(reference, ours)), tol, note


def _logits(conversion, net, x, blob):
    """(max abs difference, tolerance, blob) of the converted model's logits (the blob feeding
    a Softmax output) against OpenCV's: random weights saturate the softmax itself, where a
    wrong network can still give OpenCV's 0s and 1s. None when no Softmax makes an output."""
    from caffe2keras import blobtable

    graph = conversion.graph
    outputs = {graph.blobs[b].producer for b in graph.outputs}
    softmax = next((n for n in graph.nodes if n.name in outputs and n.type == "Softmax"), None)
    if softmax is None:
        return None
    logits = graph.blobs[softmax.bottoms[0]]
    producer = logits.producer
    ours = blobtable.blobs(conversion.model, [logits.name])(x, training=False)[logits.name]
    net.setInput(blob)
    err, tol, _ = _compare(ours, net.forward(producer), False)
    return err, tol, producer


def _first_line(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160] if text else ''}"


def _versions():
    import cv2
    import tensorflow as tf

    versions = {"tensorflow": tf.__version__, "opencv": cv2.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return versions


# ---------------------------------------------------------------- the parent


def export(work, name, prototxt, caffemodel, size, fmt, guards):
    out = work / "infer" / f"{name}.{fmt}"
    out.parent.mkdir(exist_ok=True)
    out.unlink(missing_ok=True)
    r = measure.run(measure.cli("convert", prototxt, caffemodel, "-o", out, "-q", "--input-shape", f"1,3,{size},{size}"), **guards)
    return out, {"status": r.status, "note": r.note, "wall": r.wall, "peak_mib": r.peak_mib}


def run(work, nets=NETS, batches=(1, 8), rounds=5, window=1.0, threads=2, guards=None):
    guards = guards or {}
    results = {"nets": [], "threads": threads, "rounds": rounds, "window_s": window}
    for name in nets:
        prototxt, caffemodel = models.prepare(work, name)
        size = models.NETS[name][1]
        entry = {"net": name, "load": measure.load(), "exports": {}}
        paths = {}
        for fmt in EXPORTS:
            path, info = export(work, name, prototxt, caffemodel, size, fmt, guards)
            entry["exports"][fmt] = info
            if info["status"] == "ok":
                paths[fmt] = str(path)
        r = measure.run(
            python(__file__, "_infer", prototxt, caffemodel, size, json.dumps(paths), json.dumps(list(batches)), rounds,
                   window, threads),
            **guards,
        )
        if r.ok:
            entry.update(r.report())
        else:
            entry["error"] = r.note
        results["nets"].append(entry)
        print(summary(entry), flush=True)
    return results


def summary(entry):
    label = models.LABELS[entry["net"]]
    if "error" in entry:
        return f"  {label}: {entry['error']}"
    lines = []
    for batch, results in entry["batches"].items():
        cv = results["opencv"]["seconds"]
        parts = [f"OpenCV {int(batch) / cv:.1f} img/s"]
        for name in METHODS[1:]:
            if name in results:
                r = results[name]
                parts.append(f"{name} {r['ratio']:.2f}×")
            else:
                parts.append(f"{name} –")
        lines.append(f"  {label} batch {batch}: " + ", ".join(parts))
    for what, why in entry["failed"].items():
        lines.append(f"    {what}: {why}")
    for fmt, info in entry["exports"].items():
        if info["status"] != "ok":
            lines.append(f"    export {fmt}: {info['note']}")
    return "\n".join(lines)


def worst_check(results):
    """The largest (error / tolerance) of the methods' outputs against OpenCV's, and notes."""
    shares = [r["check"][0] / r["check"][1] for r in results.values() if r["check"][0] is not None]
    return max(shares, default=None)


if __name__ == "__main__":
    measure.child_main(globals())
