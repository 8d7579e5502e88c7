"""``python -m tests.differential --n 200 --seed 1``: generate N nets, run each through real Caffe
and the converter, print one summary line (and every failure)."""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .generate import Generator  # noqa: E402
from .run import oracle_available, run_many, save_failure  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.differential", description=__doc__)
    parser.add_argument("--n", type=int, default=100, help="how many nets (default 100)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=int, default=0, help="index of the first net")
    parser.add_argument("--max-layers", type=int, default=14)
    parser.add_argument("--save", metavar="DIR", help="write each failing net to DIR/<net>/")
    parser.add_argument("--shrink", metavar="DIR",
                        help="shrink each mismatch and write it as a golden fixture under DIR/<name>/")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per net")
    args = parser.parse_args(argv)
    from .run import caffe_oracle

    if not oracle_available():
        parser.exit(2, f"error: {caffe_oracle.missing_reason()}\n")

    def report(outcome):
        if outcome.status != "ok" or args.verbose:
            print(f"{outcome.net.name}: {outcome.status} {outcome.layer_type or ''} {outcome.detail}".rstrip(),
                  flush=True)
        for note in outcome.notes:
            print(f"{outcome.net.name}: generator: {note}", flush=True)
        if outcome.status != "ok" and args.save:
            save_failure(outcome, args.save)

    generator = Generator(args.seed, max_layers=args.max_layers)
    tally = run_many(generator, args.n, start=args.start, report=report)
    if args.shrink:
        from .shrink import shrink_and_save

        for outcome in tally.failures:
            if outcome.status in ("mismatch", "converter_refused"):
                where = shrink_and_save(outcome, args.shrink)
                print(f"{outcome.net.name}: shrunk to {where}", flush=True)
    print(f"largest error among passing nets: {tally.worst or 'none'}")
    print(tally.line())
    return 0 if not any(o.status in ("mismatch", "converter_refused", "caffe_refused") for o in tally.failures) else 1


if __name__ == "__main__":
    sys.exit(main())
