"""The ``caffe2keras`` command line.

``caffe2keras PROTOTXT [CAFFEMODEL] -o OUT`` converts (``convert`` is the default command);
``batch`` converts many, ``inspect`` lists a prototxt's layers, ``verify`` compares a converted
model with OpenCV's Caffe implementation, ``predict`` classifies an image.
Bad input gives one line on stderr and exit code 2; internal errors exit 1 (``--debug`` shows
the traceback); each exit code means one thing (``EXIT_*`` below, listed in ``--help``).
Warnings are one ``warning:`` line each. Keras (and TensorFlow) are imported once, quietly, and
only by the commands that run a model: ``--help``, ``--version`` and ``inspect`` start in a
fraction of a second.
"""

import contextlib
import difflib
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import click

from ._quiet import import_keras
from .api import Progress, parse_input_shapes
from .batch import FORMATS
from .errors import ConversionError, ConversionWarning, InternalError, clip
from .graph import MAX_PARAMS

EXIT_OK = 0
EXIT_INTERNAL = 1  # a caffe2keras bug
EXIT_BAD_INPUT = 2  # the input files, options or output path
EXIT_MISMATCH = 3  # verify: the model differs from Caffe's output
EXIT_BATCH_FAILED = 4  # batch: at least one model failed (the others are written)
EXIT_INTERRUPTED = 130
# A stage of a conversion taking this long is reported even when stderr is no terminal.
LONG_STAGE_SECONDS = 10.0


class StatusLine:
    """The line of stderr a stage is being reported on, finished before anything else is printed."""

    def __init__(self):
        self.open = False

    def begin(self, text):
        self.close()
        click.echo(text, err=True, nl=False)
        self.open = True

    def end(self, text):
        click.echo(text, err=True)
        self.open = False

    def close(self):
        if self.open:
            click.echo("", err=True)
            self.open = False


status = StatusLine()


def echo_error(text):
    status.close()
    click.echo(text, err=True)


def run_guarded(debug, fn, *args, **kwargs):
    """Run a command body, turning failures into one line and an exit code, and its
    :class:`ConversionWarning` into one ``warning:`` line each."""
    try:
        with warnings_as_lines():
            return fn(*args, **kwargs)
    except InternalError as err:  # the converter failed on this input: a bug, not the user's fault
        if debug:
            traceback.print_exc()
        echo_error(f"error: {err} (a caffe2keras bug; rerun with --debug for the traceback)")
        sys.exit(EXIT_INTERNAL)
    except ConversionError as err:
        if debug:
            traceback.print_exc()
        echo_error(f"error: {err}")
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        exit_interrupted()
    except MemoryError:
        echo_error("error: out of memory converting this model")
        sys.exit(EXIT_INTERNAL)
    except Exception as err:  # an internal bug: say so, keep the disk clean
        if debug:
            traceback.print_exc()
        echo_error(f"internal error: {type(err).__name__}: {clip(err)} (rerun with --debug for the traceback)")
        sys.exit(EXIT_INTERNAL)


@contextlib.contextmanager
def warnings_as_lines():
    """Show each :class:`ConversionWarning` (every time it is issued) as one ``warning:`` line
    on stderr; other warnings as Python shows them."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", ConversionWarning)
        python_show = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, ConversionWarning):
                echo_error(f"warning: {' '.join(str(message).split())}")
            else:
                python_show(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def exit_interrupted():
    echo_error("error: interrupted; no output written")
    sys.exit(EXIT_INTERRUPTED)


def stderr_is_terminal():
    return sys.stderr.isatty()


class StageReport(Progress):
    """The stages of a conversion on stderr: each as it runs when stderr is a terminal, else
    only a stage that took long, once done."""

    def __init__(self, live):
        self.live = live
        self.stage = self.subject = None
        self.began = 0.0

    def start(self, stage, subject):
        self.stage, self.subject, self.began = stage, subject, time.perf_counter()
        if self.live:
            status.begin(f"{stage:<13}{subject + ' ' if subject else ''}… ")

    def done(self, outcome):
        seconds = time.perf_counter() - self.began
        if outcome is None:  # failed: the error says why
            status.close()
            return
        text = f"{seconds:.1f}s" + (f", {outcome}" if outcome else "")
        if self.live:
            status.end(text)
        elif seconds >= LONG_STAGE_SECONDS:
            echo_error(f"{self.stage:<13}{self.subject + ': ' if self.subject else ''}{text}")


class DefaultGroup(click.Group):
    """A group whose default command is ``convert``: ``caffe2keras net.prototxt -o out.h5``.

    A Ctrl-C while click parses the arguments ends like one in a command's body (click would
    print an empty line and "Aborted!", exit 1).
    """

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            self.refuse_mistyped_command(args[0])
            args = ["convert", *args]
        try:
            return super().parse_args(ctx, args)
        except KeyboardInterrupt:
            exit_interrupted()

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            exit_interrupted()

    def refuse_mistyped_command(self, word):
        """``caffe2keras inspct net.prototxt`` is a mistyped command, not a file to convert: a
        first word that names no file but is close to a command's name."""
        if word.startswith("-") or os.path.lexists(word):
            return
        close = difflib.get_close_matches(word, self.commands, n=1, cutoff=0.6)
        if close:
            echo_error(f"error: no such command '{word}' (did you mean '{close[0]}'?); see caffe2keras --help")
            sys.exit(EXIT_BAD_INPUT)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="caffe2keras")
