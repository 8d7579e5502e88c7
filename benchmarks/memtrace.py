"""Memory over time of one conversion, stage by stage: where the peak of an export comes from.

    python benchmarks/memtrace.py NET.prototxt NET.caffemodel OUT [--input-shape 1,3,224,224]
                                  [--json trace.json]

runs ``caffe2keras convert`` in this process (as the CLI does: :func:`caffe2keras.api.convert_one`)
while a thread samples the resident size of the process and of its children every 20 ms, and
marks stages by wrapping the functions that do them (ours and TensorFlow's, Keras', tf2onnx's:
:data:`PROBES`). A converter's C++ code can hold Python's lock for seconds (TFLite's MLIR
conversion does), starving the sampling thread, so at each mark the kernel's high-water mark of
the process (``VmHWM``) is read too and reset (``/proc/self/clear_refs``): the peak between two
marks is exact however long the thread was kept waiting. It prints one row per stage: when it started, how long it ran, the resident
size on entry, the most it reached while it ran (nested stages included) and on exit, all
relative to the process once TensorFlow is imported, so the rows read against the conversion
benchmark's "peak RSS above TensorFlow's own". ``--json`` writes every sample and event.

A probe that is not found (another TensorFlow or tf2onnx version) is skipped, so the table
shows the stages that exist.
"""

import argparse
import functools
import importlib
import json
import os
import threading
import time

from measure import MiB, resident_bytes

INTERVAL_S = 0.02
# (stage, "module:attribute path"): the functions whose calls are the stages.
PROBES = (
    ("parse + read weights", "caffe2keras.api:_check"),
    ("build Keras model", "caffe2keras.translate:build_model"),
    ("describe (metadata)", "caffe2keras.runtime:describe"),
    ("save", "caffe2keras.export:save"),
    ("SavedModel: ExportArchive.track", "keras.src.export.saved_model_export_archive:SavedModelExportArchive.track"),
    ("SavedModel: trace endpoint", "keras.src.export.saved_model_export_archive:SavedModelExportArchive.add_endpoint"),
    ("SavedModel: write", "tensorflow.python.saved_model.save:save_and_return_nodes"),
    ("TFLite: load SavedModel", "tensorflow.lite.python.lite:TFLiteConverterBaseV2._load_saved_model"),
    ("TFLite: MLIR conversion", "tensorflow.lite.python.lite:_convert_saved_model"),
    ("TFLite: deduplicate buffers", "tensorflow.lite.python.lite:_deduplicate_readonly_buffers"),
    ("TFLite: metadata added", "caffe2keras.export_tflite:with_metadata"),
    ("TFLite: metadata added (rebuilt)", "caffe2keras.export:_with_tflite_metadata"),
    ("TFLite: flatbuffer to objects", "tensorflow.lite.tools.flatbuffer_utils:convert_bytearray_to_object"),
    ("TFLite: objects to flatbuffer", "tensorflow.lite.tools.flatbuffer_utils:convert_object_to_bytearray"),
    ("ONNX: tf2onnx", "caffe2keras.export_onnx:_convert"),
    ("ONNX: freeze + grappler", "tf2onnx.tf_loader:from_function"),
    ("ONNX: import graph, convert, optimize", "tf2onnx.convert:_convert_common"),
    ("ONNX: tf2onnx process_tf_graph", "tf2onnx.convert:process_tf_graph"),
    ("ONNX: tf2onnx optimize", "tf2onnx.optimizer:optimize_graph"),
    ("ONNX: tf2onnx make_model", "tf2onnx.graph:Graph.make_model"),
    ("ONNX: initializers folded + written", "caffe2keras.export_onnx:_fold_layout"),
    ("publish", "caffe2keras.export:publish"),
)


def high_water_mark():
    """The peak RSS of this process since the last call (or its start), then reset; None where
    the kernel does not keep it."""
    try:
        with open("/proc/self/status") as f:
            peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except (OSError, StopIteration, ValueError):
        return None
    return peak


