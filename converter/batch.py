"""``caffe2keras batch``: many models converted, each by :func:`caffe2keras.api.convert_one`.

``batch`` takes a folder or a manifest. A folder holding one prototxt and one caffemodel is one
model; otherwise each such sub-folder is one, named after it. A manifest (TOML, or YAML when
PyYAML is installed) lists models under ``models``::

    [[models]]
    name = "googlenet"
    prototxt = "bvlc_googlenet/deploy.prototxt"     # relative to the manifest
    caffemodel = "bvlc_googlenet/weights.caffemodel" # optional
    input_shape = "data=1,3,224,224"                 # optional, like --input-shape (or a list)
    outputs = "prob"                                 # optional, like --outputs
    mean = "104,117,123"                             # optional: scale, rgb_input too
    format = "tflite"                                # optional output extension
    max_params = 2_000_000_000                       # optional, like --max-params

Each output is ``<outdir>/<name>.<format>`` (``<outdir>/<name>/`` for a SavedModel): a name is
a plain file name, and an entry whose output would land outside the output folder (``..``, an
absolute path, a symbolic link leading out) is refused. One failure does not stop the others;
each gets a record (status, timings, error). :func:`run_all` converts in this process, or in
worker processes (:mod:`caffe2keras.workers`), the records in the jobs' order either way.
"""

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import api
from .caffemodel import WEIGHT_SUFFIXES
from .prototxt import PROTOTXT_SUFFIXES
from .errors import ConversionError, InternalError, clip

FORMATS = ("keras", "h5", "tflite", "onnx", "savedmodel")
OPTION_KEYS = {"name", "prototxt", "caffemodel", "input_shape", "outputs", "mean", "scale", "rgb_input", "format",
               "max_params"}


@dataclass
class Job:
    name: str
    prototxt: str
    caffemodel: str = None
    options: dict = field(default_factory=dict)
    problem: str = None  # why the job cannot even start (ambiguous folder, bad manifest entry)


def find_pair(folder):
    """``(prototxt, caffemodel, problem)`` for a model folder; problem is None when unambiguous."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file())
    protos = [p for p in files if p.name.endswith(PROTOTXT_SUFFIXES)]
    weights = [p for p in files if p.name.endswith(WEIGHT_SUFFIXES)]
    if len(protos) > 1:
        deploy = [p for p in protos if "deploy" in p.name]
        protos = deploy if len(deploy) == 1 else protos
    problem = None
    if len(protos) != 1:
        problem = f"expected one prototxt, found {len(protos)}"
    elif len(weights) > 1:
        problem = f"expected one caffemodel, found {len(weights)}: {', '.join(p.name for p in weights)}"
    elif not weights:
        problem = "no caffemodel"
    return (str(protos[0]) if protos else None, str(weights[0]) if len(weights) == 1 else None, problem)


def jobs_from_folder(folder):
    folder = Path(folder)
    own = [p for p in folder.iterdir() if p.is_file() and p.name.endswith(PROTOTXT_SUFFIXES)]
    if own:
        prototxt, caffemodel, problem = find_pair(folder)
        return [Job(folder.name, prototxt, caffemodel, problem=problem)]
    jobs = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not any(p.name.endswith(PROTOTXT_SUFFIXES) for p in sub.iterdir() if p.is_file()):
            continue
        prototxt, caffemodel, problem = find_pair(sub)
        jobs.append(Job(sub.name, prototxt, caffemodel, problem=problem))
    if not jobs:
        raise ConversionError("holds no model folder (a prototxt and a caffemodel)", file=folder)
    return jobs


def read_manifest(path):
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConversionError(f"is not valid TOML ({err})", file=path) from None
    elif path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConversionError("reading a YAML manifest needs PyYAML (pip install pyyaml), or use TOML",
                                  file=path) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConversionError(f"is not valid YAML ({' '.join(str(err).split())})", file=path) from None
    else:
        raise ConversionError("a manifest must be .toml, .yaml or .yml", file=path)
    entries = data.get("models") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise ConversionError("lists no models (expected a 'models' list of tables)", file=path)
    jobs, seen = [], set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "prototxt" not in entry:
            raise ConversionError(f"models entry {i + 1} has no 'prototxt'", file=path)
        unknown = set(entry) - OPTION_KEYS
        name = str(entry.get("name") or Path(entry["prototxt"]).parent.name or f"model{i + 1}")
        if name in seen:
            raise ConversionError(f"two models are named '{name}'", file=path)
        seen.add(name)
        caffemodel = entry.get("caffemodel")
        options = {k: v for k, v in entry.items() if k not in ("name", "prototxt", "caffemodel")}
        if isinstance(options.get("mean"), str) and not _is_numbers(options["mean"]):
            options["mean"] = str(path.parent / options["mean"])  # a mean image, next to the manifest
        job = Job(name, str(path.parent / entry["prototxt"]),
                  str(path.parent / caffemodel) if caffemodel else None, options)
        if unknown:
            job.problem = f"unknown option(s): {', '.join(sorted(unknown))} (known: {', '.join(sorted(OPTION_KEYS))})"
        jobs.append(job)
    return jobs


def find_jobs(source):
    source = Path(source)
    if source.is_dir():
        return jobs_from_folder(source)
    if source.is_file():
        return read_manifest(source)
    raise ConversionError("no such folder or manifest file", file=source)


def output_path(outdir, name, fmt):
    """``outdir/name.fmt`` (``outdir/name/`` for a SavedModel), refused unless it stays inside
    ``outdir`` with symbolic links followed: a manifest's names never reach elsewhere."""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise ConversionError(f"the model name '{name}' is not a plain file name (no '/', '..' or absolute "
                              f"path): outputs stay inside the output folder")
    if fmt not in FORMATS:
        raise ConversionError(f"unknown format '{fmt}' (known: {', '.join(FORMATS)})")
    output = Path(outdir) / (name if fmt == "savedmodel" else f"{name}.{fmt}")
    if os.path.dirname(os.path.realpath(output)) != os.path.realpath(outdir):
        raise ConversionError(f"the output {output} is a symbolic link leading outside the output folder")
    return f"{output}/" if fmt == "savedmodel" else str(output)


