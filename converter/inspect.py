"""``caffe2keras inspect``: what a prototxt holds, layer by layer, without building Keras layers.

For each layer: name, type, top blobs, output shapes (Caffe order), parameter count (from the
caffemodel when given, otherwise from the prototxt) and whether the converter can translate it.
Unlike conversion this never stops at the first problem: it reads the graph built tolerantly
(:func:`caffe2keras.graph.build` with ``tolerant``), where an unsupported layer, or one whose
shape cannot be inferred, is marked with the reason, and the layers fed by it get unknown shapes.
With a caffemodel, each layer's blobs are checked against the shapes the prototxt implies, as
conversion checks them; a layer whose weights are missing or misshapen is listed too.
"""

from dataclasses import asdict, dataclass, field

from . import caffemodel, graph, prototxt, shapes, spec, types, weights
from .errors import ConversionError, at_layer

# How many layers the caffemodel holds and the prototxt lacks are named.
SHOWN_EXTRA = 10


@dataclass
class Row:
    name: str
    type: str
    bottoms: list
    tops: list
    shapes: list  # one Caffe shape (list) or None per top
    params: int = None  # None: unknown (no caffemodel and a type this module cannot count)
    supported: bool = True
    note: str = ""
    weights: str = ""  # with a caffemodel: what keeps its blobs from fitting this layer


@dataclass
class Report:
    network: str
    path: str
    inputs: dict  # blob -> Caffe shape or None
    rows: list = field(default_factory=list)
    weights: str = None
    extra_weights: list = field(default_factory=list)  # caffemodel layers the prototxt lacks

    @property
    def misfits(self):
        """The rows whose caffemodel weights do not fit."""
        return [r for r in self.rows if r.weights]

    @property
    def parameters(self):
        return sum(r.params or 0 for r in self.rows)

    @property
    def unsupported(self):
        return sorted({r.type for r in self.rows if not r.supported})

    def as_dict(self):
        return {
            "network": self.network,
            "prototxt": self.path,
            "caffemodel": self.weights,
            "inputs": {k: list(v) if v else None for k, v in self.inputs.items()},
            "layers": [asdict(r) for r in self.rows],
            "parameters": self.parameters,
            "unsupported_types": self.unsupported,
            "weights_not_fitting": [r.name for r in self.misfits],
            "caffemodel_layers_not_in_prototxt": self.extra_weights,
        }


def inspect(prototxt_path, caffemodel_path=None, input_shapes=None):
    """Describe the network of ``prototxt_path`` (Caffe's inference view) as a :class:`Report`."""
    netdef = prototxt.load(prototxt_path)
    blobs = caffemodel.load(caffemodel_path) if caffemodel_path is not None else None
    inputs = dict(netdef.inputs)
    for name, shape in (input_shapes or {}).items():
        if name is None and len(inputs) == 1:
            name = next(iter(inputs))
        if name not in inputs:
            raise ConversionError(f"--input-shape names '{name}', which is not an input", file=prototxt_path)
        inputs[name] = tuple(shape)
    report = Report(network=netdef.name, path=str(prototxt_path), inputs=inputs,
                    weights=str(caffemodel_path) if caffemodel_path else None)

    # The rows name each layer as the prototxt does (the graph names a nameless one).
    caffe_names = [layer.name for layer in netdef.layers]
    g = graph.build(netdef, input_shapes=inputs, supported=types.supported_types(), tolerant=True)
    nodes = {id(node.param): node for node in g.nodes}  # the graph's own view nodes have no layer
    for layer, name in zip(netdef.layers, caffe_names):
        with at_layer(name):
            if layer.type == "Input":
                tops = list(layer.top)
                report.rows.append(Row(name, "Input", [], tops, [_list(inputs.get(t)) for t in tops], 0))
            else:
                report.rows.append(_row(g, nodes[id(layer)], name, blobs))
    if blobs is not None:
        present = set(caffe_names)
        report.extra_weights = [name for name, held in blobs.layers.items() if held and name not in present]
    return report


def _row(g, node, name, blobs):
    """The :class:`Row` of ``node`` of the tolerantly built graph ``g``, for the layer ``name``."""
    layer = node.param
    bottom_shapes = [g.shape(b) for b in node.bottoms]
    known = all(s is not None for s in bottom_shapes)
    row = Row(name, layer.type, list(layer.bottom), list(layer.top), [_list(g.shape(t)) for t in node.tops])
    row.supported = node.problem is None
    row.note = node.problem or ("" if known else "input shape unknown")
    row.params = _params(node, name, bottom_shapes, blobs)
    if blobs is not None and row.supported and known:
        row.weights = _misfit(node, bottom_shapes, blobs.layers.get(name))
    return row


