"""Make a golden fixture with real Caffe (the oracle that ../shared/oracle/build.sh builds).

    python tools/make_reference.py NET.prototxt OUT_DIR [--weights W.caffemodel] [--seed 71]
        [--randomize] [--inputs inputs.npz] [--name NAME] [--outputs-only]

OUT_DIR receives the golden layout (fixtures/golden/README.md): ``deploy.prototxt`` (the text as
given), ``weights.caffemodel`` (the given one copied, or the one Caffe ran with: its fillers'
values, or seeded random values with ``--randomize``), ``expected.npz`` (``input/<blob>`` and
``layer/<layer>/<top>`` for every top right after its layer ran, ``output/<blob>`` for each
network output's final value) and ``meta.json`` (layers in execution order with statistics of
every top). With ``--outputs-only`` expected.npz keeps the inputs and the network outputs, and
every other top is checked through the samples in meta.json (the zoo replicas' layout), for nets
whose tops would weigh megabytes. Every value comes from real Caffe; nothing here computes an
expected value itself.
"""

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import caffe_oracle  # noqa: E402

GENERATOR = "real Caffe (brocolli-caffe 9.0.2: BVLC + SSD fork, CPU build, pycaffe), float32, via tools/make_reference.py"


def make(prototxt, out_dir, weights=None, seed=71, randomize=False, inputs=None, name=None, outputs_only=False):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = Path(prototxt).read_text()
    (out_dir / "deploy.prototxt").write_text(text)
    target = out_dir / "weights.caffemodel"
    if weights is not None and Path(weights).resolve() != target.resolve():
        shutil.copyfile(weights, target)
    job = caffe_oracle.Job(
        prototxt=text,
        weights=str(target) if weights is not None else None,
        inputs=inputs,
        seed=seed,
        randomize=randomize,
        save_weights=None if weights is not None else str(target),
        every_layer=True,
        stats=True,
    )
    result = caffe_oracle.run_one(job)
    # output/<blob> too: a blob's final value may differ from what its layer wrote, when a later
    # in-place layer wrote memory the blob shares (Split tops, Reshape views).
    arrays = result.arrays
    if outputs_only:
        last = {top: f"layer/{layer['name']}/{top}" for layer in result.layers for top in layer["tops"]}
        kept = {last[blob] for blob in result.outputs}
        arrays = {k: v for k, v in arrays.items() if k.startswith(("input/", "output/")) or k in kept}
    np.savez_compressed(out_dir / "expected.npz", **arrays)
    meta = {
        "network": name or out_dir.name,
        "generator": GENERATOR,
        "seed": seed,
        "inputs": {b: list(result.arrays["input/" + b].shape) for b in result.inputs},
        "outputs": sorted(result.outputs),
        "layers": result.layers,
        "weights_sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "full_tensors": "outputs only" if outputs_only else "every layer top",
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prototxt")
    parser.add_argument("out_dir")
    parser.add_argument("--weights", help="a caffemodel to run with (default: Caffe's fillers)")
    parser.add_argument("--seed", type=int, default=71)
    parser.add_argument("--randomize", action="store_true",
                        help="seeded random values for every learned blob (valid BatchNorm statistics)")
    parser.add_argument("--inputs", help="an .npz with one NCHW array per input blob (default: seeded N(0,1))")
    parser.add_argument("--name", help="the network's name in meta.json (default: OUT_DIR's name)")
    parser.add_argument("--outputs-only", action="store_true",
                        help="keep only inputs and outputs in expected.npz (other tops: samples in meta.json)")
    args = parser.parse_args(argv)
    if caffe_oracle.interpreter() is None:
        parser.exit(2, f"error: {caffe_oracle.missing_reason()}\n")
    inputs = dict(np.load(args.inputs)) if args.inputs else None
    try:
        meta = make(args.prototxt, args.out_dir, weights=args.weights, seed=args.seed,
                    randomize=args.randomize, inputs=inputs, name=args.name, outputs_only=args.outputs_only)
    except caffe_oracle.OracleError as err:
        parser.exit(2, f"error: Caffe refused {args.prototxt}: {err}\n")
    print(f"{args.out_dir}: {len(meta['layers'])} layers, outputs {', '.join(meta['outputs'])}")


if __name__ == "__main__":
    main()
