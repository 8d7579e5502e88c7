"""Training semantics of a converted model: the train net, its labels and losses, frozen blobs.

A train_val prototxt holds two nets, TRAIN and TEST, that share every layer but the data, loss
and accuracy layers. The converted model is one Keras graph whose training (``fit``) is Caffe's
TRAIN net and whose inference is the TEST net:

- a layer in both phases must be the same layer; a TRAIN-only Dropout is kept (inference passes
  values through it, as the TEST net, which lacks it, does); a TEST-only layer that only adds
  new blobs (a ``prob`` Softmax beside the loss) is kept, its tops become outputs; any other
  difference between the phases is refused, naming the layers;
- inputs that only loss and accuracy layers read (labels) are no model inputs but the training
  targets; the model's outputs are the blobs that fed the losses, plus the usual outputs;
- ``param { lr_mult: 0 }`` freezes a blob: a layer whose every learned blob is frozen gets
  ``trainable=False`` (saved with the model); a frozen blob beside a learned one gets a
  non-trainable variable in memory (Keras saves trainability per layer only), and with a solver
  the optimizer keeps it fixed wherever the model is loaded;
- with a solver, the model is compiled with Caffe's losses (with ``loss_weight``) and a
  :class:`~caffe2keras.solver.CaffeSolver` holding every blob's ``lr_mult`` and ``decay_mult``.
"""

import copy
import dataclasses

from . import losses, prototxt, solver
from .errors import ConversionError, at_layer
from .schema import float32_value


def load_net(path):
    """The :class:`~caffe2keras.prototxt.NetDef` of the model that trains as the TRAIN net and
    infers as the TEST net; ``losses`` holds the TRAIN net's loss layers and ``labels`` the
    blobs that are training targets."""
    path = str(path)
    net = prototxt.parse_text(prototxt.read_text(path), path=path)
    train = prototxt.netdef_from_proto(net, phase="TRAIN", path=path)
    test = prototxt.netdef_from_proto(net, phase="TEST", path=path)
    loss_layers = [(at, layer) for at, layer in train.losses if layer.type.endswith("Loss")]
    if not loss_layers:
        raise ConversionError("the TRAIN phase has no loss layer to train with", file=path)
    _check_trainable(train, loss_layers, path)
    layers = _merge_phases(train, test, path)
    read = {b for layer in layers for b in layer.bottom}
    labels = set(train.labels) | {
        b for _, layer in train.losses for b in layer.bottom[1:] if b in train.inputs and b not in read
    }
    for _, layer in loss_layers:
        _check_loss_bottoms(layer, labels, path)
    inputs = {}
    for name, shape in train.inputs.items():
        if name not in labels:
            inputs[name] = shape if shape is not None else test.inputs.get(name)
    extra = []
    for blob in train.extra_outputs + test.extra_outputs:
        if blob not in labels and blob not in extra:
            extra.append(blob)
    return dataclasses.replace(train, layers=layers, inputs=inputs, extra_outputs=extra, losses=loss_layers,
                               labels=sorted(labels))


def _check_trainable(train, loss_layers, path):
    """Refuse what a Keras model cannot train the way Caffe would."""
    for layer in train.layers:
        if any(w != 0 for w in layer.loss_weight):
            raise ConversionError("loss_weight on a layer that is no loss layer is not supported", file=path,
                                  layer=layer.name)
        if any(not p for p in layer.propagate_down):
            raise ConversionError("propagate_down: false is not supported for training", file=path, layer=layer.name)
    owners = {}
    for layer in train.layers:
        for spec in layer.param:
            if spec.name and owners.setdefault(spec.name, layer.name) != layer.name:
                raise ConversionError(
                    f"shares parameter '{spec.name}' with layer '{owners[spec.name]}'; shared weights are not "
                    f"supported for training", file=path, layer=layer.name)
    for at, layer in loss_layers:
        if layer.propagate_down and not layer.propagate_down[0]:
            raise ConversionError("a loss with propagate_down: false on its prediction trains nothing", file=path,
                                  layer=layer.name)
        rewritten = {t for later in train.layers[at:] for t in later.top}
        if layer.bottom and layer.bottom[0] in rewritten:
            raise ConversionError(
                f"reads '{layer.bottom[0]}', which a later layer rewrites in place; the loss must read the "
                f"blob's final value", file=path, layer=layer.name)