def run_job(job, outdir, default_format="keras", force=False, max_params=None):
    """Convert one job, never raising: the record says ``ok`` or ``failed`` and why."""
    start = time.perf_counter()
    record = new_record(job)
    try:
        if job.problem:
            raise ConversionError(job.problem, file=Path(job.prototxt).parent if job.prototxt else None)
        opts = job.options
        output = output_path(outdir, job.name, str(opts.get("format", default_format)).lstrip("."))
        info, _ = api.convert_one(job.prototxt, job.caffemodel, output, input_shapes=opts.get("input_shape"),
                                  outputs=opts.get("outputs"), mean=opts.get("mean"), scale=opts.get("scale", 1.0),
                                  rgb_input=bool(opts.get("rgb_input", False)), force=force,
                                  max_params=_count(opts.get("max_params", max_params)))
        record.update(status="ok", output=output, parameters=info["parameters"],
                      caffe_layers=info["caffe_layers"], keras_layers=info["keras_layers"])
    except ConversionError as err:
        record.update(status="failed", error=str(err), internal=isinstance(err, InternalError))
    except Exception as err:  # a converter bug on this model: report it, go on with the others
        record.update(status="failed", error=f"internal error: {type(err).__name__}: {clip(err)}", internal=True)
    finally:
        import keras

        keras.backend.clear_session()  # free the model's graph before the next one
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record


def new_record(job):
    return {"name": job.name, "prototxt": job.prototxt, "caffemodel": job.caffemodel}


def run_all(jobs, outdir, workers=1, on_start=None, on_done=None, **options):
    """Convert every job (``options`` are :func:`run_job`'s) in this process or, with
    ``workers`` > 1, in that many worker processes; the records in the jobs' order.
    ``on_start(job)`` and ``on_done(job, record)`` hear of each as it happens."""
    on_start = on_start or (lambda job: None)
    on_done = on_done or (lambda job, record: None)
    if min(workers, len(jobs)) > 1:
        from . import workers as pool

        return pool.run(jobs, outdir, min(workers, len(jobs)), options, on_start, on_done)
    records = []
    for job in jobs:
        on_start(job)
        records.append(run_job(job, outdir, **options))
        on_done(job, records[-1])
    return records


def _count(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConversionError(f"max_params must be a positive whole number, not {value!r}")
    return value


def _is_numbers(text):
    try:
        [float(p) for p in text.split(",")]
    except ValueError:
        return False
    return True


def format_summary(records):
    header = ("model", "status", "layers", "params", "seconds", "output / error")
    rows = [header]
    for r in records:
        ok = r["status"] == "ok"
        rows.append((
            r["name"], r["status"],
            str(r.get("caffe_layers", "")) if ok else "",
            f"{r['parameters']:,}" if ok else "",
            f"{r['seconds']:.1f}",
            r.get("output", "") if ok else r.get("error", ""),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join([c.ljust(w) for c, w in zip(row[:-1], widths)] + [row[-1]]).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 14)
    failed = sum(1 for r in records if r["status"] != "ok")
    lines.append(f"{len(records) - failed} of {len(records)} converted" + (f", {failed} failed" if failed else ""))
    return "\n".join(lines)