def _misfit(node, bottom_shapes, held):
    """Why the caffemodel's blobs ``held`` do not fit the layer, or "" when they do."""
    try:
        expected = types.learned_shapes(node, bottom_shapes, held=len(held or []))
    except ConversionError as err:
        return err.message
    if not expected:
        return ""
    if not held:
        return "no weights in the caffemodel"
    return weights.blob_problem(node.type, [b.shape for b in held], expected) or ""


def _list(shape):
    return [None if d is None else int(d) for d in shape] if shape is not None else None


def _params(node, name, bottom_shapes, blobs):
    """Learned values of the layer ``name``: the caffemodel's blobs, else what the prototxt implies."""
    if blobs is not None:
        return int(sum(b.size for b in blobs.layers.get(name) or []))
    if types.of(node.type) is None or types.of(node.type).learned is spec.learns_nothing:
        return 0
    if any(s is None for s in bottom_shapes):
        return None
    try:
        return types.learned_elements(node, bottom_shapes)
    except ConversionError:
        return None


def format_shape(shape):
    """``2x3x224x224``; a free size is ``?``, as is a whole shape not known."""
    return shapes.shape_text(shape) if shape is not None else "?"


def format_table(report):
    """The report as a fixed-width table with a closing summary line."""
    header = ("layer", "type", "tops", "output shape (Caffe)", "params", "supported")
    lines = [header]
    for r in report.rows:
        shapes_text = ", ".join(format_shape(s) for s in r.shapes) or "-"
        params = f"{r.params:,}" if r.params is not None else "?"
        ok = "yes" if r.supported else f"NO: {r.note}"
        if r.supported and (r.note or r.weights):
            ok = f"yes ({r.note or 'weights do not fit'})"
        lines.append((r.name, r.type, ", ".join(r.tops), shapes_text, params, ok))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header) - 1)]
    out = []
    for line in lines:
        cells = [str(c).ljust(w) for c, w in zip(line[:-1], widths)]
        cells[4] = str(line[4]).rjust(widths[4])
        out.append("  ".join(cells + [str(line[-1])]).rstrip())
    out.insert(1, "  ".join("-" * w for w in widths) + "  ---------")
    inputs = ", ".join(f"{k} {format_shape(v)}" for k, v in report.inputs.items()) or "none"
    unsupported = report.unsupported
    out.append("")
    out.append(
        f"{report.network or 'network'}: {len(report.rows)} layers, inputs {inputs}, {report.parameters:,} parameters"
        + (" (from the caffemodel)" if report.weights else "")
    )
    missing = [k for k, v in report.inputs.items() if v is None]
    if missing:
        out.append(f"input(s) without a declared shape: {', '.join(missing)}; give one with --input-shape NAME=N,C,H,W")
    if unsupported:
        count = sum(1 for r in report.rows if not r.supported)
        out.append(f"not convertible: {count} layer(s) of type(s) {', '.join(unsupported)}")
    elif not report.misfits:
        out.append("every layer is supported")
    if report.misfits:
        out.append(f"the caffemodel's weights do not fit {len(report.misfits)} layer(s):")
        out.extend(f"  {r.name} ({r.type}): {r.weights}" for r in report.misfits)
    if report.extra_weights:
        extra = report.extra_weights
        out.append(f"the caffemodel holds weights for {len(extra)} layer(s) the prototxt lacks: "
                   + ", ".join(extra[:SHOWN_EXTRA]) + (", …" if len(extra) > SHOWN_EXTRA else ""))
    return "\n".join(out)


def misfit_summary(report):
    """One line for a caffemodel that does not fit the prototxt, or None when it does."""
    if not report.misfits:
        return None
    missing = sum(1 for r in report.misfits if r.weights == "no weights in the caffemodel")
    parts = ([f"{missing} layer(s) without weights"] if missing else []) + (
        [f"{len(report.misfits) - missing} with other shapes"] if len(report.misfits) > missing else [])
    return (f"{report.weights}: does not fit {report.path}: {' and '.join(parts)}"
            f"{' (the caffemodel of another network?)' if missing or len(report.misfits) > 1 else ''}")
