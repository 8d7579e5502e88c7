"""Conversion speed and memory: each net to every format, against the floor, pair by pair.

- **floor**: a fresh process importing TensorFlow and copying the caffemodel's bytes once
  (``shutil.copyfile``), to its exit. Each conversion is paired with a floor run just before it,
  and the ratio is the median of the per-pair ratios.
- **build in memory**: ``caffe2keras.api.build`` in a fresh process, timed from the parent's
  start to the built model, against the floor to the end of its import + copy; outputs then
  checked against real Caffe's (``<net>.expected.npz`` of ``../shared/fullsize``).
- **CLI** ``convert`` to ``.h5``, ``.keras``, SavedModel, ``.tflite`` and ``.onnx``, start to
  exit. Memory: peak RSS above TensorFlow's own (a process importing TensorFlow and running a
  one-``Dense`` model), as a multiple of the caffemodel's size.
- **the runtime's converter alone**, for the formats a runtime converts (fresh processes, the
  model built first, untimed): Keras' ``model.export(format="tf_saved_model")``, TensorFlow's
  ``TFLiteConverter.from_saved_model(...).convert()`` on a SavedModel written first, tf2onnx's
  ``from_function`` on the graph with the weights as inputs (as ``export_onnx`` calls it). Their targets are 2 × floor + that time.
"""

import json
import shutil
import time
from pathlib import Path

import measure
import models
from measure import median, python

FORMATS = ("h5", "keras", "savedmodel", "tflite", "onnx")
SUFFIX = {"h5": ".h5", "keras": ".keras", "savedmodel": "_savedmodel/", "tflite": ".tflite", "onnx": ".onnx"}
CONVERTER_FORMATS = ("savedmodel", "tflite", "onnx")
TARGET_FLOOR = {"h5": 1.3, "keras": 1.3}  # × floor; the other formats: 2 × floor + converter
TARGET_MEMORY = 1.5  # × model size, above TensorFlow's own
NETS = ("bvlc_googlenet", "resnet50", "vgg16")


# ---------------------------------------------------------------- children


def child_floor(caffemodel, copy, t0):
    """Import TensorFlow, copy the caffemodel once; report both times (the exit is timed outside)."""
    import tensorflow  # noqa: F401

    imported = time.time()
    start = time.perf_counter()
    shutil.copyfile(caffemodel, copy)
    measure.emit({"import_s": imported - float(t0), "copy_s": time.perf_counter() - start})


def child_baseline():
    """TensorFlow's own peak RSS: import it and run a one-Dense model."""
    import keras
    import numpy as np

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.predict(np.zeros((1, 4), np.float32), verbose=0)
    measure.emit({"rss_mib": measure.peak_rss_mib()})


def child_build(prototxt, caffemodel, shape, check, t0):
    """Build in memory; report the time since the parent started us and the peak RSS, then check
    the outputs (after measuring, so the check costs neither)."""
    import resource

    from caffe2keras import api

    shape = tuple(json.loads(shape))
    conversion = api.build(prototxt, caffemodel, input_shapes={"data": shape})
    done = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {"seconds": done - float(t0), "rss_mib": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}
    if check:
        report["errors"] = _check_outputs(conversion, check, shape, caffemodel)
    measure.emit(report)


def _check_outputs(conversion, check, shape, caffemodel):
    """{what: (max abs error, tolerance)} against real Caffe (full-size nets) or numpy (the big MLP)."""
    import keras
    import numpy as np

    model = conversion.model
    if check == "big":
        x = np.random.default_rng(models.BIG_SEED).standard_normal(models.BIG_IN).astype(np.float32)
        got = np.asarray(model(x[None], training=False))[0]
        return {"output/fc2": _error(got, models.big_reference(x))}
    expected = np.load(models.FULLSIZE / f"{check}.expected.npz")
    inputs = np.load(models.inputs_path(Path(caffemodel).parent, check))
    x = inputs["input/data"].transpose(0, 2, 3, 1)
    errors = {}
    for key in expected.files:
        kind, name = key.split("/", 1)
        layer = model.get_layer(name.replace("/", "_")) if kind == "feeds" else None
        probe = model if layer is None else keras.Model(model.inputs, layer.output)
        got = np.asarray(probe(x, training=False))
        errors[key] = _error(got, expected[key])
    return errors


def _error(got, want):
    import numpy as np

    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    tol = 1e-4 * max(1.0, float(np.max(np.abs(want))))
    return float(np.max(np.abs(got.reshape(want.shape) - want))), tol


