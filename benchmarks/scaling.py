"""How conversion time grows with the number of tops, outputs and bottoms (issue 14, item 6).

    python benchmarks/scaling.py                       # the default sizes, one table
    python benchmarks/scaling.py --case slice --sizes 1000,10000,100000

Each case is a generated prototxt whose size is N:

- ``slice``: one Slice of an (1, N, 1, 1) input into N tops, every top a network output;
- ``outputs``: N Power layers reading the input, each top a network output named unlike its
  layer (so each output is a layer of its own);
- ``concat``: one Concat of the input given N times as its bottoms;
- ``silence``: N Power layers reading the input, one Silence reading their N tops (which become
  the network's outputs);
- ``chain``: N Power layers one after the other (a deep net).

For each, in this process (TensorFlow imported once): the graph stage (parse, SSA wiring, shapes;
CPU time) and the Keras build (``api.build``, the graph stage included; wall and CPU time — on a
shared machine CPU time is the steadier figure). Work linear in N shows as a constant time per N
across the sizes.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CASES = ("slice", "outputs", "concat", "silence", "chain")
DEFAULT_SIZES = {"slice": (1000, 4000, 16000), "outputs": (500, 2000, 8000),
                 "concat": (1000, 4000, 16000), "silence": (500, 2000, 8000), "chain": (500, 2000, 8000)}
INPUT = 'name: "scaling"\ninput: "data"\ninput_shape {{ dim: 1 dim: {c} dim: 1 dim: 1 }}\n'


def prototxt(case, n):
    if case == "slice":
        tops = "".join(f' top: "t{i}"' for i in range(n))
        return INPUT.format(c=n) + f'layer {{ name: "slice" type: "Slice" bottom: "data"{tops} }}\n'
    if case == "outputs":
        return INPUT.format(c=1) + "".join(
            f'layer {{ name: "l{i}" type: "Power" bottom: "data" top: "o{i}" }}\n' for i in range(n))
    if case == "silence":
        powers = "".join(f'layer {{ name: "p{i}" type: "Power" bottom: "data" top: "p{i}" }}\n' for i in range(n))
        bottoms = "".join(f' bottom: "p{i}"' for i in range(n))
        return INPUT.format(c=1) + powers + f'layer {{ name: "silence" type: "Silence"{bottoms} }}\n'
    if case == "concat":
        bottoms = ' bottom: "data"' * n
        return INPUT.format(c=1) + f'layer {{ name: "cat" type: "Concat"{bottoms} top: "cat" }}\n'
    layers = []
    for i in range(n):
        bottom = "data" if i == 0 else f"p{i - 1}"
        layers.append(f'layer {{ name: "p{i}" type: "Power" bottom: "{bottom}" top: "p{i}" }}\n')
    return INPUT.format(c=1) + "".join(layers)


def measure(case, n, folder):
    from caffe2keras import api

    path = Path(folder) / f"{case}_{n}.prototxt"
    path.write_text(prototxt(case, n))
    t0, c0 = time.perf_counter(), time.process_time()
    api.check(str(path))
    t1, c1 = time.perf_counter(), time.process_time()
    conversion = api.build(str(path))
    t2, c2 = time.perf_counter(), time.process_time()
    import keras

    outputs = len(conversion.model.outputs)
    del conversion
    keras.backend.clear_session()
    return c1 - c0, t2 - t1, c2 - c1, outputs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=CASES, action="append", help="cases to run (default: all)")
    parser.add_argument("--sizes", help="comma-separated N, for every case given")
    args = parser.parse_args(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))
    import caffe2keras  # noqa: F401  (TensorFlow imported before timing)

    print(f"{'case':8} {'N':>7} {'graph cpu s':>11} {'µs/N':>6} {'build s':>9} {'cpu s':>9} {'µs/N':>6} {'outputs':>8}")
    with tempfile.TemporaryDirectory() as folder:
        for case in args.case or CASES:
            sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else DEFAULT_SIZES[case]
            for n in sizes:
                graph_cpu, build_s, build_cpu, outputs = measure(case, n, folder)
                print(f"{case:8} {n:>7} {graph_cpu:>11.2f} {graph_cpu / n * 1e6:>6.0f} {build_s:>9.2f} "
                      f"{build_cpu:>9.2f} {build_cpu / n * 1e6:>6.0f} {outputs:>8}", flush=True)


if __name__ == "__main__":
    main()