def main():
    """Convert Caffe models (deploy.prototxt + .caffemodel) into exact Keras 3 models.

    \b
    caffe2keras deploy.prototxt weights.caffemodel -o model.keras --mean 104,117,123 --rgb-input
    caffe2keras verify deploy.prototxt weights.caffemodel model.keras
    caffe2keras predict model.keras cat.jpg --labels synset_words.txt
    caffe2keras inspect deploy.prototxt
    caffe2keras batch models/ -o converted/ --report report.json

    \b
    Exit codes:
      0    success
      1    internal error (a caffe2keras bug; --debug shows the traceback)
      2    bad input: files, options or output path (one line says what)
      3    verify: the model differs from Caffe beyond the tolerance
      4    batch: some models failed (the others are written)
      130  interrupted (Ctrl-C, SIGTERM); nothing written
    """


def summary(record):
    """The human summary of a conversion record (see :func:`caffe2keras.api.convert_one`)."""
    seconds = record["seconds"]["convert"] + record["seconds"]["save"]
    lines = [
        f"{record['network']}: {record['caffe_layers']} Caffe layers → {record['keras_layers']} Keras layers, "
        f"{record['parameters']:,} parameters, {seconds:.1f}s"
    ]
    if record["caffemodel"]:
        lines.append(f"  weights from {record['caffemodel']}")
    else:
        lines.append("  no caffemodel given: the weights are untrained (Keras' initialisers)")
    for inp in record["inputs"]:
        lines.append(f"  input  {inp['name']}: Caffe {inp['caffe_shape']} (NCHW) → Keras {[None, *inp['keras_shape']]}"
                     f"{' (NHWC)' if len(inp['keras_shape']) == 3 else ''}")
    for out in record["outputs"]:
        lines.append(f"  output {out['name']}: Caffe {out['caffe_shape']} → Keras {[None, *out['keras_shape']]}")
    train = record.get("training")
    if train:
        lines.append(f"  solver {train['solver']}, lr_policy {train['lr_policy']}, "
                     f"{train['frozen_layers']} frozen layer(s)")
        for t in train["targets"]:
            lines.append(f"  loss   {t['loss_type']} on output {t['output']} (weight {t['weight']:g}), "
                         f"target: Caffe blob '{t['label']}'")
    errors = record.get("quantization_error")
    if errors:
        worst = max(errors.values(), key=lambda e: e["max_rel"])
        name = next(n for n, e in errors.items() if e is worst)
        lines.append(f"  quantized ({record['export_options']['quantize']}): max |TFLite - Keras| {worst['max_abs']:.3g} "
                     f"({worst['max_rel']:.3g} of max(1, max|Keras|), output {name}) on a seeded input")
    pre = record["preprocess"]
    if pre:
        mean = pre["mean"] if pre["mean"] is not None else (f"image {pre['mean_source']}" if pre["mean_shape"] else "none")
        lines.append(
            f"  preprocessing baked in: {'RGB → BGR, ' if pre['rgb_input'] else ''}mean {mean}, scale {pre['scale']:g}"
        )
    return "\n".join(lines)


def json_option(help_text):
    return click.option("--json", "as_json", is_flag=True, help=help_text)


