"""Reading a network definition: text parsing, V1 → V2 upgrade, phase filtering, inputs.

The result is a :class:`NetDef`: the layers Caffe would instantiate for inference (TEST phase),
in V2 form, and the network inputs with their declared shapes. Data layers of train/val nets
become inputs; loss and accuracy layers are dropped and what fed them becomes an output.
"""

import ast
import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from . import filetype
from .errors import ConversionError, clip
from .schema import V1_TYPES, caffe_pb2

# What prototxt files are called.
PROTOTXT_SUFFIXES = (".prototxt", ".pbtxt")
# Layers that read data from disk or memory in Caffe: for inference their first top is an input.
DATA_TYPES = {
    "Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData",
    "AnnotatedData", "DenseImageData", "VideoData",
}
# Layers that only make sense in training or evaluation.
EVAL_TYPES = {"Accuracy", "DetectionEvaluate", "HDF5Output"}


def is_data(layer):
    """Data layers, including Python layers that read data (no bottom, as in FCN's train/val)."""
    return layer.type in DATA_TYPES or (layer.type == "Python" and not layer.bottom and bool(layer.top))


def python_layer_params(layer):
    """The dict a Python layer's ``param_str`` holds, e.g. ``{'feat_stride': 16}``.

    py-faster-rcnn hands the string to YAML; its prototxts write the body of a Python dict of
    literals, without braces, one key per line or comma-separated, tuples tagged
    ``!!python/tuple``. It is read here with ``ast.literal_eval``: literals only, no code runs.
    """
    text = layer.python_param.param_str.strip()
    if not text:
        return {}
    body = re.sub(r"!!python/tuple\s*", "", text)
    if not body.startswith("{"):
        body = "{" + ", ".join(line.strip().rstrip(",") for line in body.splitlines() if line.strip()) + "}"
    value = None
    # YAML also lets keys go unquoted (feat_stride: 16): quoted on a second try.
    for candidate in (body, re.sub(r"([{,]\s*)([A-Za-z_]\w*)(\s*:)", r"\1'\2'\3", body)):
        try:
            value = ast.literal_eval(candidate)
            break
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    if not isinstance(value, dict):
        raise ConversionError(f"python_param param_str {text!r} is not a dict of literal values", layer=layer.name)
    return value


def is_loss(layer_type):
    return layer_type.endswith("Loss") or layer_type in EVAL_TYPES


@dataclass
class NetDef:
    """A network as Caffe would run it for inference, before shapes are known."""

    name: str
    layers: list  # caffe_pb2.LayerParameter, V2, in execution order
    inputs: dict  # blob name -> declared shape (tuple) or None when only --input-shape can say
    extra_outputs: list = field(default_factory=list)  # blobs that fed dropped loss/Silence layers
    path: str = None
    # The dropped loss and accuracy layers, each as (how many kept layers ran before it, layer).
    losses: list = field(default_factory=list)
    labels: list = field(default_factory=list)  # tops of data layers after the first (labels)


def parse_text(text, path=None, message=None):
    """Parse prototxt text into a NetParameter (or the given ``message``, e.g. a
    SolverParameter); syntax errors name line and column."""
    net = message if message is not None else caffe_pb2.NetParameter()
    try:
        text_format.Merge(text, net, allow_unknown_field=False)
    except text_format.ParseError as err:
        msg = str(err)
        # ParseError's text starts with "line:col : "; we report those separately.
        if ":" in msg and msg.split(":", 1)[0].isdigit():
            msg = msg.split(" : ", 1)[-1]
        # Then often comes the whole offending line in quotes, which line:col already points at
        # (and which is the whole file for a one-line prototxt).
        lines = text.split("\n")
        if err.GetLine() and 0 < err.GetLine() <= len(lines):
            quoted = f"'{lines[err.GetLine() - 1]}': "
            if msg.startswith(quoted):
                msg = msg[len(quoted):]
        # The offending token may be a control character of a garbled file: show it escaped.
        msg = clip("".join(c if c.isprintable() else repr(c)[1:-1] for c in msg))
        raise ConversionError(
            f"not a valid Caffe prototxt: {msg}", file=path, line=err.GetLine(), column=err.GetColumn()
        ) from None
    return net