def child_converter(fmt, prototxt, caffemodel, shape, out):
    """The runtime's own converter alone on the model built first (untimed): seconds, and the
    growth of the peak RSS during that step."""
    from caffe2keras import api, export

    model = api.build(prototxt, caffemodel, input_shapes={"data": tuple(json.loads(shape))}).model
    if fmt == "tflite":
        import tensorflow as tf

        saved = f"{out}.savedmodel"
        export.write_savedmodel(model, saved)
        step = lambda: tf.lite.TFLiteConverter.from_saved_model(saved).convert()  # noqa: E731
    elif fmt == "onnx":
        from caffe2keras import export_onnx

        # tf2onnx on the graph with the weights as inputs, as the writer calls it; the streaming
        # of the initializers after it is ours, not the runtime's converter.
        variables = list(model.trainable_variables) + list(model.non_trainable_variables)
        step = lambda: export_onnx._convert(model, variables, export_onnx.OPSET, False)  # noqa: E731
    else:
        step = lambda: model.export(out, format="tf_saved_model", verbose=False)  # noqa: E731
    before = _resident_mib()
    start = time.perf_counter()
    step()
    measure.emit({"seconds": time.perf_counter() - start, "rss_growth_mib": max(0.0, measure.peak_rss_mib() - before)})


def _resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * measure.PAGE / measure.MiB


# ---------------------------------------------------------------- the parent


def output_path(work, net, fmt):
    """Where the CLI writes: a string, since a SavedModel's path must keep its trailing '/'."""
    (work / "out").mkdir(exist_ok=True)
    return f"{work / 'out' / net}{SUFFIX[fmt]}"


def _remove(path):
    path = Path(str(path).rstrip("/"))
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def floor_command(work, caffemodel):
    return python(__file__, "_floor", caffemodel, work / "floor.copy", repr(time.time()))


def run_floor(work, caffemodel, guards):
    """One floor run: {wall (to exit), to_import (import + copy, the in-memory build's floor)}."""
    r = measure.run(floor_command(work, caffemodel), **guards)
    (work / "floor.copy").unlink(missing_ok=True)
    if not r.ok:
        raise SystemExit(f"the floor itself failed: {r.note}")
    report = r.report()
    return {"wall": r.wall, "cpu": r.cpu, "to_import": report["import_s"] + report["copy_s"], **report}


def tf_baseline(guards):
    r = measure.run(python(__file__, "_baseline"), **guards)
    if not r.ok:
        raise SystemExit(f"TensorFlow's baseline failed: {r.note}")
    return r.report()["rss_mib"]


def build_pairs(work, name, prototxt, caffemodel, shape, check, repeats, guards):
    """In-memory builds paired with floors: the first build also checks the outputs."""
    rows = []
    for i in range(repeats):
        floor = run_floor(work, caffemodel, guards)
        r = measure.run(
            python(__file__, "_build", prototxt, caffemodel, json.dumps(shape), check if i == 0 else "", repr(time.time())),
            **guards,
        )
        row = {"floor": floor, "ok": r.ok, "note": r.note}
        if r.ok:
            report = r.report()
            row.update(seconds=report["seconds"], rss_mib=report["rss_mib"], cpu_s=report["cpu_s"])
            row["ratio"] = report["seconds"] / floor["to_import"]
            if "errors" in report:
                row["errors"] = report["errors"]
        rows.append(row)
        if not r.ok:
            break
    ok = [row for row in rows if row["ok"]]
    return {
        "runs": rows,
        "ratio": median(row["ratio"] for row in ok),
        "seconds": median(row["seconds"] for row in ok),
        "floor_s": median(row["floor"]["to_import"] for row in rows),
        "rss_mib": max((row["rss_mib"] for row in ok), default=None),
        "errors": next((row["errors"] for row in ok if "errors" in row), None),
        "note": next((row["note"] for row in rows if not row["ok"]), ""),
    }


def cli_pairs(work, name, prototxt, caffemodel, shape_args, fmt, repeats, guards):
    """CLI conversions to ``fmt``, each paired with a floor run just before it."""
    out = output_path(work, name, fmt)
    rows = []
    for _ in range(repeats):
        floor = run_floor(work, caffemodel, guards)
        _remove(out)
        r = measure.run(measure.cli("convert", prototxt, caffemodel, "-o", out, "--force", "-q", *shape_args), **guards)
        size = _size(out) if r.ok else None
        _remove(out)
        rows.append({"floor_s": floor["wall"], "wall": r.wall, "cpu": r.cpu, "peak_mib": r.peak_mib, "status": r.status,
                     "note": r.note, "ratio": r.wall / floor["wall"] if r.ok else None, "output_mib": size})
        if not r.ok:
            break
    ok = [row for row in rows if row["status"] == "ok"]
    failed = next((row for row in rows if row["status"] != "ok"), None)
    return {
        "runs": rows,
        "ratio": median(row["ratio"] for row in ok),
        "seconds": median(row["wall"] for row in ok),
        "floor_s": median(row["floor_s"] for row in rows),
        "peak_mib": max((row["peak_mib"] for row in ok), default=None),
        "status": failed["status"] if failed else "ok",
        "note": failed["note"] if failed else "",
        "failed_peak_mib": failed["peak_mib"] if failed else None,
        "output_mib": median(row["output_mib"] for row in ok),
    }


