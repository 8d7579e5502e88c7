"""The library entry points: prototxt (+ caffemodel) → Keras model, and one model → one file.

:func:`convert` returns the Keras model, :func:`save` writes it (the path picks the format, as on
the command line), :func:`convert_one` does both and returns the summary record the command line
prints; ``batch`` calls it per model. Options are taken as the command line takes them (``"data=1,
3,224,224"``, ``"prob,bbox"``, ``"104,117,123"``) or as Python values (a shape tuple, a list of
blob names, a list of means).

Every failure leaves as a :class:`ConversionError`, whatever the input files hold. Problems with
the input are found where the fact is known (parsing, shapes, the caffemodel reader, the weight
checks below) and raised as ConversionError naming file, layer and line. Any other exception is
a converter bug met on this input: at this boundary it becomes an :class:`InternalError` (still a
ConversionError) naming the layer being converted, chained to the original for ``--debug``.
Weights the network does not use are a :class:`ConversionWarning` (see :mod:`warnings`).

Nothing here imports Keras until a model is built.
"""

import contextlib
import numbers
import os
import re
import time
import warnings
from pathlib import Path

from . import caffemodel, depth, export, graph, prototxt
from .errors import ConversionError, ConversionWarning, InternalError, clip, failing_layer
from .types import supported_types

# How many layer names an error message lists before summarising.
SHOWN_NAMES = 20
# How a free dimension of an input shape is written.
FREE_DIM_TEXT = ("?", "-1")
# Keras styles its exception text for terminals.
ANSI_STYLE = re.compile(r"\x1b\[[0-9;]*m")


class Progress:
    """Told about each stage of :func:`convert_one` as it runs: ``start(stage, subject)`` as it
    begins, ``done(outcome)`` as it ends (``outcome`` None when it failed). The command line
    shows them on long work; this one says nothing."""

    def start(self, stage, subject):
        pass

    def done(self, outcome):
        pass


