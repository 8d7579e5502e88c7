"""``caffe2keras inspect``: what a prototxt holds, layer by layer, without building Keras layers.

For each layer: name, type, top blobs, output shapes (Caffe order), parameter count (from the
caffemodel when given, otherwise from the prototxt) and whether the converter can translate it.
Unlike conversion this never stops at the first problem: an unsupported layer, or one whose shape
cannot be inferred, is listed with the reason, and the layers fed by it get unknown shapes.
"""

from dataclasses import asdict, dataclass, field

from . import caffemodel, graph, prototxt, shapes
from .errors import ConversionError


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


@dataclass
class Report:
    network: str
    path: str
    inputs: dict  # blob -> Caffe shape or None
    rows: list = field(default_factory=list)
    weights: str = None

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
        }


def inspect(prototxt_path, caffemodel_path=None, input_shapes=None):
    """Describe the network of ``prototxt_path`` (Caffe's inference view) as a :class:`Report`."""
    from .translate import supported_types

    supported = set(supported_types())
    netdef = prototxt.load(prototxt_path)
    weights = caffemodel.load(caffemodel_path) if caffemodel_path is not None else None
    inputs = dict(netdef.inputs)
    for name, shape in (input_shapes or {}).items():
        if name is None and len(inputs) == 1:
            name = next(iter(inputs))
        if name not in inputs:
            raise ConversionError(f"--input-shape names '{name}', which is not an input", file=prototxt_path)
        inputs[name] = tuple(shape)
    report = Report(network=netdef.name, path=str(prototxt_path), inputs=inputs,
                    weights=str(caffemodel_path) if caffemodel_path else None)

    known = {name: shape for name, shape in inputs.items()}
    for layer in netdef.layers:
        if layer.type == "Input":
            tops = list(layer.top)
            report.rows.append(Row(layer.name, "Input", [], tops, [_list(known.get(t)) for t in tops], 0))
            continue
        node = graph.Node(name=layer.name, type=layer.type, param=layer, bottoms=list(layer.bottom))
        bottom_shapes = [known.get(b) for b in layer.bottom]
        row = Row(layer.name, layer.type, list(layer.bottom), list(layer.top), [None] * len(layer.top))
        row.supported = layer.type in supported and layer.type in shapes.SHAPES
        if not row.supported:
            row.note = "no translator for this type"
        elif any(s is None for s in bottom_shapes):
            row.note = "input shape unknown"
        else:
            try:
                tops = shapes.infer(node, bottom_shapes)
                row.shapes = [_list(s) for s in tops][: len(layer.top)]
            except ConversionError as err:
                row.supported = False
                row.note = err.message
        for top, shape in zip(layer.top, row.shapes):
            known[top] = tuple(shape) if shape is not None else None
        row.params = _params(node, bottom_shapes, weights)
        report.rows.append(row)
    return report


def _list(shape):
    return [int(d) for d in shape] if shape is not None else None


def _params(node, bottom_shapes, weights):
    """Learned values of the layer: the caffemodel's blobs, else what the prototxt implies."""
    if weights is not None:
        return int(sum(b.size for b in weights.layers.get(node.name) or []))
    if not graph.learns_weights(node) and node.type not in ("BN", "Normalize"):
        return 0
    if any(s is None for s in bottom_shapes):
        return None
    try:
        return graph.learned_elements(node, bottom_shapes)
    except ConversionError:
        return None


def format_shape(shape):
    return "x".join(str(d) for d in shape) if shape is not None else "?"


def format_table(report):
    """The report as a fixed-width table with a closing summary line."""
    header = ("layer", "type", "tops", "output shape (Caffe)", "params", "supported")
    lines = [header]
    for r in report.rows:
        shapes_text = ", ".join(format_shape(s) for s in r.shapes) or "-"
        params = f"{r.params:,}" if r.params is not None else "?"
        ok = "yes" if r.supported else f"NO: {r.note}"
        if r.supported and r.note:
            ok = f"yes ({r.note})"
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
    else:
        out.append("every layer is supported")
    return "\n".join(out)