max_params_option = click.option(
    "--max-params", type=click.IntRange(min=1), default=None, metavar="N",
    help=f"Refuse networks learning more than N values (default {MAX_PARAMS:,}: 4 GiB of float32).",
)


@main.command()
@click.argument("prototxt", type=click.Path(dir_okay=True))
@click.argument("caffemodel", type=click.Path(dir_okay=True), required=False)
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Output: .keras, .h5, .tflite, .onnx, or a directory path ending in '/' (TF SavedModel).")
@click.option("--input-shape", "input_shape", multiple=True, metavar="[NAME=]N,C,H,W",
              help="Override an input's declared shape (repeatable; NAME optional with one input); ? for H or W "
                   "takes any size there (data=1,3,?,?).")
@click.option("--outputs", default=None, metavar="BLOB[,BLOB…]", help="Cut the network at these blobs.")
@click.option("--mean", default=None, metavar="B,G,R|FILE",
              help="Bake in mean subtraction: per-channel values in Caffe's BGR order, or a mean image "
                   "(.binaryproto or .npy, centre-cropped to the input like Caffe's Transformer).")
@click.option("--scale", default=1.0, type=float, show_default=True,
              help="Bake in Caffe's transform_param scale, applied after the mean.")
@click.option("--rgb-input", is_flag=True, help="The model takes RGB images and swaps them to Caffe's BGR.")
@click.option("--solver", type=click.Path(dir_okay=False), default=None,
              help="Compile the train/val PROTOTXT's model with this solver.prototxt's optimizer, "
                   "learning-rate policy and the net's losses, ready for fit (.keras or .h5 output).")
@click.option("--opset", type=int, default=None, help="ONNX: the opset to write (13-18; default 17).")
@click.option("--nchw", "nchw_inputs", is_flag=True,
              help="ONNX: image inputs in Caffe's (N, C, H, W) layout instead of (N, H, W, C).")