def _check_loss_bottoms(layer, labels, path):
    losses.check_supported(layer, path)
    if len(layer.bottom) != 2:
        raise ConversionError(f"{layer.type} with {len(layer.bottom)} bottoms is not supported (expected the "
                              f"prediction and the label)", file=path, layer=layer.name)
    pred, label = layer.bottom
    if pred in labels:
        raise ConversionError(f"the prediction bottom '{pred}' is a label", file=path, layer=layer.name)
    if label not in labels:
        raise ConversionError(
            f"the second bottom '{label}' must be a label (a data-layer or input blob only losses read); "
            f"a loss between two computed blobs is not supported", file=path, layer=layer.name)


def _same_layer(a, b):
    a, b = copy.deepcopy(a), copy.deepcopy(b)
    for layer in (a, b):
        layer.ClearField("include")
        layer.ClearField("exclude")
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def _merge_phases(train, test, path):
    """The TRAIN net's layers with the TEST net's extra outputs inserted where the TEST net has them."""
    train_by_name = {layer.name: layer for layer in train.layers}
    test_names = {layer.name for layer in test.layers}
    differ = [layer.name for layer in test.layers
              if layer.name in train_by_name and not _same_layer(layer, train_by_name[layer.name])]
    if differ:
        raise ConversionError(f"layer(s) {', '.join(differ)} differ between the TRAIN and TEST phases; one Keras "
                              f"model cannot be both", file=path)
    train_only = [layer.name for layer in train.layers if layer.name not in test_names and layer.type != "Dropout"]
    if train_only:
        raise ConversionError(f"layer(s) {', '.join(train_only)} exist in the TRAIN phase only; a Keras model "
                              f"infers with its training layers (only Dropout may be TRAIN-only)", file=path)
    train_blobs = set(train.inputs) | {b for layer in train.layers for b in (*layer.bottom, *layer.top)}
    merged = list(train.layers)
    at = 0
    for layer in test.layers:
        if layer.name in train_by_name:
            at = merged.index(train_by_name[layer.name]) + 1
            continue
        rewritten = [t for t in layer.top if t in train_blobs]
        if rewritten:
            raise ConversionError(f"exists in the TEST phase only and rewrites {', '.join(rewritten)}, a blob of "
                                  f"the TRAIN net; a Keras model cannot infer differently", file=path, layer=layer.name)
        merged.insert(at, layer)
        at += 1
    return merged


@dataclasses.dataclass
class BlobSpec:
    """One Caffe learned blob as a Keras variable, with its ParamSpec multipliers."""

    layer: object  # the Keras layer holding the variable
    variable: object
    lr_mult: float
    decay_mult: float


def blob_specs(conversion, strict=True):
    """The Keras variable of every trainable Caffe blob that has a ParamSpec, in graph order.
    A layer translated into several weighted Keras layers cannot be mapped blob by blob: refused
    when ``strict``, else left as it is."""
    specs = []
    by_name = {layer.name: layer for layer in conversion.model.layers}
    for node in conversion.graph.nodes:
        if not node.param.param:
            continue
        with at_layer(node.name):
            weighted = [layer for layer in node_layers(conversion, node, by_name) if layer.weights]
            if not weighted:
                continue
            if len(weighted) != 1:
                if not strict:
                    continue
                raise ConversionError(f"cannot tell which Keras weights are this {node.type} layer's blobs for "
                                      f"its lr_mult/decay_mult", file=conversion.graph.path, layer=node.name)
            (layer,) = weighted
            for spec, variable in zip(node.param.param, layer.weights):
                if variable.trainable:
                    specs.append(BlobSpec(layer, variable, float32_value(spec.lr_mult), float32_value(spec.decay_mult)))
    return specs


def node_layers(conversion, node, by_name):
    """The Keras layers computing ``node``'s tops from other blobs (a translator may add padding,
    transposes or a subsampling after the kernel): those :meth:`~caffe2keras.naming.Names.of`
    names that the model has. ``by_name`` maps the model's layer names to its layers."""
    return [by_name[name] for name in conversion.names.of(node) if name in by_name]


