"""The ``caffe2keras`` command line.

``caffe2keras PROTOTXT [CAFFEMODEL] -o OUT`` converts (``convert`` is the default command).
Bad input gives one line on stderr and exit code 2; internal errors exit 1 (``--debug`` shows
the traceback). TensorFlow is imported once, quietly, and only by commands that need it.
"""

import sys
import time
import traceback

import click

from .errors import ConversionError

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1


def parse_input_shape(values):
    """``NAME=N,C,H,W`` (NAME optional with a single input) → {name or None: shape}."""
    shapes = {}
    for text in values:
        name, _, dims = text.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(","))
        except ValueError:
            raise click.BadParameter(f"'{text}': expected [NAME=]N,C,H,W with integers") from None
        if not shape or any(d <= 0 for d in shape):
            raise click.BadParameter(f"'{text}': dimensions must be positive")
        shapes[name or None] = shape
    return shapes


def run_guarded(debug, fn, *args, **kwargs):
    """Run a command body, turning failures into one line and an exit code."""
    try:
        return fn(*args, **kwargs)
    except ConversionError as err:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        click.echo("error: interrupted; no output written", err=True)
        sys.exit(130)
    except MemoryError:
        click.echo("error: out of memory converting this model", err=True)
        sys.exit(EXIT_INTERNAL)
    except Exception as err:  # an internal bug: say so, keep the disk clean
        if debug:
            traceback.print_exc()
        first = " ".join(str(err).split())[:300]
        click.echo(f"internal error: {type(err).__name__}: {first} (rerun with --debug for the traceback)", err=True)
        sys.exit(EXIT_INTERNAL)


class DefaultGroup(click.Group):
    """A group whose default command is ``convert``: ``caffe2keras net.prototxt -o out.h5``."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["convert", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="caffe2keras")
def main():
    """Convert Caffe models (deploy.prototxt + .caffemodel) into exact Keras 3 models.

    \b
    caffe2keras deploy.prototxt weights.caffemodel -o model.keras
    caffe2keras deploy.prototxt weights.caffemodel -o model.h5 --force
    """


def summary(conversion, elapsed):
    from .translate import keras_name

    model, graph = conversion.model, conversion.graph
    lines = [
        f"{graph.name or 'network'}: {len(graph.nodes)} Caffe layers → {len(model.layers)} Keras layers, "
        f"{model.count_params():,} parameters, {elapsed:.1f}s"
    ]
    for bid in graph.inputs:
        blob = graph.blobs[bid]
        lines.append(f"  input  {keras_name(blob.name)}: Caffe {list(blob.shape)}")
    for bid, out in zip(graph.outputs, model.outputs):
        blob = graph.blobs[bid]
        lines.append(f"  output {keras_name(blob.name)}: Caffe {list(blob.shape)} → Keras {list(out.shape)}")
    return "\n".join(lines)


@main.command()
@click.argument("prototxt", type=click.Path(dir_okay=True))
@click.argument("caffemodel", type=click.Path(dir_okay=True), required=False)
@click.option("-o", "--output", required=True, type=click.Path(), help="Output file: .keras or .h5.")
@click.option("--input-shape", "input_shape", multiple=True, metavar="[NAME=]N,C,H,W",
              help="Override an input's declared shape (repeatable; NAME optional with one input).")
@click.option("--outputs", default=None, metavar="BLOB[,BLOB…]", help="Cut the network at these blobs.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def convert(prototxt, caffemodel, output, input_shape, outputs, force, quiet, debug):
    """Convert PROTOTXT (+ CAFFEMODEL weights) into a Keras model file.

    Without CAFFEMODEL the model gets Keras' initial weights, ready to train from scratch.
    """
    shapes = parse_input_shape(input_shape)
    out_blobs = [b.strip() for b in outputs.split(",") if b.strip()] if outputs else None

    def body():
        from . import export

        export.check_output(output, force=force)
        from .api import build

        start = time.perf_counter()
        conversion = build(prototxt, caffemodel, input_shapes=shapes, outputs=out_blobs)
        export.save(conversion.model, output, force=force)
        if not quiet:
            click.echo(summary(conversion, time.perf_counter() - start))
            click.echo(f"wrote {output}")

    run_guarded(debug, body)
