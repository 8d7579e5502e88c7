#!/usr/bin/env python
"""Regenerate ``converter/caffe_pb2.py`` from ``proto/caffe.proto``.

    python tools/gen_proto.py           # rewrite converter/caffe_pb2.py
    python tools/gen_proto.py --check   # regenerate into a temp dir; exit 1 if the committed
                                        # file differs (stale, or made by another protoc)

Runs exactly ``python -m grpc_tools.protoc -Iproto --python_out=converter proto/caffe.proto``
from the repository root (``pip install grpcio-tools``). The output depends on the protoc that
grpcio-tools bundles: the generated module records it ("Protobuf Python Version") and refuses to
import under an older protobuf runtime, so regenerate with the pinned grpcio-tools (1.85, protoc
Python 7.35.1) unless the runtime requirement is raised at the same time.
"""

from __future__ import annotations

import argparse
import difflib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = "proto"
PROTO = "proto/caffe.proto"
OUT_DIR = "converter"
MODULE = ROOT / OUT_DIR / "caffe_pb2.py"

_VERSION_RE = re.compile(rb"^# Protobuf Python Version: (\S+)$", re.M)


def run_protoc(out_dir: Path | str) -> None:
    """Compile proto/caffe.proto into ``out_dir``/caffe_pb2.py (``out_dir`` absolute or root-relative)."""
    try:
        import grpc_tools  # noqa: F401
    except ImportError:
        sys.exit("gen_proto: grpcio-tools is not installed (pip install grpcio-tools)")
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={out_dir}", PROTO]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        sys.exit(f"gen_proto: protoc failed (exit {result.returncode}): {' '.join(cmd)}")


def protoc_version(source: bytes) -> str | None:
    """The protoc version a generated ``*_pb2.py`` records, if any."""
    match = _VERSION_RE.search(source)
    return match.group(1).decode() if match else None


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        run_protoc(Path(tmp).resolve())
        fresh = (Path(tmp) / "caffe_pb2.py").read_bytes()
    if not MODULE.exists():
        print(f"gen_proto --check: {MODULE.relative_to(ROOT)} is missing; run python tools/gen_proto.py")
        return 1
    committed = MODULE.read_bytes()
    if committed == fresh:
        print(f"gen_proto --check: {MODULE.relative_to(ROOT)} is up to date")
        return 0
    print(f"gen_proto --check: {MODULE.relative_to(ROOT)} differs from a fresh regeneration of {PROTO}")
    old_v, new_v = protoc_version(committed), protoc_version(fresh)
    if old_v != new_v:
        print(f"  (committed file made by protoc Python {old_v}, this grpcio-tools bundles {new_v})")
    diff = difflib.unified_diff(
        committed.decode(errors="replace").splitlines(),
        fresh.decode(errors="replace").splitlines(),
        "committed",
        "regenerated",
        lineterm="",
        n=0,
    )
    for i, line in enumerate(diff):
        if i >= 20:
            print("  ...")
            break
        print("  " + line[:200])
    print("run: python tools/gen_proto.py")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the committed module is fresh")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    run_protoc(OUT_DIR)
    print(f"gen_proto: wrote {MODULE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
