"""How conversion time grows with depth: chains of N layers, built, saved and loaded.

    python benchmarks/depth.py                       # 1k, 10k, 50k layers
    python benchmarks/depth.py --layers 1000 5000 --no-load

Each depth runs in a fresh process (TensorFlow imported before timing starts): ``api.build`` of
a chain of ReLUs between two InnerProducts (a caffemodel for them), then ``export.save`` to .h5
and to .keras, then (unless ``--no-load``) loading each file back. Printed as a table with the
time per layer, which stays flat when a stage is linear in N.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
import caffe2keras
from caffe2keras import api, export
from caffe2keras.predict import load_model
from test_depth import chain, weights

layers, work, load = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[4] == "1"
prototxt, caffemodel = chain(work, layers), weights(work, layers)
times = {}
start = time.perf_counter()
model = api.build(str(prototxt), str(caffemodel)).model
times["build"] = time.perf_counter() - start
for suffix in (".h5", ".keras"):
    start = time.perf_counter()
    export.save(model, work / f"chain{suffix}")
    times[f"save {suffix}"] = time.perf_counter() - start
if load:
    for suffix in (".h5", ".keras"):
        start = time.perf_counter()
        load_model(work / f"chain{suffix}")
        times[f"load {suffix}"] = time.perf_counter() - start
print(json.dumps(times))
"""


def measure(layers, load):
    with tempfile.TemporaryDirectory(prefix="c2k-depth-") as work:
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(layers), work, str(REPO / "tests"), "1" if load else "0"],
            capture_output=True, text=True, check=False,
        )
    if result.returncode:
        raise SystemExit(f"{layers} layers failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--no-load", action="store_true", help="skip loading the files back")
    args = parser.parse_args()
    rows = []
    for layers in args.layers:
        times = measure(layers, not args.no_load)
        rows.append((layers, times))
        print(f"{layers} layers: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()), file=sys.stderr)
    stages = list(rows[0][1])
    print("| layers | " + " | ".join(stages) + " |")
    print("|---" * (len(stages) + 1) + "|")
    for layers, times in rows:
        cells = [f"{times[s]:.1f} s ({1000 * times[s] / layers:.2f} ms/layer)" for s in stages]
        print(f"| {layers:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