def parse_input_shapes(value):
    """Input shapes as ``{name or None: shape}``, None naming the only input.

    Takes what ``--input-shape`` takes, ``[NAME=]N,C,H,W`` (one string or a list of them), a
    ``{name: shape}`` dict, or a plain shape tuple for a network of one input. A height or width
    given as ``?`` or -1 (None in a tuple) is free: the model takes any size there."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {name: _shape(shape, f"{name}={_text(shape)}" if name else _text(shape)) for name, shape in value.items()}
    if isinstance(value, (str, bytes)) or _is_shape(value):
        value = [value]
    try:
        specs = list(value)
    except TypeError:
        raise ConversionError(f"input shapes: expected '[NAME=]N,C,H,W', a shape tuple or a {{name: shape}} dict, "
                              f"not {value!r}") from None
    shapes = {}
    for spec in specs:
        if _is_shape(spec):
            name, dims, spec = None, spec, _text(spec)
        else:
            name, _, dims = str(spec).rpartition("=")
        shapes[name or None] = _shape(dims, spec)
    return shapes


def parse_outputs(value):
    """Blob names to cut the network at: ``"prob,bbox"`` (as ``--outputs`` takes them) or a list."""
    if value is None:
        return None
    names = value.split(",") if isinstance(value, str) else list(value)
    if not all(isinstance(n, str) for n in names):
        raise ConversionError(f"outputs: expected blob names, not {value!r}")
    return [n.strip() for n in names if n.strip()] or None


def preprocessing_options(mean=None, scale=1.0, rgb_input=False):
    """The options of :func:`caffe2keras.preprocess.make_layer`, or None when the model takes
    Caffe's input as is. ``mean`` is ``"B,G,R"`` text, a number or a list of them (Caffe's BGR
    order), or a mean image: a ``.binaryproto``/``.npy`` path or a (C, H, W) array."""
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise ConversionError(f"scale: expected a number, not {scale!r}") from None
    if mean is None and scale == 1.0 and not rgb_input:
        return None
    from . import preprocess

    source = None
    if isinstance(mean, numbers.Real):
        mean = [float(mean)]
    elif isinstance(mean, (str, os.PathLike)):
        text = os.fspath(mean)
        mean = preprocess.parse_mean(text)
        source = None if isinstance(mean, list) else text
    elif mean is not None and not hasattr(mean, "shape"):
        try:
            mean = [float(m) for m in mean]
        except (TypeError, ValueError):
            raise ConversionError(f"mean: expected B,G,R numbers or a mean image, not {mean!r}") from None
    return {"mean": mean, "scale": scale, "rgb_input": bool(rgb_input), "mean_source": source}


def check(prototxt_path, caffemodel_path=None, input_shapes=None, outputs=None, max_params=None):
    """Everything short of building Keras layers: parse, infer shapes, read the weights and match
    them with the layers. Returns ``(graph, weights)``; ``weights`` is None without a caffemodel."""
    with _boundary(prototxt_path):
        g, weights, _ = _check(prototxt_path, caffemodel_path, parse_input_shapes(input_shapes),
                               parse_outputs(outputs), max_params)
        return g, weights


def build(prototxt_path, caffemodel_path=None, input_shapes=None, outputs=None, solver=None, max_params=None,
          preprocessing=None, progress=None):
    """Convert and return a :class:`~caffe2keras.translate.Conversion` (model, graph, tensors,
    names).

    With ``solver`` (a solver.prototxt path) the model is the train net's, compiled to train as
    Caffe's solver would (see :mod:`caffe2keras.training`). ``preprocessing`` (see
    :func:`preprocessing_options`) bakes Caffe's Transformer in as the model's first layer.
    """
    progress = progress or Progress()
    try:
        input_shapes, outputs = parse_input_shapes(input_shapes), parse_outputs(outputs)
    except ConversionError as err:  # the options given for this prototxt
        raise ConversionError(err.message, file=prototxt_path) from None
    with _boundary(prototxt_path):
        from . import training
        from .translate import build_model

        if solver is None:
            g, weights, netdef = _check(prototxt_path, caffemodel_path, input_shapes, outputs, max_params,
                                        progress=progress)
            with _stage(progress, "build", "Keras model") as outcome:
                conversion = depth.call(build_model, g, weights, preprocessing)
                training.freeze(conversion)
                outcome.append(_model_size(conversion.model))
            _warn_unused(weights, netdef)
            return conversion
        if outputs:
            raise ConversionError("--outputs cannot be combined with --solver: the losses choose the outputs",
                                  file=prototxt_path)
        if preprocessing is not None:
            raise ConversionError("--mean/--scale/--rgb-input cannot be combined with --solver: feed the batches "
                                  "the data layer's transform_param produces", file=prototxt_path)
        from .solver import load as load_solver

        solver_param = load_solver(solver)
        netdef = training.load_net(prototxt_path)
        g, weights, netdef = _check(prototxt_path, caffemodel_path, input_shapes, None, max_params, netdef=netdef,
                                    progress=progress)
        with _stage(progress, "build", "Keras model, compiled with the solver") as outcome:
            conversion = depth.call(build_model, g, weights)
            training.compile_model(conversion, netdef, solver_param)
            outcome.append(_model_size(conversion.model))
        _warn_unused(weights, netdef)
        return conversion


def convert(prototxt_path, caffemodel=None, input_shapes=None, outputs=None, solver=None, max_params=None,
            mean=None, scale=1.0, rgb_input=False):
    """Convert a Caffe model into a Keras 3 model.

    ``input_shapes`` overrides the input shapes the prototxt declares, in Caffe's (N, C, H, W)
    order: ``(1, 3, 448, 448)`` for a network of one input, ``{"data": (1, 3, 448, 448)}``, or
    ``"data=1,3,448,448"`` as ``--input-shape`` takes it. ``outputs`` cuts the network at these
    blobs (``"conv5"``, ``"a,b"`` or a list). Without ``caffemodel`` the weights are Keras'
    initialisers. Inputs and 4-D outputs are NHWC.

    ``mean``, ``scale`` and ``rgb_input`` bake Caffe's input preprocessing in, as ``--mean``,
    ``--scale`` and ``--rgb-input`` do: the model computes ``(x[BGR] - mean) * scale`` from plain
    pixels (see :func:`preprocessing_options`). With ``solver``, a train_val prototxt becomes a model
    compiled with Caffe's losses and solver, ready for ``fit``. A network learning more than
    ``max_params`` values (default ``graph.MAX_PARAMS``, 2**30) is refused before anything is
    allocated. Raises :class:`ConversionError`, and nothing else, for any input; weights the
    network does not use give a :class:`ConversionWarning`.
    """
    with _boundary(prototxt_path):
        options = preprocessing_options(mean, scale, rgb_input)
    return build(prototxt_path, caffemodel, input_shapes=input_shapes, outputs=outputs, solver=solver,
                 max_params=max_params, preprocessing=options).model


def save(model, path, force=False, **options):
    """Write ``model`` to ``path``, the format chosen by its ending as on the command line:
    ``.keras``, ``.h5``, ``.tflite``, ``.onnx``, or a directory path ending in ``/`` (SavedModel).
    ``options`` are the exports' (``opset=13``, ``nchw_inputs=True``, ``quantize="float16"``).

    The file appears complete or not at all (written under a temporary name, then moved into
    place), and an existing one is replaced only with ``force``. Returns the format's name."""
    with _boundary(path):
        export.save(model, path, force=force, **options)  # checks the output before writing
        return export.output_format(path)


