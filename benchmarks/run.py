"""Speed and memory of caffe2keras, every target of issue 12 side by side, in one command.

    python benchmarks/run.py --all                    # everything (hours on a busy 2-core machine)
    python benchmarks/run.py --conversion --nets vgg16 --formats h5,keras
    python benchmarks/run.py --inference --profile
    python benchmarks/run.py --scaling --layers 1000,10000 --no-big
    python benchmarks/run.py --batch --jobs 1,2
    python benchmarks/run.py --all --quick            # the same targets, smaller: about an hour

Parts (each a module of this directory; their docstrings say exactly what is timed):

    --conversion   conversion.py  VGG16, ResNet-50, GoogLeNet to .h5/.keras/SavedModel/.tflite/.onnx
                                  against the floor (import TensorFlow + copy the caffemodel once)
    --inference    inference.py   GoogLeNet, ResNet-50, MobileNet v1, MobileNet-SSD, batch 1 and 8,
                                  every way of calling the model and the exports, against OpenCV's DNN
    --profile      hotspots.py    per-layer times beside OpenCV's, cProfile of predict and model(x)
    --scaling      growth.py      chains of 1k/10k/50k layers, and a > 2 GiB caffemodel
    --batch        zoo_batch.py   `caffe2keras batch` over the golden zoo, 1 job against N
    --startup      commands.py    start-up of --help, --version, inspect beside importing TensorFlow

(``scaling.py`` is another benchmark, run alone: the graph stage against the number of tops,
outputs and bottoms. ``memtrace.py`` profiles one conversion's memory stage by stage.)

Every measurement is a fresh child process, under a memory limit (``--mem-gib``) and a time
limit, so a conversion that blows up is reported as "killed at X GiB" (``measure.py``). Inputs
are written under ``--work`` (build/bench, gitignored) and reused. The run ends with a Markdown
report (the "Latest run" of benchmarks/README.md) printed and written to ``<work>/latest.md``,
and every number in ``<work>/results.json``.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import commands
import conversion
import hotspots
import inference
import measure
import report
import growth
import zoo_batch

# --quick: one pair per conversion, shorter inference windows, chains up to 10,000 layers.
QUICK = {"repeats": 1, "rounds": 3, "window": 0.5, "layers": [1000, 10000], "batch_rounds": 2}
PARTS = ("conversion", "inference", "profile", "scaling", "batch", "startup")


def _list(text, kind=str):
    return [kind(v) for v in text.split(",") if v]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--all", action="store_true", help="every part (also the default with no part named)")
    for part in PARTS:
        parser.add_argument(f"--{part}", action="store_true", help=f"the {part} part")
    parser.add_argument("--work", type=Path, default=measure.REPO / "build" / "bench", help="where inputs and outputs go")
    parser.add_argument("--nets", type=_list, default=list(conversion.NETS), help="conversion: full-size nets")
    parser.add_argument("--formats", type=_list, default=list(conversion.FORMATS), help="conversion: output formats")
    parser.add_argument("--repeats", type=int, default=3, help="pairs (floor, conversion) per measurement")
    parser.add_argument("--inference-nets", type=_list, default=list(inference.NETS))
    parser.add_argument("--batches", type=lambda t: _list(t, int), default=[1, 8], help="inference and profile batch sizes")
    parser.add_argument("--rounds", type=int, default=5, help="inference: rounds of paired windows")
    parser.add_argument("--window", type=float, default=1.0, help="inference: seconds per method and round")
    parser.add_argument("--threads", type=int, default=2, help="threads of every runtime")
    parser.add_argument("--profile-nets", type=_list, default=list(hotspots.NETS))
    parser.add_argument("--layers", type=lambda t: _list(t, int), default=list(growth.LAYERS), help="scaling: chain lengths")
    parser.add_argument("--no-big", action="store_true", help="scaling: skip the > 2 GiB model")
    parser.add_argument("--keep", action="store_true", help="keep the > 2 GiB caffemodel for the next run")
    parser.add_argument("--jobs", type=lambda t: _list(t, int), default=list(zoo_batch.JOBS), help="batch: job counts")
    parser.add_argument("--batch-rounds", type=int, default=3, help="batch: rounds of the job counts, order rotated")
    parser.add_argument("--mem-gib", type=float, default=measure.MEM_GIB, help="memory limit of each measured process")
    parser.add_argument("--timeout", type=float, default=measure.TIMEOUT_S, help="time limit of each measured process")
    parser.add_argument("--json", type=Path, help="results JSON (default <work>/results.json)")
    parser.add_argument("--quick", action="store_true", help=f"smaller: {QUICK} (options given override it)")
    args = parser.parse_args(argv)
    if args.quick:
        given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in (argv if argv is not None else sys.argv[1:])}
        for name, value in QUICK.items():
            if name not in given:
                setattr(args, name, value)
    chosen = [p for p in PARTS if getattr(args, p)]
    args.parts = list(PARTS) if args.all or not chosen else chosen
    return args


def _git(*args):
    done = subprocess.run(["git", "-C", str(measure.REPO), *args], capture_output=True, text=True)
    return done.stdout.strip()


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    guards = {"mem_gib": args.mem_gib, "timeout": args.timeout}
    where = subprocess.run([sys.executable, "-c", "import caffe2keras, os; print(os.path.dirname(caffe2keras.__file__))"],
                           capture_output=True, text=True).stdout.strip()
    dirty = " (uncommitted changes)" if _git("status", "--porcelain", "--untracked-files=no") else ""
    results = {"meta": {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "commit": _git("rev-parse", "--short", "HEAD") + dirty,
        "caffe2keras": where,
        "machine": f"{os.cpu_count()} cores, {os.sysconf('SC_PHYS_PAGES') * measure.PAGE / measure.GiB:.0f} GiB",
        "load_start": measure.load_text(measure.load()),
        "versions": _versions(),
        "durations_s": {},
        "guards": guards,
    }}
    print(f"caffe2keras from {where}; {results['meta']['load_start']}; parts: {', '.join(args.parts)}", flush=True)
    runs = {
        "conversion": lambda: conversion.run(work, args.nets, args.formats, args.repeats, guards),
        "inference": lambda: inference.run(work, args.inference_nets, args.batches, args.rounds, args.window, args.threads, guards),
        "profile": lambda: hotspots.run(work, args.profile_nets, args.batches, threads=args.threads, guards=guards),
        "scaling": lambda: growth.run(work, args.layers, "h5", not args.no_big, args.repeats, args.keep, guards),
        "batch": lambda: zoo_batch.run(work, args.jobs, guards=guards, rounds=args.batch_rounds),
        "startup": lambda: commands.startup(work, guards=guards),
    }
    out = args.json or work / "results.json"
    for part in args.parts:
        print(f"\n== {part} ({measure.load_text(measure.load())})", flush=True)
        start = time.perf_counter()
        results["hotspots" if part == "profile" else part] = runs[part]()
        results["meta"]["durations_s"][part] = time.perf_counter() - start
        print(f"== {part}: {results['meta']['durations_s'][part] / 60:.1f} min", flush=True)
        out.write_text(json.dumps(results, indent=1))  # what is done survives a later part's failure
    results["meta"]["load_end"] = measure.load_text(measure.load())
    out.write_text(json.dumps(results, indent=1))
    text = report.markdown(results)
    (work / "latest.md").write_text(text)
    print("\n" + text)
    print(f"results: {out}; report: {work / 'latest.md'}")


def _versions():
    code = ("import importlib.metadata as m\n"
            "for p in ('tensorflow', 'keras', 'opencv-python-headless', 'onnxruntime', 'tf2onnx'):\n"
            "    try: print(p, m.version(p))\n"
            "    except m.PackageNotFoundError: pass\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return ", ".join(done.stdout.strip().splitlines())


if __name__ == "__main__":
    main()
