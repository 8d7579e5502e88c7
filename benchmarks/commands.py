"""The everyday commands: how fast the command line starts, how much memory the exports take.

    python benchmarks/commands.py                         # GoogLeNet and VGG16, every format
    python benchmarks/commands.py --nets vgg16 --formats onnx

1. Start-up: ``--help``, ``--version`` and ``inspect`` (GoogLeNet's prototxt, with and without
   its caffemodel) in fresh processes, median wall time and peak RSS of five runs, beside
   ``python -c pass`` and ``python -c "import tensorflow"``.
2. Exports: ``python -m caffe2keras PROTOTXT CAFFEMODEL -o net.FORMAT`` for each net and format,
   wall time and peak RSS (``wait4``), the RSS above TensorFlow's own also as a multiple of the
   caffemodel's size. The caffemodels are the full-size ones ``run.py`` writes (under
   build/bench), written here too when missing.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the full-size caffemodels and the timed child of the main benchmark)

REPO = run.REPO
CLI = [sys.executable, "-m", "caffe2keras"]
FORMATS = ("keras", "h5", "onnx", "tflite")


def startup(repeats=5):
    net = run.SHARED / "zoo" / "bvlc_googlenet" / "deploy.prototxt"
    caffemodel = run.WORK / "bvlc_googlenet.caffemodel"
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import tensorflow'": [sys.executable, "-c", "import tensorflow"],
        "caffe2keras --help": [*CLI, "--help"],
        "caffe2keras --version": [*CLI, "--version"],
        "caffe2keras inspect deploy.prototxt": [*CLI, "inspect", str(net)],
        "caffe2keras inspect deploy.prototxt w.caffemodel": [*CLI, "inspect", str(net), str(caffemodel)],
    }
    rows = {}
    for name, args in cases.items():
        runs = [run._timed_child(args) for _ in range(repeats)]
        rows[name] = {"seconds": statistics.median(r[0] for r in runs), "rss_mib": statistics.median(r[1] for r in runs)}
        print(f"{name:52} {rows[name]['seconds']:6.2f} s  {rows[name]['rss_mib']:6.0f} MiB", flush=True)
    return rows


def exports(nets, formats, tf_rss):
    rows = []
    for net in nets:
        caffemodel = run.WORK / f"{net}.caffemodel"
        size = caffemodel.stat().st_size / 2**20
        prototxt = run.SHARED / "zoo" / net / "deploy.prototxt"
        for fmt in formats:
            out = run.WORK / f"{net}.{fmt}"
            args = [*CLI, str(prototxt), str(caffemodel), "-o", str(out), "--force", "-q",
                    "--input-shape", f"1,3,{run.NETS[net]},{run.NETS[net]}"]
            wall, rss, _, _ = run._timed_child(args)
            out.unlink()
            row = {"net": net, "size_mib": size, "format": fmt, "seconds": wall, "rss_mib": rss,
                   "above_tf_mib": rss - tf_rss, "times_size": (rss - tf_rss) / size}
            rows.append(row)
            print(f"{net:16} {size:5.0f} MiB  .{fmt:7} {wall:6.1f} s  peak RSS {rss:6.0f} MiB  "
                  f"(+{rss - tf_rss:.0f} over TensorFlow = {(rss - tf_rss) / size:.2f}x the caffemodel)", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", default="bvlc_googlenet,vgg16")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--no-startup", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    run.WORK.mkdir(parents=True, exist_ok=True)
    nets = [n for n in args.nets.split(",") if n]
    for net in {*nets, "bvlc_googlenet"}:
        if not (run.WORK / f"{net}.caffemodel").exists():
            subprocess.run(run._python(run.FULLSIZE / "synth.py", run.FULLSIZE / f"{net}.spec.json",
                                       run.WORK / f"{net}.caffemodel", run.check_inputs_path(net)),
                           check=True, stdout=subprocess.DEVNULL)
    results = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if not args.no_startup:
        results["startup"] = startup()
    results["tf_rss_mib"] = run._json_child(run._python(run.__file__, "_baseline"))["rss_mib"]
    print(f"TensorFlow's own peak RSS: {results['tf_rss_mib']:.0f} MiB", flush=True)
    results["exports"] = exports(nets, [f for f in args.formats.split(",") if f], results["tf_rss_mib"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
