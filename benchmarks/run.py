"""Conversion speed, memory and inference throughput, side by side, in one run.

    python benchmarks/run.py                      # everything; work files under build/bench
    python benchmarks/run.py --nets vgg16 --no-big --no-throughput

What it does:

1. Writes the full-size caffemodels of ``../shared/fullsize`` (GoogLeNet, ResNet-50, VGG16) with
   their ``synth.py``, and a > 2 GiB synthetic caffemodel (an MLP whose first InnerProduct blob
   alone is past protobuf's 2 GiB limit), streamed to disk without building the message.
2. Measures the floor: ``python -c "import tensorflow"`` plus copying the caffemodel (to the
   end of the import for the in-memory build, to the process's exit for the CLI), and
   TensorFlow's own peak RSS (import + a trivial model run).
3. Converts each net in a fresh process, timed from the parent, peak RSS from ``wait4``: building
   the model in memory (``caffe2keras.api.build``) and the CLI writing ``.h5`` and ``.keras``.
   Each built model is then checked against real Caffe's outputs (``<net>.expected.npz``), the
   big MLP against numpy.
4. Runs converted GoogLeNet (a tf.function of the model call, and the same with XLA,
   ``jit_compile=True``) and OpenCV DNN on the same Caffe files, batch 1 and 8, alternating.

Everything runs on the page cache as it is after writing the files (warm), like the floor's copy.
The > 2 GiB files are deleted at the end unless ``--keep``.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CAFFE2KERAS_SHARED") or REPO.parent / "shared")
FULLSIZE = SHARED / "fullsize"
NETS = {"bvlc_googlenet": 224, "resnet50": 224, "vgg16": 224}

# The > 2 GiB MLP: data (1, BIG_IN) → fc1 (BIG_HIDDEN) → ReLU → fc2 (BIG_OUT).
BIG_IN, BIG_HIDDEN, BIG_OUT, BIG_SEED = 16384, 33000, 16, 1234
BIG_ROWS = 1024  # fc1 rows generated (and written) at a time
BIG_PROTOTXT = f"""name: "big_mlp"
input: "data"
input_shape {{ dim: 1 dim: {BIG_IN} }}
layer {{ name: "fc1" type: "InnerProduct" bottom: "data" top: "fc1" inner_product_param {{ num_output: {BIG_HIDDEN} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "fc1" top: "fc1" }}
layer {{ name: "fc2" type: "InnerProduct" bottom: "fc1" top: "fc2" inner_product_param {{ num_output: {BIG_OUT} }} }}
"""


# ---------------------------------------------------------------- the > 2 GiB caffemodel


def _varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len_field(number, size):
    """The header of a length-delimited field whose ``size`` payload bytes follow separately."""
    return _varint(number << 3 | 2) + _varint(size)


def _string(number, text):
    data = text.encode()
    return _len_field(number, len(data)) + data


def _big_blocks(name, rows, cols):
    """(rows, cols) float32 values of a big blob, block by block of ``BIG_ROWS`` rows: the same
    for the writer and for the numpy reference, never all in memory."""
    import numpy as np

    for r0 in range(0, rows, BIG_ROWS):
        rng = np.random.default_rng([BIG_SEED, sum(map(ord, name)), r0])
        n = min(BIG_ROWS, rows - r0)
        yield r0, (rng.standard_normal((n, cols), dtype=np.float32) / np.float32(np.sqrt(cols)))


def _big_bias(name, n):
    import numpy as np

    return np.random.default_rng([BIG_SEED, sum(map(ord, name)), 10**9]).standard_normal(n).astype(np.float32) * 0.1


def write_big_caffemodel(path):
    """Stream the MLP's caffemodel: each record's header is computed from the sizes, then the
    float data is written block by block."""
    layers = [("fc1", BIG_HIDDEN, BIG_IN), ("fc2", BIG_OUT, BIG_HIDDEN)]
    with open(path, "wb") as f:
        f.write(_string(1, "big_mlp"))  # NetParameter.name
        for name, rows, cols in layers:
            blobs = []
            for shape, nbytes in (((rows, cols), rows * cols * 4), ((rows,), rows * 4)):
                dims = b"".join(_varint(d) for d in shape)
                shape_field = _len_field(7, len(dims) + len(_len_field(1, len(dims)))) + _len_field(1, len(dims)) + dims
                head = shape_field + _len_field(5, nbytes)
                blobs.append((head, nbytes))
            body = _string(1, name) + _string(2, "InnerProduct")  # LayerParameter.name, .type
            blob_fields = [(_len_field(7, len(h) + n), h, n) for h, n in blobs]
            size = len(body) + sum(len(k) + len(h) + n for k, h, n in blob_fields)
            f.write(_len_field(100, size) + body)
            (k0, h0, _), (k1, h1, _) = blob_fields
            f.write(k0 + h0)
            for _, block in _big_blocks(name, rows, cols):
                f.write(block.astype("<f4").tobytes())
            f.write(k1 + h1 + _big_bias(name, rows).astype("<f4").tobytes())


def big_reference(x):
    """The MLP's output computed with numpy from the generator, block by block."""
    import numpy as np

    hidden = np.empty(BIG_HIDDEN, np.float64)
    for r0, block in _big_blocks("fc1", BIG_HIDDEN, BIG_IN):
        hidden[r0 : r0 + len(block)] = block.astype(np.float64) @ x.astype(np.float64)
    hidden = np.maximum(hidden + _big_bias("fc1", BIG_HIDDEN), 0)
    out = np.zeros(BIG_OUT, np.float64)
    for r0, block in _big_blocks("fc2", BIG_OUT, BIG_HIDDEN):
        out[r0 : r0 + len(block)] = block.astype(np.float64) @ hidden
    return out + _big_bias("fc2", BIG_OUT)


# ---------------------------------------------------------------- child processes


def _json_child(args):
    """Run a child that prints a JSON report as its last line; fails loudly on error."""
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"child failed ({proc.returncode}): {' '.join(map(str, args))}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _timed_child(args):
    """Run a child; returns (wall seconds to exit, peak RSS in MiB, CPU seconds, stdout), the
    usage from wait4 on that child alone."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"child failed: {' '.join(map(str, args))}\n{err.read().decode(errors='replace')[-3000:]}")
        return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, out.read().decode()


def _child_baseline():
    import resource

    import keras
    import numpy as np

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.predict(np.zeros((1, 4), np.float32), verbose=0)
    print(json.dumps({"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _child_build(prototxt, caffemodel, shape, check, t0):
    """Build in memory; report the time since the parent started us and the peak RSS, then check
    the outputs (after measuring, so the check costs neither)."""
    import resource

    from caffe2keras import api

    shape = tuple(json.loads(shape))
    conversion = api.build(prototxt, caffemodel, input_shapes={"data": shape})
    done = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {"seconds": done - float(t0), "rss_mib": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}
    report["errors"] = _check_outputs(conversion, check, shape)
    print(json.dumps(report))


def _check_outputs(conversion, check, shape):
    """{what: (max abs error, tolerance)} against real Caffe (zoo nets) or numpy (the big MLP)."""
    import keras
    import numpy as np

    model = conversion.model
    if check == "big":
        x = np.random.default_rng(BIG_SEED).standard_normal(BIG_IN).astype(np.float32)
        got = np.asarray(model(x[None], training=False))[0]
        want = big_reference(x)
        return {"output/fc2": _error(got, want)}
    expected = np.load(FULLSIZE / f"{check}.expected.npz")
    inputs = np.load(check_inputs_path(check))
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


def check_inputs_path(net):
    return WORK / f"{net}_input.npz"


def _child_throughput(prototxt, caffemodel, size, batches, seconds):
    """Converted model (a compiled tf.function call) and OpenCV DNN on the same files,
    alternating so that machine load hits both alike; best of three windows each."""
    import cv2
    import numpy as np
    import tensorflow as tf

    from caffe2keras import api

    size, results = int(size), {}
    for batch in json.loads(batches):
        model = api.build(prototxt, caffemodel, input_shapes={"data": (batch, 3, size, size)}).model
        x = np.random.default_rng(0).standard_normal((batch, size, size, 3)).astype(np.float32)
        xt = tf.constant(x)
        call = tf.function(lambda t: model(t, training=False))
        call_xla = tf.function(lambda t: model(t, training=False), jit_compile=True)
        net = cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
        blob = np.ascontiguousarray(x.transpose(0, 3, 1, 2))

        def run_cv():
            net.setInput(blob)
            return net.forward()

        def run_keras():
            return np.asarray(call(xt))

        def run_xla():
            return np.asarray(call_xla(xt))

        diff = float(np.max(np.abs(run_keras().reshape(batch, -1) - run_cv().reshape(batch, -1))))
        diff_xla = float(np.max(np.abs(run_xla().reshape(batch, -1) - run_cv().reshape(batch, -1))))
        rates = {"keras": [], "opencv": [], "keras_xla": []}
        for _ in range(3):
            for name, fn in (("keras", run_keras), ("opencv", run_cv), ("keras_xla", run_xla)):
                fn()
                n, start = 0, time.perf_counter()
                while time.perf_counter() - start < float(seconds):
                    fn()
                    n += 1
                rates[name].append(n * batch / (time.perf_counter() - start))
        results[batch] = {k: max(v) for k, v in rates.items()} | {"max_diff_vs_opencv": diff, "xla_max_diff_vs_opencv": diff_xla}
    print(json.dumps({"threads": {"tf": tf.config.threading.get_intra_op_parallelism_threads(), "opencv": cv2.getNumThreads()}, "results": results}))


# ---------------------------------------------------------------- the parent


def _python(*args):
    return [sys.executable, *map(str, args)]


def measure_floor(caffemodel, repeats=3):
    """Medians over fresh processes importing TensorFlow: seconds until the import is done (the
    floor of an in-memory build, timed the same way), until the process has exited (the floor of
    a CLI run) and CPU seconds; and of copying the caffemodel (wall, and the kernel's CPU time
    in this process)."""
    imports = []
    for _ in range(repeats):
        code = "import sys, time; import tensorflow; print(time.time() - float(sys.argv[1]))"
        wall, _, cpu, out = _timed_child(_python("-c", code, repr(time.time())))
        imports.append((float(out), wall, cpu))
    copies = []
    target = caffemodel.with_suffix(".copy")
    for _ in range(repeats):
        before = os.times()
        start = time.perf_counter()
        shutil.copyfile(caffemodel, target)
        after = os.times()
        copies.append((time.perf_counter() - start, after.user + after.system - before.user - before.system))
        target.unlink()
    median = statistics.median
    return {
        "tf_import_s": median(i for i, _, _ in imports),
        "tf_process_s": median(w for _, w, _ in imports),
        "copy_s": median(w for w, _ in copies),
        "floor_cpu_s": median(c for _, _, c in imports) + median(c for _, c in copies),
    }


def convert_net(name, prototxt, caffemodel, shape, check, formats):
    row = {"net": name, "size_mib": caffemodel.stat().st_size / 2**20}
    report = _json_child(_python(__file__, "_build", prototxt, caffemodel, json.dumps(shape), check, repr(time.time())))
    row["build_s"], row["build_rss_mib"], row["errors"] = report["seconds"], report["rss_mib"], report["errors"]
    row["build_cpu_s"] = report["cpu_s"]
    for fmt in formats:
        out = WORK / f"{name}.{fmt}"
        # The zoo prototxts declare batch 10; convert them at batch 1 like the in-memory build.
        shape_args = [] if check == "big" else ["--input-shape", ",".join(map(str, shape))]
        wall, rss, cpu, _ = _timed_child(["caffe2keras", "convert", prototxt, caffemodel, "-o", out, "--force", "-q", *shape_args])
        row[f"{fmt}_s"], row[f"{fmt}_rss_mib"], row[f"{fmt}_cpu_s"] = wall, rss, cpu
        out.unlink()
    return row


def main():
    global WORK
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "build" / "bench", help="where the caffemodels are written")
    parser.add_argument("--nets", default=",".join(NETS), help="full-size nets to convert")
    parser.add_argument("--formats", default="h5,keras", help="CLI output formats to time ('' for none)")
    parser.add_argument("--no-big", action="store_true", help="skip the > 2 GiB model")
    parser.add_argument("--no-throughput", action="store_true", help="skip GoogLeNet vs OpenCV")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each throughput window")
    parser.add_argument("--keep", action="store_true", help="keep the > 2 GiB files")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    WORK = args.work
    WORK.mkdir(parents=True, exist_ok=True)
    formats = [f for f in args.formats.split(",") if f]
    nets = [n for n in args.nets.split(",") if n]

    for net in nets:
        if not (WORK / f"{net}.caffemodel").exists():
            print(f"writing {net}.caffemodel …", flush=True)
            subprocess.run(
                _python(FULLSIZE / "synth.py", FULLSIZE / f"{net}.spec.json", WORK / f"{net}.caffemodel", check_inputs_path(net)),
                check=True,
                stdout=subprocess.DEVNULL,
            )
    big = WORK / "big_mlp.caffemodel"
    big_prototxt = WORK / "big_mlp.prototxt"
    if not args.no_big:
        big_prototxt.write_text(BIG_PROTOTXT)
        if not big.exists():
            print("writing big_mlp.caffemodel (> 2 GiB) …", flush=True)
            write_big_caffemodel(big)

    results = {"machine": {"cpus": os.cpu_count()}, "nets": []}
    baseline = _json_child(_python(__file__, "_baseline"))
    results["tf_rss_mib"] = baseline["rss_mib"]
    print(f"TensorFlow's own peak RSS (import + trivial model): {baseline['rss_mib']:.0f} MiB", flush=True)

    jobs = [(n, SHARED / "zoo" / n / "deploy.prototxt", WORK / f"{n}.caffemodel", (1, 3, NETS[n], NETS[n]), n) for n in nets]
    if not args.no_big:
        jobs.append(("big_mlp (> 2 GiB)", big_prototxt, big, (1, BIG_IN), "big"))
    for name, prototxt, caffemodel, shape, check in jobs:
        floor = measure_floor(caffemodel)
        row = convert_net(name, prototxt, caffemodel, shape, check, formats if check != "big" else formats[:1])
        row.update(floor, floor_s=floor["tf_import_s"] + floor["copy_s"], cli_floor_s=floor["tf_process_s"] + floor["copy_s"])
        results["nets"].append(row)
        print(_row_text(row, results["tf_rss_mib"]), flush=True)

    if not args.no_throughput:
        net = "bvlc_googlenet"
        caffemodel = WORK / f"{net}.caffemodel"
        if not caffemodel.exists():
            subprocess.run(_python(FULLSIZE / "synth.py", FULLSIZE / f"{net}.spec.json", caffemodel, check_inputs_path(net)), check=True)
        tp = _json_child(
            _python(__file__, "_throughput", SHARED / "zoo" / net / "deploy.prototxt", caffemodel, 224, "[1, 8]", args.seconds)
        )
        results["throughput"] = tp
        for batch, r in tp["results"].items():
            print(
                f"GoogLeNet batch {batch}: converted {r['keras']:.1f} img/s, OpenCV DNN {r['opencv']:.1f} img/s, "
                f"ratio {r['keras'] / r['opencv']:.2f} (max |diff| {r['max_diff_vs_opencv']:.1e}; threads {tp['threads']}); "
                f"with jit_compile=True {r['keras_xla']:.1f} img/s, ratio {r['keras_xla'] / r['opencv']:.2f} "
                f"(max |diff| {r['xla_max_diff_vs_opencv']:.1e})"
            )

    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if not args.keep and not args.no_big:
        big.unlink()


def _row_text(row, tf_rss):
    size = row["size_mib"]
    parts = [
        f"{row['net']}: {size:.0f} MiB; floor {row['floor_s']:.2f}s (import TF {row['tf_import_s']:.2f} + copy "
        f"{row['copy_s']:.2f}), to exit {row['cli_floor_s']:.2f}s; floor CPU {row['floor_cpu_s']:.2f}s"
    ]
    parts.append(
        f"build {row['build_s']:.2f}s ({row['build_s'] / row['floor_s']:.2f}x floor; CPU {row['build_cpu_s']:.2f}s = "
        f"{row['build_cpu_s'] / row['floor_cpu_s']:.2f}x), peak RSS {row['build_rss_mib']:.0f} MiB "
        f"(+{row['build_rss_mib'] - tf_rss:.0f} over TF = {(row['build_rss_mib'] - tf_rss) / size:.2f}x model)"
    )
    for fmt in ("h5", "keras"):
        if f"{fmt}_s" in row:
            s, rss, cpu = row[f"{fmt}_s"], row[f"{fmt}_rss_mib"], row[f"{fmt}_cpu_s"]
            parts.append(
                f"CLI .{fmt} {s:.2f}s ({s / row['cli_floor_s']:.2f}x; CPU {cpu:.2f}s = {cpu / row['floor_cpu_s']:.2f}x), "
                f"peak RSS +{rss - tf_rss:.0f} MiB ({(rss - tf_rss) / size:.2f}x)"
            )
    worst = max(err / tol for err, tol in row["errors"].values())
    errs = ", ".join(f"{k} {e:.1e} (tol {t:.1e})" for k, (e, t) in row["errors"].items())
    parts.append(f"outputs {'OK' if worst <= 1 else 'WRONG'}: {errs}")
    return "\n  ".join(parts)


WORK = REPO / "build" / "bench"

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        mode, rest = sys.argv[1], sys.argv[2:]
        if mode == "_build":
            WORK = Path(rest[1]).parent
            _child_build(*rest)
        elif mode == "_baseline":
            _child_baseline()
        elif mode == "_throughput":
            _child_throughput(*rest)
    else:
        main()
