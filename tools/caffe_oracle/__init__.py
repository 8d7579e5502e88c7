"""Real Caffe as an oracle: run nets through the Caffe that ``../shared/oracle/build.sh`` builds.

That Caffe lives in its own interpreter (Debian's Python, numpy 1.x); it must never share a
process with TensorFlow. :func:`forward` writes a job file, runs ``caffe_side.py`` in the
oracle's interpreter and reads back ``.npz`` results; :func:`solve` does the same with
``solver_side.py``, running Caffe's solver for a few iterations. Where the oracle is (first found wins):
``$CAFFE_ORACLE_DIR/run_caffe.sh``, ``~/.cache/caffe-oracle/run_caffe.sh``.

Where this Caffe differs from the Caffe a prototxt was written for, :func:`for_this_caffe`
rewrites the text (``round_mode``, PriorBox's ``clip`` default, Axpy). Its PriorBox reads
``min_size``/``max_size`` into ints as SSD's own (weiliu89/caffe, prior_box_layer.cpp:
``int min_size_ = min_sizes_[s];``) does; OpenCV keeps the fraction, so there OpenCV is no
reference (``min_size: 51.2``: boxes ~7e-4 apart).
"""

import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CAFFE_SIDE = HERE / "caffe_side.py"
SOLVER_SIDE = HERE / "solver_side.py"
BUILD_SCRIPT = "../shared/oracle/build.sh"


class OracleError(RuntimeError):
    """Caffe refused or crashed on a net (the message is Caffe's own last words)."""


def interpreter():
    """The path of ``run_caffe.sh``, or None when no oracle is built."""
    candidates = []
    if os.environ.get("CAFFE_ORACLE_DIR"):
        candidates.append(Path(os.environ["CAFFE_ORACLE_DIR"]) / "run_caffe.sh")
    candidates.append(Path.home() / ".cache" / "caffe-oracle" / "run_caffe.sh")
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def missing_reason():
    return (f"no Caffe oracle built (run `bash {BUILD_SCRIPT}`, ~5 min, or set CAFFE_ORACLE_DIR "
            "to a directory holding run_caffe.sh)")


# This Caffe keeps the fork's `ceil_mode: bool` in Pooling's field 13 where BVLC master has
# `round_mode` (enum CEIL = 0, FLOOR = 1): the same behaviour under another name.
_ROUND_MODE = re.compile(r"\bround_mode\s*:\s*(CEIL|FLOOR|0|1)\b")


# This Caffe's PriorBox `clip` defaults to true; SSD's (weiliu89/caffe) defaults to false, which is
# what SSD prototxts rely on: spell the default out where a PriorBox leaves it unset.
_PRIOR_BOX = re.compile(r"\bprior_box_param\s*\{([^{}]*)\}")


def _clip_default(match):
    if re.search(r"\bclip\s*:", match.group(1)):
        return match.group(0)
    return "prior_box_param { clip: false" + match.group(1) + "}"


# SENet's Axpy (top = a * x + y, a of shape (N, C, 1, 1)) is not in this Caffe. It is spelled with
# layers it has: Flatten(a) to (N, C), Scale(x, a) over axis 0, Eltwise SUM with y; the last takes
# the Axpy layer's name and top, so layer/<name>/<top> is the Axpy's value. Same products and
# sums as the fork's caffe_axpy, each rounded once (a BLAS axpy may fuse them). Only Axpy layers
# without nested messages are rewritten; others leave Caffe to refuse the unknown type.
_LAYER = re.compile(r"\blayer\s*\{[^{}]*\}")


def _field(block, name):
    return re.findall(r"\b%s\s*:\s*[\"']([^\"']*)[\"']" % name, block)


def _axpy(match):
    block = match.group(0)
    if _field(block, "type") != ["Axpy"] or len(_field(block, "bottom")) != 3 or len(_field(block, "top")) != 1:
        return block
    (a, x, y), (top,) = _field(block, "bottom"), _field(block, "top")
    (name,) = _field(block, "name") or [top]  # a nameless Axpy is named after its top
    return (
        f'layer {{ name: "{name}/axpy_a" type: "Flatten" bottom: "{a}" top: "{name}/axpy_a" }}\n'
        f'layer {{ name: "{name}/axpy_ax" type: "Scale" bottom: "{x}" bottom: "{name}/axpy_a" '
        f'top: "{name}/axpy_ax" scale_param {{ axis: 0 }} }}\n'
        f'layer {{ name: "{name}" type: "Eltwise" bottom: "{name}/axpy_ax" bottom: "{y}" top: "{top}" }}'
    )


def for_this_caffe(text):
    """Prototxt text rewritten to the dialect of the oracle's Caffe (same semantics)."""
    text = _ROUND_MODE.sub(lambda m: "ceil_mode: " + ("false" if m.group(1) in ("FLOOR", "1") else "true"), text)
    text = _PRIOR_BOX.sub(_clip_default, text)
    return _LAYER.sub(_axpy, text)


@dataclass
class Job:
    prototxt: str  # prototxt text (our dialect)
    weights: str = None  # caffemodel path, or None: Caffe's fillers
    inputs: dict = None  # {blob: array}, or None: seeded N(0, 1)
    seed: int = 0
    randomize: bool = False  # overwrite learned blobs with seeded random values
    save_weights: str = None  # where Caffe writes the caffemodel it ran with
    every_layer: bool = True
    stats: bool = False
    keep: list = None  # blob names whose final values to return as blob/<name> (without every_layer)


