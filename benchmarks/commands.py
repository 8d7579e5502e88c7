"""The everyday commands: how fast the command line starts, and what the exports cost.

    python benchmarks/run.py --startup                      # the start-up table alone
    python benchmarks/commands.py                           # start-up, then GoogLeNet and VGG16 to every format
    python benchmarks/commands.py --nets vgg16 --formats onnx --no-startup

1. Start-up: ``--help``, ``--version`` and ``inspect`` (GoogLeNet's prototxt, with and without
   its caffemodel) in fresh processes, median wall time of five runs, beside ``python -c pass``
   and ``python -c "import tensorflow"`` (the ``--startup`` part of run.py). No memory: a child's
   peak RSS reads at least the parent's RSS when it forked (Linux keeps the high-water mark
   across ``exec``), which is more than these small commands take.
2. Exports: the CLI writing each net to each format once, wall time and peak RSS above
   TensorFlow's own as a multiple of the caffemodel's size: the conversion part's measurement
   (``conversion.cli_pairs``), one pair, without its converter-alone runs.
"""

import argparse
import json
import sys
from pathlib import Path

import conversion
import measure
import models

FORMATS = ("keras", "h5", "onnx", "tflite")
REPEATS = 5


def startup(work, repeats=REPEATS, guards=None):
    guards = guards or {}
    prototxt, caffemodel = models.prepare(work, "bvlc_googlenet")
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import tensorflow'": [sys.executable, "-c", "import tensorflow"],
        "caffe2keras --help": measure.cli("--help"),
        "caffe2keras --version": measure.cli("--version"),
        "caffe2keras inspect deploy.prototxt": measure.cli("inspect", prototxt),
        "caffe2keras inspect deploy.prototxt w.caffemodel": measure.cli("inspect", prototxt, caffemodel),
    }
    rows = {}
    for name, args in cases.items():
        runs = [measure.run(args, **guards) for _ in range(repeats)]
        failed = next((r for r in runs if not r.ok), None)
        rows[name] = {"seconds": measure.median(r.wall for r in runs), "note": failed.note if failed else ""}
        print(f"  {name:52} {rows[name]['seconds']:6.2f} s {rows[name]['note']}", flush=True)
    return rows


def exports(work, nets, formats, guards=None):
    guards = guards or {}
    tf_rss = conversion.tf_baseline(guards)
    print(f"TensorFlow's own peak RSS: {tf_rss:.0f} MiB", flush=True)
    for name in nets:
        prototxt, caffemodel = models.prepare(work, name)
        size_mib = caffemodel.stat().st_size / measure.MiB
        shape = ["--input-shape", f"1,3,{models.NETS[name][1]},{models.NETS[name][1]}"]
        for fmt in formats:
            result = conversion.cli_pairs(work, name, prototxt, caffemodel, shape, fmt, 1, guards)
            print(f"  {models.LABELS[name]} → {fmt}: {conversion.format_result(fmt, result, size_mib, tf_rss)}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", default="bvlc_googlenet,vgg16")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--no-startup", action="store_true")
    parser.add_argument("--work", type=Path, default=measure.REPO / "build" / "bench")
    parser.add_argument("--json", type=Path, help="also write the start-up table here")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.no_startup:
        rows = startup(args.work)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    exports(args.work, [n for n in args.nets.split(",") if n], [f for f in args.formats.split(",") if f])


if __name__ == "__main__":
    main()