def read_text(path):
    path = Path(path)
    if not path.exists():
        raise ConversionError("no such file", file=path)
    if path.is_dir():
        raise ConversionError(filetype.wrong_directory(path, "prototxt", PROTOTXT_SUFFIXES), file=path)
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # saved as UTF-16 by a Windows editor
        with contextlib.suppress(UnicodeError):
            data = data.decode("utf-16").encode("utf-8")
    if not data.strip():
        raise ConversionError("is empty, expected a Caffe prototxt (an interrupted download?)", file=path)
    problem = filetype.wrong_file(path, "prototxt", head=data[: filetype.HEAD_BYTES])
    if problem:
        raise ConversionError(problem, file=path)
    if b"\x00" in data[:4096]:
        raise ConversionError(
            "is a binary file, not a text prototxt (a .caffemodel given in place of the prototxt?)",
            file=path,
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def load(path, phase="TEST"):
    """Read a prototxt file into a :class:`NetDef` for the given phase."""
    text = read_text(path)
    if filetype.is_solver(text):
        named = re.search(r'^\s*(?:net|train_net)\s*:\s*"([^"]*)"', text, re.MULTILINE)
        raise ConversionError("is a solver prototxt, not a network: give the network's prototxt"
                              + (f" ({named.group(1)})" if named else ""), file=path)
    net = parse_text(text, path=str(path))
    return netdef_from_proto(net, phase=phase, path=str(path))


def upgrade_v1(v1):
    """One V1 ``layers {}`` entry as a V2 LayerParameter (Caffe's UpgradeV1LayerParameter)."""
    layer = caffe_pb2.LayerParameter()
    layer.name = v1.name
    type_name = caffe_pb2.V1LayerParameter.LayerType.Name(v1.type)
    layer.type = V1_TYPES.get(type_name, type_name)
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    for rule in v1.include:
        layer.include.add().CopyFrom(rule)
    for rule in v1.exclude:
        layer.exclude.add().CopyFrom(rule)
    layer.loss_weight.extend(v1.loss_weight)
    # Per-blob names, learning-rate and decay multipliers become ParamSpecs, as Caffe upgrades them.
    for values, field_name in ((v1.param, "name"), (v1.blobs_lr, "lr_mult"), (v1.weight_decay, "decay_mult")):
        for i, value in enumerate(values):
            while len(layer.param) <= i:
                layer.param.add()
            setattr(layer.param[i], field_name, value)
    v2_fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    for fd, value in v1.ListFields():
        if fd.name.endswith("_param") and fd.name in v2_fields:
            getattr(layer, fd.name).CopyFrom(value)
    for blob in v1.blobs:
        layer.blobs.add().CopyFrom(blob)
    return layer


def _meets_rule(rule, phase):
    # Caffe's StateMeetsRule for a NetState of (phase, level 0, no stages).
    if rule.HasField("phase") and caffe_pb2.Phase.Name(rule.phase) != phase:
        return False
    if rule.HasField("min_level") and 0 < rule.min_level:
        return False
    if rule.HasField("max_level") and 0 > rule.max_level:
        return False
    return not rule.stage


def _included(layer, phase):
    if layer.include:
        return any(_meets_rule(r, phase) for r in layer.include)
    return not any(_meets_rule(r, phase) for r in layer.exclude)


def _data_shape(layer):
    """The (N, C, H, W) a data layer feeds, as far as its parameters say; None where unknown."""
    if layer.type == "DummyData" and layer.dummy_data_param.shape:
        return tuple(layer.dummy_data_param.shape[0].dim)
    if layer.type == "MemoryData":
        p = layer.memory_data_param
        return (p.batch_size, p.channels, p.height, p.width)
    tp = layer.transform_param
    batch = 1
    for name in ("data_param", "image_data_param", "window_data_param", "dense_image_data_param"):
        if name in caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name and layer.HasField(name):
            batch = getattr(getattr(layer, name), "batch_size", 1) or 1
    if layer.type == "ImageData" and layer.image_data_param.new_height:
        p = layer.image_data_param
        channels = 3 if p.is_color else 1
        h, w = p.new_height, p.new_width
        if tp.crop_size:
            h = w = tp.crop_size
        return (batch, channels, h, w)
    if tp.crop_size:
        channels = len(tp.mean_value) if len(tp.mean_value) in (1, 3) else 3
        return (batch, channels, tp.crop_size, tp.crop_size)
    return None


def netdef_from_proto(net, phase="TEST", path=None):
    if net.layers and net.layer:
        raise ConversionError("mixes V1 'layers' and V2 'layer' entries", file=path)
    if net.layers:
        layers = [upgrade_v1(v1) for v1 in net.layers]
    else:
        layers = list(net.layer)

    inputs = {}
    if net.input:
        if net.input_shape:
            if len(net.input_shape) != len(net.input):
                raise ConversionError(
                    f"{len(net.input)} inputs but {len(net.input_shape)} input_shape entries", file=path
                )
            for name, shape in zip(net.input, net.input_shape):
                inputs[name] = tuple(shape.dim)
        elif net.input_dim:
            if len(net.input_dim) != 4 * len(net.input):
                raise ConversionError(
                    f"{len(net.input)} inputs need {4 * len(net.input)} input_dim values, "
                    f"found {len(net.input_dim)}",
                    file=path,
                )
            for i, name in enumerate(net.input):
                inputs[name] = tuple(net.input_dim[4 * i : 4 * i + 4])
        else:
            for name in net.input:
                inputs[name] = None

    kept, extra_outputs, losses, labels = [], [], [], []
    excluded_data = {}
    for layer in layers:
        if not _included(layer, phase):
            if is_data(layer):
                excluded_data.setdefault(layer.top[0], layer)
            continue
        if is_data(layer):
            # The first top is the data; further tops (labels) only feed losses.
            if layer.top and layer.top[0] not in inputs:
                inputs[layer.top[0]] = _data_shape(layer)
            labels.extend(t for t in layer.top[1:] if t not in labels)
            continue
        if layer.type == "Input":
            shapes = list(layer.input_param.shape)
            for i, top in enumerate(layer.top):
                if not shapes:
                    inputs[top] = None
                else:
                    inputs[top] = tuple(shapes[i if len(shapes) > 1 else 0].dim)
            kept.append(layer)
            continue
        if is_loss(layer.type):
            losses.append((len(kept), layer))
        if is_loss(layer.type) or layer.type == "Silence":
            extra_outputs.extend(layer.bottom)
            continue
        kept.append(layer)

    # A blob that only an excluded data layer produces (e.g. stage-specific TEST data) is an input.
    produced = set(inputs)
    for layer in kept:
        for bottom in layer.bottom:
            if bottom not in produced and bottom in excluded_data:
                inputs[bottom] = _data_shape(excluded_data[bottom])
        produced.update(layer.top)
    extra_outputs = [b for b in dict.fromkeys(extra_outputs) if b in produced and b not in inputs]
    return NetDef(name=net.name, layers=kept, inputs=inputs, extra_outputs=extra_outputs, path=path,
                  losses=losses, labels=labels)