def _size(path):
    path = Path(str(path).rstrip("/"))
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / measure.MiB
    return path.stat().st_size / measure.MiB


def converter_alone(work, name, prototxt, caffemodel, shape, fmt, repeats, guards):
    out = output_path(work, f"{name}.alone", fmt)
    runs = []
    for _ in range(repeats):
        r = measure.run(python(__file__, "_converter", fmt, prototxt, caffemodel, json.dumps(shape), out), **guards)
        _remove(out)
        _remove(f"{out}.savedmodel")
        runs.append({"status": r.status, "note": r.note, "peak_mib": r.peak_mib, **(r.report() if r.ok else {})})
        if not r.ok:
            break
    ok = [run for run in runs if run["status"] == "ok"]
    return {
        "runs": runs,
        "seconds": median(run["seconds"] for run in ok),
        "rss_growth_mib": median(run["rss_growth_mib"] for run in ok),
        "note": next((run["note"] for run in runs if run["status"] != "ok"), ""),
    }


def run(work, nets=NETS, formats=FORMATS, repeats=3, guards=None):
    """The conversion part: {tf_rss_mib, nets: [...]}, printing each net as it is measured."""
    guards = guards or {}
    results = {"tf_rss_mib": tf_baseline(guards), "nets": []}
    print(f"TensorFlow's own peak RSS (import + trivial model): {results['tf_rss_mib']:.0f} MiB", flush=True)
    for name in nets:
        prototxt, caffemodel = models.prepare(work, name)
        size = models.NETS[name][1]
        shape = [1, 3, size, size]
        entry = {"net": name, "size_mib": caffemodel.stat().st_size / measure.MiB, "load": measure.load()}
        entry["build"] = build_pairs(work, name, prototxt, caffemodel, shape, name, repeats, guards)
        print(f"  {models.LABELS[name]} build in memory: {_ratio_text(entry['build']['ratio'])} floor", flush=True)
        entry["formats"] = {}
        for fmt in formats:
            # The zoo prototxts declare batch 10; convert them at batch 1 like the in-memory build.
            shape_args = ["--input-shape", ",".join(map(str, shape))]
            result = cli_pairs(work, name, prototxt, caffemodel, shape_args, fmt, repeats, guards)
            if fmt in CONVERTER_FORMATS:
                result["converter"] = converter_alone(work, name, prototxt, caffemodel, shape, fmt, repeats, guards)
            entry["formats"][fmt] = result
            print(f"  {models.LABELS[name]} → {fmt}: {format_result(fmt, result, entry['size_mib'], results['tf_rss_mib'])}", flush=True)
        results["nets"].append(entry)
    return results


def _ratio_text(ratio):
    return "–" if ratio is None else f"{ratio:.2f}×"


def target_ratio(fmt, result):
    """(measured / target budget, budget text): ≤ 1 meets the target."""
    if result["ratio"] is None:
        return None, ""
    if fmt in TARGET_FLOOR:
        return result["ratio"] / TARGET_FLOOR[fmt], f"{TARGET_FLOOR[fmt]}× floor"
    converter = result.get("converter", {}).get("seconds")
    if converter is None:
        return None, "2× floor + converter (converter failed)"
    budget = 2 * result["floor_s"] + converter
    return result["seconds"] / budget, f"2×{result['floor_s']:.1f} + {converter:.1f} s"


def memory_multiple(result, size_mib, tf_rss):
    if result["peak_mib"] is None:
        return None
    return (result["peak_mib"] - tf_rss) / size_mib


def format_result(fmt, result, size_mib, tf_rss):
    if result["status"] != "ok":
        return result["note"]
    text = f"{result['seconds']:.1f} s = {_ratio_text(result['ratio'])} floor ({result['floor_s']:.1f} s)"
    share, budget = target_ratio(fmt, result)
    if share is not None and fmt not in TARGET_FLOOR:
        text += f" = {share:.2f}× the budget {budget}"
    mem = memory_multiple(result, size_mib, tf_rss)
    text += f", peak +{result['peak_mib'] - tf_rss:.0f} MiB = {mem:.2f}× model"
    if "converter" in result:
        conv = result["converter"]
        text += f"; converter alone {conv['seconds']:.1f} s" if conv["seconds"] is not None else f"; converter alone: {conv['note']}"
    return text


if __name__ == "__main__":
    measure.child_main(globals())
