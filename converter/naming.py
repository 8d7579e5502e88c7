"""Every Keras name of a converted network, decided on the shaped graph before any layer exists.

The rules (README, "The layout contract"):

- A Caffe name becomes a Keras name by :func:`keras_name`: every character other than an ASCII
  letter, digit, ``_``, ``-`` or ``.`` becomes ``_`` (``inception_4a/output`` →
  ``inception_4a_output``); a name of dots only (or empty) gets a leading ``_`` (``.`` is HDF5's
  own group); one longer than :data:`MAX_LENGTH` is cut and ends in ``_`` + 8 hex digits of a
  hash of the whole name. TensorFlow accepts no other characters in the scopes it names after
  layers, and ``.h5`` files none of the cut names.
- Names are claimed in a fixed order — network outputs, network inputs, layers in execution
  order, then the converter's own layers (the blob table, the baked preprocessing) — and a name
  already taken gets the first free ``_1``, ``_2``, ….
- Outputs are named after their Caffe blob. When a blob is rewritten in place and its final
  version is an output (``fc`` rewritten by ``drop``), the layer (or input) holding an earlier
  version under the blob's name takes ``<name>_pre``.
- The layer named after a Caffe layer gives that layer's tops (a list for several, except Split
  whose one tensor is every top), NHWC when 4-D. A translator holding a 4-D top in Caffe's order
  names its own layer ``<name>_caffe_order`` and the NHWC view carries the Caffe name.
- Helper layers (padding, flattening, transposes) are ``<name>_<what>``, claimed while
  translating, so they never take a name decided here.

:meth:`Names.of` gives the Keras layers each node became (its own and its helpers), so they are
found by name in the model, as training finds the variables of a Caffe layer's blobs.

:meth:`Names.table` is what the converted model stores (:class:`~caffe2keras.blobtable.CaffeBlobs`):
from it :func:`blob_locations` finds any Caffe blob in a built or a loaded model, without the
prototxt.
"""

import hashlib
import re
from dataclasses import dataclass, field

MAX_LENGTH = 255
CAFFE_ORDER = "caffe_order"
TABLE = "caffe_blobs"
PREPROCESS = "caffe_preprocess"
_INVALID = re.compile(r"[^A-Za-z0-9_.\-]")


def keras_name(caffe_name):
    """The Keras name for a Caffe name, before uniqueness (module docstring)."""
    name = _INVALID.sub("_", caffe_name)
    if not name.strip("."):
        name = "_" + name
    if len(name) > MAX_LENGTH:
        digest = hashlib.sha256(caffe_name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        name = f"{name[: MAX_LENGTH - 9]}_{digest}"
    return name


def model_name(caffe_name):
    """The Keras model's name: TensorFlow opens a root scope with it, which must start with a
    letter, digit or dot."""
    name = keras_name(caffe_name or "caffe_net")
    return name if name[0].isascii() and (name[0].isalnum() or name[0] == ".") else "net" + name


class Namer:
    """Unique names: a taken name gets the first free ``_1``, ``_2``, … (a counter per base keeps
    thousands of equal names linear)."""

    def __init__(self):
        self.taken = set()
        self._next = {}

    def claim(self, base):
        name = base
        if name in self.taken:
            i = self._next.get(base, 1)
            while f"{base}_{i}" in self.taken:
                i += 1
            self._next[base] = i + 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name


@dataclass
class Names:
    model: str
    inputs: dict  # input SSA id -> Keras name of its Input
    layers: dict  # Node -> Keras name of the layer giving its tops
    outputs: list  # Keras name of each graph.outputs entry
    direct: set  # indexes of outputs that are an Input or their layer's own tensor (no Identity)
    table_layer: str  # Keras name of the CaffeBlobs layer
    preprocess_layer: str  # Keras name of the CaffePreprocess layer, when there is one
    namer: Namer
    helpers: dict = field(default_factory=dict)  # Node -> Keras names of the helper layers it uses

    def helper(self, node, what):
        """A fresh name for a helper layer of ``node``."""
        name = self.namer.claim(f"{self.layers[node]}_{what}")
        self.uses(node, name)
        return name

    def uses(self, node, name):
        """Record that ``node``'s tops are computed through the helper layer ``name`` (one it
        claimed, or one another node claimed first and shares: a blob's transpose)."""
        used = self.helpers.setdefault(node, [])
        if name not in used:
            used.append(name)

    def of(self, node):
        """The Keras names of every layer computing ``node``'s tops from other blobs: the layer of
        its name and its helpers (a layer claimed but never built has no place in the model)."""
        return [self.layers[node], *self.helpers.get(node, ())]

    def table(self, graph):
        """The blob table the model stores: ``inputs`` ([Caffe blob, Keras input] in order),
        ``outputs`` (the Caffe blob of each model output), ``layers`` ([Caffe layer, Keras layer,
        [tops]] in execution order)."""
        return {
            "inputs": [[graph.blobs[b].name, self.inputs[b]] for b in graph.inputs],
            "outputs": [graph.blobs[b].name for b in graph.outputs],
            "layers": [[n.name, self.layers[n], [graph.blobs[t].name for t in n.tops]] for n in graph.nodes],
        }


def assign(graph):
    """Decide every name of ``graph``'s model (module docstring), in time linear in its size."""
    namer = Namer()
    inputs, layers, outputs, direct = {}, {}, [None] * len(graph.outputs), set()
    input_ids = set(graph.inputs)
    producer = {bid: node for node in graph.nodes for bid in node.tops}
    by_output = {}  # Keras name claimed by an output -> its Caffe blob and SSA id

    for i, bid in enumerate(graph.outputs):
        if bid in input_ids:
            continue  # the Input itself is the output: named with the inputs
        blob = graph.blobs[bid]
        name = namer.claim(keras_name(blob.name))
        outputs[i] = name
        by_output[name] = (blob.name, bid)
        node = producer[bid]
        if len(node.tops) == 1 and node not in layers and keras_name(node.name) == name:
            layers[node] = name
            direct.add(i)

    for bid in graph.inputs:
        blob = graph.blobs[bid]
        base = keras_name(blob.name)
        if by_output.get(base, (None,))[0] == blob.name:
            base += "_pre"  # an in-place chain on this input ends at the output of its name
        inputs[bid] = namer.claim(base)
    for i, bid in enumerate(graph.outputs):
        if bid in input_ids:
            outputs[i] = inputs[bid]
            direct.add(i)

    for node in graph.nodes:
        if node in layers:
            continue
        base = keras_name(node.name)
        claimed = by_output.get(base)
        if claimed is not None and any(
            graph.blobs[t].name == claimed[0] and t != claimed[1] for t in node.tops
        ):
            base += "_pre"
        layers[node] = namer.claim(base)

    table_layer, preprocess_layer = namer.claim(TABLE), namer.claim(PREPROCESS)
    return Names(model_name(graph.name), inputs, layers, outputs, direct, table_layer, preprocess_layer, namer)


def blob_locations(table, table_layer):
    """``{Caffe blob: (Keras layer, output index)}`` from a stored table: where each blob's final
    value is, as Caffe's ``net.blobs`` holds it after a forward pass. Inputs are read at the
    blob table layer's outputs (after any baked preprocessing, as Caffe's input blob holds it)."""
    where = {}
    for i, (blob, _) in enumerate(table["inputs"]):
        where[blob] = (table_layer, i)
    for _, layer, tops in table["layers"]:
        for k, blob in enumerate(tops):
            where[blob] = (layer, k)
    return where