@click.option("--quantize", type=click.Choice(["float16", "dynamic"]), default=None,
              help="TFLite: store weights as float16, or as int8 with dynamic-range quantization; "
                   "the summary gives the quantized model's error.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@max_params_option
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success (no stages, no summary).")
@json_option("Print the conversion summary as JSON.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def convert(prototxt, caffemodel, output, input_shape, outputs, mean, scale, rgb_input, solver, opset, nchw_inputs,
            quantize, force, max_params, quiet, as_json, debug):
    """Convert PROTOTXT (+ CAFFEMODEL weights) into a Keras model file.

    Without CAFFEMODEL the model gets Keras' initial weights, ready to train from scratch.
    On a terminal each stage (parse, shapes, read weights, build, save) is shown with its sizes
    and time as it runs.
    With --mean/--scale/--rgb-input the model takes plain pixels: (x[BGR] - mean) * scale is
    its first layer, recorded in the file so `caffe2keras predict` does not do it again.
    With --solver, PROTOTXT is a train/val net: the model trains as Caffe's TRAIN net (its
    labels are fit's targets; losses, optimizer and schedule compiled in) and infers as the
    TEST net.
    """
    shapes = run_guarded(debug, parse_input_shapes, input_shape)

    def body():
        import_keras()
        from .api import convert_one

        progress = Progress() if quiet else StageReport(live=stderr_is_terminal())
        record, _ = convert_one(prototxt, caffemodel, output, input_shapes=shapes, outputs=outputs,
                                mean=mean, scale=scale, rgb_input=rgb_input, force=force, solver=solver,
                                max_params=max_params, progress=progress,
                                export_options={"opset": opset, "nchw_inputs": nchw_inputs, "quantize": quantize})
        if as_json:
            click.echo(json.dumps(record, indent=2))
        elif not quiet:
            click.echo(summary(record))
            click.echo(f"wrote {output}")

    run_guarded(debug, body)


@main.command()
@click.argument("prototxt", type=click.Path(dir_okay=False))
@click.argument("caffemodel", type=click.Path(dir_okay=False), required=False)
@click.option("--input-shape", "input_shape", multiple=True, metavar="[NAME=]N,C,H,W",
              help="Override an input's declared shape (repeatable; ? for a free height or width).")
@json_option("Print the layer list as JSON.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def inspect(prototxt, caffemodel, input_shape, as_json, debug):
    """List the layers of PROTOTXT: type, tops, output shape, parameters, supported?

    Parameter counts come from CAFFEMODEL when given, else from the prototxt. Unsupported
    layers are listed, not fatal; no Keras model is built. CAFFEMODEL's blobs are checked
    against the shapes the prototxt implies: weights that do not fit are listed per layer
    and the exit code is 2.
    """
    shapes = run_guarded(debug, parse_input_shapes, input_shape)

    def body():
        from . import inspect as inspection

        report = inspection.inspect(prototxt, caffemodel, input_shapes=shapes)
        click.echo(json.dumps(report.as_dict(), indent=2) if as_json else inspection.format_table(report))
        return inspection.misfit_summary(report)

    misfit = run_guarded(debug, body)
    if misfit:
        echo_error(f"error: {misfit}")
        sys.exit(EXIT_BAD_INPUT)


@main.command()
@click.argument("prototxt", type=click.Path(dir_okay=False))
@click.argument("caffemodel", type=click.Path(dir_okay=False))
@click.argument("model", type=click.Path())
@click.option("--image", type=click.Path(dir_okay=False), default=None,
              help="Compare on this image (as `predict` feeds it) instead of random input.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random input.")
@click.option("--input-shape", "input_shape", multiple=True, metavar="[NAME=]N,C,H,W",
              help="The input shape MODEL was converted with, if overridden.")
@click.option("--all-layers", is_flag=True, help="List every layer, not only those beyond tolerance.")
@json_option("Print every comparison as JSON.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def verify(prototxt, caffemodel, model, image, seed, input_shape, all_layers, as_json, debug):
    """Compare MODEL (converted from PROTOTXT + CAFFEMODEL) with OpenCV's Caffe implementation.

    MODEL is any file convert writes (.keras, .h5, .tflite, .onnx, a SavedModel directory);
    the exported formats keep no per-layer values, so their outputs are compared.

    Prints the max abs / rel error per output and per layer; exits 0 when every one is within
    1e-4 * max(1, max|caffe|), 3 otherwise. Needs OpenCV: pip install 'caffe2keras[verify]'.
    """
    shapes = run_guarded(debug, parse_input_shapes, input_shape)

    def body():
        import_keras()
        from . import verify as verification

        result = verification.verify(prototxt, caffemodel, model, image=image, input_shapes=shapes, seed=seed)
        if as_json:
            click.echo(json.dumps(result.as_dict(), indent=2))
        else:
            click.echo(verification.format_report(result, show_all=all_layers))
        return result.ok

    if not run_guarded(debug, body):
        sys.exit(EXIT_MISMATCH)


@main.command()
@click.argument("model", type=click.Path())
@click.argument("image", type=click.Path())
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="Class names, one per line (e.g. synset_words.txt).")
@click.option("--top", "k", default=5, show_default=True, type=click.IntRange(min=1), help="How many classes.")
@click.option("--output", "output_name", default=None, metavar="BLOB",
              help="Which model output to rank (a Caffe blob name); default: the softmax output.")
@click.option("--threshold", default=0.8, show_default=True, type=click.FloatRange(0, 1),
              help="Detectors: the least score a detection needs.")
@click.option("--nms", default=0.3, show_default=True, type=click.FloatRange(0, 1),
              help="Detectors: the IoU above which a class's weaker box is dropped.")
@json_option("Print the predictions as JSON.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def predict(model, image, labels, k, output_name, threshold, nms, as_json, debug):
    """Classify IMAGE (a file, or a folder of images) with a converted MODEL and print the top
    classes, or, for a two-stage detector (Faster R-CNN, R-FCN), print its detections.

    MODEL is any file convert writes: .keras, .h5, .tflite, .onnx or a SavedModel directory.
    The image is decoded by TensorFlow, scaled to cover the model's input and centre-cropped (a
    detector's: scaled to fit, padded); the preprocessing baked in at conversion
    (--mean/--scale/--rgb-input) is the model's own. Values are probabilities when the ranked
    output is a softmax's, else scores.
    """

    def body():
        import_keras()
        from . import detect
        from .layers.rcnn import find_proposal
        from .predict import format_table, images_of, load_model, predict, read_labels

        loaded = load_model(model)
        if loaded.info.get("two_stage_detector") or (loaded.model is not None and find_proposal(loaded.model)):
            if loaded.model is None:
                raise ConversionError("predict runs two-stage detectors from their .keras or .h5 file", file=model)
            names = read_labels(labels) if labels else None
            paths = images_of(image)
            results = []
            for path in paths:
                found, notes = detect.detect(loaded.model, path, labels=names, threshold=threshold, nms=nms)
                for note in dict.fromkeys(notes) if path == paths[0] else ():
                    click.echo(f"note: {note}", err=True)
                results.append((path, found))
            if as_json:
                from dataclasses import asdict

                rows = [[asdict(d) for d in found] for _, found in results]
                click.echo(json.dumps(rows[0] if len(paths) == 1 and Path(image).is_file() else
                                      [{"image": str(p), "detections": r} for (p, _), r in zip(results, rows)], indent=2))
            else:
                for path, found in results:
                    if len(results) > 1:
                        click.echo(f"{path}:")
                    click.echo(detect.format_table(found))
            return
        rankings, notes = predict(loaded, image, labels_path=labels, k=k, output=output_name)
        for note in notes:
            click.echo(f"note: {note}", err=True)
        if as_json:
            single = len(rankings) == 1 and Path(image).is_file()
            click.echo(json.dumps(rankings[0].as_dict()["predictions"] if single else [r.as_dict() for r in rankings],
                                  indent=2))
        else:
            click.echo(format_table(rankings))

    run_guarded(debug, body)


def jobs_count(ctx, param, value):
    if value in ("auto", "0"):
        from .workers import cpu_count

        return cpu_count()
    if value.isdigit():
        return int(value)
    raise click.BadParameter(f"'{value}' is not a number of processes (1, 2, ...) or 'auto' (one per CPU)")


@main.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False), help="Where the models go.")
@click.option("--format", "fmt", default="keras", show_default=True,
              type=click.Choice(FORMATS),
              help="Output format of entries that do not choose one.")
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Write the summary as JSON here.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs and report.")
@max_params_option
@click.option("-j", "--jobs", default="1", show_default=True, callback=jobs_count, metavar="N",
              help="Convert N models at once, in N worker processes ('auto' or 0: one per CPU).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or table; failures still go to stderr.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def batch(source, outdir, fmt, report, force, max_params, jobs, quiet, debug):
    """Convert every model of SOURCE: a folder of model folders, or a TOML/YAML manifest.

    A model folder holds one prototxt and one caffemodel. One failure does not stop the others;
    the exit code is 4 when any failed. With --jobs N, N worker processes each import
    TensorFlow once and convert one model at a time; the summary and report are in SOURCE's order.
    """

    def body():
        from pathlib import Path

        from . import export
        from .batch import find_jobs, format_summary, run_all

        if report:
            export.check_target(report, force=force)
        models = find_jobs(source)
        if min(jobs, len(models)) == 1:
            import_keras()  # else only the workers need it
        Path(outdir).mkdir(parents=True, exist_ok=True)
        running, written = [], []

        def on_start(job):
            running.append(job.name)
            bar.update(0, ", ".join(running))

        def on_done(job, record):
            running.remove(job.name)
            written.extend([record["output"]] if record["status"] == "ok" else [])
            bar.update(1, ", ".join(running))

        with click.progressbar(length=len(models), label="converting", file=sys.stderr, show_pos=True,
                               item_show_func=lambda names: names or "", hidden=quiet) as bar:
            try:
                records = run_all(models, outdir, workers=jobs, on_start=on_start, on_done=on_done,
                                  default_format=fmt, force=force, max_params=max_params)
            except KeyboardInterrupt:
                if not written:
                    raise
                echo_error(f"error: interrupted; the {len(written)} model(s) finished before are written, "
                           f"nothing else")
                sys.exit(EXIT_INTERRUPTED)
        if report:
            text = json.dumps({"source": str(source), "models": records}, indent=2) + "\n"
            export.write_file(report, text.encode(), force=force)
        if not quiet:
            click.echo(format_summary(records))
        else:
            for r in records:
                if r["status"] != "ok":
                    click.echo(f"failed: {r['name']}: {r['error']}", err=True)
        return all(r["status"] == "ok" for r in records)

    if not run_guarded(debug, body):
        sys.exit(EXIT_BATCH_FAILED)
