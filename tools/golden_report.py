"""Print, for every golden network, the largest error of any compared tensor against real Caffe:
absolute, and relative (max|Δ| / max(1, max|caffe|) of the tensor), then how the nets' relative
errors are distributed.

    python tools/golden_report.py [GOLDEN_DIR ...]

Defaults to fixtures/golden and the shared golden folder. Uses the tests' own comparison
(tests/helpers.check_golden), so the numbers are the ones the suite asserts on.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from helpers import build, check_golden  # noqa: E402


def nets(base):
    for d in sorted(base.iterdir()):
        if (d / "expected.npz").exists():
            yield d
        elif d.is_dir():
            yield from nets(d)


def main(argv):
    bases = [Path(a) for a in argv] or [ROOT / "fixtures" / "golden", ROOT.parent / "shared" / "golden"]
    seen = set()
    print(f"{'network':32s} {'tensors':>7s} {'max |Δ|':>10s} {'max rel':>10s}  status")
    worst = []
    for base in bases:
        if not base.exists():
            continue
        for d in nets(base):
            name = str(d.relative_to(base))
            if name in seen:
                continue
            seen.add(name)
            proto = "train_val_phase.prototxt" if (d / "train_val_phase.prototxt").exists() else "deploy.prototxt"
            try:
                # At the shapes Caffe ran: the any-size fixtures run one prototxt at several sizes.
                feeds = np.load(d / "expected.npz")
                shapes = {k[len("input/"):]: feeds[k].shape for k in feeds.files if k.startswith("input/")}
                conversion = build(d / proto, d / "weights.caffemodel", input_shapes=shapes)
                errors = check_golden(d, prototxt_name=proto, conversion=conversion)
                rel = max(check_golden(d, prototxt_name=proto, conversion=conversion, relative=True).values())
                worst.append(rel)
                print(f"{name:32s} {len(errors):7d} {max(errors.values()):10.3g} {rel:10.3g}  ok")
            except AssertionError as err:
                print(f"{name:32s} {'':7s} {'':10s}  FAIL {str(err).splitlines()[0][:80]}")
            except Exception as err:  # report and go on: this is a report, not a test
                print(f"{name:32s} {'':7s} {'':10s}  ERROR {type(err).__name__}: {str(err)[:80]}")
    if worst:
        bounds = [1e-7, 1e-6, 1e-5, 1e-4, 1e-3]
        counts = [sum(1 for w in worst if w <= b) for b in bounds]
        print(f"{len(worst)} nets, largest relative error per net: "
              + ", ".join(f"<= {b:.0e}: {c}" for b, c in zip(bounds, counts)) + f"; max {max(worst):.3g}")


if __name__ == "__main__":
    main(sys.argv[1:])
