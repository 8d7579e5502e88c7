"""How far a converted network is from real Caffe, over several inputs, and where the error grows.

    python tools/precision_report.py NET.prototxt WEIGHTS.caffemodel [--inputs 8] [--seed 8]
        [--outputs BLOB,...] [--layers] [--opencv]
    python tools/precision_report.py NET.prototxt WEIGHTS.caffemodel --synth-weights [--weights-seed 7]

For each of ``--inputs`` seeded N(0, 1) inputs (batch 1, the prototxt's input shape) it prints
``max|keras - caffe| / max|caffe|`` of every network output (or of ``--outputs``, e.g. the
logits before a saturated Softmax), then the median and the maximum. ``--opencv`` adds the same
figures for OpenCV's DNN against Caffe: the spread between two faithful float32 implementations,
the yardstick for a deep net. ``--layers`` adds, for the first input, every layer top's error
against Caffe in execution order (where the error grows) and the *local* error of each layer run
alone on Caffe's own bottoms (which layer adds it).

``--synth-weights`` first writes WEIGHTS.caffemodel with deterministic synthetic values
(``../shared/fullsize/synth.py``'s rule, blob shapes as real Caffe allocates them).

Real Caffe is the oracle (tools/caffe_oracle, which spells SENet's Axpy with Caffe's own layers);
nothing here computes an expected value.
"""

import argparse
import contextlib
import importlib.util
import io
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import caffe_oracle  # noqa: E402

SYNTH = ROOT.parent / "shared" / "fullsize" / "synth.py"


def load_synth():
    spec = importlib.util.spec_from_file_location("synth", SYNTH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_synth_weights(prototxt_text, out, seed):
    """Synthetic weights for the net: blob shapes from real Caffe's own allocation."""
    from caffe2keras import caffe_pb2

    with tempfile.TemporaryDirectory() as tmp:
        filled = Path(tmp) / "filled.caffemodel"
        caffe_oracle.run_one(caffe_oracle.Job(prototxt=prototxt_text, save_weights=str(filled), every_layer=False))
        net = caffe_pb2.NetParameter()
        net.ParseFromString(filled.read_bytes())
    layers = [
        {"name": layer.name, "type": layer.type, "blobs": [list(b.shape.dim) for b in layer.blobs]}
        for layer in net.layer
        if layer.blobs
    ]
    load_synth().write_caffemodel({"name": "net", "layers": layers}, str(out), seed)


def input_shapes(prototxt):
    from caffe2keras import api

    graph, _ = api.check(prototxt)
    return {graph.blobs[b].name: graph.blobs[b].shape for b in graph.inputs}


def relative(actual, expected):
    expected = np.asarray(expected, np.float64)
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected)) / max(1.0, np.max(np.abs(expected))))


def summary(label, errors):
    values = [e for per_input in errors for e in per_input.values()]
    print(f"{label:8s} median {np.median(values):.2e}  max {max(values):.2e}  per input: "
          + " ".join(f"{max(e.values()):.1e}" for e in errors))


def opencv_outputs(prototxt, weights, feeds, names):
    import cv2

    text = AXPY.sub(_swap_axpy_bottoms, Path(prototxt).read_text())
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
        f.write(text)
    try:
        net = cv2.dnn.readNetFromCaffe(f.name, str(weights))
    finally:
        os.unlink(f.name)
    outs = []
    for feed in feeds:
        for name, value in feed.items():
            net.setInput(value, name)
        outs.append(dict(zip(names, net.forward(names))))
    return outs


# OpenCV's Axpy computes a * bottom[2] + bottom[1] (test_zoo_opencv pins it): given SENet's
# bottoms (a, x, y) swapped to (a, y, x) it computes a * x + y.
AXPY = re.compile(r'\blayer\s*\{[^{}]*\btype\s*:\s*"Axpy"[^{}]*\}')


def _swap_axpy_bottoms(match):
    block = match.group(0)
    bottoms = re.findall(r'\bbottom\s*:\s*"([^"]*)"', block)
    if len(bottoms) != 3:
        return block
    a, x, y = bottoms
    swapped = iter([a, y, x])
    return re.sub(r'(\bbottom\s*:\s*)"[^"]*"', lambda m: f'{m.group(1)}"{next(swapped)}"', block)