def convert_one(prototxt_path, caffemodel_path, output, input_shapes=None, outputs=None, mean=None, scale=1.0,
                rgb_input=False, force=False, solver=None, max_params=None, export_options=None, progress=None):
    """Convert and save one model, as ``caffe2keras convert`` does; returns the summary record
    (a JSON-ready dict) and the :class:`~caffe2keras.translate.Conversion`.

    Options are :func:`convert`'s; ``export_options`` those of :func:`caffe2keras.export.save`
    (``opset``, ``nchw_inputs``, ``quantize``): a quantized TFLite model is run beside the Keras
    model and its error recorded. The output is checked (format, directory, an existing file
    without ``force``, an input file in the way, the export options) before any work.
    ``progress`` (a :class:`Progress`) hears of each stage.
    """
    progress = progress or Progress()
    with _boundary(prototxt_path):
        from . import training

        sources = (prototxt_path, caffemodel_path, solver,
                   mean if isinstance(mean, (str, os.PathLike)) and not _is_numbers(mean) else None)
        fmt = export.check_output(output, force=force, inputs=sources)
        export_options = {k: v for k, v in (export_options or {}).items() if v not in (None, False)}
        export.check_options(fmt, output, **export_options)
        options = preprocessing_options(mean, scale, rgb_input)
        if solver is not None:
            training.check_export(fmt, output, preprocessing=options is not None)
    start = time.perf_counter()
    conversion = build(prototxt_path, caffemodel_path, input_shapes=input_shapes, outputs=outputs, solver=solver,
                       max_params=max_params, preprocessing=options, progress=progress)
    model = conversion.model
    built = time.perf_counter()
    with _boundary(output), _stage(progress, "save", f"{output} ({fmt})") as outcome:
        export.save(model, output, force=force, inputs=sources, **export_options)
        outcome.append(_file_size(output))
    with _boundary(prototxt_path):
        record = _record(conversion, prototxt_path, caffemodel_path, output, fmt, solver)
        record["export_options"] = export_options
        record["quantization_error"] = (export.quantization_error(model, output)
                                        if export_options.get("quantize") else None)
    record["seconds"] = {"convert": round(built - start, 3), "save": round(time.perf_counter() - built, 3)}
    return record, conversion


def _record(conversion, prototxt_path, caffemodel_path, output, fmt, solver):
    from . import preprocess, training

    g, model, names = conversion.graph, conversion.model, conversion.names
    pre = preprocess.find(model)
    return {
        "network": g.name or "network",
        "prototxt": str(prototxt_path),
        "caffemodel": str(caffemodel_path) if caffemodel_path else None,
        "output": str(output),
        "format": fmt,
        "caffe_layers": len(g.nodes),
        "keras_layers": len(model.layers),
        "parameters": int(model.count_params()),
        "inputs": [
            {"name": names.inputs[b], "caffe_shape": list(g.blobs[b].shape), "keras_shape": list(inp.shape[1:])}
            for b, inp in zip(g.inputs, model.inputs)
        ],
        "outputs": [
            {"name": name, "caffe_shape": list(g.blobs[b].shape), "keras_shape": list(out.shape[1:])}
            for b, name, out in zip(g.outputs, names.outputs, model.outputs)
        ],
        "preprocess": pre and {k: list(pre[k]) if isinstance(pre[k], tuple) else pre[k]
                               for k in ("mean", "mean_shape", "scale", "rgb_input", "mean_source")},
        "training": training.summary(conversion) if solver is not None else None,
    }


def _check(prototxt_path, caffemodel_path, input_shapes, outputs, max_params=None, netdef=None, progress=None):
    progress = progress or Progress()
    if netdef is None:
        with _stage(progress, "parse", _file_subject(prototxt_path)) as outcome:
            netdef = prototxt.load(prototxt_path)
            outcome.append(f"{len(netdef.layers)} layers")
    with _stage(progress, "shapes", "") as outcome:
        g = graph.build(netdef, input_shapes=input_shapes, outputs=outputs, supported=supported_types(),
                        max_params=max_params)
        sizes = graph.learned_sizes(g)
        outcome.append(f"{len(g.nodes)} layers, {sum(sizes.values()):,} learned values")
    if caffemodel_path is None:
        return g, None, netdef
    with _stage(progress, "read weights", _file_subject(caffemodel_path)) as outcome:
        weights = caffemodel.load(caffemodel_path, expected=sizes)
        check_weights_present(g, weights)
        outcome.append(f"{sum(1 for blobs in weights.layers.values() if blobs)} layers with weights")
    return g, weights, netdef