class Trace:
    """Samples of (seconds, bytes), events (seconds, "enter"/"exit", stage) and the high-water
    marks between events, from ``start``."""

    def __init__(self):
        self.start = time.perf_counter()
        # peaks: (seconds, the most the process held between the previous mark and this one)
        self.samples, self.events, self.peaks = [], [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def now(self):
        return time.perf_counter() - self.start

    def _sample(self):
        pid = os.getpid()
        while not self._stop.wait(INTERVAL_S):
            self.samples.append((self.now(), resident_bytes(pid)))

    def mark(self, kind, stage):
        """An event, with the peak since the previous mark."""
        peak, now = high_water_mark(), self.now()
        if peak is not None:
            self.peaks.append((now, peak))
        self.samples.append((now, resident_bytes(os.getpid())))
        self.events.append((now, kind, stage))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        peak = high_water_mark()
        if peak is not None:
            self.peaks.append((self.now(), peak))
        self.samples.append((self.now(), resident_bytes(os.getpid())))

    def wrap(self, stage, function):
        @functools.wraps(function)
        def staged(*args, **kwargs):
            self.mark("enter", stage)
            try:
                return function(*args, **kwargs)
            finally:
                self.mark("exit", stage)

        return staged


def install(trace, probes=PROBES):
    """Wrap each probe's function that exists; returns the stages found."""
    found = []
    for stage, spec in probes:
        module_name, path = spec.split(":")
        try:
            owner = importlib.import_module(module_name)
            *parents, name = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent)
            function = getattr(owner, name)
        except (ImportError, AttributeError):
            continue
        setattr(owner, name, trace.wrap(stage, function))
        found.append(stage)
    return found


def table(trace, base):
    """One row per stage call: (stage, depth, start, seconds, entry, peak, exit), sizes in MiB
    above ``base`` bytes."""
    rows, open_calls = [], []
    for t, kind, stage in trace.events:
        if kind == "enter":
            open_calls.append((stage, t))
            continue
        while open_calls and open_calls[-1][0] != stage:
            open_calls.pop()
        if not open_calls:
            continue
        _, t0 = open_calls.pop()
        inside = [rss for ts, rss in trace.samples if t0 <= ts <= t] + [rss for ts, rss in trace.peaks if t0 < ts <= t]
        entry = next((rss for ts, rss in trace.samples if ts >= t0), inside[0] if inside else 0)
        leave = next((rss for ts, rss in reversed(trace.samples) if ts <= t), entry)
        rows.append((stage, len(open_calls), t0, t - t0, (entry - base) / MiB, (max(inside or [entry]) - base) / MiB,
                     (leave - base) / MiB))
    return sorted(rows, key=lambda row: row[2])


def render(rows, imported_s, base, overall_peak):
    lines = [f"TensorFlow imported after {imported_s:.1f} s at {base / MiB:.0f} MiB resident; sizes below are "
             f"above that. Peak of the whole run: +{(overall_peak - base) / MiB:.0f} MiB.", "",
             "| stage | start s | seconds | on entry MiB | peak MiB | on exit MiB |", "|---|---|---|---|---|---|"]
    for stage, depth, t0, seconds, entry, peak, leave in rows:
        indent = "  " * depth + ("↳ " if depth else "")
        lines.append(f"| {indent}{stage} | {t0:.1f} | {seconds:.1f} | {entry:+.0f} | {peak:+.0f} | {leave:+.0f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prototxt")
    parser.add_argument("caffemodel")
    parser.add_argument("output", help="the output path (its ending picks the format, as for convert)")
    parser.add_argument("--input-shape")
    parser.add_argument("--json", help="write every sample and event here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with Trace() as trace:
        trace.mark("enter", "import TensorFlow")
        import tensorflow  # noqa: F401
        import keras  # noqa: F401

        trace.mark("exit", "import TensorFlow")
        imported_s = trace.now()
        base = resident_bytes(os.getpid())
        from caffe2keras import _lazy, api

        _lazy.register_keras_objects()
        install(trace)
        api.convert_one(args.prototxt, args.caffemodel, args.output, input_shapes=args.input_shape, force=True)
    overall = max(rss for _, rss in trace.samples + trace.peaks)
    print(render(table(trace, base), imported_s, base, overall))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"base": base, "samples": trace.samples, "peaks": trace.peaks, "events": trace.events}, f)


if __name__ == "__main__":
    main()