@dataclass
class Result:
    arrays: dict  # input/<blob>, layer/<layer>/<top>, output/<blob>, blob/<kept blob>
    layers: list  # [{"name", "type", "bottoms", "tops": {top: shape or stats}}] in execution order
    inputs: list
    outputs: list

    def layer_tops(self):
        """``{(layer, top): array}`` right after each layer ran."""
        out = {}
        for layer in self.layers:
            for top in layer["tops"]:
                key = f"layer/{layer['name']}/{top}"
                if key in self.arrays:
                    out[(layer["name"], top)] = self.arrays[key]
        return out


def forward(jobs, timeout=600):
    """Run each :class:`Job` through real Caffe; returns a list of :class:`Result` or
    :class:`OracleError` (one per job, in order). Jobs share one Caffe process; when Caffe
    aborts on one (a CHECK failure), the remaining jobs are retried in a fresh process."""
    run_caffe = interpreter()
    if run_caffe is None:
        raise OracleError(missing_reason())
    results = [None] * len(jobs)
    with tempfile.TemporaryDirectory(prefix="caffe-oracle-") as tmp:
        tmp = Path(tmp)
        specs = []
        for i, job in enumerate(jobs):
            proto = tmp / f"{i}.prototxt"
            proto.write_text(for_this_caffe(job.prototxt))
            inputs = None
            if job.inputs is not None:
                inputs = tmp / f"{i}.inputs.npz"
                np.savez(inputs, **{k: np.asarray(v, dtype=np.float32) for k, v in job.inputs.items()})
            specs.append({
                "prototxt": str(proto), "weights": job.weights, "randomize": job.randomize,
                "save_weights": job.save_weights, "inputs": str(inputs) if inputs else None,
                "seed": job.seed, "out": str(tmp / f"{i}.npz"), "every_layer": job.every_layer,
                "stats": job.stats, "keep": job.keep or [],
            })
        pending = list(range(len(jobs)))
        while pending:
            batch_file = tmp / "jobs.json"
            batch_file.write_text(json.dumps([specs[i] for i in pending]))
            proc = subprocess.run([str(run_caffe), str(CAFFE_SIDE), str(batch_file)],
                                  capture_output=True, text=True, timeout=timeout)
            done = {line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("done ")}
            rest = []
            for i in pending:
                if specs[i]["out"] in done:
                    results[i] = _read(specs[i]["out"])
                else:
                    rest.append(i)
            if rest:
                # Jobs run in order: the first unfinished one is where Caffe aborted (a CHECK
                # failure); its message is among the last lines of stderr. The rest run again.
                why = _last_words(proc.stderr) or f"Caffe exited with {proc.returncode}"
                results[rest[0]] = OracleError(why)
                rest = rest[1:]
            pending = rest
    return results


def _last_words(stderr):
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    checks = [line for line in lines if "Check failed" in line or "] " in line and line[:1] in "FE"]
    # A prototxt Caffe cannot parse: protobuf's own line says which field.
    parse = [line for line in lines if "Error parsing text-format" in line]
    words = (checks[-1] if checks else lines[-1] if lines else "").strip()
    return f"{parse[-1].strip()}; {words}" if parse else words


def _read(out):
    meta = json.loads(Path(out + ".json").read_text())
    if "error" in meta:
        return OracleError(meta["error"])
    with np.load(out) as data:
        arrays = {k: data[k] for k in data.files}
    return Result(arrays=arrays, layers=meta["layers"], inputs=meta["inputs"], outputs=meta["outputs"])


def run_one(job, timeout=600):
    """:func:`forward` for a single job; raises :class:`OracleError` when Caffe refuses it."""
    (result,) = forward([job], timeout=timeout)
    if isinstance(result, OracleError):
        raise result
    return result


@dataclass
class SolveJob:
    solver: str  # solver prototxt text (its net field is replaced)
    net: str  # train/val prototxt text (our dialect)
    steps: int = 5
    weights: str = None  # caffemodel to start from, or None: seeded random blobs
    save_weights: str = None  # where Caffe writes the caffemodel it starts from
    seed: int = 0


def solve(job, timeout=600):
    """Run Caffe's solver for ``job.steps`` iterations (see ``solver_side.py``); returns
    ``(arrays, meta)`` or raises :class:`OracleError` with Caffe's last words."""
    run_caffe = interpreter()
    if run_caffe is None:
        raise OracleError(missing_reason())
    with tempfile.TemporaryDirectory(prefix="caffe-solver-") as tmp:
        tmp = Path(tmp)
        net = tmp / "train_val.prototxt"
        net.write_text(for_this_caffe(job.net))
        solver = tmp / "solver.prototxt"
        lines = [line for line in job.solver.splitlines() if not re.match(r"\s*(net|train_net|test_net)\s*:", line)]
        solver.write_text(f'net: "{net}"\n' + "\n".join(lines) + "\n")
        out = tmp / "out.npz"
        spec = {"solver": str(solver), "net": str(net), "weights": job.weights, "save_weights": job.save_weights,
                "steps": job.steps, "seed": job.seed, "out": str(out)}
        (tmp / "job.json").write_text(json.dumps(spec))
        proc = subprocess.run([str(run_caffe), str(SOLVER_SIDE), str(tmp / "job.json")],
                              capture_output=True, text=True, timeout=timeout)
        meta_path = Path(str(out) + ".json")
        if not meta_path.exists():
            raise OracleError(_last_words(proc.stderr) or f"Caffe exited with {proc.returncode}")
        meta = json.loads(meta_path.read_text())
        if "error" in meta:
            raise OracleError(meta["error"])
        with np.load(out) as data:
            return {k: data[k] for k in data.files}, meta