def freeze(conversion, with_solver=False):
    """Apply ``lr_mult: 0``: layers whose every trainable blob is frozen become non-trainable.
    Without a solver to keep it fixed, a frozen blob beside learned ones becomes a non-trainable
    variable (in memory only: Keras saves trainability per layer), and a layer whose blobs cannot
    be told apart is left trainable. Returns the specs (see :func:`blob_specs`)."""
    specs = blob_specs(conversion, strict=with_solver)
    by_layer = {}
    for spec in specs:
        by_layer.setdefault(id(spec.layer), (spec.layer, []))[1].append(spec)
    for layer, layer_specs in by_layer.values():
        frozen = {id(s.variable) for s in layer_specs if s.lr_mult == 0}
        if not frozen:
            continue
        if all(id(v) in frozen for v in layer.trainable_weights):
            layer.trainable = False
        elif not with_solver:
            for v in layer.trainable_weights:
                if id(v) in frozen:
                    v.trainable = False
    return specs


def multipliers(specs):
    """``{variable path: [lr_mult, decay_mult]}`` for :class:`~caffe2keras.solver.CaffeSolver`.

    A variable's path carries its layer's name when it was created; a layer renamed later (an
    output taking its blob's name) has the new name in a saved model: both paths are listed.
    """
    table = {}
    for spec in specs:
        if spec.layer.trainable and (spec.lr_mult, spec.decay_mult) != (1.0, 1.0):
            value = [spec.lr_mult, spec.decay_mult]
            table[spec.variable.path] = value
            table[f"{spec.layer.name}/{spec.variable.name}"] = value
    return table


@dataclasses.dataclass
class Target:
    """What one loss trains: the model output it reads, the label blob ``fit`` takes for it."""

    output: str  # Keras output name
    label: str  # Caffe blob name of the label or target
    loss: str  # Caffe loss layer name
    loss_type: str
    weight: float


def compile_model(conversion, netdef, solver_param):
    """Compile the converted model with Caffe's losses and solver (``netdef`` from :func:`load_net`);
    fills ``conversion.targets``."""
    model, graph = conversion.model, conversion.graph
    position = {graph.blobs[bid].name: i for i, bid in enumerate(graph.outputs)}
    loss_list = [None] * len(graph.outputs)
    weights = [0.0] * len(graph.outputs)
    targets = [None] * len(graph.outputs)
    for _, layer in netdef.losses:
        pred = layer.bottom[0]
        i = position[pred]
        if loss_list[i] is not None:
            raise ConversionError(f"a second loss reads '{pred}'; one Keras output takes one loss", file=graph.path,
                                  layer=layer.name)
        loss_list[i] = losses.from_layer(layer, graph.blobs[graph.outputs[i]].shape, graph.path)
        weights[i] = losses.loss_weight(layer)
        targets[i] = Target(model.output_names[i], layer.bottom[1], layer.name, layer.type, weights[i])
    specs = freeze(conversion, with_solver=True)
    optimizer = solver.CaffeSolver.from_solver(solver_param, multipliers=multipliers(specs))
    model.compile(optimizer=optimizer, loss=loss_list, loss_weights=weights)
    # Built now, the optimizer's state (Caffe's history) is saved with the model and loads back
    # without Keras warning about a variable-count mismatch.
    optimizer.build(model.trainable_variables)
    conversion.targets = [t for t in targets if t is not None]
    return model


# Output formats that keep a compiled model's optimizer and losses.
TRAINABLE_FORMATS = ("keras", "h5")


def check_export(fmt, output, preprocessing=False):
    """Refuse, before converting, what would drop the training set-up on the way to the file."""
    if fmt not in TRAINABLE_FORMATS:
        raise ConversionError(f"a {fmt} file cannot hold the solver's optimizer and losses; write .keras or .h5",
                              file=output)
    if preprocessing:
        raise ConversionError("--mean/--scale/--rgb-input cannot be combined with --solver: feed the batches "
                              "the data layer's transform_param produces", file=output)


def summary(conversion):
    """What the compiled model trains with, JSON-ready (for the conversion record)."""
    optimizer = conversion.model.optimizer
    schedule = optimizer.get_config()["learning_rate"]
    frozen = [layer.name for layer in conversion.model.layers if layer.weights and not layer.trainable]
    return {
        "solver": optimizer.solver_type,
        "lr_policy": schedule["config"]["policy"] if isinstance(schedule, dict) else "fixed",
        "iter_size": optimizer.iter_size,
        "frozen_layers": len(frozen),
        "targets": [dataclasses.asdict(t) for t in conversion.targets],
    }