def local_errors(prototxt, weights, result):
    """Each layer alone, fed Caffe's own bottoms: the error that layer itself adds."""
    from google.protobuf import text_format

    from caffe2keras import caffe_pb2
    from helpers import build, run_outputs

    net = caffe_pb2.NetParameter()
    text_format.Merge(Path(prototxt).read_text(), net)
    by_name = {layer.name: layer for layer in net.layer}
    latest = {name: f"input/{name}" for name in result.inputs}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for layer in result.layers:
            source = by_name.get(layer["name"])
            if source is not None and source.type != "Input" and len(source.top) == 1:
                alone = caffe_pb2.NetParameter(name="alone")
                feeds = {}
                for i, bottom in enumerate(source.bottom):
                    value = result.arrays[latest[bottom]]
                    declared = alone.layer.add(name=f"in{i}", type="Input", top=[f"in{i}"])
                    declared.input_param.shape.add().dim.extend(value.shape)
                    feeds[f"in{i}"] = value
                copy = alone.layer.add()
                copy.CopyFrom(source)
                del copy.bottom[:], copy.top[:]
                copy.bottom.extend(f"in{i}" for i in range(len(source.bottom)))
                copy.top.append("out")
                path = Path(tmp) / "alone.prototxt"
                path.write_text(text_format.MessageToString(alone))
                with contextlib.redirect_stderr(io.StringIO()):  # the other layers' weights go unused
                    conversion = build(path, weights)
                out = run_outputs(conversion, feeds)["out"]
                top = next(iter(layer["tops"]))
                rows.append((layer["name"], layer["type"], relative(out, result.arrays[f"layer/{layer['name']}/{top}"])))
            for top in layer["tops"]:
                latest[top] = f"layer/{layer['name']}/{top}"
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prototxt")
    parser.add_argument("weights")
    parser.add_argument("--inputs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=8, help="seed of the first input (then seed+1, ...)")
    parser.add_argument("--outputs", help="blobs to compare (default: the network outputs)")
    parser.add_argument("--layers", action="store_true", help="per-layer errors for the first input")
    parser.add_argument("--opencv", action="store_true", help="also OpenCV's DNN against Caffe")
    parser.add_argument("--synth-weights", action="store_true", help="write WEIGHTS with synthetic values first")
    parser.add_argument("--weights-seed", type=int, default=7)
    args = parser.parse_args(argv)
    if caffe_oracle.interpreter() is None:
        parser.exit(2, f"error: {caffe_oracle.missing_reason()}\n")
    text = Path(args.prototxt).read_text()
    if args.synth_weights:
        write_synth_weights(text, args.weights, args.weights_seed)
    synth = load_synth()
    shapes = input_shapes(args.prototxt)
    feeds = [
        {name: synth.synth_input((1,) + tuple(shape[1:]), args.seed + i * len(shapes) + j)
         for j, (name, shape) in enumerate(shapes.items())}
        for i in range(args.inputs)
    ]
    names = args.outputs.split(",") if args.outputs else None
    jobs = [caffe_oracle.Job(prototxt=text, weights=str(args.weights), inputs=feed, keep=names,
                             every_layer=args.layers and i == 0)
            for i, feed in enumerate(feeds)]
    results = caffe_oracle.forward(jobs)
    for result in results:
        if isinstance(result, caffe_oracle.OracleError):
            parser.exit(2, f"error: Caffe refused the net: {result}\n")
    reference = results[0]
    names = names or list(reference.outputs)
    expected = [{n: result.arrays[f"blob/{n}" if f"blob/{n}" in result.arrays else f"output/{n}"] for n in names}
                for result in results]

    from helpers import build, layer_values, model_inputs

    conversion = build(args.prototxt, args.weights, outputs=names)
    ours = []
    for feed in feeds:
        outs = conversion.model(model_inputs(conversion, feed), training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        ours.append({conversion.graph.blobs[b].name: _caffe_order(o) for b, o in zip(conversion.graph.outputs, outs)})
    errors = [{n: relative(o[n], e[n]) for n in names} for o, e in zip(ours, expected)]
    print(f"{Path(args.prototxt).parent.name}: {args.inputs} inputs, max|Δ| / max|caffe| of {', '.join(names)}")
    summary("keras", errors)
    if args.opencv:
        cv = opencv_outputs(args.prototxt, args.weights, feeds, names)
        summary("opencv", [{n: relative(o[n], e[n]) for n in names} for o, e in zip(cv, expected)])

    if args.layers:
        full = build(args.prototxt, args.weights)
        values = layer_values(full, feeds[0])
        local = {name: err for name, _, err in local_errors(args.prototxt, args.weights, reference)}
        print(f"\n{'layer':40s} {'type':14s} {'vs caffe':>9s} {'local':>9s}   (first input)")
        for layer in reference.layers:
            for top in layer["tops"]:
                key = (layer["name"], top)
                if key in values:
                    err = relative(values[key], reference.arrays[f"layer/{layer['name']}/{top}"])
                    own = local.get(layer["name"])
                    print(f"{layer['name']:40s} {layer['type']:14s} {err:9.2e} {'' if own is None else f'{own:9.2e}'}")


def _caffe_order(value):
    value = np.asarray(value)
    return value.transpose(0, 3, 1, 2) if value.ndim == 4 else value


if __name__ == "__main__":
    main()
