"""Make a solver fixture with real Caffe: a few iterations of Caffe's solver on fixed batches.

    python tools/make_solver_reference.py CASE_DIR [--steps 5] [--seed 7]

CASE_DIR holds ``train_val.prototxt`` and ``solver.prototxt`` (written by hand; the solver's
``net`` field is ignored). It receives ``init.caffemodel`` (the seeded random blobs Caffe started
from), ``expected.npz`` (the batches, the probe batch, every learned blob and every probe-net
blob after each iteration, the loss of each iteration; see tools/caffe_oracle/solver_side.py)
and ``meta.json``. Every value comes from real Caffe; nothing here computes one itself.
"""

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import caffe_oracle  # noqa: E402
from make_reference import GENERATOR  # noqa: E402


def make(case_dir, steps=5, seed=7):
    case_dir = Path(case_dir)
    init = case_dir / "init.caffemodel"
    job = caffe_oracle.SolveJob(
        solver=(case_dir / "solver.prototxt").read_text(),
        net=(case_dir / "train_val.prototxt").read_text(),
        steps=steps,
        save_weights=str(init),
        seed=seed,
    )
    arrays, meta = caffe_oracle.solve(job)
    np.savez_compressed(case_dir / "expected.npz", **arrays)
    meta.update({
        "case": case_dir.name,
        "generator": GENERATOR.replace("make_reference.py", "make_solver_reference.py (caffe.get_solver, step(1))"),
        "seed": seed,
        "init_sha256": hashlib.sha256(init.read_bytes()).hexdigest(),
    })
    (case_dir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case_dirs", nargs="+", metavar="CASE_DIR")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if caffe_oracle.interpreter() is None:
        parser.exit(2, f"error: {caffe_oracle.missing_reason()}\n")
    for case_dir in args.case_dirs:
        try:
            meta = make(case_dir, steps=args.steps, seed=args.seed)
        except caffe_oracle.OracleError as err:
            parser.exit(2, f"error: Caffe refused {case_dir}: {err}\n")
        print(f"{case_dir}: {meta['steps']} iterations, iter_size {meta['iter_size']}, "
              f"{sum(meta['params'].values())} learned blobs")


if __name__ == "__main__":
    main()
