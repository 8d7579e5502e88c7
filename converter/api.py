"""The library entry points: prototxt (+ caffemodel) → Keras model.

Every failure leaves as a :class:`ConversionError`, whatever the input files hold. Problems with
the input are found where the fact is known (parsing, shapes, the caffemodel reader, the weight
checks below) and raised as ConversionError naming file, layer and line. Any other exception is
a converter bug met on this input: at this boundary it becomes an :class:`InternalError` (still a
ConversionError) naming the layer being converted, chained to the original for ``--debug``.
"""

import contextlib
import re

from . import caffemodel, depth, graph, prototxt, training, translate
from .errors import ConversionError, InternalError
from .solver import load as load_solver
from .translate import build_model

# How many layer names an error message lists before summarising.
SHOWN_NAMES = 20
# Keras styles its exception text for terminals.
ANSI_STYLE = re.compile(r"\x1b\[[0-9;]*m")


def check(prototxt_path, caffemodel_path=None, input_shapes=None, outputs=None, max_params=None):
    """Everything short of building Keras layers: parse, infer shapes, read the weights and match
    them with the layers. Returns ``(graph, weights)``; ``weights`` is None without a caffemodel."""
    with _boundary(prototxt_path):
        return _check(prototxt_path, caffemodel_path, input_shapes, outputs, max_params)


def build(prototxt_path, caffemodel_path=None, input_shapes=None, outputs=None, solver=None, max_params=None,
          preprocessing=None):
    """Convert and return a :class:`~caffe2keras.translate.Conversion` (model, graph, tensors,
    names).

    With ``solver`` (a solver.prototxt path) the model is the train net's, compiled to train as
    Caffe's solver would (see :mod:`caffe2keras.training`). ``preprocessing`` bakes Caffe's
    Transformer in (options of :func:`caffe2keras.preprocess.make_layer`: mean, scale, rgb_input,
    mean_source).
    """
    with _boundary(prototxt_path):
        if solver is None:
            g, weights = _check(prototxt_path, caffemodel_path, input_shapes, outputs, max_params)
            conversion = depth.call(build_model, g, weights, preprocessing)
            training.freeze(conversion)
            return conversion
        if outputs:
            raise ConversionError("--outputs cannot be combined with --solver: the losses choose the outputs",
                                  file=prototxt_path)
        if preprocessing is not None:
            raise ConversionError("--mean/--scale/--rgb-input cannot be combined with --solver: feed the batches "
                                  "the data layer's transform_param produces", file=prototxt_path)
        solver_param = load_solver(solver)
        netdef = training.load_net(prototxt_path)
        g, weights = _check(prototxt_path, caffemodel_path, input_shapes, None, max_params, netdef=netdef)
        conversion = depth.call(build_model, g, weights)
        training.compile_model(conversion, netdef, solver_param)
        return conversion


def convert(prototxt_path, caffemodel=None, input_shapes=None, outputs=None, solver=None, max_params=None):
    """Convert a Caffe model into a Keras 3 model.

    ``input_shapes`` maps input blob names to Caffe (N, C, H, W) shapes overriding those the
    prototxt declares; without ``caffemodel`` the weights are Keras' initialisers. Inputs and
    4-D outputs are NHWC. With ``solver``, a train_val prototxt becomes a model compiled with
    Caffe's losses and solver, ready for ``fit``. A network learning more than ``max_params``
    values (default ``graph.MAX_PARAMS``, 2**30) is refused before anything is allocated. Raises
    :class:`ConversionError`, and nothing else, for any input.
    """
    return build(prototxt_path, caffemodel, input_shapes=input_shapes, outputs=outputs, solver=solver,
                 max_params=max_params).model


def _check(prototxt_path, caffemodel_path, input_shapes, outputs, max_params=None, netdef=None):
    if netdef is None:
        netdef = prototxt.load(prototxt_path)
    g = graph.build(netdef, input_shapes=input_shapes, outputs=outputs, supported=translate.supported_types(),
                    max_params=max_params)
    weights = caffemodel.load(caffemodel_path, expected=graph.learned_sizes(g)) if caffemodel_path is not None else None
    if weights is not None:
        check_weights_present(g, weights)
    return g, weights


def check_weights_present(g, weights):
    """Refuse a caffemodel lacking any layer that learns weights, naming all of them at once
    (the usual cause: the caffemodel of another network or of another version of this one)."""
    missing = [n.name for n in g.nodes if graph.learns_weights(n) and not weights.layers.get(n.name)]
    if not missing:
        return
    held = [name for name, blobs in weights.layers.items() if blobs]
    raise ConversionError(
        f"has no weights for {len(missing)} layer(s) of the prototxt: {_names(missing)}; "
        f"it holds weights for {_names(held) if held else 'no layer'} "
        f"(the caffemodel of another network?)",
        file=weights.path,
    )


def _names(names):
    shown = ", ".join(map(str, names[:SHOWN_NAMES]))  # h5py gives bytes for names that are not UTF-8
    return shown + (f", … ({len(names)} in all)" if len(names) > SHOWN_NAMES else "")


@contextlib.contextmanager
def _boundary(path):
    try:
        yield
    except ConversionError:
        raise
    except MemoryError:
        raise ConversionError("not enough memory to convert this model", file=path) from None
    except Exception as err:
        layer = _failing_layer(err.__traceback__)
        message = " ".join(ANSI_STYLE.sub("", str(err)).split())[:300]
        raise InternalError(
            f"internal error while converting{' this layer' if layer else ''}: {type(err).__name__}: {message}",
            file=path,
            layer=layer,
        ) from err


def _failing_layer(tb):
    """The name of the innermost graph node on the traceback: every per-layer function (shape,
    translator, weight check) takes the node as its ``node`` argument. Loops over nodes are not
    asked, as their ``node`` may be a finished iteration's."""
    layer = None
    while tb is not None:
        code = tb.tb_frame.f_code
        if "node" in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]:
            node = tb.tb_frame.f_locals.get("node")
            if isinstance(node, graph.Node):
                layer = node.name
        tb = tb.tb_next
    return layer


__all__ = ["build", "check", "convert", "ConversionError", "InternalError"]