def check_weights_present(g, weights):
    """Refuse a caffemodel lacking any layer that learns weights, naming all of them at once
    (the usual cause: the caffemodel of another network or of another version of this one)."""
    missing = [n.name for n in g.nodes if graph.learns_weights(g, n) and not weights.layers.get(n.name)]
    if not missing:
        return
    held = [name for name, blobs in weights.layers.items() if blobs]
    raise ConversionError(
        f"has no weights for {len(missing)} layer(s) of the prototxt: {_names(missing)}; "
        f"it holds weights for {_names(held) if held else 'no layer'} "
        f"(the caffemodel of another network?)",
        file=weights.path,
    )


def _warn_unused(weights, netdef):
    """Warn of the caffemodel's layers the prototxt lacks (a training net's extra heads). Layers
    of the prototxt that ``outputs`` cut away are no news."""
    if weights is None:
        return
    present = {layer.name for layer in netdef.layers}
    extra = [name for name in weights.unused() if name not in present]
    if extra:
        warnings.warn(f"{weights.path}: ignoring the weights of {len(extra)} layer(s) the prototxt lacks: "
                      f"{_names(extra)}", ConversionWarning, stacklevel=4)


def _names(names):
    shown = ", ".join(map(str, names[:SHOWN_NAMES]))  # h5py gives bytes for names that are not UTF-8
    return shown + (f", … ({len(names)} in all)" if len(names) > SHOWN_NAMES else "")


@contextlib.contextmanager
def _stage(progress, name, subject):
    progress.start(name, subject)
    outcome = []
    try:
        yield outcome
    except BaseException:
        progress.done(None)
        raise
    progress.done(", ".join(outcome))


def _file_subject(path):
    return f"{path} ({_file_size(path)})"


def _file_size(path):
    """A file's size, or a directory's (a SavedModel), for people: 1.2 kB, 53.4 MB."""
    path = Path(path)
    try:
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    except OSError:
        return "size unknown"
    if size < 1000:
        return f"{size} bytes"
    for unit in ("kB", "MB", "GB"):
        size /= 1000
        if size < 1000 or unit == "GB":
            return f"{size:.1f} {unit}"


def _model_size(model):
    return f"{len(model.layers)} Keras layers, {model.count_params():,} parameters"


def _is_numbers(text):
    try:
        [float(p) for p in os.fspath(text).split(",")]
    except ValueError:
        return False
    return True


def _is_shape(value):
    return isinstance(value, (tuple, list)) and bool(value) and all(
        d is None or (isinstance(d, numbers.Real) and not isinstance(d, bool)) for d in value)


def _text(shape):
    return shape if isinstance(shape, str) else ",".join(map(str, shape))


def _shape(dims, spec):
    """One shape from ``"1,3,224,224"`` (``x`` also separates) or a sequence of whole numbers;
    ``?`` or -1 (None in a sequence) leaves a height or width free until the model runs."""
    try:
        parts = dims.replace("x", ",").split(",") if isinstance(dims, str) else list(dims)
        shape = tuple(_dim(d) for d in parts)
    except (TypeError, ValueError):
        raise ConversionError(f"input shape '{spec}': expected [NAME=]N,C,H,W with integers "
                              f"(? for a free height or width)") from None
    if not shape or any(d is not None and d <= 0 for d in shape):
        raise ConversionError(f"input shape '{spec}': dimensions must be positive (? for a free height or width)")
    if any(d is None for d in shape[:2]):
        raise ConversionError(f"input shape '{spec}': only the spatial axes (after N and C) can be free")
    return shape


def _dim(d):
    if d is None or (isinstance(d, str) and d.strip() in FREE_DIM_TEXT):
        return None
    if isinstance(d, bool) or (not isinstance(d, str) and d != int(d)):
        raise ValueError(d)
    d = int(d)
    return None if d == -1 else d


@contextlib.contextmanager
def _boundary(path):
    try:
        yield
    except (ConversionError, Warning):  # a warning the caller's filter turned into an error is theirs
        raise
    except MemoryError:
        raise ConversionError("not enough memory to convert this model", file=path) from None
    except Exception as err:
        layer = failing_layer(err)
        raise InternalError(
            f"internal error while converting{' this layer' if layer else ''}: {type(err).__name__}: "
            f"{clip(ANSI_STYLE.sub('', str(err)))}",
            file=path,
            layer=layer,
        ) from err


__all__ = ["build", "check", "convert", "convert_one", "parse_input_shapes", "save", "ConversionError",
           "ConversionWarning", "InternalError", "Progress"]
